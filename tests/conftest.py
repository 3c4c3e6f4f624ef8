"""Shared fixtures: an isolated token cache and small configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["ROBUSTPREC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # sweeps mirror to MLflow: never into the repository's working directory
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    import torch

    if not torch.cuda.is_available():  # on a GPU machine (the `cuda` suite) DeepSpeed must pick CUDA
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def tiny_overrides(**extra: object) -> list[str]:
    """A tiny, fast trial: ~1 s of training."""
    base = {
        "model.preset": "tiny",
        "train.steps": 30,
        "train.seq_len": 32,
        "train.micro_batch_size": 4,
        "train.global_batch_size": 8,
        "train.eval_interval": 10,
        "train.eval_sequences": 16,
        "train.sharpness.sequences": 16,
        "train.threads": 2,
        "data.embedded_max_bytes": 400000,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 5,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def kill_driver_when(args: Sequence[str], ready: Callable[[], bool], timeout_s: float = 240) -> None:
    """Start a sweep driver (`args`), SIGKILL it and the local Ray it started once `ready()` holds, and stop
    what is left of Ray: an interrupted sweep, for resume tests."""
    driver = subprocess.Popen(
        args, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + timeout_s
        while not ready():
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:] if driver.stderr else ""
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)
