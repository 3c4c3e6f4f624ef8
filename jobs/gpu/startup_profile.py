"""Where a trial's first start-up goes in a fresh process (issue 13). In the packed llama-20m sweep of s12_4 the
first trials' `engine` phase took 6.9 s (median of 8 started together) and 6.7 s alone (contention probe, s12_1),
the later trials on reused processes 0.13 s: a once-per-process cost. One trial of 2 steps under cProfile: its
start-up phases, then the functions with the most cumulative time inside the engine's set-up.

    python3 jobs/gpu/startup_profile.py --preset llama-20m [--device cuda] [--top 40]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from robustprec.config import load_config
from robustprec.train.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama-20m")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    sets = [f"model.preset={args.preset}", "train.steps=2", "train.seq_len=256", "train.micro_batch_size=32",
            "train.global_batch_size=32", "train.eval_interval=1000", "train.eval_sequences=32",
            "train.sharpness.sequences=32", "train.checkpoint_interval=0", f"train.device={args.device}",
            "tracking.enabled=false"]  # fmt: skip
    cfg = load_config(None, sets)
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as out:
        summary = profile.runcall(train, cfg, Path(out) / "t", origin_time=time.time())
    print("start-up phases (s):", {k: round(v, 2) for k, v in summary["startup_phases_s"].items()})
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats("cumulative")
    stats.print_callees("build_engine")
    stats.print_stats(args.top)
    sys.stdout.write(text.getvalue())


if __name__ == "__main__":
    main()
