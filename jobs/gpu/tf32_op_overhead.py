"""Host cost of the TF32 carrier's opaque op (`robustprec::mm_tf32`, a `torch.library.custom_op` that sets
`torch.backends.cuda.matmul.fp32_precision` around `torch.mm`) against `torch.mm`, per call, in a compiled graph of
150 chained small GEMMs (llama-20m makes 90 simulated GEMM calls per step: 30 linears × 3). Small matrices, so the
figure is host time. Beside them, the same op registered through the lower-level `torch.library.Library` (define +
impl), a candidate replacement. Session 14 on the 2-core CPU machine (torch 2.13, CPU tensors, beside a test run):
torch.mm 1.2-2.3 us per call, the custom op 14.4-28.0 us, the Library registration 7.4-10.2 us.

    python3 jobs/gpu/tf32_op_overhead.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustprec.numerics.simulated import _mm_tf32, _mm_tf32_fake, _tf32_mm

CALLS = 150
# the candidate: the same kernel and fake, without custom_op's wrapper around the Python kernel
_LIB = torch.library.Library("tf32probe", "DEF")
_LIB.define("mm_tf32(Tensor a, Tensor b) -> Tensor")
_LIB.impl("mm_tf32", _tf32_mm, "CompositeExplicitAutograd")
torch.library.register_fake("tf32probe::mm_tf32")(_mm_tf32_fake)


def chain(op, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    x = a
    for _ in range(CALLS):
        x = op(x, b)
    return x


def per_call_us(op, a: torch.Tensor, b: torch.Tensor, sync) -> float:
    f = torch.compile(lambda a, b: chain(op, a, b), fullgraph=True)
    for _ in range(3):
        f(a, b)
    sync()
    times = []
    for _ in range(30):
        t = time.perf_counter()
        f(a, b)
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) / CALLS * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(ap.parse_args().device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a, b = torch.randn(8, 8, device=dev), torch.randn(8, 8, device=dev)
    print(f"{dev}, torch {torch.__version__}, {CALLS} chained 8x8 GEMMs in one compiled graph")
    ops = [
        ("torch.mm", torch.mm),
        ("robustprec::mm_tf32", _mm_tf32),
        ("Library", torch.ops.tf32probe.mm_tf32.default),
    ]
    for name, op in ops:
        print(f"{name}: {per_call_us(op, a, b, sync):.1f} us per call (median of 30)")


if __name__ == "__main__":
    main()
