"""Mirror sweep records into MLflow: one parent run per sweep, one child run per trial.

Logging reads the records (summary.json, curve.parquet) on the driver, never the training path, so a slow or
unreachable tracking server cannot slow or kill training. Every call is idempotent: a child already mirrored (tag
`robustprec.synced`) is skipped, so `robustprec sync --sweep DIR` can replay a sweep at any time and yields the
same content as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from robustprec.tracking.store import (
    CONFIG_FILE,
    CURVE_FILE,
    SUMMARY_FILE,
    read_curve,
    read_summary,
    write_json,
)

MIRROR_FILE = "mlflow.json"  # in the sweep directory: tracking URI, experiment and parent run id
MAX_POINTS = 1000  # per metric, per child run
BATCH = 1000  # MLflow's log_batch limit for metrics
PARAM_BATCH = 100
SYNCED_TAG, TRIAL_TAG, SWEEP_TAG = "robustprec.synced", "robustprec.trial_id", "robustprec.sweep"
PARENT_DONE_TAG = "robustprec.parent_logged"  # the parent's params and description are complete
# MLflow 3's experiment-kind tag (value from the UI's own selector, "Machine learning"). The 3.17 UI ignores it while
# its GenAI / Model-training toggle is shown (seen in a browser): links carry UI_QUERY, which selects the view.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI_QUERY = "?workflowType=machine_learning"


def ui_link(experiment_id: str, run_id: str | None = None, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI address of an experiment (or one of its runs) in the model-training view."""
    path = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/{path}{UI_QUERY}"


SUMMARY_KEYS = (
    "final_eval_loss",
    "initial_loss",
    "diverged_at",
    "steps_completed",
    "restarts",
    "tokens_per_s",
    "mfu",
    "startup_s",
    "wall_time_s",
    "params",
)


def default_tracking_uri(base_dir: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store `mlflow.db` in `base_dir` (default: the working directory)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(base_dir or '.') / 'mlflow.db').resolve()}"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> dotted params (values as strings, MLflow's limit of 6000 chars respected)."""
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if isinstance(v, list | tuple) else str(v))[:6000]
    return out


def downsample_steps(n: int, max_points: int = MAX_POINTS) -> list[int]:
    """Indices of at most `max_points` evenly spread rows, always keeping the first and the last."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


class MlflowMirror:
    """Parent/child runs of one sweep in one MLflow tracking store."""

    def __init__(
        self, sweep_dir: str | Path, tracking_uri: str | None = None, experiment: str = "robustprec"
    ):
        # fail in seconds, not minutes, when the server is down (users' own settings win)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        self.sweep_dir = Path(sweep_dir)
        state = self._state()
        self.tracking_uri = tracking_uri or state.get("tracking_uri") or default_tracking_uri()
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.parent_run_id: str | None = None
        self._exp_id: str | None = None
        # the parent of an earlier (partial) mirror into this same store; any error but "it is gone" is raised,
        # never taken for a missing parent (a second parent would break idempotent sync)
        earlier = state.get("parent_run_id") if state.get("tracking_uri") == self.tracking_uri else None
        if earlier and self._exists(earlier):
            self.parent_run_id = earlier
            self.experiment = state.get("experiment", experiment)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise

    def _state(self) -> dict[str, Any]:
        path = self.sweep_dir / MIRROR_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def experiment_id(self) -> str:
        return self._experiment_id()

    def _experiment_id(self) -> str:
        """The experiment's id (created if needed), marked as a model-training experiment for MLflow 3's UI."""
        if self._exp_id is not None:
            return self._exp_id
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = None
            if self.tracking_uri.startswith("sqlite:///"):  # artifacts next to the database, not in the cwd
                db = Path(self.tracking_uri.removeprefix("sqlite:///"))
                location = (db.parent / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(
                self.experiment, artifact_location=location, tags=dict([EXPERIMENT_KIND])
            )
        else:
            exp_id = exp.experiment_id
            if EXPERIMENT_KIND[0] not in exp.tags:  # a user's own choice of kind is kept
                self.client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
        self._exp_id = str(exp_id)
        return self._exp_id

    def ensure_parent(self, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
        """Create the sweep's parent run once: its id goes to `<sweep_dir>/mlflow.json` as soon as it exists, so a
        failure later in this call (or a retried sync) completes that same run instead of opening another."""
        from mlflow.entities import Param, RunTag

        if self.parent_run_id is None:
            run = self.client.create_run(self._experiment_id(), run_name=name, tags={SWEEP_TAG: name, **tags})
            self.parent_run_id = run.info.run_id
            write_json(
                self.sweep_dir / MIRROR_FILE,
                {
                    "tracking_uri": self.tracking_uri,
                    "experiment": self.experiment,
                    "parent_run_id": self.parent_run_id,
                },
            )
        if self.client.get_run(self.parent_run_id).data.tags.get(PARENT_DONE_TAG) == "1":
            return self.parent_run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):  # logging the same value again is allowed
            self.client.log_batch(self.parent_run_id, params=items[i : i + PARAM_BATCH])
        note = RunTag("mlflow.note.content", f"robustprec sweep {name}")
        self.client.log_batch(self.parent_run_id, tags=[note, RunTag(PARENT_DONE_TAG, "1")])
        return self.parent_run_id

    def _child(self, trial_id: str) -> Any | None:
        runs = self.client.search_runs(
            [self._experiment_id()],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def log_trial(
        self, trial_id: str, run_dir: str | Path, axes: dict[str, Any], curve_points: int = MAX_POINTS
    ) -> str | None:
        """Mirror one finished trial (params, summary metrics, the curve down-sampled to `curve_points` per metric
        (0: none), record artifacts); idempotent. Returns the child run id, or None when it has no summary yet."""
        from mlflow.entities import Metric, Param, RunTag

        run_dir = Path(run_dir)
        if self.parent_run_id is None:
            raise RuntimeError("ensure_parent() first")
        if not (run_dir / SUMMARY_FILE).exists():
            return None
        existing = self._child(trial_id)
        if existing is not None and existing.data.tags.get(SYNCED_TAG) == "1":
            return str(existing.info.run_id)
        if existing is not None:  # a half-logged child from an interrupted sync: start it over
            self.client.delete_run(existing.info.run_id)
        summary = read_summary(run_dir)
        run = self.client.create_run(
            self._experiment_id(),
            run_name=trial_id,
            tags={"mlflow.parentRunId": self.parent_run_id, TRIAL_TAG: trial_id, "status": summary["status"]},
        )
        rid = run.info.run_id
        params = {**flatten(summary.get("config", {})), **{f"axis.{k}": str(v) for k, v in axes.items()}}
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(rid, params=items[i : i + PARAM_BATCH])
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(summary[k]), now, 0)
            for k in SUMMARY_KEYS
            if isinstance(summary.get(k), int | float)
        ]
        metrics.append(Metric("diverged", float(summary["status"] == "diverged"), now, 0))
        if curve_points > 0:
            metrics.extend(self._curve_metrics(run_dir, now, curve_points))
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(rid, metrics=metrics[i : i + BATCH])
        for name in (CURVE_FILE, SUMMARY_FILE, CONFIG_FILE):
            if (run_dir / name).exists():
                self.client.log_artifact(rid, str(run_dir / name), artifact_path="record")
        tags = [RunTag(SYNCED_TAG, "1"), RunTag("reason", str(summary.get("reason") or ""))]
        self.client.log_batch(rid, tags=tags)
        self.client.set_terminated(rid, "FINISHED")
        return str(rid)

    @staticmethod
    def _curve_metrics(run_dir: Path, timestamp: int, max_points: int) -> list[Any]:
        import math

        from mlflow.entities import Metric

        table = read_curve(run_dir)
        if table.num_rows == 0:
            return []
        steps = table.column("step").to_pylist()
        clock = table.column("time").to_pylist() if "time" in table.column_names else [None]
        # each point at its step's wall clock (MLflow's relative-time axis); all at `timestamp` where a curve has
        # rows without it (written before the column existed, then resumed), so that time never runs backwards
        times = [timestamp] * len(steps) if None in clock else [int(t * 1000) for t in clock]
        out = []
        for name in table.column_names:
            if name in ("step", "time"):
                continue
            values = table.column(name).to_pylist()
            present = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
            for j in downsample_steps(len(present), max_points):
                i = present[j]
                out.append(Metric(name, float(values[i]), times[i], int(steps[i])))
        return out

    def finish(self, counts: dict[str, int]) -> None:
        """Summary counts on the parent and mark it finished."""
        from mlflow.entities import Metric

        if self.parent_run_id is None:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id, metrics=[Metric(f"trials_{k}", float(v), now, 0) for k, v in counts.items()]
        )
        self.client.set_terminated(self.parent_run_id, "FINISHED")


def _plan_trials(sweep_dir: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    from robustprec.errors import ConfigError, RecordError

    path = sweep_dir / "plan.json"
    if not path.exists():
        raise ConfigError(f"{str(sweep_dir)!r} is not a sweep directory (no plan.json)")
    try:
        plan = json.loads(path.read_text())
        name, trials = plan["name"], [_moved_with_sweep(sweep_dir, t) for t in plan["trials"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise RecordError(f"{str(path)!r} is damaged ({type(e).__name__}: {e}); re-plan the sweep") from None
    return name, trials, plan


def _moved_with_sweep(sweep_dir: Path, trial: dict[str, Any]) -> dict[str, Any]:
    """A trial whose planned directory is gone but whose copy sits in `sweep_dir/trials` (a sweep directory
    moved or brought back from another machine) is read from where the sweep now is."""
    from robustprec.sweep.plan import trial_dir

    here = trial_dir(str(sweep_dir), trial["trial_id"])
    if not Path(trial["out_dir"]).exists() and Path(here).exists():
        return {**trial, "out_dir": here}
    return trial


def open_parent(
    sweep_dir: str | Path, tracking_uri: str | None = None, experiment: str = "robustprec"
) -> MlflowMirror:
    """The mirror of a sweep directory with its parent run created (tags: sweep, plan, git SHA, versions, device)."""
    from robustprec import provenance

    sweep_dir = Path(sweep_dir)
    name, _, plan = _plan_trials(sweep_dir)
    mirror = MlflowMirror(sweep_dir, tracking_uri, experiment)
    versions = provenance.package_versions()
    tags = {
        "robustprec.plan_fingerprint": str(plan.get("fingerprint", "")),
        "robustprec.sweep_dir": str(sweep_dir.resolve()),
        "git_sha": str(provenance.git_sha()),
        "device": provenance.device_name("cpu"),
        **{f"version.{k}": str(v) for k, v in versions.items()},
    }
    params = {f"sweep.axis.{k}": json.dumps(v) for k, v in plan.get("axes", {}).items()}
    params.update({f"base.{k}": v for k, v in flatten(plan.get("base_config", {})).items()})
    params["sweep.trials"] = str(len(plan["trials"]))
    mirror.ensure_parent(name, tags, params)
    return mirror


def sync_sweep(
    sweep_dir: str | Path, tracking_uri: str | None = None, experiment: str = "robustprec"
) -> dict[str, Any]:
    """Mirror every finished trial of a sweep directory (idempotent). Returns the parent run id and counts.
    A tracking-server error is an `InfrastructureError` (one line); running it again resumes where it stopped."""
    from mlflow.exceptions import MlflowException

    try:
        return _sync(Path(sweep_dir), tracking_uri, experiment)
    except MlflowException as e:
        from robustprec.errors import InfrastructureError

        where = tracking_uri or default_tracking_uri()
        raise InfrastructureError(
            f"MLflow at {where} failed: {str(e).splitlines()[0]}; run `robustprec sync --sweep {sweep_dir}` again"
        ) from None


def _sync(sweep_dir: Path, tracking_uri: str | None, experiment: str) -> dict[str, Any]:
    _, trials, _ = _plan_trials(sweep_dir)
    for t in trials:  # a damaged record is refused before anything is logged
        if (Path(t["out_dir"]) / SUMMARY_FILE).exists():
            read_summary(t["out_dir"])
    mirror = open_parent(sweep_dir, tracking_uri, experiment)
    logged = 0
    counts: dict[str, int] = {}
    for t in trials:
        run_dir = Path(t["out_dir"])
        if mirror.log_trial(t["trial_id"], run_dir, t.get("axes", {})) is not None:
            logged += 1
            status = read_summary(run_dir).get("status", "error")
            counts[status] = counts.get(status, 0) + 1
    if logged == len(trials):
        mirror.finish(counts)
    return {
        "parent_run_id": mirror.parent_run_id,
        "tracking_uri": mirror.tracking_uri,
        "logged": logged,
        "trials": len(trials),
        "counts": counts,
    }
