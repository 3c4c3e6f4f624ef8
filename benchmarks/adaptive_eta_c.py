"""Adaptive η_c search against a full LR grid of the same range (issue 16): trials used and the two η_c estimates.

    python benchmarks/adaptive_eta_c.py [--preset tiny] [--format fp32] [--lo 0.01] [--hi 1] [--grid-points 12]
        [--seeds 2] [--coarse-points 3] [--seeds-per-point 2] [--max-trials 16] [--target 1.5] [--steps 20]
        [--device cpu]
        [--out DIR] [--json OUT.json] [--set KEY=VALUE ...]

Runs, on the current (or a local) Ray, two sweeps of one condition with the same trial config: a grid of
`--grid-points` log-spaced LRs over [lo, hi] x `--seeds` seeds, and `sweep.lr_search.mode: adaptive` over the same
range. Both are mirrored to MLflow and analyzed by `robustprec analyze`'s own code (`run_analysis`), so the two
η_c come from the same fit the report uses. Prints a table: trials, η_c, its CI and CI ratio per mode, and
whether the adaptive η_c lies inside the grid's CI. Defaults are the CPU comparison of the `tiny` model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _overrides(args: argparse.Namespace) -> list[str]:
    sets: dict[str, Any] = {
        "model.preset": args.preset, "numerics.backend": args.format, "train.steps": args.steps,
        "train.seq_len": 32, "train.micro_batch_size": 4, "train.global_batch_size": 8,
        "train.eval_interval": 10, "train.eval_sequences": 16, "train.sharpness.sequences": 16,
        "train.checkpoint_interval": 0, "train.device": args.device, "data.embedded_max_bytes": 400000,
        "optim.warmup_steps": 5, "sweep.resources": "{CPU: 1}",
    }  # fmt: skip
    return [f"{k}={v}" for k, v in sets.items()] + list(args.set)


def run_mode(args: argparse.Namespace, mode: str, root: Path) -> dict[str, Any]:
    """One sweep (`grid` or `adaptive`) run and analyzed: trials, η_c and its CI, wall time."""
    from robustprec.analysis.report import run_analysis
    from robustprec.config import load_config
    from robustprec.sweep.plan import plan_sweep
    from robustprec.sweep.run import run_sweep

    extra = (
        [f"sweep.lrs=logspace({args.lo}, {args.hi}, {args.grid_points})", f"sweep.seeds={args.seeds}"]
        if mode == "grid"
        else [
            "sweep.lr_search.mode=adaptive", f"sweep.lr_search.lo={args.lo}", f"sweep.lr_search.hi={args.hi}",
            f"sweep.lr_search.seeds_per_point={args.seeds_per_point}",
            f"sweep.lr_search.max_trials={args.max_trials}", f"sweep.lr_search.target_ci_ratio={args.target}",
            f"sweep.lr_search.coarse_points={args.coarse_points}",
        ]
    )  # fmt: skip
    plan = plan_sweep(load_config(None, _overrides(args) + extra), name=mode, root=root)
    t0 = time.perf_counter()
    outcome = run_sweep(plan, overwrite=True)
    wall = time.perf_counter() - t0
    parent = outcome.tracking.get("parent_run_id")
    eta: dict[str, Any] = {"value": None, "ci": [None, None], "censored": None}
    if parent:  # without MLflow (the GPU bundle has none): `robustprec sync` the records, then analyze them
        result = run_analysis(
            parent, reference=args.format, out_dir=root / f"analysis-{mode}", log_back=False
        )
        eta = result.data["formats"][args.format]["eta_c"]
    lo, hi = eta["ci"]
    return {
        "mode": mode,
        "trials": len(outcome.rows),
        "diverged": outcome.counts.get("diverged", 0),
        "errors": outcome.counts.get("error", 0),
        "eta_c": eta["value"],
        "ci": [lo, hi],
        "censored": eta["censored"],
        "ci_ratio": hi / lo if lo and hi else math.inf,
        "wall_s": wall,
        "parent_run_id": parent,
    }


def compare(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    grid, adaptive = run_mode(args, "grid", root), run_mode(args, "adaptive", root)
    lo, hi = grid["ci"]
    inside = adaptive["eta_c"] is not None and (lo or 0) <= adaptive["eta_c"] <= (hi or math.inf)
    return {"grid": grid, "adaptive": adaptive, "inside_grid_ci": inside,
            "fewer_trials": adaptive["trials"] < grid["trials"]}  # fmt: skip


def _fmt(v: float | None) -> str:
    return "open" if v is None else f"{v:.4g}"


def print_table(res: dict[str, Any]) -> None:
    print("| mode | trials | diverged | eta_c | 95% CI | CI ratio | wall s |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("grid", "adaptive"):
        r = res[mode]
        ci = f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]"
        print(
            f"| {mode} | {r['trials']} | {r['diverged']} | {_fmt(r['eta_c'])} | {ci} | {r['ci_ratio']:.2f} | "
            f"{r['wall_s']:.0f} |"
        )
    print(
        f"adaptive eta_c inside the grid's CI: {res['inside_grid_ci']}; fewer trials: {res['fewer_trials']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--format", default="fp32")
    p.add_argument("--lo", type=float, default=0.01)
    p.add_argument("--hi", type=float, default=1.0)
    p.add_argument("--grid-points", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seeds-per-point", type=int, default=2)
    p.add_argument("--coarse-points", type=int, default=3)
    p.add_argument("--max-trials", type=int, default=16)
    p.add_argument("--target", type=float, default=1.5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="sweeps folder (default: a temporary one)")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    args = p.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="adaptive-eta-c-")).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    res = compare(args, root)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
