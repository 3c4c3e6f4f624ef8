"""Run a sweep plan on Ray Tune: one Tune trial per TrialSpec, resources and packing from the config,
divergence as a result, resume by re-running the same command.

Layout of a sweep directory (`plan.root`):
    plan.json            the expanded plan (compared on resume); an adaptive search appends its trials
    search.json          adaptive mode: each condition's current η_c, interval and trials
    tune/                Ray Tune's experiment state (what `Tuner.restore` reads)
    trials/<trial_id>/   each trial's record: config.yaml, curve.parquet, summary.json (or error.json)
    trials.parquet       one row per trial, written when the sweep ends
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustprec.errors import ConfigError, RobustprecError
from robustprec.sweep.plan import SweepPlan
from robustprec.sweep.spec import TrialSpec
from robustprec.sweep.trial import (
    TrialFailed,
    ensure_ray,
    reset_attempts,
    resolve_launcher,
    summary_metrics,
    validate_trial,
)
from robustprec.tracking.store import SUMMARY_FILE, read_summary, write_json

PLAN_FILE, TUNE_DIR, TRIALS_DIR, TRIALS_TABLE, ERROR_FILE = (
    "plan.json",
    "tune",
    "trials",
    "trials.parquet",
    "error.json",
)
STATUSES = ("pending", "running", "converged", "diverged", "error")
# A Ray-Train trial's Tune driver only waits on its workers: a token CPU share (0 is rejected by Ray).
DRIVER_TOKEN = {"CPU": 0.01}
# torch.distributed rendezvous variables (see `_drop_inherited_process_group_env`)
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class SweepOutcome:
    """What a finished (or resumed-and-finished) sweep produced."""

    plan: SweepPlan
    rows: list[dict[str, Any]]
    resumed: bool
    wall_time_s: float
    counts: dict[str, int] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)

    @property
    def sweep_dir(self) -> Path:
        return Path(self.plan.root)


def trial_status(spec: TrialSpec) -> tuple[str, dict[str, Any]]:
    """Status of a trial from its record: converged/diverged/... from summary.json, `error`, or `pending`."""
    out = Path(spec.out_dir)
    if (out / SUMMARY_FILE).exists():
        summary = read_summary(out)
        return str(summary.get("status", "error")), summary
    if (out / ERROR_FILE).exists():
        import json

        return "error", json.loads((out / ERROR_FILE).read_text())
    return "pending", {}


def result_rows(plan: SweepPlan) -> list[dict[str, Any]]:
    """One flat row per trial (axes, status and summary numbers), read from the records."""
    rows = []
    for spec in list(plan.trials):
        status, data = trial_status(spec)
        row: dict[str, Any] = {"trial_id": spec.trial_id, **spec.axes, "status": status}
        for k in ("reason", "diverged_at", "diverged_phase", "instability_events", "final_eval_loss",
                  "steps_completed", "restarts", "wall_time_s"):  # fmt: skip
            row[k] = data.get(k)
        if status == "error":
            row["reason"] = data.get("error")
        row["out_dir"] = spec.out_dir
        rows.append(row)
    return rows


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
    pq.write_table(table, path)


def prepare_sweep_dir(plan: SweepPlan, overwrite: bool = False) -> bool:
    """Create the sweep directory or check it holds the same plan. Returns True when resuming."""
    root = Path(plan.root)
    plan_file = root / PLAN_FILE
    if overwrite and root.exists():
        shutil.rmtree(root)
    if plan_file.exists():
        previous = SweepPlan.read(plan_file)
        if previous.fingerprint != plan.fingerprint:
            raise ConfigError(
                f"sweep {plan.name!r} in {str(root)!r} was started with a different plan; "
                "use another --name, or --overwrite to discard it"
            )
        plan.adopt(previous)  # the trials an adaptive search added before
        return True
    plan.write(plan_file)
    return False


def _trial_resources(spec: TrialSpec) -> dict[str, float]:
    if resolve_launcher(spec) == "ray":
        return dict(DRIVER_TOKEN)  # the TorchTrainer requests its workers' resources itself
    return {k: float(v) for k, v in spec.cfg.sweep.resources.items() if float(v) > 0}


def _drop_inherited_process_group_env() -> None:
    """A direct trial in a Tune actor is one process that creates its own process group. Rendezvous variables in
    the actor's environment were inherited from whatever started its Ray node: a process that ran a trial
    in-process leaves its group's MASTER_PORT there, and every trial then failed with EADDRINUSE. A reused actor
    that already holds its own group keeps them."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return
    for k in DIST_VARS:
        os.environ.pop(k, None)


def _tune_trial(config: dict[str, Any], specs: dict[str, dict[str, Any]]) -> None:
    """Tune function trainable: run one trial, report evals as they come, then its final summary.

    Input errors end the trial at once with status `error` (never retried). Infrastructure failures are retried
    from the trial's last checkpoint while its budget of `train.max_failures` retries lasts (`trial.claim_attempt`,
    shared with Tune restarting a dead process), then recorded as `error` too.
    """
    from ray import tune

    from robustprec.sweep.trial import run_trial

    spec = TrialSpec.from_dict(config["spec"] if "spec" in config else specs[config["trial_id"]])
    if spec.cfg.train.threads is None and resolve_launcher(spec) == "direct":
        # as many intra-op threads as CPUs this trial holds (torch would take every core of the machine)
        threads = max(1, int(_trial_resources(spec).get("CPU", 1)))
        spec.config["train"]["threads"] = threads
    if resolve_launcher(spec) == "direct":
        _drop_inherited_process_group_env()
    try:
        result = run_trial(spec, report=tune.report, in_tune=True)
    except (RobustprecError, TrialFailed) as e:
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(spec.out_dir) / ERROR_FILE, {"status": "error", "error": str(e)})
        tune.report({"done": 1, "diverged": 0, "status": "error", "error": str(e)})
        return
    finally:
        gc.collect()
        _empty_cuda_cache()
    tune.report(summary_metrics(result.summary))


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stopper() -> Any:
    from ray import tune

    class OutcomeStopper(tune.Stopper):
        """Ends a trial as soon as it reports an outcome (`done`, `diverged`): divergence is a result, never an
        exception, and never a NaN that a scheduler would mis-compare."""

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return bool(result.get("done") or result.get("diverged"))

        def stop_all(self) -> bool:
            return False

    return OutcomeStopper()


def status_counts(plan: SweepPlan, finished: dict[str, tuple[str, float]] | None = None) -> dict[str, Any]:
    """Trials by status, read from the records (a trial with a record folder but no summary is running); in
    adaptive mode also `search`: each condition's current η_c, interval and trials (`LiveSearch`).

    `finished` (trial id -> (status, time)) remembers ended trials between calls, so a poll re-reads only the
    trials still pending or running."""
    finished = {} if finished is None else finished
    counts = dict.fromkeys(STATUSES, 0)
    for spec in list(plan.trials):
        if spec.trial_id in finished:
            status = finished[spec.trial_id][0]
        else:
            status, _ = trial_status(spec)
            out = Path(spec.out_dir)
            if status == "pending" and (out / "config.yaml").exists():
                status = "running"
            elif status != "pending":
                done = out / (ERROR_FILE if status == "error" else SUMMARY_FILE)
                finished[spec.trial_id] = (status, done.stat().st_mtime if done.exists() else 0.0)
        counts[status] = counts.get(status, 0) + 1
    recent = sorted((t, tid, st) for tid, (st, t) in finished.items())[-5:]
    state: dict[str, Any] = {"counts": counts, "recent": [(tid, st) for _, tid, st in recent]}
    if plan.search:
        from robustprec.sweep.adaptive import running

        search = running(plan.root)
        state["search"] = search.snapshot() if search is not None else {}
    return state


class Tracker:
    """Mirrors finished trials into MLflow from the records, as they finish (never on the training path).

    Any tracking failure disables it for the rest of the sweep with one warning: training goes on, and
    `robustprec sync --sweep DIR` replays everything later."""

    def __init__(self, plan: SweepPlan, uri: str, experiment: str) -> None:
        self.plan, self.uri, self.experiment = plan, uri, experiment
        self.mirror: Any = None
        self.error: str | None = None
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        try:
            from robustprec.tracking.mlflow_mirror import open_parent

            self.mirror = open_parent(self.plan.root, self.uri, self.experiment)
        except Exception as e:  # unreachable server, bad URI: training must not depend on it
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        import warnings

        self.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self.mirror = None
        warnings.warn(
            f"MLflow tracking at {self.uri} failed ({self.error}); training continues, records are kept: "
            f"run `robustprec sync --sweep {self.plan.root}` later",
            stacklevel=2,
        )

    def tick(self) -> None:
        with self._lock:
            if self.mirror is None:
                return
            for spec in list(self.plan.trials):
                if spec.trial_id in self._logged or not (Path(spec.out_dir) / SUMMARY_FILE).exists():
                    continue
                try:
                    self.mirror.log_trial(spec.trial_id, spec.out_dir, spec.axes)
                except Exception as e:
                    self._fail(e)
                    return
                self._logged.add(spec.trial_id)

    def finish(self, counts: dict[str, int]) -> dict[str, Any]:
        self.tick()
        info: dict[str, Any] = {"tracking_uri": self.uri, "error": self.error}
        if self.mirror is not None:
            info["parent_run_id"] = self.mirror.parent_run_id
            with contextlib.suppress(Exception):  # a link is a courtesy: never fail the sweep over it
                info["experiment_id"] = self.mirror.experiment_id
            if len(self._logged) == len(self.plan.trials):
                try:
                    self.mirror.finish({k: v for k, v in counts.items() if v})
                except Exception as e:
                    self._fail(e)
        return info


class _Poller:
    """Calls `fn()` on entry, every `interval` seconds on a daemon thread, and once more on exit."""

    def __init__(self, fn: Callable[[], None], interval: float = 1.0):
        self.fn, self.interval = fn, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.fn()

    def __enter__(self) -> _Poller:
        self.fn()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.fn()


def run_sweep(
    plan: SweepPlan,
    *,
    overwrite: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    tracking_uri: str | None = None,
    on_parent: Callable[[dict[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) every trial of `plan` on the current Ray cluster (a local one is started if needed); in
    adaptive mode (`plan.search`), every condition's η_c search, which adds its trials to the plan as it goes.

    Completed trials are never re-run. `progress(counts)` is called about once a second with `status_counts`.
    Finished trials are mirrored to MLflow (`tracking.enabled`; URI: `tracking_uri`, `tracking.uri`,
    `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` in the working directory); `on_parent(info)` receives the
    parent run id once it exists.
    """
    t0 = time.perf_counter()
    for spec in [*plan.trials, *_condition_specs(plan)]:
        validate_trial(spec)
    resumed = prepare_sweep_dir(plan, overwrite)
    tracker = _tracker(plan, tracking_uri)
    if tracker is not None:
        tracker.start()
        if on_parent is not None:
            parent = tracker.mirror.parent_run_id if tracker.mirror is not None else None
            on_parent({"parent_run_id": parent, "tracking_uri": tracker.uri, "error": tracker.error})
    pending = [s for s in plan.trials if trial_status(s)[0] == "pending"]
    for spec in pending:  # each run of the command gives unfinished trials a fresh budget of retries
        reset_attempts(spec.out_dir)
    if pending or plan.search:
        show = progress or (lambda _: None)
        finished: dict[str, tuple[str, float]] = {}
        tracking_thread = _Poller(tracker.tick, interval=2.0) if tracker is not None else None
        with (
            _live_search(plan),
            _Poller(lambda: show(status_counts(plan, finished))),
            tracking_thread or contextlib.nullcontext(),
        ):
            _fit(plan, pending, resumed)
    rows = result_rows(plan)
    _write_table(rows, Path(plan.root) / TRIALS_TABLE)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    tracking = tracker.finish(counts) if tracker is not None else {}
    return SweepOutcome(plan, rows, resumed, time.perf_counter() - t0, counts, tracking)


def _condition_specs(plan: SweepPlan) -> list[TrialSpec]:
    """Adaptive mode: one TrialSpec per condition (its config at the base LR and seed), for checks and settings."""
    if not plan.search:
        return []
    root = Path(plan.root) / TRIALS_DIR
    return [TrialSpec(c["label"], c["config"], str(root / "_"), c["axes"]) for c in plan.search["conditions"]]


def _base_cfg(plan: SweepPlan) -> Any:
    specs = plan.trials or _condition_specs(plan)
    return specs[0].cfg if specs else None


@contextlib.contextmanager
def _live_search(plan: SweepPlan) -> Iterator[None]:
    """Adaptive mode: the driver-side state the searcher adds trials to (see `adaptive.LiveSearch`)."""
    if not plan.search:
        yield
        return
    from robustprec.sweep import adaptive

    adaptive.register(plan)
    try:
        yield
    finally:
        adaptive.unregister(plan)


def _tracker(plan: SweepPlan, tracking_uri: str | None) -> Tracker | None:
    cfg = _base_cfg(plan)
    if cfg is None or not cfg.tracking.enabled:
        return None
    from robustprec.tracking.mlflow_mirror import default_tracking_uri

    return Tracker(plan, tracking_uri or cfg.tracking.uri or default_tracking_uri(), cfg.tracking.experiment)


def _trainable(plan: SweepPlan) -> tuple[Any, bool]:
    """The Tune trainable (specs of planned trials by id; a searcher's trials carry theirs in the config), with
    each trial's resources, and whether all trials ask for the same resources (then actors are reused)."""
    from ray import tune

    specs = {s.trial_id: s.to_dict() for s in plan.trials}
    resources = {s.trial_id: _trial_resources(s) for s in [*plan.trials, *_condition_specs(plan)]}

    def request(config: dict[str, Any]) -> dict[str, float]:
        if "spec" in config:
            return _trial_resources(TrialSpec.from_dict(config["spec"]))
        return resources[config["trial_id"]]

    trainable = tune.with_resources(tune.with_parameters(_tune_trial, specs=specs), resources=request)
    return trainable, len({tuple(sorted(r.items())) for r in resources.values()}) <= 1


def _search_space(plan: SweepPlan, pending: list[TrialSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune's param space and search settings: a grid over the pending trial ids, or (adaptive mode) the η_c
    searcher, whose configs carry their specs, for at most the budget's trials."""
    from ray import tune

    if not plan.search:
        return {"trial_id": tune.grid_search([s.trial_id for s in pending])}, {}
    from robustprec.sweep.adaptive import budget
    from robustprec.sweep.searcher import EtaCSearcher

    return {}, {"search_alg": EtaCSearcher(plan.root), "num_samples": budget(plan)["trials"]}


def _fit(plan: SweepPlan, pending: list[TrialSpec], resumed: bool) -> None:
    from ray import tune

    ensure_ray(
        log_to_driver=False
    )  # trials' own lines would flood the progress view; records hold everything
    # On an interrupted sweep Tune warns once per trial that never started ("Could not fetch metrics"), a wall of
    # false alarms: the records say what is pending, and the resume hint is printed by the CLI.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    trainable, same_resources = _trainable(plan)
    cfg = _base_cfg(plan)
    tune_path = Path(plan.root) / TUNE_DIR
    if resumed and tune.Tuner.can_restore(str(tune_path / plan.name)):
        tuner = tune.Tuner.restore(
            str(tune_path / plan.name), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        space, search = _search_space(plan, pending)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=cfg.sweep.max_concurrent,
                reuse_actors=same_resources,  # warm processes: imports and DeepSpeed set-up paid once
                trial_name_creator=lambda t: t.config["trial_id"],
                trial_dirname_creator=lambda t: t.config["trial_id"],
                **search,
            ),
            run_config=tune.RunConfig(
                name=plan.name,
                storage_path=str(tune_path),
                stop=_stopper(),
                failure_config=tune.FailureConfig(max_failures=cfg.train.max_failures),
                verbose=0,
            ),
        )
    tuner.fit()
