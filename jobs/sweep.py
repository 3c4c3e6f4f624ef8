"""Entry point for `ray job submit --working-dir . -- python jobs/sweep.py --config configs/smoke.yaml`.

Runs on the cluster the job was submitted to (or starts a local Ray when run directly), prints the sweep id, the
storage path and the trial table. Same options as `robustprec sweep`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the working dir, when not pip-installed

from robustprec.errors import RobustprecError
from robustprec.sweep.launch import sweep_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/sweep.py", description=__doc__)
    p.add_argument("--config", required=True, help="YAML config with a sweep: section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", help="sweep name (default: the config's name); the same name resumes")
    p.add_argument("--storage", help="sweeps folder, shared by all nodes on a cluster (default: ./sweeps)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--overwrite", action="store_true", help="discard an existing sweep of the same name")
    args = p.parse_args(argv)
    try:
        sweep_command(
            args.config,
            args.overrides,
            name=args.name,
            storage=args.storage,
            dry_run=args.dry_run,
            overwrite=args.overwrite,
        )
    except RobustprecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
