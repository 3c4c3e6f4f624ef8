"""Quantizer speed: the one quantizer run eagerly vs compiled (torch.compile), per format and tensor shape.

Runs on CUDA if available, else CPU. For each format and shape it times `quantize_values` eager and compiled
(best of --repeats, each a loop long enough to dwarf timer noise), with and without the overflow/underflow counts,
checks that the compiled results and counts are bit-identical to eager, and prints a markdown table with
elements/s and the compiled speed-up. The first compiled call of a format includes compiling: `first compiled
call (s)`. In training the quantizer is not called on its own: it is fused into the model's compiled graph.

python benchmarks/quantize.py [--shapes 4096x4096,16384x768] [--formats bf16,fp8_e4m3] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from robustprec.numerics.formats import parse_format
from robustprec.numerics.quantize import quant_plan, quantize_values
from robustprec.provenance import device_name

CASES = ["bf16", "fp8_e4m3", "fp8_e5m2", "E8M3", "bf16:rounding=stochastic", "fp8_e4m3:rounding=stochastic",
         "fp8_e4m3:scaling=tensor", "fp8_e4m3:scaling=block:32"]  # fmt: skip
QUICK_CASES = ["fp8_e4m3", "fp8_e5m2:rounding=truncate", "fp8_e4m3:scaling=tensor"]
SHAPES = "4096x4096,16384x768"
QUICK_SHAPES = "1024x1024,4096x192"


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None], budget_s: float = 0.05) -> float:
    """Best over `repeats` of the mean time per call (ms) of a loop of back-to-back calls lasting ~budget_s."""
    sync()
    tic = time.perf_counter()
    fn()
    sync()
    inner = max(1, min(200, int(budget_s / max(time.perf_counter() - tic, 1e-6))))
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        best = min(best, (time.perf_counter() - tic) / inner)
    return best * 1000


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    nan = torch.isnan(a)
    return bool(
        torch.equal(nan, torch.isnan(b)) and torch.equal(a.view(torch.int32)[~nan], b.view(torch.int32)[~nan])
    )


def run_case(
    spec: str, x: torch.Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[dict[str, tuple[float, float]], float, bool]:
    """{op: (eager ms, compiled ms)}, first compiled call seconds, and whether compiled == eager bit for bit."""
    plan = quant_plan(parse_format(spec))
    key = torch.tensor(0, dtype=torch.int64, device=x.device)
    fns = {
        "quantize": lambda t, k: quantize_values(t, plan, k)[0],
        "with_stats": lambda t, k: quantize_values(t, plan, k, True),
    }
    compiled = {op: torch.compile(fn, dynamic=False) for op, fn in fns.items()}
    ref_q, ref_c = fns["with_stats"](x, key)
    sync()
    tic = time.perf_counter()
    got_q, got_c = compiled["with_stats"](x, key)
    compiled["quantize"](x, key)
    sync()
    compile_s = time.perf_counter() - tic
    identical = same_bits(got_q, ref_q) and torch.equal(got_c, ref_c)
    times = {
        op: (
            timed(lambda f=fns[op]: f(x, key), repeats, sync),
            timed(lambda f=compiled[op]: f(x, key), repeats, sync),
        )
        for op in fns
    }
    return times, compile_s, identical


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=None, help=f"comma-separated RxC (default {SHAPES})")
    ap.add_argument("--formats", default=None, help="comma-separated format specs (default: a fixed list)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help=f"3 formats, shapes {QUICK_SHAPES}")
    args = ap.parse_args()
    shapes_arg = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    shapes = [tuple(int(v) for v in s.split("x")) for s in shapes_arg.split(",")]
    specs = args.formats.split(",") if args.formats else (QUICK_CASES if args.quick else CASES)
    repeats = args.repeats

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(
        f"device: {device_name(dev.type)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"fp32 inputs ~ N(0, 1) * 100, best of {repeats}; Melem/s = elements / time (fp32 in + out: 8 bytes each)"
    )
    print(
        "| format | shape | op | eager (ms) | compiled (ms) | eager Melem/s | compiled Melem/s | speed-up | first compiled call (s) | identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rows, cols in shapes:
        x = torch.randn(rows, cols, device=dev, generator=torch.Generator(device=dev).manual_seed(0)) * 100
        n = x.numel()
        clone_ms = timed(lambda x=x: x.clone(), repeats, sync)
        for spec in specs:
            times, compile_s, identical = run_case(spec, x, repeats, sync)
            for op, (eager, fast) in times.items():
                print(
                    f"| {spec} | {rows}x{cols} | {op} | {eager:.3f} | {fast:.3f} | {n / eager / 1e3:,.0f} | "
                    f"{n / fast / 1e3:,.0f} | {eager / fast:.2f}x | {f'{compile_s:.1f}' if op == 'quantize' else '-'} | "
                    f"{'yes' if identical else 'NO'} |"
                )
        print(
            f"| (clone, for scale) | {rows}x{cols} | clone | {clone_ms:.3f} | - | {n / clone_ms / 1e3:,.0f} | - | - | - | - |"
        )


if __name__ == "__main__":
    main()
