"""One worker's training loop on a DeepSpeed engine, top to bottom: set up, (resume,) step, evaluate, summarize.

Everything else is a callback (`robustprec.train.callbacks`): divergence, sharpness, activation and numerics
telemetry, early warning, the curve record, checkpoints, throughput, reporting and console progress. Rank 0 writes
the run directory; every rank runs every callback and takes the same decisions from all-reduced values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustprec import provenance
from robustprec.config import Config
from robustprec.model.transformer import count_parameters
from robustprec.tracking.store import CONFIG_FILE, SUMMARY_FILE, write_json, write_text
from robustprec.train import faults
from robustprec.train.callbacks import Callback, Callbacks, Row
from robustprec.train.checkpoint import CHECKPOINT_DIR, Checkpoint, latest_checkpoint, restore
from robustprec.train.engine import engine_clips
from robustprec.train.evaluation import evaluate, to_batch
from robustprec.train.monitors import (
    ActivationTelemetry,
    Divergence,
    EarlyWarning,
    EvalHistory,
    NumericsTelemetry,
    Sharpness,
)
from robustprec.train.reporting import Console, Curve, Throughput
from robustprec.train.run import Run, compiler_failures_as_config_errors, setup_run
from robustprec.train.schedule import lr_at

__all__ = ["CHECKPOINT_DIR", "latest_checkpoint", "to_batch", "train"]


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    resume_from: Path | None = None,
    checkpoint_root: Path | None = None,
    device: torch.device | None = None,
    origin_time: float | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train one trial into `out_dir`; returns the summary (also written to `summary.json` by rank 0).

    `resume=True` continues from the latest checkpoint in `out_dir/checkpoints` if one exists; `resume_from`
    names a checkpoint (tag directory) explicitly, e.g. one restored by Ray Train. Checkpoints are saved under
    `checkpoint_root` (default `out_dir/checkpoints`; every rank passes its own folder when storage is not shared).
    `callbacks` run after the built-in ones (e.g. `reporting.Report` for Ray, `reporting.Console` with a live
    display). `origin_time` (wall clock) is when the caller asked for the trial: `startup_s` counts from it.
    """
    out = Path(out_dir)
    run = setup_run(cfg, out, device=device, checkpoint_root=checkpoint_root, origin=origin_time)
    hooks = Callbacks(default_callbacks(run, callbacks))
    if resume_from is None and resume:
        resume_from = latest_checkpoint(out / CHECKPOINT_DIR)
    if resume_from is not None:
        restore(run, hooks, resume_from)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / CONFIG_FILE, cfg.to_yaml())
    with compiler_failures_as_config_errors(cfg):  # the first compile comes with the first call of the model
        hooks.call("on_start", run)
        run.laps("start")
        for step in range(run.start_step, cfg.train.steps):
            faults.maybe_fail(step, run.rank)
            run.step = step
            row = train_step(run, hooks)
            hooks.call("on_step", run, row)
            if run.diverged is None and ((step + 1) % cfg.train.eval_interval == 0 or run.is_last(step)):
                row.update(evaluate(run, hooks))
            hooks.call("on_step_end", run, row)
            if run.stop:
                break
        return summarize(run, hooks)


def default_callbacks(run: Run, extra: Sequence[Callback] = ()) -> list[Callback]:
    """The built-in callbacks in calling order: monitors fill a step's row, then the outputs consume it."""
    monitors: list[Callback] = [Divergence(run), NumericsTelemetry(), EarlyWarning(run), EvalHistory()]
    if run.cfg.train.sharpness.enabled:
        monitors.append(Sharpness(run))
    monitors += [ActivationTelemetry(run), Throughput(run)]
    curve = Curve(run)
    outputs: list[Callback] = [curve, Checkpoint(Callbacks([*monitors, curve]), curve)]
    if not any(isinstance(cb, Console) for cb in extra):
        outputs.append(Console())
    return [*monitors, *outputs, *extra]


def train_step(run: Run, hooks: Callbacks) -> Row:
    """One optimizer step: gradient accumulation over this rank's micro-batches, clipping, the update."""
    cfg, engine, step = run.cfg, run.engine, run.step
    tic = time.perf_counter()
    lr = lr_at(step, cfg.optim, cfg.train.steps)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    micro = run.stream.micro_batches(step, run.rank, run.world, cfg.train.micro_batch_size)
    skipped_before = engine.skipped_steps
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    grad_norm: torch.Tensor | None = None
    for j, rows in enumerate(micro):
        x, y = to_batch(rows, run.device)
        out = engine(x, y)
        engine.backward(out["loss"])
        loss_sum += out["ce_loss"].double()
        if j == len(micro) - 1:
            hooks.call("on_before_optimizer_step", run)
            grad_norm = _clip_in_loop(run)
        engine.step()
    known = grad_norm is not None
    if grad_norm is None:
        grad_norm, known = _engine_grad_norm(engine, run.device)
    skipped = engine.skipped_steps > skipped_before
    # one host sync per step, after the update is queued: the loss and the norm are read together
    loss, norm_sum = run.all_reduce(torch.stack((loss_sum / len(micro), grad_norm)))
    return {
        "step": step,
        "loss": loss / run.world,
        "grad_norm": norm_sum / run.world if known and not skipped else None,
        "lr": lr,
        "tokens": (step + 1) * run.tokens_per_step,
        "step_time_s": time.perf_counter() - tic,
        "time": time.time(),  # wall clock at the step's end (MLflow's point timestamps; packing's overlap)
        "skipped_steps": engine.skipped_steps,
        "skipped": skipped,
    }


def _clip_in_loop(run: Run) -> torch.Tensor | None:
    """Where DeepSpeed does not clip (ZeRO-0 without loss scaling), clip here; returns the pre-clip norm as a
    float64 device tensor (not read here: reading it would stall the host before the update is queued)."""
    if engine_clips(run.cfg, run.backend):
        return None
    clip = run.cfg.optim.grad_clip if run.cfg.optim.grad_clip > 0 else math.inf
    return torch.nn.utils.clip_grad_norm_(run.params, clip).double()


def _engine_grad_norm(engine: Any, device: torch.device) -> tuple[torch.Tensor, bool]:
    """DeepSpeed's global norm of this step as a float64 device tensor, and whether it has one (not on an fp16
    overflow step, say; then the tensor is a NaN placeholder)."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        return torch.full((), math.nan, dtype=torch.float64, device=device), False
    return torch.as_tensor(norm, dtype=torch.float64).to(device), True


def summarize(run: Run, hooks: Callbacks) -> dict[str, Any]:
    """The run's summary: what it was (config, seeds, provenance) and what callbacks measured; rank 0 writes it."""
    cfg = run.cfg
    summary: dict[str, Any] = {
        "steps_completed": run.step + 1,
        "restarts": run.restarts,
        "stopped_early": run.stop,
        "params": count_parameters(run.model),
        "init_checksum": run.init_checksum,
        "name": cfg.name,
        "seed": cfg.seed,
        "init_seed": cfg.effective_init_seed,
        "data_seed": cfg.effective_data_seed,
        "lr": cfg.optim.lr,
        "model": cfg.model.preset,
        "numerics": run.backend.describe(),
        "zero_stage": cfg.train.zero_stage,
        "world_size": run.world,
        "corpus": {
            "source": run.corpus.source,
            "tokens": len(run.corpus),
            "fingerprint": run.corpus.fingerprint,
            "tokenizer": run.corpus.tokenizer,
        },
        "device": provenance.device_name(run.device.type),
        "versions": provenance.package_versions(),
        "git_sha": provenance.git_sha(),
        "config": cfg.to_dict(),
    }
    hooks.call("on_end", run, summary)
    summary["wall_time_s"] = time.perf_counter() - run.laps.start
    if run.is_main:
        write_json(run.out / SUMMARY_FILE, summary)
    return summary
