"""The trial table (robustprec.analysis.frame): normalised columns, parquet, summaries and curve summaries."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustprec.analysis.frame import Frame, attach_curve_summaries, attach_summaries, load_frame
from robustprec.tracking.store import CurveWriter


def rows():
    return [
        {
            "trial_id": "t0",
            "model.preset": "tiny",
            "numerics.backend": "bf16",
            "optim.lr": 1e-3,
            "seed": 0,
            "numerics.rounding": "nearest",
            "status": "converged",
            "reason": None,
            "diverged_at": None,
            "final_eval_loss": 3.25,
            "steps_completed": 100,
        },
        {
            "trial_id": "t1",
            "model.preset": "tiny",
            "numerics.backend": "sim:E4M3",
            "optim.lr": 2e-3,
            "seed": 1,
            "numerics.rounding": "stochastic",
            "status": "diverged",
            "reason": "blowup",
            "diverged_at": 42,
            "final_eval_loss": None,
            "steps_completed": 43,
        },
        {
            "trial_id": "t2",
            "model.preset": "tiny",
            "numerics.backend": "bf16",
            "optim.lr": 2e-3,
            "seed": 1,
            "numerics.rounding": "nearest",
            "status": "error",
            "reason": "boom",
        },
    ]


def test_from_rows_normalises_columns():
    fr = Frame.from_rows(rows())
    assert len(fr) == 3
    assert fr["format"].tolist() == ["bf16", "sim:E4M3", "bf16"]
    assert fr["lr"].dtype == np.float64 and fr["lr"].tolist() == [1e-3, 2e-3, 2e-3]
    assert fr["seed"].dtype == np.int64 and fr["seed"].tolist() == [0, 1, 1]
    assert fr["model"].tolist() == ["tiny"] * 3
    assert fr["diverged"].tolist() == [False, True, False]
    assert fr["final_eval_loss"][0] == 3.25 and math.isnan(fr["final_eval_loss"][1])
    assert fr["diverged_at"][1] == 42 and math.isnan(fr["diverged_at"][0])
    assert fr.axes == ("numerics.rounding",)
    assert fr.condition_keys() == ["format", "model", "numerics.rounding"]
    assert "numerics.backend" not in fr and "reason" in fr
    out = fr.outcomes()
    assert out["trial_id"].tolist() == ["t0", "t1"]  # the error trial is no result
    assert out.conditions() == [("bf16", "tiny", "nearest"), ("sim:E4M3", "tiny", "stochastic")]


def test_axes_are_the_swept_keys_only():
    r = rows()
    for row in r:
        row["instability_events"] = 0  # a summary field added after status: never an axis
    assert Frame.from_rows(r).axes == ("numerics.rounding",)
    # without the result_rows layout: dotted keys and init/data seeds
    loose = [{"status": "converged", "model.qk_norm": True, "data_seed": 3, "startup_s": 1.0}]
    assert Frame.from_rows(loose).axes == ("model.qk_norm", "data_seed")
    assert Frame.from_rows(loose, axes=[]).axes == ()
    with pytest.raises(ValueError, match="not columns"):
        Frame.from_rows(loose, axes=["nope"])


def test_missing_axes_take_defaults():
    fr = Frame.from_rows([{"status": "converged", "final_eval_loss": 1.0}], defaults={"lr": 3e-3})
    assert fr["format"][0] == "unknown" and fr["lr"][0] == 3e-3 and fr["seed"][0] == 0
    assert fr["model"][0] == "default"
    unknown_lr = Frame.from_rows([{"status": "converged"}])
    assert len(unknown_lr.outcomes()) == 0  # no LR, no place on the grid


def test_from_parquet_round_trip(tmp_path):
    r = rows()
    names = list(dict.fromkeys(k for row in r for k in row))
    pq.write_table(
        pa.Table.from_pylist([{k: row.get(k) for k in names} for row in r]), tmp_path / "trials.parquet"
    )
    fr = load_frame(tmp_path)  # a sweep directory
    assert fr["format"].tolist() == ["bf16", "sim:E4M3", "bf16"]
    assert fr["diverged"].tolist() == [False, True, False]
    back = Frame.from_rows(fr.to_rows())
    assert back["final_eval_loss"][0] == 3.25 and back.axes == fr.axes
    assert fr.to_arrow().num_rows == 3


def test_with_columns_checks_length():
    fr = Frame.from_rows(rows())
    with pytest.raises(ValueError, match="3 rows"):
        fr.with_columns(x=np.zeros(2))


def write_trial(run_dir, n_steps, diverge_at=None, telemetry=False):
    w = CurveWriter(run_dir)
    for s in range(n_steps):
        row = {"step": s, "loss": 5.0 - s / n_steps, "grad_norm": 1.0}
        if telemetry:
            row.update(act_overflow_frac=s / 1000, act_underflow_frac=0.0)
        if (s + 1) % 10 == 0:
            row.update(eval_loss=4.0, sharpness=1.0 if s < 40 else 3.0)
        w.append(row)
        if s == 20:
            w.flush()
    w.close()
    (run_dir / "summary.json").write_text(json.dumps({"initial_loss": 5.0, "params": 1234}))


def test_attach_curve_and_summaries(tmp_path):
    write_trial(tmp_path / "a", 60, telemetry=True)
    write_trial(tmp_path / "b", 30)
    fr = Frame.from_rows(
        [
            {"status": "diverged", "optim.lr": 1e-3, "diverged_at": 55, "out_dir": str(tmp_path / "a")},
            {"status": "converged", "optim.lr": 1e-3, "out_dir": str(tmp_path / "b")},
            {"status": "error", "optim.lr": 1e-3, "out_dir": str(tmp_path / "missing")},
        ]
    )
    fr = attach_curve_summaries(fr, workers=2)
    # trial a: evals at steps 9, 19, ..., 59 with phi 1,1,1,1,3,3: baseline 1, warning at step 49, lead 55-49
    assert fr["sharp_n"].tolist()[:2] == [6, 3]
    assert fr["sharp_warn_step"][0] == 49 and fr["sharp_lead"][0] == 6
    assert math.isnan(fr["sharp_warn_step"][1])  # only the 3 baseline evals
    assert fr["loss_first"][0] == 5.0
    assert fr["max_act_overflow_frac"][0] == pytest.approx(0.059)
    assert math.isnan(fr["max_act_overflow_frac"][1]) and math.isnan(fr["sharp_n"][2])
    fr = attach_summaries(fr)
    assert fr["initial_loss"].tolist()[:2] == [5.0, 5.0] and fr["params"][0] == 1234
    assert math.isnan(fr["initial_loss"][2])
