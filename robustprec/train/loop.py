"""One worker's training loop on a DeepSpeed engine: schedule, eval, divergence, sharpness, telemetry,
throughput/MFU, checkpoints and resume. Rank 0 writes the run directory; every rank takes the same decisions."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from robustprec import provenance
from robustprec.config import Config
from robustprec.data.batches import BatchStream, eval_sequences, split_tokens
from robustprec.data.corpus import load_corpus
from robustprec.data.tokenizer import load_tokenizer
from robustprec.errors import RobustprecError
from robustprec.model.flops import detect_peak_flops, training_flops_per_token
from robustprec.model.presets import resolve_spec
from robustprec.model.transformer import build_model, count_parameters
from robustprec.numerics.backends import make_backend
from robustprec.tracking.store import (
    CONFIG_FILE,
    CURVE_FILE,
    SUMMARY_FILE,
    CurveWriter,
    read_parts,
    write_json,
    write_text,
)
from robustprec.train import faults
from robustprec.train.divergence import DivergenceMonitor
from robustprec.train.engine import build_engine, init_distributed, select_device
from robustprec.train.schedule import lr_at
from robustprec.train.sharpness import sharpness_from_sums, sharpness_sums

StepCallback = Callable[[dict[str, Any]], None]
ReportCallback = Callable[[dict[str, Any], Path | None], None]
CHECKPOINT_DIR = "checkpoints"


class _Reducer:
    """Sums of floats across ranks (no-op for one worker)."""

    def __init__(self, world: int, device: torch.device) -> None:
        self.world, self.device = world, device

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def max(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint (tag directory) under a run's `checkpoints/` folder, if any."""
    latest = ckpt_dir / "latest"
    if not latest.exists():
        return None
    tag_dir = ckpt_dir / latest.read_text().strip()
    return tag_dir if tag_dir.is_dir() else None


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    tags = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def to_batch(rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows (seq_len + 1 wide) on `device` as (inputs, next-token targets)."""
    t = torch.from_numpy(rows).to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    on_step: StepCallback | None = None,
    report: ReportCallback | None = None,
    resume_from: Path | None = None,
    checkpoint_root: Path | None = None,
    device: torch.device | None = None,
    origin_time: float | None = None,
) -> dict[str, Any]:
    """Train one trial into `out_dir`; returns the summary (also written to `summary.json` by rank 0).

    `resume=True` continues from the latest checkpoint in `out_dir/checkpoints` if one exists; `resume_from`
    names a checkpoint (tag directory) explicitly, e.g. one restored by Ray Train. Checkpoints are saved under
    `checkpoint_root` (default `out_dir/checkpoints`; every rank passes its own folder when storage is not shared).
    A checkpoint carries the curve recorded so far, so a resume restores the record even on another machine.
    `report(metrics, checkpoint_tag_dir)` is called on every rank at each eval and checkpoint (Ray Train hooks in
    here). `origin_time` (wall clock) is when the caller asked for the trial: `startup_s` in the summary counts
    from it to the end of the first optimizer step.
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    origin = time.time() if origin_time is None else origin_time
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = device or select_device(cfg.train.device)
    rank, world = init_distributed(device)
    is_main = rank == 0
    reduce = _Reducer(world, device)

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    corpus = load_corpus(cfg.data, tokenizer)
    seq = cfg.train.seq_len
    train_tokens, eval_tokens = split_tokens(corpus.tokens, cfg.data.eval_fraction, seq)
    stream = BatchStream(train_tokens, seq, cfg.train.global_batch_size, cfg.effective_data_seed)
    eval_rows = eval_sequences(eval_tokens, seq, cfg.train.eval_sequences)
    shard = np.array_split(np.arange(len(eval_rows)), world)[rank]
    eval_rows_local = eval_rows[shard]
    n_sharp = min(cfg.train.sharpness.sequences, len(eval_rows))
    sharp_local = shard[shard < n_sharp]

    spec = resolve_spec(cfg.model, tokenizer.vocab_size, seq)
    if int(corpus.tokens.max()) >= spec.vocab_size:
        raise RobustprecError(
            f"corpus holds token ids up to {int(corpus.tokens.max())}, beyond model.vocab_size {spec.vocab_size}"
        )
    model = build_model(spec, seed=cfg.effective_init_seed)
    init_checksum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    backend = make_backend(cfg.numerics, device)
    gen = torch.Generator(device=device).manual_seed(cfg.effective_init_seed + 7919)
    backend.prepare_model(model, generator=gen)
    engine = build_engine(model, cfg, world, device, backend.deepspeed_config())
    backend.attach(engine)
    zero = cfg.train.zero_stage
    if cfg.train.compile:
        engine.compile()

    flops_tok = training_flops_per_token(spec, seq)
    peak = cfg.train.peak_flops or (
        detect_peak_flops(provenance.device_name("cuda")) if device.type == "cuda" else None
    )
    div = cfg.train.divergence
    monitor = DivergenceMonitor(
        ema_alpha=div.ema_alpha,
        spike_tol=div.spike_tol,
        warmup_steps=cfg.optim.warmup_steps if div.warmup_steps is None else div.warmup_steps,
    )
    evals: list[tuple[int, float]] = []
    start_step, tokens_per_step, restarts = 0, cfg.train.global_batch_size * seq, 0
    ckpt_dir = checkpoint_root or out / CHECKPOINT_DIR
    writer = CurveWriter(out) if is_main else None

    if resume_from is None and resume:
        resume_from = latest_checkpoint(out / CHECKPOINT_DIR)
    if resume_from is not None:
        _, client = engine.load_checkpoint(str(resume_from.parent), tag=resume_from.name)
        if client is None:
            raise RobustprecError(f"could not load checkpoint {str(resume_from)!r}")
        start_step = int(client["step"]) + 1
        monitor.load_state_dict(client["monitor"])
        evals = [tuple(e) for e in client["evals"]]  # type: ignore[misc]
        restarts = int(client.get("restarts", 0)) + 1
    if writer:
        snapshot = resume_from / CURVE_FILE if resume_from is not None else None
        if snapshot is not None and snapshot.exists():
            writer.reset(snapshot)  # the checkpoint's own copy of the curve up to its step
        else:
            writer.truncate_after(start_step - 1)  # drop rows past the checkpoint (or all, on a fresh start)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / CONFIG_FILE, cfg.to_yaml())

    def evaluate() -> dict[str, float]:
        engine.eval()
        ce_sum, count, base, worst, n_sh = 0.0, 0, 0.0, 0.0, 0
        tele: dict[str, Any] = {}
        with torch.no_grad():
            mb = cfg.train.micro_batch_size
            for i in range(0, len(eval_rows_local), mb):
                x, y = to_batch(eval_rows_local[i : i + mb], device)
                res = engine(x, y, return_logits=True, telemetry=i == 0)
                ce_sum += float(res["ce_loss"]) * y.numel()
                count += y.numel()
                if i == 0:
                    tele = res["telemetry"]
                if cfg.train.sharpness.enabled:
                    sel = torch.from_numpy(np.isin(shard[i : i + mb], sharp_local)).to(device)
                    logits, tgt = res["logits"][sel], y[sel]
                    if not cfg.train.sharpness.all_positions:
                        logits, tgt = logits[:, -1], tgt[:, -1]
                    if tgt.numel():
                        b, w, n = sharpness_sums(logits, tgt, cfg.train.sharpness.eps)
                        base, worst, n_sh = base + b, worst + w, n_sh + n
        engine.train()
        backend.pop_telemetry()  # numerics counters are per training step: drop what the eval forward added
        ce_sum, count, base, worst, n_sh = reduce.sum([ce_sum, float(count), base, worst, float(n_sh)])
        result = {"eval_loss": ce_sum / max(count, 1)}
        if cfg.train.sharpness.enabled and n_sh:
            result["sharpness"] = sharpness_from_sums(base, worst, int(n_sh))
        if tele:
            layers = reduce.max(tele["max_attn_logit"])
            result["max_attn_logit"] = max(layers)
            result.update({f"max_attn_logit_{i}": v for i, v in enumerate(layers)})
            result["logit_rms"], result["log_partition"] = tele["logit_rms"], tele["log_partition"]
        return result

    if is_main:
        print(
            f"[robustprec] setup {time.perf_counter() - t0:.1f}s: {count_parameters(model):,} params, "
            f"{len(corpus):,} tokens ({corpus.source}), backend {backend.name}, zero {zero}, world {world}",
            flush=True,
        )

    params = [p for p in engine.module.parameters() if p.requires_grad]
    timed_tokens, timed_seconds, step = 0, 0.0, start_step - 1
    stopped_early, startup_s = False, None
    for step in range(start_step, cfg.train.steps):
        faults.maybe_fail(step, rank)
        tic = time.perf_counter()
        lr = lr_at(step, cfg.optim, cfg.train.steps)
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        micro = stream.micro_batches(step, rank, world, cfg.train.micro_batch_size)
        loss_acc = torch.zeros((), dtype=torch.float64, device=device)
        grad_norm: float | None = None
        for j, rows in enumerate(micro):
            x, y = to_batch(rows, device)
            res = engine(x, y)
            engine.backward(res["loss"])
            loss_acc += res["ce_loss"].double()
            if j == len(micro) - 1 and zero == 0:
                clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            engine.step()
        if zero > 0:
            norm = engine.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else None
        # Every rank feeds the divergence monitor the same reduced values, so all ranks stop together.
        loss_sum, norm_sum = reduce.sum(
            [float(loss_acc) / len(micro), math.nan if grad_norm is None else grad_norm]
        )
        loss, skipped = loss_sum / world, engine.skipped_steps
        if grad_norm is not None:
            grad_norm = norm_sum / world
        dt = time.perf_counter() - tic
        if startup_s is None:
            startup_s = time.time() - origin
        if step > start_step:  # the first step pays for warm-up / compilation
            timed_tokens += tokens_per_step
            timed_seconds += dt
        reason = monitor.update(step, loss, grad_norm)
        row: dict[str, Any] = {
            "step": step,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": (step + 1) * tokens_per_step,
            "step_time_s": dt,
            "skipped_steps": skipped,
            "loss_ema": monitor.ema,
        }
        row.update(backend.pop_telemetry())
        last = step == cfg.train.steps - 1
        if reason is None and ((step + 1) % cfg.train.eval_interval == 0 or last):
            row.update(evaluate())
            evals.append((step, row["eval_loss"]))
        if writer:
            writer.append(row)
        if on_step and is_main:
            on_step(row)
        elif is_main and "eval_loss" in row:  # no live display (Ray workers, jobs): one line per eval
            print(
                f"[robustprec] step {step + 1}/{cfg.train.steps} loss {loss:.4f} eval {row['eval_loss']:.4f} "
                f"lr {lr:.2e} {dt * 1e3:.0f} ms/step",
                flush=True,
            )
        ckpt_now = (
            cfg.train.checkpoint_interval and (step + 1) % cfg.train.checkpoint_interval == 0 and not last
        )
        tag_dir: Path | None = None
        if ckpt_now and reason is None:
            client = {"step": step, "monitor": monitor.state_dict(), "evals": evals, "restarts": restarts}
            tag_dir = ckpt_dir / f"step-{step:08d}"
            if writer:  # the curve snapshot goes in first: DeepSpeed writes `latest` last
                writer.flush()
                tag_dir.mkdir(parents=True, exist_ok=True)
                pq.write_table(read_parts(out), tag_dir / CURVE_FILE)
            engine.save_checkpoint(str(ckpt_dir), tag=tag_dir.name, client_state=client)
            if writer:
                _prune_checkpoints(ckpt_dir, cfg.train.keep_checkpoints)
        elif "eval_loss" in row and writer:
            writer.flush()
        if report and ("eval_loss" in row or tag_dir is not None):
            report(row, tag_dir)
        if reason is not None and div.stop_early:
            stopped_early = True
            break

    outcome = monitor.finish()
    tokens_per_s = timed_tokens / timed_seconds if timed_seconds > 0 else None
    last3 = [v for _, v in evals[-3:]]
    summary: dict[str, Any] = {
        "status": outcome.status,
        "reason": outcome.reason,
        "diverged_at": outcome.diverged_at,
        "final_eval_loss": float(np.mean(last3)) if last3 else None,
        "initial_loss": monitor.initial_loss,
        "steps_completed": step + 1,
        "restarts": restarts,
        "startup_s": startup_s,
        "stopped_early": stopped_early,
        "spike_events": outcome.spike_events,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_device": tokens_per_s / world if tokens_per_s else None,
        "mfu": flops_tok * tokens_per_s / (peak * world) if (peak and tokens_per_s) else None,
        "flops_per_token": flops_tok,
        "params": count_parameters(model),
        "init_checksum": init_checksum,
        "wall_time_s": time.perf_counter() - t0,
        "name": cfg.name,
        "seed": cfg.seed,
        "init_seed": cfg.effective_init_seed,
        "data_seed": cfg.effective_data_seed,
        "lr": cfg.optim.lr,
        "model": cfg.model.preset,
        "numerics": backend.describe(),
        "zero_stage": zero,
        "world_size": world,
        "divergence_thresholds": {
            "ema_alpha": div.ema_alpha,
            "spike_tol": div.spike_tol,
            "warmup_steps": monitor.warmup_steps,
        },
        "corpus": {
            "source": corpus.source,
            "tokens": len(corpus),
            "fingerprint": corpus.fingerprint,
            "tokenizer": corpus.tokenizer,
        },
        "device": provenance.device_name(device.type),
        "versions": provenance.package_versions(),
        "git_sha": provenance.git_sha(),
        "config": cfg.to_dict(),
    }
    if is_main and writer:
        writer.close()
        write_json(out / SUMMARY_FILE, summary)
    return summary
