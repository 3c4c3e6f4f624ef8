"""MLflow mirror: parent/child runs from records, idempotent sync, unreachable server, a real `mlflow server`."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from robustprec.config import load_config
from robustprec.errors import InfrastructureError
from robustprec.sweep.plan import plan_sweep
from robustprec.sweep.run import Tracker
from robustprec.sweep.trial import run_trial
from robustprec.tracking.mlflow_mirror import MAX_POINTS, downsample_steps, sync_sweep
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished 2 x 2 sweep directory (trials run in-process; the mirror only reads records)."""
    root = tmp_path_factory.mktemp("sweeps")
    overrides = tiny_overrides(**{"train.steps": 20, "sweep.seeds": 2, "sweep.lrs": "[1e-3, 100.0]"})
    plan = plan_sweep(load_config(None, overrides), name="m", root=root)
    plan.write()
    for spec in plan.trials:
        run_trial(spec)
    return plan


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _content(uri: str, parent_id: str) -> dict:
    """Everything a user sees of a mirrored sweep, keyed by trial (run ids differ between stores)."""
    c = _client(uri)
    parent = c.get_run(parent_id)
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    out = {"parent_params": parent.data.params, "children": {}}
    for r in children:
        hist = {
            k: [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, k)]
            for k in ("loss", "eval_loss")
        }
        hist["loss_timestamps"] = [m.timestamp for m in c.get_metric_history(r.info.run_id, "loss")]
        out["children"][r.info.run_name] = {
            "params": r.data.params,
            "metrics": r.data.metrics,
            "history": hist,
            "artifacts": sorted(a.path for a in c.list_artifacts(r.info.run_id, "record")),
        }
    return out


def test_downsample_keeps_ends_and_bounds_points():
    assert downsample_steps(10) == list(range(10))
    idx = downsample_steps(5000)
    assert len(idx) <= MAX_POINTS and idx[0] == 0 and idx[-1] == 4999
    assert idx == sorted(set(idx))
    gaps = [b - a for a, b in itertools.pairwise(idx)]
    assert max(gaps) - min(gaps) <= 1  # evenly spread


def test_sync_mirrors_sweep_as_parent_and_children(sweep, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = sync_sweep(sweep.root, uri)
    assert info["logged"] == 4 and info["trials"] == 4
    content = _content(uri, info["parent_run_id"])
    assert sorted(content["children"]) == sorted(sweep.trial_ids)
    assert json.loads(content["parent_params"]["sweep.axis.optim.lr"]) == [1e-3, 100.0]
    for spec in sweep.trials:
        child = content["children"][spec.trial_id]
        summary = json.loads((Path(spec.out_dir) / "summary.json").read_text())
        assert float(child["params"]["optim.lr"]) == spec.axes["optim.lr"]
        assert child["params"]["axis.seed"] == str(spec.axes["seed"])
        assert child["metrics"]["diverged"] == float(summary["status"] == "diverged")
        if summary["final_eval_loss"] is not None:
            assert child["metrics"]["final_eval_loss"] == pytest.approx(summary["final_eval_loss"], rel=1e-12)
        curve = pq.read_table(Path(spec.out_dir) / "curve.parquet").to_pylist()
        expected = [
            (r["step"], r["loss"]) for r in curve if r["loss"] is not None and abs(r["loss"]) != float("inf")
        ]
        assert child["history"]["loss"] == expected
        # each point at its step's wall clock, and the clock itself is no metric
        finite = [r for r in curve if r["loss"] is not None and abs(r["loss"]) != float("inf")]
        assert child["history"]["loss_timestamps"] == [int(r["time"] * 1000) for r in finite]
        assert "time" not in child["metrics"]
        assert child["artifacts"] == ["record/config.yaml", "record/curve.parquet", "record/summary.json"]
    statuses = {json.loads((Path(s.out_dir) / "summary.json").read_text())["status"] for s in sweep.trials}
    assert statuses == {"converged", "diverged"}  # the grid has both outcomes

    again = sync_sweep(sweep.root, uri)  # idempotent: same parent, no duplicate children
    assert again["parent_run_id"] == info["parent_run_id"]
    assert _content(uri, info["parent_run_id"]) == content


def test_a_moved_sweep_directory_syncs_from_where_it_is(sweep, tmp_path):
    """Records brought back from another machine (plan.json names directories that do not exist here)."""
    moved = tmp_path / "elsewhere" / "m"
    shutil.copytree(sweep.root, moved)
    plan = json.loads((moved / "plan.json").read_text())
    for t in plan["trials"]:
        t["out_dir"] = f"/nonexistent/sweeps/m/trials/{t['trial_id']}"
    (moved / "plan.json").write_text(json.dumps(plan))
    info = sync_sweep(moved, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert info["logged"] == 4 and info["trials"] == 4
    assert sum(info["counts"].values()) == 4 and info["counts"].get("diverged", 0) >= 1


def test_unreachable_server_then_sync_gives_same_content(sweep, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        tracker = Tracker(sweep, dead, "robustprec")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker.start()
            tracker.tick()
        assert tracker.mirror is None and tracker.error
        assert any("robustprec sync --sweep" in str(w.message) for w in caught)
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    uninterrupted = f"sqlite:///{tmp_path / 'a.db'}"
    replayed = f"sqlite:///{tmp_path / 'b.db'}"
    a = sync_sweep(sweep.root, uninterrupted)
    b = sync_sweep(sweep.root, replayed)
    content_a, content_b = _content(uninterrupted, a["parent_run_id"]), _content(replayed, b["parent_run_id"])
    assert content_a == content_b and len(content_a["children"]) == 4


class _FailsOnce:
    """Make a real SQLite tracking store raise a transient server error once, at the `at`-th call of `method`."""

    method, at, calls = "", 0, 0

    @classmethod
    def store(cls, root: Path):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        class Store(SqlAlchemyStore):
            def _tick(self, name: str) -> None:
                if name == cls.method:
                    cls.calls += 1
                    if cls.calls == cls.at:
                        raise MlflowException("injected: 503 Service Unavailable", TEMPORARILY_UNAVAILABLE)

            def create_run(self, *a, **k):
                self._tick("create_run")
                return super().create_run(*a, **k)

            def get_run(self, *a, **k):
                self._tick("get_run")
                return super().get_run(*a, **k)

            def log_batch(self, *a, **k):
                self._tick("log_batch")
                return super().log_batch(*a, **k)

        return Store(f"sqlite:///{root / 'flaky.db'}", (root / "artifacts").as_uri())


@pytest.mark.parametrize(("method", "at"), [("log_batch", 1), ("create_run", 3), ("get_run", 3)])
def test_sync_with_a_store_that_fails_once_ends_with_one_parent_and_one_child_per_trial(
    sweep, tmp_path, method, at
):
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry.register(
        "flaky", lambda store_uri=None, artifact_uri=None: _FailsOnce.store(tmp_path)
    )
    _FailsOnce.method, _FailsOnce.at, _FailsOnce.calls = method, at, 0
    (Path(sweep.root) / "mlflow.json").unlink(missing_ok=True)
    uri = f"flaky://{tmp_path.name}"  # MLflow caches a store per URI: one per test
    failures = 0
    for _ in range(4):  # a user re-runs `robustprec sync` until it succeeds
        try:
            info = sync_sweep(sweep.root, uri)
            if info["logged"] == 4:
                break
        except InfrastructureError as e:
            assert "injected" in str(e) and "robustprec sync" in str(e)
            failures += 1
    assert failures == 1 and _FailsOnce.calls >= at  # it did fail, once
    direct = f"sqlite:///{tmp_path / 'flaky.db'}"
    c = _client(direct)
    exp = c.get_experiment_by_name("robustprec")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 shows runs, not GenAI
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.run_id for p in parents] == [info["parent_run_id"]]
    assert sorted(r.info.run_name for r in children) == sorted(sweep.trial_ids)
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    reference = sync_sweep(sweep.root, clean)
    assert _content(direct, info["parent_run_id"]) == _content(clean, reference["parent_run_id"])


@pytest.mark.slow
def test_real_mlflow_server_rest_api(sweep, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
                assert time.time() < deadline, "mlflow server did not come up"
                time.sleep(1)
        info = sync_sweep(sweep.root, base)

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(
                f"{base}/api/2.0/mlflow/{path}",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            return json.loads(urllib.request.urlopen(req, timeout=30).read())

        exp_id = json.loads(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=robustprec"
            ).read()
        )["experiment"]["experiment_id"]
        runs = post(
            "runs/search",
            {"experiment_ids": [exp_id], "filter": f"tags.mlflow.parentRunId = '{info['parent_run_id']}'"},
        )["runs"]
        assert sorted(r["info"]["run_name"] for r in runs) == sorted(sweep.trial_ids)
        for r in runs:
            params = {p["key"]: p["value"] for p in r["data"]["params"]}
            metrics = {m["key"] for m in r["data"]["metrics"]}
            assert "optim.lr" in params and "numerics.backend" in params
            assert {"loss", "diverged", "steps_completed"} <= metrics
        parent = post("runs/search", {"experiment_ids": [exp_id], "filter": "tags.`robustprec.sweep` = 'm'"})[
            "runs"
        ]
        assert [
            p["info"]["run_id"] for p in parent if "mlflow.parentRunId" not in str(p["data"].get("tags"))
        ] == [info["parent_run_id"]]
    finally:
        server.terminate()
        server.wait(timeout=30)
