"""Which part of the compiled simulated stack disagrees with eager on CUDA (issue 13's failing cuda test)?

Runs the cuda test's stack (3 linears, act E4M3 block:8, weight fp8_e4m3 tensor-scaled, grad E5M2 SR) eager and
compiled under aot_eager and inductor, for variants that switch one ingredient off, and prints the largest relative
difference of the output and of every layer's weight gradient vs eager. Usage: python3 jobs/gpu/diag_compiled_sim.py
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from robustprec.numerics.simulated import apply_simulated

BASE = {
    "act": "E4M3:scaling=block:8",
    "weight": "fp8_e4m3:scaling=tensor",
    "grad": "E5M2:rounding=stochastic",
}
VARIANTS = {
    "as in the test": (BASE, None),
    "grad RNE": ({**BASE, "grad": "E5M2"}, None),
    "grad unquantized": ({k: v for k, v in BASE.items() if k != "grad"}, None),
    "fp32 carriers": (BASE, "fp32"),
    "act+weight only, fp32 carriers": ({k: v for k, v in BASE.items() if k != "grad"}, "fp32"),
}


def stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32, bias=False), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 8)
    )


def run(fmts: dict, carrier: str | None, backend: str | None, dev: str) -> list[torch.Tensor]:
    torch._dynamo.reset()
    model = stack().to(dev)
    handle = apply_simulated(model, fmts, operands=tuple(fmts), seed=4)
    if carrier is not None:
        st = handle._state
        st.gemms = dataclasses.replace(st.gemms, fwd=carrier, dgrad=carrier, wgrad=carrier)
    fn = torch.compile(model, backend=backend, fullgraph=True) if backend else model
    res = []
    for step in range(2):
        x = torch.randn(6, 9, 16, generator=torch.Generator().manual_seed(step)).to(dev) * 50
        model.zero_grad()
        out = fn(x)
        out.square().sum().backward()
        res += [out.detach(), *(model[i].weight.grad.clone() for i in (0, 2, 4))]
    return res


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def norms() -> None:
    """Norms of every weight gradient, eager vs compiled (inductor), and variants that isolate the cause."""
    import contextlib

    import robustprec.numerics.simulated as sim

    dev = "cuda" if torch.cuda.is_available() else "cpu"

    def grads(model: nn.Module, fn: object) -> list[float]:
        x = torch.randn(6, 9, 16, generator=torch.Generator().manual_seed(0)).to(dev) * 50
        model.zero_grad()
        fn(x).square().sum().backward()  # type: ignore[operator]
        return [float(model[i].weight.grad.norm()) for i in (0, 2, 4)]

    cases = {"plain nn.Linear (control)": None, "sim act+weight": {"act": "E4M3", "weight": "E4M3"}}
    for label, fmts in cases.items():
        for backend in (None, "eager", "aot_eager", "inductor"):
            torch._dynamo.reset()
            model = stack().to(dev)
            if fmts:
                apply_simulated(model, fmts, operands=tuple(fmts), seed=4)
            fn = torch.compile(model, backend=backend, fullgraph=True) if backend else model
            print(f"{label:28s} {backend or 'no compile':10s} |dW| = {grads(model, fn)}")
    saved = sim._no_autocast
    sim._no_autocast = lambda device_type: contextlib.nullcontext()  # type: ignore[assignment]
    try:
        for backend in (None, "aot_eager"):
            torch._dynamo.reset()
            model = stack().to(dev)
            apply_simulated(model, {"act": "E4M3", "weight": "E4M3"}, operands=("act", "weight"), seed=4)
            fn = torch.compile(model, backend=backend, fullgraph=True) if backend else model
            print(f"{'sim, no autocast context':28s} {backend or 'no compile':10s} |dW| = {grads(model, fn)}")
    finally:
        sim._no_autocast = saved


class _OperandsOutside(torch.autograd.Function):
    """SimLinear's pattern: the operands are made outside (from detached tensors); x and w only route gradients."""

    @staticmethod
    def forward(ctx, x, w, xq, wq):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(xq, wq)
        return xq @ wq.t()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        xq, wq = ctx.saved_tensors
        return g @ wq, g.t() @ xq, None, None


class _OperandsInside(torch.autograd.Function):
    """The same GEMM with the operands made inside forward from x and w."""

    @staticmethod
    def forward(ctx, x, w):  # type: ignore[no-untyped-def, override]
        xq, wq = x.detach().bfloat16().float(), w.detach().bfloat16().float()
        ctx.save_for_backward(xq, wq)
        return xq @ wq.t()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        xq, wq = ctx.saved_tensors
        return g @ wq, g.t() @ xq


class _ViewOutput(torch.autograd.Function):
    """SimLinear's output: a 3-D view (reshape) of the 2-D GEMM result, an intermediate of forward (pytorch#180642:
    torch 2.11 may route the gradient of an output that aliases an intermediate to the wrong slot)."""

    @staticmethod
    def forward(ctx, x, w, xq, wq):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(xq, wq)
        return (xq.reshape(-1, xq.shape[-1]) @ wq.t()).reshape(*xq.shape[:-1], wq.shape[0])

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        xq, wq = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        return (g2 @ wq).reshape(xq.shape), g2.t() @ xq.reshape(-1, xq.shape[-1]), None, None


class _FreshOutput(_ViewOutput):
    """The same with a fresh output tensor (a copy of the view)."""

    @staticmethod
    def forward(ctx, x, w, xq, wq):  # type: ignore[no-untyped-def, override]
        return _ViewOutput.forward(ctx, x, w, xq, wq).clone()


def _outside(fn: type[torch.autograd.Function]):  # type: ignore[no-untyped-def]
    return lambda x, w: fn.apply(x, w, x.detach().bfloat16().float(), w.detach().bfloat16().float())


def hypotheses() -> None:
    """Minimal autograd functions: which pattern loses the weight gradient when compiled on this device?"""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for label, fn in (
        ("operands made outside", _outside(_OperandsOutside)),
        ("operands made inside", _OperandsInside.apply),
        ("3-D, view output", _outside(_ViewOutput)),
        ("3-D, fresh output", _outside(_FreshOutput)),
    ):
        for backend in (None, "eager", "aot_eager"):
            torch._dynamo.reset()
            torch.manual_seed(0)
            w = torch.randn(8, 16, device=dev, requires_grad=True)
            x = torch.randn(2, 4, 16, device=dev, requires_grad=True) if "3-D" in label else None
            x = torch.randn(4, 16, device=dev, requires_grad=True) if x is None else x
            f = torch.compile(fn, backend=backend, fullgraph=True) if backend else fn
            f(x, w).square().sum().backward()
            print(f"{label:24s} {backend or 'no compile':10s} |dW| = {float(w.grad.norm()):.4f} "
                  f"|dX| = {float(x.grad.norm()):.4f}")  # fmt: skip


def main() -> None:
    hypotheses()
    norms()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    names = [f"{t}{s}" for s in (0, 1) for t in ("out", "dW0", "dW2", "dW4")]
    print(f"device {dev}; max |compiled - eager| / max |eager| per tensor (step 0, step 1)")
    for label, (fmts, carrier) in VARIANTS.items():
        eager = run(fmts, carrier, None, dev)
        for backend in ("aot_eager", "inductor"):
            comp = run(fmts, carrier, backend, dev)
            diffs = " ".join(f"{n}={rel(c, e):.1e}" for n, c, e in zip(names, comp, eager, strict=True))
            print(f"{label:32s} {backend:9s} {diffs}")


if __name__ == "__main__":
    main()
