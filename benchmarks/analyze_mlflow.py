"""`robustprec analyze` end to end from an MLflow store: a synthetic sweep of N trials is mirrored into a fresh
SQLite store (parent + children with params and record artifacts; metric histories left out with
`--curve-points 0`, since analyze reads the Parquet records, never metric histories), then `run_analysis` is timed:
listing children, downloading records, metrics and fits, plots, report, logging back.

    python benchmarks/analysis.py --keep /tmp/synth        # builds 1,000 trials x 5,000 steps
    python benchmarks/analyze_mlflow.py --sweep /tmp/synth [--curve-points 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", required=True, help="a folder written by benchmarks/analysis.py --keep")
    ap.add_argument("--curve-points", type=int, default=0)
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from robustprec.analysis.report import run_analysis
    from robustprec.tracking.mlflow_mirror import MlflowMirror

    sweep = Path(args.sweep)
    rows = pq.read_table(next(sweep.rglob("trials.parquet"))).to_pylist()
    axis_keys = [k for k in ("numerics.backend", "optim.lr", "seed") if k in rows[0]]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        t0 = time.perf_counter()
        mirror = MlflowMirror(Path(tmp) / "sweep", uri, "bench")
        (Path(tmp) / "sweep").mkdir()
        parent = mirror.ensure_parent("synthetic", {}, {})
        for r in rows:
            mirror.log_trial(r["trial_id"], r["out_dir"], {k: r[k] for k in axis_keys}, args.curve_points)
        mirrored = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_analysis(parent, tracking_uri=uri, out_dir=Path(tmp) / "report", reference="bf16")
        analyzed = time.perf_counter() - t1
        t2 = time.perf_counter()
        run_analysis(parent, tracking_uri=uri, out_dir=Path(tmp) / "report2", reference="bf16")
        cached = time.perf_counter() - t2
    print(f"\n{len(rows)} trials; formats: {', '.join(result.data['formats'])}")
    print("| phase | seconds |\n|---|---:|")
    print(f"| mirror into SQLite (setup, curve points {args.curve_points}) | {mirrored:.1f} |")
    print(f"| robustprec analyze, first run (downloads records) | {analyzed:.1f} |")
    print(f"| robustprec analyze, records cached | {cached:.1f} |")


if __name__ == "__main__":
    main()
