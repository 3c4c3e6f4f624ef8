"""Training-step throughput: robustprec's DeepSpeed trainer vs a plain PyTorch loop on the same model and batches.

    python benchmarks/throughput.py --presets gpt2-124m,llama-350m --backends bf16,fp8 --seq-len 1024 --batch 16 \
        --micro 0 --steps 30 [--warmup 3] [--no-compile] [--profile] [--reference-gpt] [--data PATH] \
        [--set KEY=VALUE ...] [--json OUT.json]

For each preset x backend: tokens/s and BF16-equivalent MFU of robustprec's trainer (`robustprec.train.loop.train`)
and of a plain loop (same model and numerics backend, torch.compile unless --no-compile, fused AdamW on CUDA,
SDPA, grad clip), and their ratio; then per preset each backend's speedup over bf16. Both loops time steps
`warmup .. steps-1` only (compilation happens in the first steps), each step ended by a CUDA synchronisation:
the trainer's own `step_time_s` (its loss read-back synchronises), the plain loop's `torch.cuda.synchronize()`.

--profile: torch.profiler over 3 steps after the timed ones (one profiler warm-up step first), for the plain
loop and for the trainer (stepped from a `Console` callback of `train()`, so start-up is never recorded): CUDA
kernel time per step by category, step wall time, GPU-busy fraction (kernel time / wall), GEMM and attention
TFLOP/s. On CPU the categories come from CPU op self times.
--reference-gpt: also an independent minimal GPT-2 (defined below) for gpt2-flavoured presets, bf16, plain loop.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustprec.config import Config, load_config
from robustprec.data.batches import BatchStream, split_tokens
from robustprec.data.corpus import load_corpus
from robustprec.data.tokenizer import load_tokenizer
from robustprec.errors import ConfigError
from robustprec.model.flops import detect_peak_flops, matmul_params, training_flops_per_token
from robustprec.model.presets import ModelSpec, resolve_spec
from robustprec.model.transformer import build_model
from robustprec.numerics.backends import make_backend
from robustprec.provenance import device_name
from robustprec.train.engine import param_groups
from robustprec.train.loop import to_batch, train
from robustprec.train.reporting import Console
from robustprec.train.run import compile_in_place

PROFILE_STEPS = 3
HOST_TOP = 25
ALLOCATOR_EVENTS = ("num_device_alloc", "num_device_free", "num_alloc_retries", "num_sync_all_streams")
REFERENCE = "bf16 (independent GPT)"
# Checked in this order, on lower-cased kernel names: attention before GEMM, since cuDNN / CUTLASS attention
# kernels carry "sm90" or "cutlass" too.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "sm90", "cublas", "matmul")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("triton", ()),  # names starting with triton_ (Inductor's fused elementwise / reductions)
    ("softmax/CE", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),  # eager (not fused) loss kernels
    ("nccl", ("nccl",)),
    ("copy/cast", ("memcpy", "memset", "copy", "cast")),
)
CATEGORY_NAMES = [c for c, _ in CATEGORIES] + ["other"]
CPU_GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm")


def category(name: str, cpu: bool = False) -> str:
    """Kernel category of a CUDA kernel name (or, with `cpu`, of a CPU op name)."""
    n = name.lower()
    for cat, keys in CATEGORIES:
        if cat == "triton":
            if n.startswith("triton_"):
                return cat
        elif any(k in n for k in keys) or (cpu and cat == "gemm" and n in CPU_GEMM_OPS):
            return cat
    return "other"


@dataclass(frozen=True)
class Geometry:
    """What a run's FLOPs and MFU are computed from."""

    spec: ModelSpec
    seq: int
    tokens_per_step: int
    peak: float | None

    @property
    def flops_per_token(self) -> int:
        return training_flops_per_token(self.spec, self.seq)

    def mfu(self, tokens_per_s: float) -> float | None:
        """BF16-equivalent MFU, or None where the peak is unknown (CPU, unlisted GPU)."""
        return self.flops_per_token * tokens_per_s / self.peak if self.peak else None


@dataclass
class LoopResult:
    """Wall time of the timed steps of one loop, and its profile if one was taken."""

    step_s: list[float]
    tokens_per_step: int
    profile: dict[str, Any] | None = None
    host: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    allocator: dict[str, float] | None = None  # CUDA allocator events per timed step
    sync_wait_s: list[float] = field(default_factory=list)  # per timed step: the end-of-step sync's wait

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step * len(self.step_s) / sum(self.step_s)

    @property
    def step_ms(self) -> float:
        return 1e3 * sum(self.step_s) / len(self.step_s)


class StepClock:
    """Marks the wall clock (after a CUDA sync) at the end of every training step: `step()` is called there.
    With `profile_after=n`, torch.profiler (schedule: wait n steps, 1 warm-up step) records PROFILE_STEPS steps."""

    def __init__(
        self, cuda: bool, window: tuple[int, int], profile_after: int | None = None, host: bool = False
    ) -> None:
        self.cuda, self.skip, self.active = cuda, profile_after, PROFILE_STEPS
        self.window = window  # the timed steps first .. stop-1 (allocator events, host profile)
        self.allocator_marks: list[dict[str, int]] = []
        self.host = cProfile.Profile() if host else None
        self.prof: torch.profiler.profile | None = None
        if profile_after is not None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            acts += [torch.profiler.ProfilerActivity.CUDA] if cuda else []
            sched = torch.profiler.schedule(wait=profile_after, warmup=1, active=self.active, repeat=1)
            self.prof = torch.profiler.profile(activities=acts, schedule=sched)
        self.marks: list[float] = []
        self.sync_waits: list[float] = []  # per step: how long the end-of-step sync waited for the GPU

    def __enter__(self) -> StepClock:
        if self.prof is not None:
            self.prof.__enter__()
        self.marks.append(time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prof is not None:
            self.prof.__exit__(*exc)

    def step(self, *_: Any) -> None:
        queued = time.perf_counter()
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.sync_waits.append(self.marks[-1] - queued)
        if self.prof is not None:
            self.prof.step()
        done = len(self.marks) - 1  # steps finished so far
        if self.cuda and done in self.window:
            stats = torch.cuda.memory_stats()
            self.allocator_marks.append({k: int(stats.get(k, 0)) for k in ALLOCATOR_EVENTS})
        if self.host is not None:
            if done == self.window[0]:
                self.host.enable()
            elif done == self.window[1]:
                self.host.disable()

    def allocator_events(self) -> dict[str, float] | None:
        """CUDA caching-allocator events per timed step (device mallocs and frees, retries after an out-of-memory,
        syncs of all streams: each one stalls the host until the GPU drains), or None off CUDA."""
        if len(self.allocator_marks) != 2:
            return None
        steps = self.window[1] - self.window[0]
        before, after = self.allocator_marks
        return {k: (after[k] - before[k]) / steps for k in ALLOCATOR_EVENTS}

    def host_profile(self, top: int = HOST_TOP) -> list[dict[str, Any]]:
        """Python functions by own (tottime) host time per step over the host window (cProfile)."""
        assert self.host is not None
        steps = self.window[1] - self.window[0]
        stats = pstats.Stats(self.host).stats  # type: ignore[attr-defined]
        rows = [{"function": f"{Path(file).name}:{line}({name})", "calls": nc / steps,
                 "own_ms": 1e3 * tt / steps, "cum_ms": 1e3 * ct / steps}
                for (file, line, name), (_, nc, tt, ct, _) in stats.items()]  # fmt: skip
        return sorted(rows, key=lambda r: -r["own_ms"])[:top]

    def result(self, geo: Geometry) -> LoopResult:
        """The timed steps' wall times, how long each one's closing sync waited for the GPU (the GPU work left when
        the host had queued the step: near 0 when the host is the bottleneck), allocator events and profiles."""
        first, stop = self.window
        return LoopResult(
            self.step_seconds(first, stop),
            geo.tokens_per_step,
            profile=self.profile(geo) if self.prof is not None else None,
            host=self.host_profile() if self.host is not None else None,
            allocator=self.allocator_events(),
            sync_wait_s=self.sync_waits[first:stop],
        )

    def step_seconds(self, first: int, stop: int) -> list[float]:
        """Wall time of steps `first .. stop-1` (step k ran between marks k and k+1)."""
        if len(self.marks) <= stop:
            raise RuntimeError(f"only {len(self.marks) - 1} steps ran, {stop} needed")
        return [self.marks[k + 1] - self.marks[k] for k in range(first, stop)]

    def profile(self, geo: Geometry) -> dict[str, Any]:
        """Kernel (or CPU op) time per step by category, wall time, busy fraction, GEMM/attention TFLOP/s."""
        assert self.prof is not None and self.skip is not None
        first = self.skip + 1  # after the profiler's warm-up step
        wall_ms = 1e3 * sum(self.step_seconds(first, first + self.active)) / self.active
        cats = dict.fromkeys(CATEGORY_NAMES, 0.0)
        launches = dict.fromkeys(CATEGORY_NAMES, 0)  # kernels (or CPU ops): a launch-bound model's cost
        per_name: dict[str, float] = {}
        for evt in self.prof.key_averages():
            # user annotations (ProfilerStep#, record_function ranges) span kernels: not kernel time themselves
            if getattr(evt, "is_user_annotation", False) or evt.key.startswith(("ProfilerStep", "[")):
                continue
            if self.cuda:
                if evt.device_type != torch.autograd.DeviceType.CUDA:
                    continue
                us = evt.self_device_time_total
            else:
                us = evt.self_cpu_time_total
            ms = us / 1e3 / self.active
            cat = category(evt.key, cpu=not self.cuda)
            launches[cat] += evt.count
            cats[cat] += ms
            per_name[evt.key] = per_name.get(evt.key, 0.0) + ms
        busy = sum(cats.values())
        gemm_flops = 6 * matmul_params(geo.spec) * geo.tokens_per_step
        attn_flops = geo.flops_per_token * geo.tokens_per_step - gemm_flops
        gemm_tf = gemm_flops / cats["gemm"] / 1e9 if self.cuda and cats["gemm"] > 0 else None
        attn_tf = attn_flops / cats["attention"] / 1e9 if self.cuda and cats["attention"] > 0 else None
        top = sorted(per_name.items(), key=lambda kv: -kv[1])[:8]
        return {
            "activity": "cuda" if self.cuda else "cpu (no CUDA)",
            "steps": self.active,
            "step_ms": wall_ms,
            "busy_ms": busy,
            "busy_fraction": busy / wall_ms,
            "kernels_per_step": sum(launches.values()) / self.active,
            "kernels_per_step_by_category": {k: n / self.active for k, n in launches.items()},
            "categories_ms": cats,
            "gemm_flops_per_step": gemm_flops,
            "attention_flops_per_step": attn_flops,
            "gemm_tflops": gemm_tf,
            "gemm_fraction_of_peak": gemm_tf * 1e12 / geo.peak if gemm_tf and geo.peak else None,
            "attention_tflops": attn_tf,
            "top": [{"name": n, "ms": ms, "category": category(n, cpu=not self.cuda)} for n, ms in top],
        }


def release(device: torch.device) -> float:
    """Free what the last run left (compiled graphs, cached blocks); returns GiB still allocated."""
    gc.collect()
    torch._dynamo.reset()
    gc.collect()
    if device.type != "cuda":
        return 0.0
    torch.cuda.empty_cache()
    left = torch.cuda.memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return left


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def make_config(args: argparse.Namespace, preset: str, backend: str, steps: int) -> Config:
    """The trainer's config for one run; the plain loop reads its geometry and numerics from it too."""
    micro = args.micro or args.batch
    overrides = [
        f"model.preset={preset}", f"numerics.backend={backend}", f"train.steps={steps}",
        f"train.seq_len={args.seq_len}", f"train.global_batch_size={args.batch}", f"train.micro_batch_size={micro}",
        f"train.eval_interval={10 * steps}", "train.eval_sequences=8", "train.sharpness.enabled=false",
        f"train.compile={args.compile}", f"data.path={args.data}", "train.divergence.stop_early=false",
        *args.set,
    ]  # fmt: skip
    return load_config(None, overrides)


def run_robustprec(
    cfg: Config, geo: Geometry, warm: int, timed: int, profile: bool, host: bool = False
) -> LoopResult:
    """Time `train()` between its per-row `Console` callbacks (so its per-step bookkeeping counts), steps `warm ..
    timed-1`. `cfg.train.steps` must leave one step past those (and the profiled ones): the last step evaluates."""
    cuda = torch.cuda.is_available()
    clock = StepClock(cuda, (warm, timed), profile_after=timed if profile else None, host=host)
    rows: list[dict[str, Any]] = []

    def on_step(row: dict[str, Any]) -> None:
        rows.append(row)
        clock.step()

    with tempfile.TemporaryDirectory() as tmp, clock:
        summary = train(cfg, Path(tmp) / "run", callbacks=[Console(on_step)])
    res = clock.result(geo)
    own = [r["step_time_s"] for r in rows if warm <= r["step"] < timed]  # the trainer's own step timer
    res.extra = {
        "robustprec_step_timer_tokens_per_s": geo.tokens_per_step * len(own) / sum(own),
        "robustprec_summary_tokens_per_s": summary["tokens_per_s"],  # steps 1.. (profiled ones too)
        "robustprec_summary_mfu": summary["mfu"],
        "robustprec_first_step_s": rows[0]["step_time_s"],  # the trainer's timer: compilation included
    }
    return res


def timed_loop(
    step_fn: Callable[[int], None],
    warm: int,
    timed: int,
    geo: Geometry,
    device: torch.device,
    profile: bool,
    host: bool = False,
) -> LoopResult:
    """Run `step_fn(step)` for `timed` steps (plus a profiler warm-up step and PROFILE_STEPS recorded ones with
    `profile`); the wall time of steps `warm .. timed-1` is what counts."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    with StepClock(cuda, (warm, timed), profile_after=timed if profile else None, host=host) as clock:
        for s in range(timed + (1 + PROFILE_STEPS if profile else 0)):
            step_fn(s)
            clock.step()
    return clock.result(geo)


def _compiled(cfg: Config, call: nn.Module, blocks_owner: nn.Module) -> nn.Module:
    """What a plain loop calls under `train.compile`/`compile_scope`: `call` compiled as one graph, or `call` as it
    is with the blocks of `blocks_owner` compiled in place."""
    if not cfg.train.compile:
        return call
    if cfg.train.compile_scope == "blocks":
        compile_in_place(blocks_owner, "blocks")  # type: ignore[arg-type]
        return call
    return torch.compile(call)  # type: ignore[return-value]


def _plain_step(
    stream: BatchStream,
    micro_batch_size: int,
    device: torch.device,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    clip: float,
) -> Callable[[int], None]:
    """One optimizer step of a plain loop: accumulate the micro-batches' mean loss, clip, step."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step(s: int) -> None:
        micro = stream.micro_batches(s, 0, 1, micro_batch_size)
        for rows in micro:
            x, y = to_batch(rows, device)
            (loss_of(x, y) / len(micro)).backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run_plain(
    cfg: Config,
    stream: BatchStream,
    geo: Geometry,
    device: torch.device,
    warm: int,
    timed: int,
    profile: bool,
    host: bool = False,
) -> LoopResult:
    """The plain loop: robustprec's model and numerics backend, no engine, no records."""
    backend = make_backend(cfg.numerics, device)
    model = backend.wrap(build_model(geo.spec, seed=cfg.effective_init_seed))
    backend.count_numerics(False)  # no telemetry readings in this loop
    model.to(device)
    o = cfg.optim
    opt = torch.optim.AdamW(
        param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps, fused=device.type == "cuda"
    )
    fwd = _compiled(cfg, model, model.model)
    step = _plain_step(
        stream,
        cfg.train.micro_batch_size,
        device,
        lambda x, y: fwd(x, y)["loss"],
        model,
        opt,
        o.grad_clip if o.grad_clip > 0 else math.inf,
    )
    return timed_loop(step, warm, timed, geo, device, profile, host)


class _RefBlock(nn.Module):
    """Pre-LayerNorm block: fused qkv, causal SDPA, GELU(tanh) MLP 4x."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(d, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class ReferenceGPT(nn.Module):
    """An independent minimal GPT-2: token + position embeddings, pre-LN blocks, tied lm_head."""

    def __init__(self, d: int, layers: int, heads: int, seq: int, vocab: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(_RefBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(x, targets)

    def head(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def run_reference(
    cfg: Config,
    stream: BatchStream,
    geo: Geometry,
    device: torch.device,
    warm: int,
    timed: int,
    profile: bool,
) -> LoopResult:
    """The independent GPT-2 in the same plain loop: bf16 autocast, fused AdamW, grad clip 1.0, torch.compile."""
    spec = geo.spec
    assert spec.vocab_size is not None
    torch.manual_seed(cfg.effective_init_seed)
    model = ReferenceGPT(spec.d_model, spec.n_layers, spec.n_heads, geo.seq, spec.vocab_size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, fused=device.type == "cuda")
    fwd = _compiled(cfg, model, model)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fwd(x, y)

    step = _plain_step(stream, cfg.train.micro_batch_size, device, loss, model, opt, 1.0)
    return timed_loop(step, warm, timed, geo, device, profile)


def _fmt(v: float | None, spec: str = ",.0f", scale: float = 1.0, suffix: str = "") -> str:
    return "-" if v is None else f"{scale * v:{spec}}{suffix}"


def _ms(mean: float | None, steps: list[float] | None) -> str:
    """Mean ms per step and, in brackets, the median (robust to a compile or a telemetry step in the window)."""
    return "-" if mean is None or not steps else f"{mean:.1f} ({statistics.median(steps):.1f})"


def print_report(out: dict[str, Any]) -> None:
    """Markdown tables of the throughput rows, speedups and profiles."""
    s = out["settings"]
    print(f"\ndevice: {out['device']}, torch {out['torch']}, deepspeed {out['deepspeed']}")
    print(f"command: {out['command']}")
    print(f"settings: seq {s['seq_len']}, batch {s['batch']}, micro {s['micro']}, steps {s['steps']} "
          f"(timed: {s['warmup']}..{s['steps'] - 1}), compile {s['compile']}, data {s['data'] or 'embedded'}, "
          f"overrides {s['set'] or '-'}, peak {_fmt(s['peak_flops'], '.1f', 1e-12, ' TFLOP/s')}")  # fmt: skip
    pct = dict(spec=".1f", scale=100.0, suffix="%")
    print("\n| preset | backend | robustprec tok/s | plain loop tok/s | ratio | robustprec MFU | plain MFU "
          "| robustprec ms/step (median) | plain ms/step (median) |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in out["rows"]:
        print(f"| {r['preset']} | {r['backend']} | {_fmt(r['robustprec_tokens_per_s'])} "
              f"| {_fmt(r['plain_tokens_per_s'])} | {_fmt(r['ratio'], '.3f')} | {_fmt(r['robustprec_mfu'], **pct)} "
              f"| {_fmt(r['plain_mfu'], **pct)} | {_ms(r['robustprec_step_ms'], r['robustprec_steps_ms'])} "
              f"| {_ms(r['plain_step_ms'], r['plain_steps_ms'])} |")  # fmt: skip
    if out["speedups"]:
        print("\n| preset | speedup | robustprec | plain loop |\n|---|---|---|---|")
        for sp in out["speedups"]:
            print(f"| {sp['preset']} | {sp['backend']} / bf16 | {_fmt(sp['robustprec'], '.3f')} "
                  f"| {_fmt(sp['plain'], '.3f')} |")  # fmt: skip
    if out["profiles"]:
        what = "CUDA kernel" if out["profiles"][0]["activity"] == "cuda" else "CPU op self (no CUDA)"
        print(f"\nprofile, {PROFILE_STEPS} steps after the timed ones: {what} time in ms per step (share of it), "
              "busy = that time / step wall time")  # fmt: skip
        print(f"| preset | backend | loop | step ms | busy | kernels/step | {' | '.join(CATEGORY_NAMES)} "
              f"| GEMM TFLOP/s | attn TFLOP/s |\n" + "|---" * (len(CATEGORY_NAMES) + 8) + "|")  # fmt: skip
        for p in out["profiles"]:
            busy = p["busy_ms"] or math.inf
            cats = " | ".join(f"{ms:.2f} ({100 * ms / busy:.0f}%)" for ms in p["categories_ms"].values())
            gemm = _fmt(p["gemm_tflops"], ".0f")
            if p["gemm_fraction_of_peak"] is not None:
                gemm += f" ({100 * p['gemm_fraction_of_peak']:.0f}% of bf16 peak)"
            print(f"| {p['preset']} | {p['backend']} | {p['loop']} | {p['step_ms']:.1f} "
                  f"| {100 * p['busy_fraction']:.0f}% | {p['kernels_per_step']:.0f} | {cats} | {gemm} | {_fmt(p['attention_tflops'], '.0f')} |")  # fmt: skip
        for p in out["profiles"]:
            top = "; ".join(f"{t['name'][:70]} [{t['category']}] {t['ms']:.2f}" for t in p["top"][:5])
            print(f"top ms/step, {p['preset']} {p['backend']} {p['loop']}: {top}")
    for hp in out.get("host_profiles", []):
        print(
            f"\nhost time per step (cProfile over the timed steps), {hp['preset']} {hp['backend']} {hp['loop']}:"
        )
        print("| function | calls/step | own ms/step | cumulative ms/step |\n|---|---|---|---|")
        for r in hp["top"]:
            print(f"| {r['function']} | {r['calls']:.1f} | {r['own_ms']:.2f} | {r['cum_ms']:.2f} |")
    for note in out["notes"]:
        print(f"note: {note}")


def run_preset(
    args: argparse.Namespace, preset: str, device: torch.device, peak: float | None, out: dict
) -> None:
    """Every backend of one preset through both loops (and the independent GPT); appends to `out`."""
    rows, notes = out["rows"], out["notes"]
    warm, timed = args.warmup, args.steps
    # the trainer runs one more step (it evaluates at its last one), and the profiled ones after that
    ours_steps = timed + 1 + (1 + PROFILE_STEPS if args.profile else 0)
    base = make_config(args, preset, "bf16", ours_steps)
    tok = load_tokenizer(base.data.tokenizer)
    train_tokens, _ = split_tokens(load_corpus(base.data, tok).tokens, base.data.eval_fraction, args.seq_len)
    stream = BatchStream(train_tokens, args.seq_len, args.batch, base.effective_data_seed)
    geo = Geometry(
        resolve_spec(base.model, tok.vocab_size, args.seq_len), args.seq_len, args.batch * args.seq_len, peak
    )
    common = {"kind": "compare", "preset": preset, "tokens_per_step": geo.tokens_per_step,
              "flops_per_token": geo.flops_per_token, "timed_steps": timed - warm}  # fmt: skip
    interval = base.train.telemetry_interval
    if base.train.compile and warm < interval <= timed:
        notes.append(
            f"step {interval - 1}, the first telemetry step (train.telemetry_interval={interval}), is timed: "
            "simulated backends compile their counting graph there (66-68 s at gpt2-124m on an H200); see the "
            "median, or use --warmup >= the interval"
        )
    by_backend: dict[str, dict[str, Any]] = {}
    for backend in split_backends(args.backends):
        cfg = make_config(args, preset, backend, ours_steps)
        if make_backend(cfg.numerics, device).deepspeed_config():
            notes.append(f"{backend}: the plain loop has no equivalent of its DeepSpeed engine settings")
        try:
            ours = run_robustprec(cfg, geo, warm, timed, args.profile, args.host_profile)
        # e.g. a recipe's blocks do not divide this model's widths: the other rows run
        except ConfigError as e:
            notes.append(f"{preset} {backend}: not run: {e}")
            print(f"[throughput] {preset} {backend}: not run: {e}", flush=True)
            continue
        ours_mem, left = peak_gib(device), release(device)
        wants_plain = args.plain == "all" or backend in args.plain.split(";")
        plain = (
            run_plain(cfg, stream, geo, device, warm, timed, args.profile, args.host_profile)
            if wants_plain
            else None
        )
        plain_mem, left2 = (peak_gib(device), release(device)) if plain else (None, 0.0)
        if max(left, left2) > 0.5:
            notes.append(f"{preset} {backend}: {max(left, left2):.1f} GiB still allocated after a run")
        p_tps = plain.tokens_per_s if plain else None
        row = common | {
            "backend": backend, "robustprec_tokens_per_s": ours.tokens_per_s, "plain_tokens_per_s": p_tps,
            "ratio": ours.tokens_per_s / p_tps if p_tps else None, "robustprec_mfu": geo.mfu(ours.tokens_per_s),
            "plain_mfu": geo.mfu(p_tps) if p_tps else None, "robustprec_step_ms": ours.step_ms,
            "plain_step_ms": plain.step_ms if plain else None,
            "robustprec_peak_mem_gib": ours_mem, "plain_peak_mem_gib": plain_mem, **ours.extra,
            "robustprec_steps_ms": [1e3 * t for t in ours.step_s],
            "plain_steps_ms": [1e3 * t for t in plain.step_s] if plain else None,
            "robustprec_allocator": ours.allocator, "plain_allocator": plain.allocator if plain else None,
            "robustprec_sync_wait_ms": [1e3 * t for t in ours.sync_wait_s],
            "plain_sync_wait_ms": [1e3 * t for t in plain.sync_wait_s] if plain else None,
        }  # fmt: skip
        rows.append(row)
        by_backend[backend] = row
        print(f"[throughput] {preset} {backend}: robustprec {ours.step_ms:.1f} ms/step (median "
              f"{statistics.median(row['robustprec_steps_ms']):.1f}), plain {_fmt(row['plain_step_ms'], '.1f')} "
              f"ms/step; first step {ours.extra['robustprec_first_step_s']:.1f} s; end-of-step sync waited "
              f"(median) {_wait(ours)} / {_wait(plain)} ms"
              f"{_allocator_note(ours.allocator)}", flush=True)  # fmt: skip
        _collect_profiles(out, {"preset": preset, "backend": backend}, ours, plain)
        if args.json:  # what is measured so far survives a time limit
            Path(args.json).write_text(json.dumps(out, indent=1))
    bf = by_backend.get("bf16")
    for b, r in by_backend.items():
        if bf is not None and b != "bf16":
            out["speedups"].append({"preset": preset, "backend": b,
                                    "robustprec": r["robustprec_tokens_per_s"] / bf["robustprec_tokens_per_s"],
                                    "plain": r["plain_tokens_per_s"] / bf["plain_tokens_per_s"]
                                    if r["plain_tokens_per_s"] and bf["plain_tokens_per_s"] else None})  # fmt: skip
    if not args.reference_gpt:
        return
    if geo.spec.flavour != "gpt2" or geo.spec.d_ff != 4 * geo.spec.d_model:
        notes.append(f"independent GPT skipped for {preset}: not a GPT-2 preset (LayerNorm, GELU MLP 4x)")
        return
    ref = run_reference(base, stream, geo, device, warm, timed, args.profile)
    rows.append(common | {
        "kind": "reference", "backend": REFERENCE, "robustprec_tokens_per_s": None,
        "plain_tokens_per_s": ref.tokens_per_s, "ratio": None, "robustprec_mfu": None,
        "plain_mfu": geo.mfu(ref.tokens_per_s), "robustprec_step_ms": None, "plain_step_ms": ref.step_ms,
        "plain_peak_mem_gib": peak_gib(device), "robustprec_steps_ms": None,
        "plain_steps_ms": [1e3 * t for t in ref.step_s],
    })  # fmt: skip
    release(device)
    if ref.profile is not None:
        out["profiles"].append(
            {"preset": preset, "backend": REFERENCE, "loop": "independent GPT", **ref.profile}
        )
    if bf is not None:
        gap = bf["plain_tokens_per_s"] / ref.tokens_per_s
        notes.append(f"{preset}: plain loop tok/s, robustprec's model / independent GPT (bf16) = {gap:.3f}")


def _collect_profiles(
    out: dict[str, Any], key: dict[str, str], ours: LoopResult, plain: LoopResult | None
) -> None:
    """The kernel and host profiles of one row's loops into `out` (each kernel profile printed as a line)."""
    for loop, res in (("robustprec", ours), ("plain", plain)):
        if res is not None and res.profile is not None:
            out["profiles"].append(key | {"loop": loop, **res.profile})
            _print_profile_line(out["profiles"][-1])
        if res is not None and res.host is not None:
            out["host_profiles"].append(key | {"loop": loop, "top": res.host})


def _wait(res: LoopResult | None) -> str:
    """Median wait of a loop's end-of-step sync (robustprec's trainer has synced already: near 0 there)."""
    return "-" if res is None or not res.sync_wait_s else f"{1e3 * statistics.median(res.sync_wait_s):.1f}"


def _allocator_note(events: dict[str, float] | None) -> str:
    """The allocator events of robustprec's timed steps, when any happened (each can stall the host)."""
    if not events or not any(events.values()):
        return ""
    return "; allocator per step: " + ", ".join(
        f"{k.removeprefix('num_')} {v:.2f}" for k, v in events.items()
    )


def _print_profile_line(p: dict[str, Any]) -> None:
    cats = ", ".join(
        f"{k} {ms:.2f} ({p['kernels_per_step_by_category'][k]:.0f})"
        for k, ms in p["categories_ms"].items()
        if ms >= 0.005
    )
    print(f"[profile] {p['preset']} {p['backend']} {p['loop']}: {p['step_ms']:.1f} ms/step, "
          f"{100 * p['busy_fraction']:.0f}% busy, {p['kernels_per_step']:.0f} kernels/step; ms (kernels): {cats}", flush=True)  # fmt: skip


def split_backends(spec: str) -> list[str]:
    """Comma-separated backends; commas inside a sim format's knobs stay (``sim:E5M2:overflow=saturate,rounding=
    stochastic``): a new item starts only at a plain backend name or at ``sim:``."""
    return re.split(r",(?=(?:fp32|bf16|fp16|fp8|te)(?:,|$)|sim:)", spec)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints the tables and returns (and with --json writes) the results."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--presets", default="gpt2-124m,llama-350m")
    ap.add_argument("--backends", default="bf16,fp8")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=0, help="micro-batch size (0: the whole batch)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing (compilation)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--host-profile", action="store_true", help="cProfile the timed steps: host time per Python function"
    )
    ap.add_argument("--reference-gpt", action="store_true")
    ap.add_argument("--data", default="", help="corpus path (default: embedded)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument(
        "--plain", default="all", help="backends (';'-separated) that also run the plain loop, or 'all'"
    )
    args = ap.parse_args(argv)
    if not 1 <= args.warmup < args.steps:
        ap.error(f"need 1 <= --warmup ({args.warmup}) < --steps ({args.steps}); step 0 includes set-up")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    peak = detect_peak_flops(device_name("cuda")) if cuda else None
    import deepspeed

    out: dict[str, Any] = {
        "device": device_name(device.type),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
        "settings": {k: getattr(args, k) for k in ("presets", "backends", "seq_len", "batch", "micro", "steps",
                                                    "warmup", "compile", "profile", "host_profile", "reference_gpt", "data",
                                                    "set")}
        | {"peak_flops": peak, "profile_steps": PROFILE_STEPS},
        "rows": [], "speedups": [], "profiles": [], "host_profiles": [], "notes": [],
    }  # fmt: skip
    release(device)
    for preset in args.presets.split(","):
        run_preset(args, preset, device, peak, out)
    if args.profile:
        out["notes"].append(
            "robustprec's trainer is profiled through a train() callback (its set-up is not recorded); "
            "GEMM TFLOP/s counts 6 x matmul weights x tokens, attention TFLOP/s the rest of training_flops_per_token"
        )
    print_report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if torch.distributed.is_initialized():  # the trainers' one-process group
        torch.distributed.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
