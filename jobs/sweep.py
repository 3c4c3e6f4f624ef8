"""Entry point for `ray job submit --working-dir . -- python jobs/sweep.py --config configs/smoke.yaml`.

Runs on the cluster the job was submitted to (or starts a local Ray when run directly), prints the sweep id, the
storage path and the trial table. Same options as `robustprec sweep`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir, when not pip-installed

from robustprec.errors import InfrastructureError, RobustprecError
from robustprec.sweep.launch import sweep_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/sweep.py", description=__doc__)
    p.add_argument("--config", required=True, help="YAML config with a sweep: section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", help="sweep name (default: the config's name); the same name resumes")
    p.add_argument("--storage", help="sweeps folder, shared by all nodes on a cluster (default: ./sweeps)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--overwrite", action="store_true", help="discard an existing sweep of the same name")
    p.add_argument(
        "--lr-search",
        choices=["grid", "adaptive"],
        help="sweep.lr_search.mode: LR grid or adaptive eta_c search",
    )
    p.add_argument(
        "--analyze", action="store_true", help="analyze the sweep when it ends and print the verdicts"
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else <storage>/mlflow.db)"
    )
    args = p.parse_args(argv)
    # A Ray job runs in a temporary copy of the working dir: keep the default SQLite store next to the records.
    storage = Path(args.storage or "sweeps").expanduser().resolve()
    tracking_uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{storage / 'mlflow.db'}"
    )
    try:
        mode = [f"sweep.lr_search.mode={args.lr_search}"] if args.lr_search else []
        result = sweep_command(
            args.config,
            [*args.overrides, *mode],
            name=args.name,
            storage=args.storage,
            dry_run=args.dry_run,
            overwrite=args.overwrite,
            tracking_uri=tracking_uri,
            analyze=args.analyze,
        )
    except RobustprecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InfrastructureError as e:  # retries spent (e.g. the tracking server kept failing)
        print(f"error: {e}", file=sys.stderr)
        return 1
    errors = getattr(result, "counts", {}).get("error", 0)
    if errors:  # diverged trials are results; errored ones are not
        print(f"error: {errors} trial(s) failed; see error.json in their record folders", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
