"""One worker's view of a trial: what the loop and its callbacks share (config, engine, backend, data, ranks),
and `setup_run`, which builds it (data, model, numerics backend, DeepSpeed engine)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustprec.config import Config, HighPrecisionLayers
from robustprec.data.batches import BatchStream, eval_sequences, split_tokens
from robustprec.data.corpus import Corpus, load_corpus
from robustprec.data.tokenizer import load_tokenizer
from robustprec.errors import ConfigError, RobustprecError, exception_chain
from robustprec.model.presets import ModelSpec, resolve_spec
from robustprec.model.transformer import Transformer, build_model
from robustprec.numerics.backends import Backend, SimBackend, make_backend
from robustprec.numerics.compile_check import check_compiled_gradients, compiler_message
from robustprec.train.engine import build_engine, init_distributed, select_device
from robustprec.train.evaluation import EvalShard, shard_eval_set

SR_SEED_OFFSET = 7919  # the stochastic-rounding stream is seeded from the init seed plus this


class Laps:
    """Seconds of named phases, each from the end of the one before (the first from construction)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = now - self.last, now


@dataclass
class Run:
    """Shared state of one worker's trial. Callbacks read it; `stop` and `diverged` are how they steer the loop."""

    cfg: Config
    out: Path
    device: torch.device
    rank: int
    world: int
    model: Transformer  # the pure model inside the engine
    spec: ModelSpec
    backend: Backend
    engine: Any
    corpus: Corpus
    stream: BatchStream
    eval_shard: EvalShard
    checkpoint_dir: Path
    init_checksum: float  # sum of |parameters| at initialisation (tells init seeds apart)
    origin: float  # wall clock when the trial was asked for (startup_s counts from it)
    laps: Laps = field(default_factory=Laps)  # start-up's phases; `laps.start` is when set-up began
    start_step: int = 0
    step: int = -1
    restarts: int = 0
    resumed_from: Path | None = None
    diverged: str | None = None  # the divergence reason, once a monitor saw it
    stop: bool = False
    saved_checkpoint: Path | None = None  # the tag directory written at the current step, if any

    @cached_property
    def params(self) -> list[torch.nn.Parameter]:
        """The engine's trainable parameters (clipping, early-warning monitors)."""
        return [p for p in self.engine.module.parameters() if p.requires_grad]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.global_batch_size * self.cfg.train.seq_len

    def is_last(self, step: int) -> bool:
        return step == self.cfg.train.steps - 1

    def all_reduce(self, values: list[float] | torch.Tensor, op: str = "sum") -> list[float]:
        """Sum (or max) of numbers across ranks, in float64; every rank must call it."""
        if self.world == 1:
            return values.tolist() if isinstance(values, torch.Tensor) else list(values)
        import torch.distributed as dist

        t = torch.as_tensor(values, dtype=torch.float64).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()


def _load_data(cfg: Config) -> tuple[Corpus, BatchStream, np.ndarray, ModelSpec]:
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    corpus = load_corpus(cfg.data, tokenizer)
    seq = cfg.train.seq_len
    train_tokens, eval_tokens = split_tokens(corpus.tokens, cfg.data.eval_fraction, seq)
    stream = BatchStream(train_tokens, seq, cfg.train.global_batch_size, cfg.effective_data_seed)
    spec = resolve_spec(cfg.model, tokenizer.vocab_size, seq)
    top = int(corpus.tokens.max())
    if top >= spec.vocab_size:
        raise RobustprecError(
            f"corpus holds token ids up to {top}, beyond model.vocab_size {spec.vocab_size}"
        )
    return corpus, stream, eval_sequences(eval_tokens, seq, cfg.train.eval_sequences), spec


def compile_in_place(model: Transformer, scope: str, options: dict[str, Any] | None = None) -> None:
    """torch.compile the pure model (not the engine: DeepSpeed's forward hooks graph-break, CUDA-measured) in
    place: as one graph (`scope` "model"), or block by block and the head ("blocks": identical blocks reuse one
    graph; `model.head` is the final norm, logits and loss). `options`: Inductor's (`train.compile_options`)."""
    options = options or None  # torch.compile's default: none given
    if scope == "blocks":
        for block in model.blocks:
            block.compile(options=options)
        model.head = torch.compile(model.head, options=options)  # type: ignore[method-assign]
    else:
        model.compile(options=options)


def compile_model(cfg: Config, backend: Backend, model: Transformer, device: torch.device) -> None:
    """`train.compile`: the compiled-gradient probe, then the model compiled in place. Dynamo starts afresh: a
    process that runs trials one after another (a Ray actor reused between trials) passes its per-frame recompile
    limit (8) after 8 configurations, and from then on the model ran eagerly (CPU-measured)."""
    torch._dynamo.reset()
    _check_compiled_gradients(cfg, backend, device)
    compile_in_place(model, cfg.train.compile_scope, cfg.train.compile_options)


@contextmanager
def compiler_failures_as_config_errors(cfg: Config) -> Iterator[None]:
    """A compiled model the compiler cannot build (first step, first evaluation, a recompile) is a ConfigError with
    the compiler's last words and what may build it, not a traceback that a trial retries `train.max_failures`
    times: the same graph fails alike. Measured (H200, torch 2.11): Triton could not build a kernel of sim:mxfp8
    at gpt2-124m (``PassManager::run failed``); with Inductor's ``aggressive_fusion`` it built."""
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as e:
        if _out_of_memory(e):
            raise  # the machine's state (autotuning beside packed trials), retried as any failure
        raise ConfigError(
            f"train.compile: torch {torch.__version__} could not build the compiled model under "
            f"{cfg.numerics.backend} ({compiler_message(e)}); other Inductor settings may build it "
            "(train.compile_options, e.g. {aggressive_fusion: true}), or set train.compile=false"
        ) from e


def _out_of_memory(e: BaseException) -> bool:
    """Whether `e` or an exception it was raised from is an out-of-memory error (dynamo wraps every exception the
    compiler raises, an allocation while autotuning too)."""
    return any(
        isinstance(x, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(x).lower()
        for x in exception_chain(e)
    )


def _check_compiled_gradients(cfg: Config, backend: Backend, device: torch.device) -> None:
    """Simulated backends: refuse to compile where torch's compiled graph gets their gradients wrong (see
    `robustprec.numerics.compile_check`); a probe of two linears converted like the model's."""
    if not isinstance(backend, SimBackend):
        return
    probe_cfg = cfg.numerics.model_copy(
        update={"include": ["*"], "exclude": [], "high_precision_layers": HighPrecisionLayers()}
    )
    check_compiled_gradients(
        lambda m: make_backend(probe_cfg, device).wrap(m, seed=0),
        device,
        backend.name,
        options=cfg.train.compile_options,
    )


def setup_run(
    cfg: Config,
    out: Path,
    *,
    device: torch.device | None = None,
    checkpoint_root: Path | None = None,
    origin: float | None = None,
) -> Run:
    """Join the process group, load the data, build the model under its numerics backend and the engine."""
    laps = Laps()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device or select_device(cfg.train.device)
    rank, world = init_distributed(device)
    laps("process_group")
    corpus, stream, eval_rows, spec = _load_data(cfg)
    laps("data")
    model = build_model(spec, seed=cfg.effective_init_seed)
    checksum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    backend = make_backend(cfg.numerics, device)
    wrapped = backend.wrap(model, seed=cfg.effective_init_seed + SR_SEED_OFFSET)
    laps("model")
    if cfg.train.compile:
        compile_model(cfg, backend, model, device)
        laps("compile")
    engine = build_engine(wrapped, cfg, world, device, backend)
    backend.attach(engine)
    laps("engine")
    return Run(
        cfg=cfg,
        out=out,
        device=device,
        rank=rank,
        world=world,
        model=model,
        spec=spec,
        backend=backend,
        engine=engine,
        corpus=corpus,
        stream=stream,
        eval_shard=shard_eval_set(eval_rows, rank, world, cfg.train.micro_batch_size),
        checkpoint_dir=checkpoint_root or out / "checkpoints",
        init_checksum=checksum,
        origin=time.time() if origin is None else origin,
        laps=laps,
    )
