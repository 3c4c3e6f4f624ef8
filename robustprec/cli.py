"""Command-line interface. Holds no logic: it parses, calls the packages, and prints.

Heavy imports (torch, ray, deepspeed, mlflow) happen inside commands, so `robustprec --help` is instant.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from robustprec.errors import InfrastructureError, RobustprecError

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(fn: F) -> F:
    """Turn input errors into one line on stderr and exit code 2, infrastructure failures (retries spent) into
    one line and exit code 1 (never a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RobustprecError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except InfrastructureError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustprec")
def main() -> None:
    """robustprec: is a reduced-precision numerics scheme as robust to seeds and learning rates as BF16?"""


def _prepare_run_dir(out: Path, cfg: Any, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run, or to resume one that cannot continue as it was; nothing is written before."""
    from robustprec.sweep import preflight

    preflight.check_configs([cfg])
    has_run = out.exists() and any(
        (out / n).exists() for n in ("summary.json", "curve.parts", "curve.parquet", "checkpoints", "ray")
    )
    if has_run and not (resume or overwrite):
        raise RobustprecError(
            f"run directory {str(out)!r} already holds a run; pass --resume to continue it or --overwrite to replace it"
        )
    if resume and not overwrite:
        preflight.check_latest_checkpoint(out)
        preflight.check_resume_config(out, cfg)
    if overwrite and out.exists():
        shutil.rmtree(out)
    if resume and not ((out / "checkpoints" / "latest").exists() or (out / "ray").is_dir()):
        raise RobustprecError(
            f"nothing to resume: {str(out)!r} has no checkpoint (set train.checkpoint_interval)"
        )


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file (defaults if omitted)."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. optim.lr=3e-3.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: runs/<name>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Run on N Ray Train workers with DeepSpeed (starts a local Ray unless RAY_ADDRESS is set).",
)
@click.option("--gpu", is_flag=True, help="One GPU per worker (sets train.device=cuda).")
@_user_errors
def train(
    config_path: str | None,
    overrides: tuple[str, ...],
    out: str | None,
    resume: bool,
    overwrite: bool,
    workers: int | None,
    gpu: bool,
) -> None:
    """Train one trial and print its summary."""
    from robustprec.config import load_config

    extra = [f"train.workers={workers}"] if workers else []
    extra += ["train.device=cuda"] if gpu else []
    cfg = load_config(config_path, [*overrides, *extra])
    run_dir = Path(out) if out else Path("runs") / f"{cfg.name or 'train'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume and not out:
        raise RobustprecError("--resume needs --out DIR")
    _prepare_run_dir(run_dir, cfg, resume, overwrite)

    from robustprec.cli_display import TrainProgress, print_summary

    if workers is not None:
        from robustprec.sweep.spec import TrialSpec
        from robustprec.sweep.trial import reset_attempts, resolve_launcher, run_trial

        spec = TrialSpec(trial_id=cfg.name or run_dir.name, config=cfg.to_dict(), out_dir=str(run_dir))
        click.echo(
            f"launcher: {resolve_launcher(spec)}, {cfg.train.workers} worker(s), zero {cfg.train.zero_stage}"
        )
        reset_attempts(run_dir)
        result = run_trial(spec)
        print_summary(result.summary, run_dir)
        return

    from robustprec.train.loop import train as run_training
    from robustprec.train.reporting import Console

    with TrainProgress(cfg.train.steps) as progress:
        summary = run_training(cfg, run_dir, resume=resume, callbacks=[Console(progress.update)])
    print_summary(summary, run_dir)


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config with a sweep: section."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--name", help="Sweep name (default: the config's name); the same name resumes.")
@click.option("--storage", type=click.Path(file_okay=False), help="Sweeps folder (default: ./sweeps).")
@click.option(
    "--dry-run", is_flag=True, help="Print the planned trials with FLOPs and GPU-hours, run nothing."
)
@click.option("--overwrite", is_flag=True, help="Discard an existing sweep of the same name first.")
@click.option(
    "--lr-search",
    type=click.Choice(["grid", "adaptive"]),
    help="Sets sweep.lr_search.mode: the LR grid, or an adaptive eta_c search per condition "
    "(sweep.lr_search.lo/hi/seeds_per_point/max_trials/target_ci_ratio via --set).",
)
@click.option(
    "--analyze", "run_analyze", is_flag=True, help="Analyze the sweep when it ends and print the verdicts."
)
@_user_errors
def sweep(
    config_path: str | None,
    overrides: tuple[str, ...],
    name: str | None,
    storage: str | None,
    dry_run: bool,
    overwrite: bool,
    lr_search: str | None,
    run_analyze: bool,
) -> None:
    """Run a seed x LR x format x model grid, or an adaptive eta_c search per condition, on Ray Tune (resumes
    when re-run)."""
    from robustprec.sweep.launch import sweep_command

    result = sweep_command(
        config_path,
        [*overrides, *([f"sweep.lr_search.mode={lr_search}"] if lr_search else [])],
        name=name,
        storage=storage,
        dry_run=dry_run,
        overwrite=overwrite,
        analyze=run_analyze,
    )
    if getattr(result, "counts", {}).get("error", 0):  # diverged trials are results; errored ones are not
        sys.exit(1)


@main.command()
@click.option(
    "--sweep", "sweep_dir", required=True, type=click.Path(file_okay=False), help="Sweep directory."
)
@click.option(
    "--tracking-uri", help="MLflow tracking URI (default: the sweep's, MLFLOW_TRACKING_URI, ./mlflow.db)."
)
@_user_errors
def sync(sweep_dir: str, tracking_uri: str | None) -> None:
    """Mirror a sweep's records into MLflow (idempotent: replays what a down server missed)."""
    from robustprec.tracking.mlflow_mirror import sync_sweep

    info = sync_sweep(sweep_dir, tracking_uri)
    click.echo(
        f"mlflow: parent run {info['parent_run_id']} in {info['tracking_uri']}: "
        f"{info['logged']}/{info['trials']} trials mirrored"
    )


@main.command()
@click.option(
    "--run-id", required=True, help="MLflow parent run id of the sweep (printed by `robustprec sweep`)."
)
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db).")
@click.option("--reference", default="bf16", show_default=True, help="Reference format of the verdicts.")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: analysis/<run-id>).")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--no-log-back", is_flag=True, help="Do not attach the report to the parent run.")
@_user_errors
def analyze(
    run_id: str, tracking_uri: str | None, reference: str, out: str | None, output: str, no_log_back: bool
) -> None:
    """Divergence rates, LR sensitivity, eta_c fits and verdicts of a sweep; plots and a report."""
    from robustprec.analysis.report import run_analysis
    from robustprec.cli_display import print_analysis

    result = run_analysis(
        run_id, tracking_uri=tracking_uri, reference=reference, out_dir=out, log_back=not no_log_back
    )
    if output == "json":
        click.echo(json.dumps(result.data["formats"], indent=1, default=str))
    else:
        print_analysis(result)


@main.command()
@click.argument("spec", required=False)
@_user_errors
def formats(spec: str | None) -> None:
    """List numerics backends and number-format aliases with their ranges, or check one format or backend SPEC
    (e.g. E4M3:rounding=stochastic, sim:fp8_e5m2, bf16) and show its range."""
    from robustprec.cli_display import print_format, print_formats

    if spec is None:
        print_formats()
        return
    from robustprec.numerics.backends import available_backends
    from robustprec.sweep.preflight import check_backend

    backend = spec if spec in available_backends() or spec.startswith("sim:") else f"sim:{spec}"
    check_backend(backend)
    print_format(backend)


if __name__ == "__main__":
    main()
