"""Where does a compiled simulated step's extra time go (issue 13)? A stack of llama-20m-sized linears, fwd+bwd,
compiled: bf16 autocast vs sim:E4M3 and two timing-only variants of sim (GEMM output bf16 instead of mm(out_dtype=
float32); quantizer replaced by a cast). Prints host ms to queue one fwd+bwd (no sync) and wall ms with a sync, for
compile modes default and reduce-overhead. Usage: python3 jobs/gpu/linear_host_probe.py"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

import robustprec.numerics.simulated as sim
from robustprec.numerics.simulated import apply_simulated

DEV = "cuda" if torch.cuda.is_available() else "cpu"
LAYERS, TOKENS, D = (42, 8192, 512) if DEV == "cuda" else (4, 64, 32)


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(D, D, bias=False) for _ in range(LAYERS)]).to(DEV)


def measure(model: nn.Module, mode: str | None, iters: int = 30) -> tuple[float, float]:
    fn = torch.compile(model, mode=mode)
    x = torch.randn(TOKENS, D, device=DEV)  # no x.grad: it would accumulate in a CUDA graph's pool

    def step() -> None:
        # the last step's gradients live in the CUDA graph's pool: not accumulated into
        model.zero_grad(set_to_none=True)
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y = fn(x)
        y.float().square().mean().backward()

    for _ in range(5):
        step()
    sync()
    queue = wall = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        queue, wall = queue + t1 - t0, wall + t2 - t0
    return 1e3 * queue / iters, 1e3 * wall / iters


def variant(name: str) -> nn.Module:
    model = stack()
    if name != "bf16":
        apply_simulated(model, "E4M3", exclude=()).stats_enabled = False
    return model


def main() -> None:
    mm, qv = sim.carrier_mm, sim.quantize_values
    rows = []
    for mode in (None, "reduce-overhead"):
        for name in ("bf16", "sim:E4M3"):
            sim.carrier_mm = (
                (lambda a, b, c: torch.mm(a.bfloat16(), b.bfloat16()).float()) if "mm" in name else mm
            )
            sim.quantize_values = (lambda t, p, k=None, s=False: (t.float(), None)) if "no q" in name else qv
            torch._dynamo.reset()
            q, w = measure(variant(name), mode)
            rows.append((mode or "default", name, q, w))
            print(f"{mode or 'default':16s} {name:22s} queue {q:6.2f} ms  wall {w:6.2f} ms", flush=True)
    print("| mode | variant | host ms to queue fwd+bwd | wall ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
