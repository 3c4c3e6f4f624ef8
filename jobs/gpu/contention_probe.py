"""Why does a packed trial start slowly beside running trials (issue 13)? In s11_3 the first 8 trials of a packed
sweep started in 0.7-0.85 s and the 8 started later, each beside 7 running trials, in 10.9-17.4 s. Hypothesis: the
GPU is time-sliced between the processes, so every host-device synchronisation of a start-up waits for its
process's next time slice. Side by side in one run, with 0 and with N busy processes (each a loop of bf16 GEMMs and
small kernels, as a llama-20m step): the latency of one synchronisation, of a pageable host-to-device copy of each
llama-20m parameter (what `module.to(device)` does) against one copy of them all, and a real trial's start-up phases
(`startup_phases_s`, `train()` in this process, 2 steps).

    python3 jobs/gpu/contention_probe.py --busy 7 --preset llama-20m
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustprec.config import load_config
from robustprec.model.transformer import build_model
from robustprec.train.loop import train
from robustprec.train.run import _load_data

BUSY = """
import torch, time
a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
end = time.time() + {seconds}
while time.time() < end:
    for _ in range(20):
        b = (a @ a).relu_() * 0.5
    torch.cuda.synchronize()
"""


def trial_config(preset: str, device: str):
    sets = [f"model.preset={preset}", "train.steps=2", "train.seq_len=256", "train.micro_batch_size=32",
            "train.global_batch_size=32", "train.eval_interval=1000", "train.eval_sequences=32",
            "train.sharpness.sequences=32", "train.checkpoint_interval=0", f"train.device={device}",
            "tracking.enabled=false"]  # fmt: skip
    return load_config(None, sets)


def sync_ms(device: torch.device, n: int = 100) -> float:
    x = torch.zeros(1, device=device)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        x += 1
        torch.cuda.synchronize() if device.type == "cuda" else None
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def copy_ms(cfg, device: torch.device) -> tuple[float, float, int]:
    """(per-parameter copies, one flat copy) in ms, and the number of parameters."""
    _, _, _, spec = _load_data(cfg)
    params = [p.detach() for p in build_model(spec, seed=0).parameters()]
    t = time.perf_counter()
    moved = [p.to(device) for p in params]
    torch.cuda.synchronize() if device.type == "cuda" else None
    each = 1e3 * (time.perf_counter() - t)
    t = time.perf_counter()
    flat = torch.cat([p.reshape(-1) for p in params]).to(device)
    torch.cuda.synchronize() if device.type == "cuda" else None
    one = 1e3 * (time.perf_counter() - t)
    del moved, flat
    return each, one, len(params)


def startup(cfg) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, Path(out) / "t", origin_time=time.time())
    return summary["startup_phases_s"]


def measure(busy: int, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=args.seconds)]) for _ in range(busy)]
    try:
        time.sleep(args.settle if busy else 0)
        cfg = trial_config(args.preset, device.type)
        row = {"busy": busy, "sync_ms": sync_ms(device)}
        row["copy_each_ms"], row["copy_flat_ms"], row["params"] = copy_ms(cfg, device)
        row["phases"] = startup(cfg)
        return row
    finally:
        for p in procs:
            p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--busy", type=int, default=7)
    ap.add_argument("--preset", default="llama-20m")
    ap.add_argument("--seconds", type=float, default=90.0, help="how long a busy process runs at most")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds for the busy processes to start")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [measure(0, args, device), measure(args.busy if device.type == "cuda" else 0, args, device)]
    names = list(rows[0]["phases"])
    print("| busy | sync ms | copy per parameter ms | one copy ms | parameters | start-up s | "
          + " | ".join(names) + " |")  # fmt: skip
    print("|---|---|---|---|---|---|" + "---|" * len(names))
    for r in rows:
        ph = r["phases"]
        print(f"| {r['busy']} | {r['sync_ms']:.3f} | {r['copy_each_ms']:.1f} | {r['copy_flat_ms']:.1f} "
              f"| {r['params']} | {sum(ph.values()):.2f} | " + " | ".join(f"{ph[n]:.2f}" for n in names) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
