"""Trainer behaviour that only a GPU can show (pytest marker `cuda`; skipped without CUDA; CI never runs it).
Run on a GPU machine: `python -m pytest -q -m cuda` (README, "Layout"; `jobs/gpu/cuda_suite.sh`)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from robustprec.config import load_config
from robustprec.train.loop import train
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _run(tmp_path, name, **overrides):
    cfg = load_config(None, tiny_overrides(**{"train.device": "cuda", **overrides}))
    summary = train(cfg, tmp_path / name)
    return summary, pq.read_table(tmp_path / name / "curve.parquet").to_pydict()


@pytest.mark.parametrize("zero", [1, 2])
def test_fp16_overflow_steps_are_skipped_counted_and_never_nonfinite(tmp_path, zero):
    # a loss scale of 2^40 overflows fp16 gradients at once; the scaler halves it until steps go through
    forced, c = _run(tmp_path, "forced", **{"numerics.backend": "fp16", "numerics.fp16_initial_scale_power": 40,
                                             "train.telemetry_interval": 1, "train.zero_stage": zero})  # fmt: skip
    _, r = _run(tmp_path, "fp32", **{"train.zero_stage": zero})
    skipped = [i for i, n in enumerate(c["skipped_steps"]) if n > (c["skipped_steps"][i - 1] if i else 0)]
    assert forced["status"] == "converged" and forced["reason"] is None
    assert len(skipped) >= 3 and c["skipped_steps"][-1] == len(skipped)
    assert all(c["grad_norm"][i] is None for i in skipped)  # an overflowed norm is not a measurement
    assert c["loss_scale"][-1] < 2.0**40
    # the first applied step sees the initial weights, like fp32's step 0 on another batch: the logged norm is the
    # unscaled one (a scaled norm would be ~2^30 times larger)
    first = next(i for i in range(len(c["step"])) if i not in skipped)
    assert 0.2 < c["grad_norm"][first] / r["grad_norm"][0] < 5.0


def test_fp16_without_overflow_follows_fp32(tmp_path):
    _, c = _run(tmp_path, "fp16", **{"numerics.backend": "fp16", "train.steps": 10, "train.zero_stage": 1})
    _, r = _run(tmp_path, "fp32", **{"train.steps": 10, "train.zero_stage": 1})
    assert c["skipped_steps"][-1] == 0
    # step 0 sees the same weights and batch: loss and (unscaled) norm agree to fp16 precision; later steps drift
    assert c["loss"][0] == pytest.approx(r["loss"][0], rel=2e-3)
    assert c["grad_norm"][0] == pytest.approx(r["grad_norm"][0], rel=0.02)
    assert c["loss"][-1] == pytest.approx(r["loss"][-1], rel=0.05)


def test_fp8_backend_trains(tmp_path):
    s, _ = _run(tmp_path, "fp8", **{"numerics.backend": "fp8", "model.preset": "tiny-gpt2"})
    assert s["status"] == "converged" and s["numerics"]["converted_modules"] > 0
    assert s["final_eval_loss"] < s["initial_loss"] - 1.0


def test_compiled_bf16_gives_the_eager_curve(tmp_path):
    _, eager = _run(tmp_path, "eager", **{"numerics.backend": "bf16", "train.steps": 10})
    _, comp = _run(tmp_path, "comp", **{"numerics.backend": "bf16", "train.steps": 10, "train.compile": True})
    assert comp["loss"] == pytest.approx(eager["loss"], rel=0.01)
