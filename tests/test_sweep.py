"""Sweeps on a local Ray: divergence as data, resume after the driver is killed, the sweep CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from robustprec.config import load_config
from robustprec.sweep.plan import plan_sweep
from robustprec.sweep.run import result_rows, run_sweep, status_counts
from robustprec.tracking.mlflow_mirror import sync_sweep
from tests.conftest import REPO, kill_driver_when, tiny_overrides
from tests.test_train import _cli

SMALL = {
    "train.steps": 20,
    "train.eval_interval": 10,
    "train.checkpoint_interval": 10,
    "sweep.resources": "{CPU: 1}",
}


def small_plan(tmp_path, name, **sweep):
    overrides = tiny_overrides(**SMALL, **{f"sweep.{k}": v for k, v in sweep.items()})
    overrides = [o for o in overrides if not o.startswith("train.threads=")]
    return plan_sweep(load_config(None, overrides), name=name, root=tmp_path)


def test_dry_run_prints_plan_and_runs_nothing(tmp_path):
    args = [
        *(f"--set={o}" for o in tiny_overrides(**SMALL)),
        "--set=sweep.lrs=[1e-3,1e-2]",
        "--set=sweep.seeds=3",
    ]
    res = _cli(
        ["sweep", "--storage", str(tmp_path), "--name", "d", "--dry-run", *args],
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr
    for lr in ("1e-03", "1e-02"):
        for seed in range(3):
            assert f"lr{lr}-s{seed}" in res.stdout
    assert "total: 6 trials" in res.stdout
    assert not (tmp_path / "d").exists()


def test_piped_output_keeps_paths_and_ids_whole(tmp_path):
    # `ray job submit` logs are not a terminal: rich would break lines at 80 columns, inside paths
    storage = tmp_path / ("a-rather-long-folder-name-for-sweeps-" * 3)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = _cli(["sweep", "--storage", str(storage), "--name", "piped", "--dry-run"], env=env)
    assert res.returncode == 0, res.stderr
    assert len(str(storage / "piped")) > 80 and str(storage / "piped") in res.stdout.splitlines()[0]


def test_job_entry_point_dry_run(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "jobs/sweep.py",
            "--config",
            "configs/smoke.yaml",
            "--storage",
            str(tmp_path),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stderr
    assert "tiny-bf16-lr3e-02-s1" in res.stdout and "total: 12 trials" in res.stdout
    assert not any(tmp_path.iterdir())


def test_bad_sweep_axis_is_one_line_error(tmp_path):
    res = _cli(["sweep", "--storage", str(tmp_path), "--set", "sweep.lrs=logspace(1)"])
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "logspace" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_forced_divergence_grid_marks_diverged_trials(tmp_path):
    import ray

    plan = small_plan(tmp_path, "hot", seeds=1, lrs="[3e-3, 30.0, 300.0]", formats="[fp32, bf16]")
    seen: list[dict] = []
    try:
        outcome = run_sweep(plan, progress=seen.append)
    finally:
        ray.shutdown()
    by_lr = {}
    for row in outcome.rows:
        by_lr.setdefault(row["optim.lr"], set()).add(row["status"])
    assert by_lr[3e-3] == {"converged"}
    assert by_lr[30.0] == {"diverged"} and by_lr[300.0] == {"diverged"}
    assert outcome.counts["error"] == 0 and outcome.counts["diverged"] == 4
    for row in outcome.rows:
        summary = json.loads((tmp_path / "hot" / "trials" / row["trial_id"] / "summary.json").read_text())
        if row["status"] == "diverged":
            assert summary["stopped_early"] and summary["diverged_at"] is not None
            assert summary["steps_completed"] == summary["diverged_at"] + 1
    table = pq.read_table(tmp_path / "hot" / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in table) == sorted(plan.trial_ids)
    assert seen and seen[-1]["counts"]["pending"] == 0 and seen[-1]["counts"]["running"] == 0

    # end to end: the sweep was mirrored to MLflow as it ran; analyze it from there
    parent = outcome.tracking["parent_run_id"]
    assert parent and outcome.tracking["error"] is None
    # the UI link names the experiment holding the parent and opens MLflow 3's model-training view
    from robustprec.tracking.mlflow_mirror import ui_link

    link = ui_link(outcome.tracking["experiment_id"], parent)
    assert link.endswith(f"/runs/{parent}?workflowType=machine_learning")
    from mlflow import MlflowClient

    assert (
        MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(parent).info.experiment_id
        == outcome.tracking["experiment_id"]
    )
    out = tmp_path / "report"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustprec",
            "analyze",
            "--run-id",
            parent,
            "--out",
            str(out),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    formats = json.loads(res.stdout)
    assert set(formats) == {"fp32", "bf16"}
    for r in formats.values():
        assert set(r) == {"divergence", "lr_sensitivity", "eta_c", "eta_stable", "verdict", "phases"}
        assert {float(lr): d["diverged"] for lr, d in r["divergence"].items()} == {3e-3: 0, 30.0: 1, 300.0: 1}
        # each divergence's phase came through the records and MLflow: LR 30 and 300 blow up in warm-up
        assert r["phases"]["warmup"] == 2 and r["phases"]["mid"] == r["phases"]["unknown"] == 0
        assert set(r["eta_c"]) >= {"value", "ci", "censored"}
        assert r["eta_stable"] == 3e-3
    for name in ("analysis.json", "report.md", "report.html", "divergence.png", "loss_vs_lr.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert report.index("## Verdicts") < report.index("## Plots") and "fp32" in report
    assert "data:image/png;base64," in (out / "report.html").read_text()
    from mlflow.tracking import MlflowClient

    logged = {a.path for a in MlflowClient().list_artifacts(parent, "analysis/bf16")}
    assert {"analysis/bf16/report.html", "analysis/bf16/report.md", "analysis/bf16/analysis.json"} <= logged

    # a later `robustprec sync` into another store gives the same content as the live mirror
    from tests.test_mlflow import _content

    replay_uri = f"sqlite:///{tmp_path / 'replay.db'}"
    replay = sync_sweep(plan.root, replay_uri)
    live, replayed = (
        _content(os.environ["MLFLOW_TRACKING_URI"], parent),
        _content(replay_uri, replay["parent_run_id"]),
    )
    assert replayed["children"] == live["children"] and len(live["children"]) == len(plan.trials)


@pytest.mark.slow
def test_sweep_finishes_with_tracking_server_down_and_sync_replays(tmp_path):
    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    plan = small_plan(tmp_path, "down", seeds=2, lrs="[3e-3]")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        outcome = run_sweep(plan, tracking_uri=dead)
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        ray.shutdown()
    assert outcome.tracking["error"] and not outcome.tracking.get("parent_run_id")
    assert outcome.counts["converged"] == 2  # training did not depend on the tracking server
    info = sync_sweep(plan.root, f"sqlite:///{tmp_path / 'later.db'}")
    assert info["logged"] == 2 and info["counts"] == {"converged": 2}


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    args = [
        sys.executable,
        "-m",
        "robustprec",
        "sweep",
        "--storage",
        str(tmp_path),
        "--name",
        "r",
        *(f"--set={o}" for o in tiny_overrides(**SMALL) if not o.startswith("train.threads=")),
        "--set=sweep.seeds=3",
        "--set=sweep.lrs=[1e-3,3e-3]",
        "--set=sweep.max_concurrent=1",
    ]
    plan = small_plan(tmp_path, "r", seeds=3, lrs="[1e-3,3e-3]")
    summaries = [tmp_path / "r" / "trials" / t / "summary.json" for t in plan.trial_ids]
    kill_driver_when(args, lambda: sum(p.exists() for p in summaries) >= 2)
    finished = {p: p.stat().st_mtime_ns for p in summaries if p.exists()}
    assert 2 <= len(finished) < len(summaries)

    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed and finished" in res.stdout
    assert all(p.exists() for p in summaries)
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.parent.name} was re-run"
    rows = result_rows(plan)
    assert [r["status"] for r in rows] == ["converged"] * len(plan.trials)
    for t in plan.trial_ids:
        steps = pq.read_table(tmp_path / "r" / "trials" / t / "curve.parquet").column("step").to_pylist()
        assert steps == list(range(20)), t
    assert status_counts(plan)["counts"]["converged"] == len(plan.trials)
