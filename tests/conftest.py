"""Shared fixtures: an isolated token cache and small configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os
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
