"""Quantizer speed: `robustprec.numerics.quantize` on a square fp32 tensor, per format and rounding mode.

python benchmarks/quantize.py [--size 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustprec.numerics.quantize import quantize, quantize_with_stats
from robustprec.provenance import device_name

CASES = ["bf16", "fp8_e4m3", "fp8_e5m2", "E8M3", "bf16:rounding=stochastic", "fp8_e4m3:rounding=stochastic",
         "fp8_e4m3:scaling=tensor", "fp8_e4m3:scaling=block:32"]  # fmt: skip


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - tic)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(args.size, args.size, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    print(
        f"device: {device_name(dev.type)}, threads {torch.get_num_threads()}, tensor {args.size}x{args.size} fp32, best of {args.repeats}"
    )
    print("| format | quantize (ms) | with stats (ms) | GB/s (read+write) |")
    print("|---|---|---|---|")
    base = timed(lambda: x.clone(), args.repeats, sync)
    for spec in CASES:
        ms = timed(lambda s=spec: quantize(x, s, generator=gen), args.repeats, sync)
        ms_stats = timed(lambda s=spec: quantize_with_stats(x, s, generator=gen), args.repeats, sync)
        print(f"| {spec} | {ms:.2f} | {ms_stats:.2f} | {2 * x.numel() * 4 / ms / 1e6:.1f} |")
    print(f"| (clone, for scale) | {base:.2f} | - | {2 * x.numel() * 4 / base / 1e6:.1f} |")


if __name__ == "__main__":
    main()
