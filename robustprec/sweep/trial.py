"""Run one trial: in the calling process ("direct") or on N Ray Train workers with DeepSpeed ("ray").

The Ray path checkpoints through Ray Train (every rank reports its own DeepSpeed shard files; Ray merges them into
one checkpoint directory in the run's storage) and restarts the worker group from the latest checkpoint on worker
failure (`train.max_failures`). Divergence is not a failure: a diverged trial ends normally with status `diverged`.
The final record (config, curve, summary) travels back as the last checkpoint, so the driver gets it even when
rank 0 ran on another machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from robustprec.errors import InfrastructureError, RobustprecError, exception_chain
from robustprec.sweep.spec import TrialResult, TrialSpec
from robustprec.tracking.store import CONFIG_FILE, CURVE_FILE, SUMMARY_FILE, read_summary, write_text

RAY_DIR = "ray"  # Ray Train's run folder inside the trial directory
ATTEMPTS_FILE = "attempts"  # attempts started so far (see `claim_attempt`)
RECORD_CHECKPOINT = "record"
RECORD_FILES = (CONFIG_FILE, CURVE_FILE, SUMMARY_FILE)
# Ray Train's report() waits for the controller's poll (default 2 s); reports are rare, but keep them snappy.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


class TrialFailed(InfrastructureError):
    """The trial failed more often than `train.max_failures` allows (an infrastructure error, never bad input)."""


def claim_attempt(out: Path, max_failures: int) -> int | None:
    """Count one more attempt of the trial in `out/attempts` and return its number, or None when all
    `max_failures + 1` attempts are spent. Every layer that retries (the direct loop, Tune after a dead process,
    Ray Train's worker restarts) draws on this one budget, so retries never multiply."""
    path = out / ATTEMPTS_FILE
    try:
        used = int(path.read_text()) if path.exists() else 0
    except ValueError:
        used = 0
    if used > max_failures:
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, str(used + 1))
    return used + 1


def reset_attempts(out: str | Path) -> None:
    """A fresh budget of attempts (a new `sweep` or `train` command)."""
    (Path(out) / ATTEMPTS_FILE).unlink(missing_ok=True)


def _spent(spec: TrialSpec, error: object) -> TrialFailed:
    n = spec.cfg.train.max_failures
    return TrialFailed(
        f"trial {spec.trial_id} failed {n + 1} time(s) (train.max_failures={n}); last error: {error}"
    )


def resolve_launcher(spec: TrialSpec) -> str:
    """`direct` or `ray`. Several workers always need Ray Train; one worker runs in the caller unless asked
    otherwise (measured: see docs/benchmarks.md, "Trial start-up")."""
    cfg = spec.cfg
    if cfg.train.workers > 1:
        if cfg.train.launcher == "direct":
            raise RobustprecError(
                "train.launcher 'direct' runs one worker; use 'ray' or 'auto' for train.workers > 1"
            )
        return "ray"
    return "ray" if cfg.train.launcher == "ray" else "direct"


def validate_trial(spec: TrialSpec) -> None:
    """Fail fast in the driver on what would otherwise fail in every worker (and be retried)."""
    cfg = spec.cfg
    t = cfg.train
    if t.global_batch_size % (t.micro_batch_size * t.workers):
        raise RobustprecError(
            f"train.global_batch_size ({t.global_batch_size}) must be a multiple of micro_batch_size x workers "
            f"({t.micro_batch_size} x {t.workers})"
        )
    resolve_launcher(spec)


def run_trial(
    spec: TrialSpec, *, report: Callable[[dict[str, Any]], None] | None = None, in_tune: bool = False
) -> TrialResult:
    """Train `spec` to completion (or divergence) and return its result; a finished trial is not re-run.

    Resumes from the trial's latest checkpoint when one exists (interrupted driver, retried trial).
    `report(metrics)` receives finite eval metrics as training goes (direct launcher); `in_tune=True` forwards
    Ray Train's rank-0 reports to the enclosing Ray Tune trial instead.
    Raises `ConfigError` for bad input and `TrialFailed` when workers keep failing.
    """
    t0 = time.perf_counter()
    origin = time.time()
    out = Path(spec.out_dir).resolve()
    validate_trial(spec)
    launcher = resolve_launcher(spec)
    if (out / SUMMARY_FILE).exists():
        summary = read_summary(out)
        return _result(spec, summary, launcher, time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    if launcher == "direct":
        summary = _run_direct(spec, out, origin, report)
    else:
        summary = _run_ray(spec, out, origin, in_tune)
    return _result(spec, summary, launcher, time.perf_counter() - t0)


def _result(spec: TrialSpec, summary: dict[str, Any], launcher: str, wall: float) -> TrialResult:
    return TrialResult(
        trial_id=spec.trial_id,
        status=str(summary.get("status", "error")),
        out_dir=str(Path(spec.out_dir)),
        summary=summary,
        launcher=launcher,
        restarts=int(summary.get("restarts") or 0),
        wall_time_s=wall,
    )


@contextlib.contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_direct(
    spec: TrialSpec, out: Path, origin: float, report: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    """The loop in this process; failures retry from the latest checkpoint while attempts are left (a process
    that died is retried by whoever restarts it: Tune)."""
    from robustprec.sweep.preflight import check_latest_checkpoint
    from robustprec.train.loop import CHECKPOINT_DIR, latest_checkpoint, train
    from robustprec.train.reporting import Report

    cfg = spec.cfg
    hooks = [Report(lambda row, _tag: report(tune_metrics(row)))] if report else []
    error: object = "the process died"
    with _env(spec.env):
        while claim_attempt(out, cfg.train.max_failures) is not None:
            try:
                check_latest_checkpoint(out)
                resume = latest_checkpoint(out / CHECKPOINT_DIR) is not None
                return train(cfg, out, resume=resume, origin_time=origin, callbacks=hooks)
            except RobustprecError:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
    raise _spent(spec, error)


# ---------------------------------------------------------------------------------------------------- Ray Train


def ensure_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Connect to the Ray cluster of this job (`RAY_ADDRESS`, `ray job submit`) or start a local one.

    `log_to_driver=False` keeps workers' output in Ray's log files (sweeps show a progress line instead)."""
    import ray

    os.environ.update({k: os.environ.get(k, v) for k, v in RAY_ENV.items()})
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "num_cpus": num_cpus if not os.environ.get("RAY_ADDRESS") else None,
        "log_to_driver": log_to_driver,
        "runtime_env": {"env_vars": {k: os.environ[k] for k in RAY_ENV}},
    }
    # stopped trials leak placement groups without the dashboard (STACK.md); a cluster's own start decides there
    if os.environ.get("RAY_ADDRESS") or _dashboard_missing() is None:
        try:
            ray.init(include_dashboard=True, **kwargs)
            return
        except Exception as e:
            if "missing packages" not in str(e):
                raise
            ray.shutdown()
    warnings.warn(
        "Ray's dashboard packages are missing (install ray[default]); running without the dashboard: "
        "Tune-stopped trials may leak placement groups",
        stacklevel=2,
    )
    ray.init(include_dashboard=False, **kwargs)


def _dashboard_missing() -> ImportError | None:
    """Why Ray's dashboard cannot start here (a minimal Ray), asked before starting Ray: a start with the dashboard
    fails only after starting the node, and the second start cost a sweep seconds."""
    import ray._private.utils as ray_utils

    # a private helper of Ray's; without it (or if it fails) the start with the dashboard finds out
    check = getattr(ray_utils, "get_dashboard_dependency_error", None)
    try:
        return check() if check is not None else None
    except Exception:
        return None


def worker_resources(spec: TrialSpec, use_gpu: bool) -> dict[str, float]:
    """Per-worker Ray resources: a one-worker trial takes the sweep's per-trial share (fractional GPUs pack
    several trials per GPU); multi-worker trials need a whole GPU per worker (NCCL rejects shared GPUs)."""
    cfg = spec.cfg
    if cfg.train.workers == 1:
        res = dict(cfg.sweep.resources)
    else:
        res = {"CPU": float(cfg.sweep.resources.get("CPU", 1.0))}
        if use_gpu:
            res["GPU"] = 1.0
    if use_gpu:
        res.setdefault("GPU", 1.0)
    else:
        res.pop("GPU", None)
    return res


def _use_gpu(spec: TrialSpec) -> bool:
    device = spec.cfg.train.device
    if device != "auto":
        return device == "cuda"
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) > 0


def _run_ray(spec: TrialSpec, out: Path, origin: float, in_tune: bool) -> dict[str, Any]:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = spec.cfg
    attempt = claim_attempt(out, cfg.train.max_failures)
    if attempt is None:
        raise _spent(spec, "the trial's driver died")
    ensure_ray()
    use_gpu = _use_gpu(spec)
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        _worker_main,
        train_loop_config={"spec": spec.to_dict(), "origin": origin},
        scaling_config=ScalingConfig(
            num_workers=cfg.train.workers,
            use_gpu=use_gpu,
            resources_per_worker=worker_resources(spec, use_gpu),
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=RAY_DIR,
            storage_path=str(out),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures - (attempt - 1)),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints + 1),
            worker_runtime_env={"env_vars": {**RAY_ENV, **spec.env}},
            callbacks=callbacks,
        ),
    )
    try:
        result = trainer.fit()
    except RobustprecError:
        raise
    except Exception as e:
        config_error = _config_error_in(e)
        if config_error is not None:
            raise config_error from None
        raise _spent(spec, e) from e
    if not (out / SUMMARY_FILE).exists():
        if result.checkpoint is None:
            raise TrialFailed(f"trial {spec.trial_id} finished without a record")
        with result.checkpoint.as_directory() as d:
            _copy_record(Path(d), out)
    return read_summary(out)


def _config_error_in(e: BaseException) -> RobustprecError | None:
    """A RobustprecError raised inside a worker arrives wrapped; surface it as the user error it is."""
    return next((x for x in exception_chain(e) if isinstance(x, RobustprecError)), None)


def _copy_record(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def tune_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """Flat, finite numbers only: NaN/Inf never reach Ray (schedulers compare them), a non-finite value is
    reported as `1e30` with `nonfinite=1`."""
    metrics: dict[str, Any] = {}
    nonfinite = False
    for k, v in row.items():
        if isinstance(v, bool):
            metrics[k] = int(v)
        elif isinstance(v, int | float):
            if math.isfinite(v):
                metrics[k] = v
            else:
                metrics[k] = 1e30
                nonfinite = True
        elif isinstance(v, str):
            metrics[k] = v
    metrics["nonfinite"] = int(nonfinite)
    return metrics


SUMMARY_METRICS = (
    "status",
    "reason",
    "diverged_at",
    "final_eval_loss",
    "initial_loss",
    "steps_completed",
    "restarts",
    "startup_s",
    "tokens_per_s",
    "tokens_per_s_per_device",
    "mfu",
    "wall_time_s",
)


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary fields a scheduler or the sweep table needs, finite and flat (`done=1`, `diverged=0/1`)."""
    row = {k: summary.get(k) for k in SUMMARY_METRICS if summary.get(k) is not None}
    row["diverged"] = int(summary.get("status") == "diverged")
    row["done"] = 1
    return tune_metrics(row)


def _worker_main(config: dict[str, Any]) -> None:
    """Ray Train worker: resume from Ray's checkpoint if any, train, report the record from rank 0."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from robustprec.train.loop import train
    from robustprec.train.reporting import Report

    spec = TrialSpec.from_dict(config["spec"])
    os.environ.update(spec.env)
    cfg = spec.cfg
    out = Path(spec.out_dir)
    rank = ray.train.get_context().get_world_rank()
    staging = Path(tempfile.mkdtemp(prefix=f"robustprec-{spec.trial_id[:40]}-r{rank}-"))

    def report(row: dict[str, Any], tag_dir: Path | None) -> None:
        if tag_dir is not None:
            tag_dir.mkdir(parents=True, exist_ok=True)  # ranks without shard files report an empty folder
        if tag_dir is None:
            ray.train.report(tune_metrics(row))
        else:
            ray.train.report(
                tune_metrics(row),
                checkpoint=Checkpoint.from_directory(str(tag_dir)),
                checkpoint_dir_name=tag_dir.name,
                delete_local_checkpoint_after_upload=True,
            )

    try:
        restored = ray.train.get_checkpoint()
        with restored.as_directory() if restored else contextlib.nullcontext(None) as d:
            ckpt = Path(d) if d else None
            if ckpt is not None and (ckpt / SUMMARY_FILE).exists():  # finished before the driver restarted
                if rank == 0:
                    _copy_record(ckpt, out)
                summary = read_summary(ckpt)
            else:
                device = ray.train.torch.get_device() if cfg.train.device != "cpu" else None
                summary = train(
                    cfg,
                    out,
                    callbacks=[Report(report)],
                    resume_from=ckpt,
                    checkpoint_root=staging / "checkpoints",
                    device=device if device is not None and device.type == "cuda" else None,
                    origin_time=float(config["origin"]),
                )
        final = summary_metrics(summary)
        if rank == 0:
            record = staging / RECORD_CHECKPOINT
            _copy_record(out, record)
            ray.train.report(
                final,
                checkpoint=Checkpoint.from_directory(str(record)),
                checkpoint_dir_name=RECORD_CHECKPOINT,
                delete_local_checkpoint_after_upload=True,
            )
        else:
            ray.train.report(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
