"""The `sweep` command shared by `robustprec sweep` and `jobs/sweep.py`: plan, print or run, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from robustprec.config import load_config
from robustprec.sweep.plan import SweepPlan, plan_sweep

if TYPE_CHECKING:
    from robustprec.sweep.run import SweepOutcome

DEFAULT_STORAGE = "sweeps"


def sweep_command(
    config_path: str | None,
    overrides: list[str],
    *,
    name: str | None = None,
    storage: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    tracking_uri: str | None = None,
    analyze: bool = False,
) -> SweepPlan | SweepOutcome:
    """Expand the config's sweep, then print the plan (`dry_run`) or run/resume it and print the trials.
    Returns the plan (dry run) or the outcome."""
    from robustprec import cli_display

    cfg = load_config(config_path, overrides)
    root = Path(storage or DEFAULT_STORAGE).expanduser().resolve()
    plan = plan_sweep(cfg, name=name, root=root)
    from robustprec.sweep.preflight import check_configs

    check_configs(t.cfg for t in plan.trials)
    if dry_run:
        cli_display.print_plan(plan)
        return plan

    from robustprec.sweep.run import run_sweep

    cli_display.print_sweep_header(plan)
    progress = cli_display.SweepProgress(len(plan.trials))
    try:
        outcome = run_sweep(
            plan,
            overwrite=overwrite,
            progress=progress,
            tracking_uri=tracking_uri,
            on_parent=cli_display.print_tracking,
        )
    finally:
        progress.close()
    cli_display.print_sweep_results(outcome)
    cli_display.print_sweep_footer(outcome)
    parent = outcome.tracking.get("parent_run_id")
    if analyze and parent:
        from robustprec.analysis.report import run_analysis

        result = run_analysis(
            parent,
            tracking_uri=outcome.tracking["tracking_uri"],
            reference=_reference(plan),
            out_dir=Path(plan.root) / "analysis",
        )
        cli_display.print_analysis(result)
    elif analyze:
        cli_display.print_tracking(outcome.tracking)
    return outcome


def _reference(plan: SweepPlan) -> str:
    """bf16 when the sweep has it, else the first format swept (a verdict needs a reference in the grid)."""
    formats = [str(f) for f in plan.axes.get("numerics.backend", [])]
    return "bf16" if not formats or "bf16" in formats else formats[0]
