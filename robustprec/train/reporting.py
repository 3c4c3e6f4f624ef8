"""Output callbacks: the curve record (rank 0), throughput and MFU, reporting to Ray/Tune, console progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustprec import provenance
from robustprec.model.flops import detect_peak_flops, training_flops_per_token
from robustprec.model.transformer import count_parameters
from robustprec.tracking.store import CURVE_FILE, CurveWriter
from robustprec.train.callbacks import Callback, Row

if TYPE_CHECKING:
    from robustprec.train.run import Run


class Curve(Callback):
    """Rank 0 appends every step's row to the run's curve, flushing at evaluations; on a resume it restarts
    from the checkpoint's own copy of the curve (so the record survives a move to another machine)."""

    name = "curve"

    def __init__(self, run: Run) -> None:
        self.writer = CurveWriter(run.out) if run.is_main else None

    def on_start(self, run: Run) -> None:
        if self.writer is None:
            return
        snapshot = run.resumed_from / CURVE_FILE if run.resumed_from is not None else None
        if snapshot is not None and snapshot.exists():
            self.writer.reset(snapshot)
        else:
            self.writer.truncate_after(
                run.start_step - 1
            )  # rows past the checkpoint (or all, on a fresh start)

    def on_step_end(self, run: Run, row: Row) -> None:
        if self.writer is not None:
            self.writer.append(row)
            if "eval_loss" in row:
                self.writer.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def on_end(self, run: Run, summary: Row) -> None:
        if self.writer is not None:
            self.writer.close()


class Throughput(Callback):
    """Start-up time (from the trial's request to the end of its first step) and its phases, tokens/s and MFU over
    the steps after the first (which pays for warm-up and compilation)."""

    name = "throughput"

    def __init__(self, run: Run) -> None:
        self.flops_per_token = training_flops_per_token(run.spec, run.cfg.train.seq_len)
        cuda = run.device.type == "cuda"
        self.peak = run.cfg.train.peak_flops or (
            detect_peak_flops(provenance.device_name("cuda")) if cuda else None
        )
        self.tokens, self.seconds, self.startup_s = 0, 0.0, None
        self.startup_phases: dict[str, float] | None = None

    def on_step(self, run: Run, row: Row) -> None:
        if self.startup_s is None:
            clock = time.perf_counter()  # before the wall clock: no phase comes out negative
            self.startup_s = time.time() - run.origin
            self.startup_phases = startup_phases(run, self.startup_s, row["step_time_s"], clock)
        if row["step"] > run.start_step:
            self.tokens += run.tokens_per_step
            self.seconds += row["step_time_s"]

    def on_end(self, run: Run, summary: Row) -> None:
        tps = self.tokens / self.seconds if self.seconds > 0 else None
        summary.update(
            startup_s=self.startup_s,
            startup_phases_s=self.startup_phases,
            tokens_per_s=tps,
            tokens_per_s_per_device=tps / run.world if tps else None,
            mfu=self.flops_per_token * tps / (self.peak * run.world) if (self.peak and tps) else None,
            flops_per_token=self.flops_per_token,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "seconds": self.seconds,
            "startup_s": self.startup_s,
            "startup_phases": self.startup_phases,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens, self.seconds, self.startup_s = state["tokens"], state["seconds"], state["startup_s"]
        self.startup_phases = state.get("startup_phases")  # absent in checkpoints before session 11


def startup_phases(run: Run, startup_s: float, first_step_s: float, clock: float) -> dict[str, float]:
    """Where a trial's start-up went, adding up to `startup_s` (wall seconds from the request to `clock`, a
    `perf_counter` reading in the first step's callbacks): before `setup_run` (the launcher), the phases of `Run.laps`
    (set-up's, then `start`: restore, the record's config, the callbacks' `on_start`), the first step, and the
    callbacks that ran on it before `Throughput` (the monitors)."""
    since = clock - run.laps.last
    return {
        "before_setup": startup_s - since - (run.laps.last - run.laps.start),
        **run.laps.seconds,
        "first_step": first_step_s,
        "first_step_callbacks": since - first_step_s,
    }


ReportFn = Callable[[Row, Path | None], None]


class Report(Callback):
    """Calls `fn(row, checkpoint_tag_dir)` on every rank at each evaluation and checkpoint (Ray Train hooks in
    here: a report with a checkpoint registers it for restarts)."""

    name = "report"

    def __init__(self, fn: ReportFn) -> None:
        self.fn = fn

    def on_step_end(self, run: Run, row: Row) -> None:
        if "eval_loss" in row or run.saved_checkpoint is not None:
            self.fn(row, run.saved_checkpoint)


class Console(Callback):
    """Rank 0: every row to `on_row` (a live display), or without one a line per evaluation (Ray workers, jobs)."""

    name = "console"

    def __init__(self, on_row: Callable[[Row], None] | None = None) -> None:
        self.on_row = on_row

    def on_start(self, run: Run) -> None:
        if run.is_main:
            print(
                f"[robustprec] setup {time.perf_counter() - run.laps.start:.1f} s: {count_parameters(run.model):,} params, "
                f"{len(run.corpus):,} tokens ({run.corpus.source}), backend {run.backend.name}, "
                f"zero {run.cfg.train.zero_stage}, world {run.world}",
                flush=True,
            )

    def on_step_end(self, run: Run, row: Row) -> None:
        if not run.is_main:
            return
        if self.on_row is not None:
            self.on_row(row)
        elif "eval_loss" in row:
            print(
                f"[robustprec] step {row['step'] + 1}/{run.cfg.train.steps} loss {row['loss']:.4f} "
                f"eval {row['eval_loss']:.4f} lr {row['lr']:.2e} {row['step_time_s'] * 1e3:.0f} ms/step",
                flush=True,
            )
