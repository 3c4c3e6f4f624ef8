"""Packed sweeps: how close a sweep of small trials sharing one GPU comes to that GPU's saturation ceiling.

    python benchmarks/packing.py [--preset llama-20m] [--formats bf16,sim:E4M3] [--trials 16] [--per-gpu 8]
        [--steps 200] [--seq-len 256] [--batch 32] [--device cuda] [--out DIR] [--json OUT.json]

For each format, in one run:
  alone   one trial on the whole device (`robustprec train`): its steady tokens/s (steps after the first).
  packed  a sweep of `--trials` trials (seeds), `--per-gpu` at a time on the device (`robustprec sweep`, resources
          {GPU: 1/per_gpu}), timed end to end from the command's start: trials per GPU-hour and aggregate tokens/s.
  ceiling the steady-state aggregate of `--per-gpu` concurrent trials: per-gpu × the median steady tokens/s of the
          packed trials (each measured while the others ran), as trials per GPU-hour. Start-up (process, imports,
          CUDA context, compilation) is what separates `packed` from it.
Prints a table; `--json` writes the numbers. The device is whatever `train.device` resolves (`--device`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _overrides(args: argparse.Namespace, fmt: str) -> list[str]:
    sets = {
        "model.preset": args.preset, "numerics.backend": fmt, "train.steps": args.steps,
        "train.seq_len": args.seq_len, "train.micro_batch_size": args.batch, "train.global_batch_size": args.batch,
        "train.eval_interval": args.steps, "train.eval_sequences": 32, "train.sharpness.sequences": 32,
        "train.device": args.device, "train.checkpoint_interval": 0, "optim.lr": 1e-3, "optim.warmup_steps": 20,
        "tracking.enabled": False,
    }  # fmt: skip
    if args.data:
        sets["data.path"] = args.data
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _cli(argv: list[str]) -> float:
    tic = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "robustprec", *argv], cwd=REPO, capture_output=True, text=True
    )
    if res.returncode:
        raise SystemExit(f"robustprec {argv[0]} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - tic


def _summaries(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("trials/*/summary.json"))]


def measure(args: argparse.Namespace, fmt: str, tmp: Path) -> dict[str, Any]:
    sets = _overrides(args, fmt)
    _cli(["train", *sets, "--out", str(tmp / "alone"), "--overwrite"])
    alone = json.loads((tmp / "alone" / "summary.json").read_text())
    gpu = f", GPU: {1 / args.per_gpu}" if args.device == "cuda" else ""
    sweep = ["--set", f"sweep.seeds={args.trials}", "--set", f"sweep.formats=[{fmt!r}]", "--set", "sweep.lrs=[1e-3]",
             "--set", f"sweep.resources={{CPU: {args.cpus}{gpu}}}", "--set", f"sweep.max_concurrent={args.per_gpu}"]  # fmt: skip
    name = "pack-" + "".join(c if c.isalnum() else "-" for c in fmt)
    wall = _cli(["sweep", "--config", str(REPO / "configs" / "smoke.yaml"), *sets, *sweep, "--name", name,
                 "--storage", str(tmp / "sweeps"), "--overwrite"])  # fmt: skip
    done = _summaries(tmp / "sweeps" / name)
    tokens_per_trial = args.steps * args.seq_len * args.batch
    steady = statistics.median(s["tokens_per_s"] for s in done)
    return {
        "format": fmt,
        "trials": len(done),
        "alone_tokens_per_s": alone["tokens_per_s"],
        "alone_startup_s": alone["startup_s"],
        "packed_wall_s": wall,
        "packed_tokens_per_s": len(done) * tokens_per_trial / wall,
        "packed_trials_per_gpu_hour": len(done) * 3600 / wall,
        "median_trial_tokens_per_s": steady,
        "median_trial_startup_s": statistics.median(s["startup_s"] for s in done),
        "ceiling_tokens_per_s": args.per_gpu * steady,
        "ceiling_trials_per_gpu_hour": args.per_gpu * steady * 3600 / tokens_per_trial,
        "alone_trials_per_gpu_hour": alone["tokens_per_s"] * 3600 / tokens_per_trial,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| format | trials | alone tok/s | packed tok/s | packed / alone | ceiling tok/s | ceiling / alone "
          "| trials/GPU-h packed | ceiling | packed / ceiling | median start-up (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a = r["alone_tokens_per_s"]
        print(f"| {r['format']} | {r['trials']} | {a:,.0f} | {r['packed_tokens_per_s']:,.0f} "
              f"| {r['packed_tokens_per_s'] / a:.2f}x | {r['ceiling_tokens_per_s']:,.0f} "
              f"| {r['ceiling_tokens_per_s'] / a:.2f}x | {r['packed_trials_per_gpu_hour']:.0f} "
              f"| {r['ceiling_trials_per_gpu_hour']:.0f} "
              f"| {r['packed_trials_per_gpu_hour'] / r['ceiling_trials_per_gpu_hour']:.0%} "
              f"| {r['median_trial_startup_s']:.1f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama-20m")
    ap.add_argument("--formats", default="bf16,sim:E4M3")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--per-gpu", type=int, default=8)
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per packed trial")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default="")
    ap.add_argument("--out", default="", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        rows = [measure(args, fmt, root / fmt.replace(":", "_")) for fmt in args.formats.split(",")]
    print(f"settings: {args.preset}, seq {args.seq_len}, batch {args.batch}, {args.steps} steps, "
          f"{args.trials} trials, {args.per_gpu} per GPU, device {args.device}")  # fmt: skip
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
