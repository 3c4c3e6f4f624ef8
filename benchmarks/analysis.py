"""Analysis speed: load a sweep's trial table and curves, then `analyze_frame`, on 2 cores.

Builds a synthetic sweep in a temporary directory: 5 formats x 10 LRs x 20 seeds = 1,000 trials, each with a
curve.parquet of 5,000 steps (with --early-stop, diverged trials' curves end where they diverged), eval loss
and logit sharpness every 100 steps, overflow/underflow telemetry columns for the `sim:` formats, a summary.json
and a trials.parquet as `sweep.run` writes them. Outcomes follow P(diverge) = sigmoid(k (ln lr - ln eta_c)) with
a per-format eta_c. Then it times each phase (building the sweep is reported, not counted) and prints a table.
The target: under 30 s in total.

python benchmarks/analysis.py [--trials-per-cell 20] [--steps 5000] [--cores 2] [--n-boot 1000] [--early-stop]
                              [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin(cores: int) -> None:
    """Limit this process (and the BLAS / Arrow pools) to `cores` CPUs before numpy and pyarrow start."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cores)
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:cores]
        os.sched_setaffinity(0, cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials-per-cell", type=int, default=20, help="seeds per (format, lr)")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--early-stop",
        action="store_true",
        help="diverged trials' curves end at divergence (default: full length)",
    )
    ap.add_argument(
        "--keep", default=None, help="build the sweep here (kept) instead of a temporary directory"
    )
    args = ap.parse_args()
    _pin(args.cores)

    import json
    import math
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustprec.analysis import Frame, analyze_frame, attach_curve_summaries, attach_summaries

    pa.set_cpu_count(args.cores)
    pa.set_io_thread_count(args.cores)

    formats = {"bf16": 8e-3, "fp32": 1e-2, "sim:E8M3": 2e-3, "sim:E8M5": 4e-3, "sim:E4M3": 3e-3}
    lrs = 5e-4 * 2.0 ** (np.arange(10) / 2)
    seeds = range(args.trials_per_cell)
    n_steps, every = args.steps, args.eval_every
    rng = np.random.default_rng(0)

    def write_trial(out: Path, fmt: str, lr: float, seed: int) -> dict[str, object]:
        p = 1 / (1 + math.exp(-4 * (math.log(lr) - math.log(formats[fmt]))))
        diverged = bool(rng.random() < p)
        div_at = int(rng.integers(n_steps // 10, n_steps)) if diverged else n_steps
        stop = div_at if args.early_stop else n_steps
        step = np.arange(stop)
        loss = 5.5 * np.exp(-step / 1500) + 2.5 + 0.05 * rng.standard_normal(stop)
        if diverged:
            loss[div_at - 50 :] += np.linspace(0, 4, stop - div_at + 50)
        is_eval = (step + 1) % every == 0
        phi = np.where(
            is_eval, 0.5 * np.exp(step / n_steps) * (1 + 3 * diverged * (step > div_at - 500)), np.nan
        )
        cols: dict[str, object] = {
            "step": pa.array(step, pa.int64()),
            "loss": loss,
            "grad_norm": np.abs(rng.standard_normal(stop)) + 0.5,
            "lr": np.full(stop, lr),
            "tokens": pa.array((step + 1) * 4096, pa.int64()),
            "step_time_s": np.full(stop, 0.05),
            "skipped_steps": pa.array(np.zeros(stop, dtype=np.int64)),
            "loss_ema": loss,
            "eval_loss": np.where(is_eval, loss + 0.1, np.nan),
            "sharpness": phi,
        }
        if fmt.startswith("sim:"):
            for kind in ("act", "weight", "grad"):
                cols[f"{kind}_overflow_frac"] = rng.random(stop) * 1e-4
                cols[f"{kind}_underflow_frac"] = rng.random(stop) * 1e-3
        out.mkdir(parents=True)
        pq.write_table(pa.table(cols), out / "curve.parquet")
        evals = loss[is_eval][-3:] + 0.1
        summary = {
            "status": "diverged" if diverged else "converged",
            "reason": "blowup" if diverged else None,
            "diverged_at": div_at - 1 if diverged else None,
            "final_eval_loss": None if diverged else float(evals.mean()),
            "initial_loss": float(loss[0]),
            "steps_completed": stop,
            "params": 1_000_000,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        rows = []
        for fmt in formats:
            for lr in lrs:
                for s in seeds:
                    tid = f"{fmt.replace(':', '_')}-lr{lr:.3e}-s{s}"
                    out = root / "trials" / tid
                    summ = write_trial(out, fmt, float(lr), s)
                    row = {"trial_id": tid, "numerics.backend": fmt, "optim.lr": float(lr), "seed": s}
                    row.update({k: summ[k] for k in ("status", "reason", "diverged_at", "final_eval_loss")})
                    row.update(steps_completed=summ["steps_completed"], restarts=0, wall_time_s=1.0)
                    row["out_dir"] = str(out)
                    rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows), root / "trials.parquet")
        build = time.perf_counter() - t0
        n_rows = sum(r["steps_completed"] for r in rows)

        times: dict[str, float] = {}
        t = time.perf_counter()
        frame = Frame.from_parquet(root / "trials.parquet")
        times["load trials.parquet"] = time.perf_counter() - t
        t = time.perf_counter()
        frame = attach_summaries(frame)
        times["attach summary.json"] = time.perf_counter() - t
        t = time.perf_counter()
        frame = attach_curve_summaries(frame, workers=args.cores)
        times[f"attach curve summaries ({args.cores} threads)"] = time.perf_counter() - t
        t = time.perf_counter()
        result = analyze_frame(frame, n_boot=args.n_boot)
        times[f"analyze_frame (n_boot={args.n_boot})"] = time.perf_counter() - t
        t = time.perf_counter()
        text = json.dumps(result, allow_nan=False)
        times["json.dumps"] = time.perf_counter() - t

    total = sum(times.values())
    print(
        f"{len(frame)} trials, {n_rows:,} curve rows, {len(result)} formats, "
        f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} cores, "
        f"python {sys.version.split()[0]} (building the synthetic sweep took {build:.1f} s, not counted)\n"
    )
    print("| phase | seconds |\n|---|---:|")
    for k, v in times.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| **total** | **{total:.2f}** |")
    print(f"\ntarget < 30 s: {'met' if total < 30 else 'MISSED'}; analysis.json would be {len(text):,} bytes")
    for label, res in result.items():
        print(f"  {label}: eta_c {res['eta_c']}  verdict {res['verdict']['category']}")


if __name__ == "__main__":
    main()
