"""Where does a recipe's extra GPU time go (issue 14)? One gpt2-124m MLP (768 -> 3072 -> 768, GELU) at 16,384 tokens,
compiled, forward and backward, under bf16 autocast and each simulated backend named on the command line. Prints
the sum of its kernels' times per fwd+bwd (3 profiled iterations; on CUDA the figure to compare, as the wall time
of so small a graph is host-bound), ms per fwd+bwd (median of 20, synced) and the top kernels, per backend.

    python3 jobs/gpu/recipe_mlp_probe.py bf16 sim:E4M3 sim:mxfp8 sim:nvfp4 sim:fp8_tensorwise
    python3 jobs/gpu/recipe_mlp_probe.py --size 4096,512,1024 bf16 sim:fp8_tensorwise   # TOKENS,D,FF (CPU)
    python3 jobs/gpu/recipe_mlp_probe.py --inductor aggressive_fusion=True bf16 sim:mxfp8  # Inductor settings
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from robustprec.config import NumericsConfig
from robustprec.numerics.backends import make_backend

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOKENS, D, FF = (16384, 768, 3072) if DEV.type == "cuda" else (256, 64, 256)
TOP = 12


class MLP(nn.Module):
    """A class of its own: dynamo skips frames of torch's own modules (an `nn.Sequential` compiles nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(D, FF), nn.Linear(FF, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.gelu(self.fc(x), approximate="tanh"))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP().to(DEV)


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def build(backend: str) -> nn.Module:
    model = mlp()
    be = make_backend(NumericsConfig(backend=backend, base="bf16", include=["*"], exclude=[]), DEV)
    wrapped = be.wrap(model, seed=0)
    if hasattr(be, "count_numerics"):
        be.count_numerics(False)  # the steady step: no telemetry counters
    model.compile()
    return wrapped


def step(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEV.type, dtype=torch.bfloat16):
        y = model(x)
    y.float().square().mean().backward()


def measure(backend: str) -> None:
    model = build(backend)
    x = torch.randn(TOKENS, D, device=DEV)
    t0 = time.perf_counter()
    step(model, x)
    sync()
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        step(model, x)
    times = []
    for _ in range(20):
        sync()
        t = time.perf_counter()
        step(model, x)
        sync()
        times.append(1e3 * (time.perf_counter() - t))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step(model, x)
        sync()
    key = "self_device_time_total" if DEV.type == "cuda" else "self_cpu_time_total"
    # on CUDA the kernels alone: a launch's CPU-side record carries its kernel's name and time too (every kernel
    # was listed twice up to session 11)
    kernels = [e for e in prof.key_averages() if DEV.type != "cuda" or e.device_type == DeviceType.CUDA]
    events = sorted(kernels, key=lambda e: getattr(e, key), reverse=True)
    busy = sum(getattr(e, key) for e in events) / 3
    # the kernels' sum first: the wall-clock median of this small graph is host-bound (bf16 on an H200, s13_1:
    # kernels 1.0 ms, median 1.8-2.1 ms)
    print(
        f"\n## {backend}: kernels {busy / 1e3:.3f} ms per fwd+bwd (3 profiled), wall {statistics.median(times):.3f}"
        f" ms (median of 20), first call {compile_s:.1f} s"
    )
    print("| kernel | calls / iter | us / iter |\n|---|---|---|")
    for e in events[:TOP]:
        print(f"| {e.key[:90]} | {e.count / 3:.0f} | {getattr(e, key) / 3:.1f} |")
    rest = events[TOP:]
    print(f"| {len(rest)} other kernels | {sum(e.count for e in rest) / 3:.0f} "
          f"| {sum(getattr(e, key) for e in rest) / 3:.1f} |")  # fmt: skip
    print(f"| all kernels | {sum(e.count for e in events) / 3:.0f} | {busy:.1f} |")
    sys.stdout.flush()


def set_inductor(settings: str) -> None:
    """Inductor config values, ``key=value`` (dotted keys, Python literals) separated by commas."""
    import ast

    import torch._inductor.config as config

    for item in settings.split(","):
        key, value = item.split("=", 1)
        *path, leaf = key.strip().split(".")
        node = config
        for part in path:
            node = getattr(node, part)
        getattr(node, leaf)  # an unknown key fails here, not silently
        setattr(node, leaf, ast.literal_eval(value.strip()))


if __name__ == "__main__":
    while len(sys.argv) > 2 and sys.argv[1] in ("--size", "--inductor"):
        if sys.argv[1] == "--size":
            TOKENS, D, FF = (int(v) for v in sys.argv[2].split(","))
        else:
            set_inductor(sys.argv[2])
            print(f"inductor: {sys.argv[2]}")
        del sys.argv[1:3]
    print(f"{torch.cuda.get_device_name() if DEV.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"tokens {TOKENS}, {D} -> {FF} -> {D}")  # fmt: skip
    for name in sys.argv[1:] or ["bf16", "sim:E4M3", "sim:mxfp8"]:
        measure(name)
