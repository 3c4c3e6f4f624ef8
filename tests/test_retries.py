"""Retries: infrastructure failures resume from the checkpoint up to `train.max_failures` times in total, whoever
retries (the direct loop, Tune after a dead process); bad input is never retried. Faults come from the trainer's own
hook (`robustprec/train/faults.py`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from robustprec.errors import RobustprecError
from robustprec.sweep.trial import ATTEMPTS_FILE, TrialFailed, run_trial
from tests.test_sweep import small_plan
from tests.test_trial import make_spec


def _attempts(spec) -> int:
    return int((Path(spec.out_dir) / ATTEMPTS_FILE).read_text())


def _always_failing(tmp_path) -> dict[str, str]:
    # the hook cannot create its marker in a missing folder: it raises at step 2 in every attempt
    return {"ROBUSTPREC_FAULT_AT_STEP": "2", "ROBUSTPREC_FAULT_MARKER": str(tmp_path / "missing" / "marker")}


def test_always_failing_trial_runs_max_failures_plus_one_times_in_total(tmp_path):
    spec = make_spec(tmp_path, "flaky", env=_always_failing(tmp_path), **{"train.max_failures": 1})
    with pytest.raises(TrialFailed, match=r"failed 2 time\(s\).*FileNotFoundError"):
        run_trial(spec)
    assert _attempts(spec) == 2
    # Tune restarting the trial's process draws on the same budget: no third attempt, no training
    with pytest.raises(TrialFailed):
        run_trial(spec)
    assert _attempts(spec) == 2 and not (Path(spec.out_dir) / "summary.json").exists()


def test_bad_input_is_never_retried(tmp_path):
    spec = make_spec(tmp_path, "bad", **{"train.max_failures": 3, "train.checkpoint_interval": 5})
    ckpt = Path(spec.out_dir) / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "latest").write_text("step-00000010")  # names a checkpoint that is not there
    with pytest.raises(RobustprecError, match="missing"):
        run_trial(spec)
    assert _attempts(spec) == 1


@pytest.mark.slow
def test_sweep_retries_a_dead_process_from_its_checkpoint_and_gives_up_after_the_budget(tmp_path):
    import ray

    from robustprec.sweep.run import run_sweep

    plan = small_plan(tmp_path, "faults", seeds=2, lrs="[3e-3]")
    dies_once = {
        "ROBUSTPREC_FAULT_AT_STEP": "15",  # after the checkpoint at step 10: the process exits hard, once
        "ROBUSTPREC_FAULT_MARKER": str(tmp_path / "died"),
    }
    envs = [dies_once, _always_failing(tmp_path)]
    plan.trials = [
        dataclasses.replace(t, env=e, config={**t.config, "train": {**t.config["train"], "max_failures": 1}})
        for t, e in zip(plan.trials, envs, strict=True)
    ]
    try:
        outcome = run_sweep(plan, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    finally:
        ray.shutdown()
    revived, broken = plan.trials
    assert (tmp_path / "died").exists()  # the first trial's process really died
    summary = json.loads((Path(revived.out_dir) / "summary.json").read_text())
    assert summary["status"] == "converged" and summary["restarts"] == 1 and _attempts(revived) == 2
    assert summary["steps_completed"] == 20
    error = json.loads((Path(broken.out_dir) / "error.json").read_text())
    assert "failed 2 time(s)" in error["error"] and _attempts(broken) == 2  # not (max_failures + 1)^2 = 4
    assert outcome.counts["converged"] == 1 and outcome.counts["error"] == 1
