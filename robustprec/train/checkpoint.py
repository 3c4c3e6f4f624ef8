"""Checkpoints that make a resume exact by construction: the DeepSpeed engine state plus every callback's
`state_dict`, the numerics backend's state (the stochastic-rounding stream) and every RNG (Python, NumPy, torch
CPU and CUDA). The data order needs no state: batch `s` is a pure function of (data seed, s), which the
checkpoint records and a resume checks."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
import torch

from robustprec.errors import RobustprecError
from robustprec.tracking.store import CURVE_FILE, read_parts
from robustprec.train.callbacks import Callback, Callbacks, Row

if TYPE_CHECKING:
    from robustprec.train.reporting import Curve
    from robustprec.train.run import Run

CHECKPOINT_DIR = "checkpoints"


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint (tag directory) under a run's `checkpoints/` folder, if any."""
    latest = ckpt_dir / "latest"
    if not latest.exists():
        return None
    tag_dir = ckpt_dir / latest.read_text().strip()
    return tag_dir if tag_dir.is_dir() else None


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every global random state a step could touch."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def restore(run: Run, callbacks: Callbacks, tag_dir: Path) -> None:
    """Load a checkpoint into the engine, the callbacks, the backend and the RNGs; the run continues after it."""
    _, client = run.engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    if client is None:
        raise RobustprecError(f"could not load checkpoint {str(tag_dir)!r}")
    if client["data_seed"] != run.cfg.effective_data_seed:
        raise RobustprecError(
            f"checkpoint {str(tag_dir)!r} was written with data seed {client['data_seed']}, "
            f"this run has {run.cfg.effective_data_seed}: resuming would change the data order"
        )
    run.start_step, run.restarts = int(client["step"]) + 1, int(client["restarts"]) + 1
    run.resumed_from = tag_dir
    callbacks.load_state_dict(client["callbacks"])
    run.backend.load_state_dict(client["backend"])
    set_rng_state(client["rng"], run.device)


class Checkpoint(Callback):
    """Saves every `checkpoint_interval` steps (not at the last step, not after a divergence), with a snapshot of
    the curve so far, and keeps the newest `keep_checkpoints`."""

    name = "checkpoint"

    def __init__(self, callbacks: Callbacks, curve: Curve) -> None:
        self.callbacks, self.curve = callbacks, curve

    def _due(self, run: Run, step: int) -> bool:
        every = run.cfg.train.checkpoint_interval
        return bool(every) and (step + 1) % every == 0 and not run.is_last(step) and run.diverged is None

    def on_step_end(self, run: Run, row: Row) -> None:
        run.saved_checkpoint = None
        if not self._due(run, row["step"]):
            return
        tag_dir = run.checkpoint_dir / f"step-{row['step']:08d}"
        if run.is_main:  # the curve snapshot goes in first: DeepSpeed writes `latest` last
            self.curve.flush()
            tag_dir.mkdir(parents=True, exist_ok=True)
            pq.write_table(read_parts(run.out), tag_dir / CURVE_FILE)
        client = {
            "step": row["step"],
            "restarts": run.restarts,
            "data_seed": run.cfg.effective_data_seed,
            "callbacks": self.callbacks.state_dict(),
            "backend": run.backend.state_dict(),
            "rng": rng_state(run.device),
        }
        run.engine.save_checkpoint(str(run.checkpoint_dir), tag=tag_dir.name, client_state=client)
        if run.is_main:
            _prune(run.checkpoint_dir, run.cfg.train.keep_checkpoints)
        run.saved_checkpoint = tag_dir


def _prune(ckpt_dir: Path, keep: int) -> None:
    tags = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
