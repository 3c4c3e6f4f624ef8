"""Does torch.compile keep a numerics backend's gradients on this machine? A two-layer probe, eager vs compiled.

Measured on an H200 with torch 2.11 + CUDA 13 (2026-11-29): a compiled stack of simulated GEMMs (`SimLinear`)
returned zero weight gradients on CUDA, under dynamo alone (backend ``eager``) as under inductor, while its forward
matched eager and the same code on CPU (torch 2.13) matched eager bit for bit. The cause is in torch's tracing of
the autograd function, not in the quantizer (fp32 carriers and unquantized gradients broke the same way). So the
trainer runs this probe before it compiles a model under a simulated backend, and refuses to compile where the
probe's compiled gradients disagree with eager ones. The cause of that one was found (a no-op ``.to()`` on the
autograd function's output, see `simulated.function_output`); the probe stays as the guard for the next one.
It caught a second one: Inductor drops a ``.to(bfloat16)`` whose result is read back in float32 inside a fused
kernel, so the simulation's bf16 copies and bf16 GEMM outputs round with integer ops (`simulated.bf16_values`).
A probe the compiler cannot build at all is a ConfigError naming the compiler's message, not a traceback. On an
H200 (torch 2.11) Triton could not build the MX quantizer's kernel with the telemetry counters fused in at 128
tokens (``PassManager::run failed``, counters off or 2048 tokens built), so the probe has 2048 tokens
(`jobs/gpu/probe_diag.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustprec.errors import ConfigError

PROBE_WIDTH = 128  # a multiple of every recipe's block (32 MX, 16 NVFP4, 128 fp8_block)
PROBE_TOKENS = 2048
# relative to the gradient's norm: a flipped rounding moves it by ~1e-2, a broken graph by ~1
TOLERANCE = 0.05


class ProbeCompileError(RuntimeError):
    """The compiler could not build the probe (its forward, or its backward when first run)."""


class _Probe(nn.Module):
    """Two linears around a ReLU (exact in every backend, so compiled and eager quantize the same values), in a
    class of robustprec's own: dynamo skips the frames of torch's own modules, so an `nn.Sequential` would compile
    only the converted linears one by one (torch 2.11 and 2.13, measured), where the trainer compiles its model
    as one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(PROBE_WIDTH, PROBE_WIDTH), nn.Linear(PROBE_WIDTH, PROBE_WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _probe(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return _Probe().to(device)


def _weight_grads(
    prepare: Callable[[nn.Module], nn.Module],
    device: torch.device,
    compiler: str | Callable | None,
    options: dict[str, Any] | None = None,
) -> list[torch.Tensor]:
    model = _probe(device)
    run = prepare(model)
    if compiler is not None:
        # in place, inside the wrapper: as the trainer compiles its pure model
        model.compile(backend=compiler, options=options or None)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, PROBE_TOKENS // 2, PROBE_WIDTH, generator=gen).to(device)
    run(x).float().square().mean().backward()
    return [m.weight.grad.detach().double().clone() for m in model.modules() if isinstance(m, nn.Linear)]


def compiled_gradient_error(
    prepare: Callable[[nn.Module], nn.Module],
    device: torch.device,
    compiler: str | Callable = "inductor",
    options: dict[str, Any] | None = None,
) -> float:
    """The probe's largest ‖compiled − eager‖ over its weight gradients, relative to ‖eager‖ (finite entries). A
    norm, not the largest entry: on CUDA, Inductor's float32 ops may flip an FP4 rounding, which moved single
    entries by 4–8% of the largest gradient (nvfp4, H200). `prepare` converts a fresh probe in place and returns
    the module to call (e.g. a backend's `wrap`). Raises `ProbeCompileError` if the compiler cannot build the
    probe. Dynamo's state is reset first: past its per-frame recompile limit (8 earlier probes of other
    configurations in this process) it would run the probe eagerly, and the check would pass whatever the
    compiler does."""
    torch._dynamo.reset()
    eager = _weight_grads(prepare, device, None)
    try:
        compiled = _weight_grads(prepare, device, compiler, options)
    # eager ran: what fails now is the compiler's, building the forward or (lazily) the backward
    except Exception as e:
        raise ProbeCompileError(compiler_message(e)) from e
    return max(_relative(c, e) for c, e in zip(compiled, eager, strict=True))


def _relative(c: torch.Tensor, e: torch.Tensor) -> float:
    scale = float(e.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).norm()) or 1.0
    return float(_difference(c, e).norm()) / scale


def _difference(c: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|c − e|, zero where both hold the same value, infinities and NaNs included (a format that overflows in
    eager must overflow alike compiled)."""
    same = (c == e) | (c.isnan() & e.isnan())
    return torch.where(same, 0.0, (c - e).abs().nan_to_num(nan=torch.inf))


def compiler_message(e: BaseException) -> str:
    """The compiler's own last words, without dynamo's advice on verbose logging."""
    lines = [
        x.strip() for x in str(e).splitlines() if x.strip() and not x.startswith("Set TORCHDYNAMO_VERBOSE")
    ]
    return lines[-1][:300] if lines else type(e).__name__


def check_compiled_gradients(
    prepare: Callable[[nn.Module], nn.Module],
    device: torch.device,
    what: str,
    compiler: str | Callable = "inductor",
    options: dict[str, Any] | None = None,
) -> None:
    """Raise ConfigError if compiling (with Inductor `options`) changes the probe's gradients beyond `TOLERANCE`,
    or fails."""
    try:
        err = compiled_gradient_error(prepare, device, compiler, options)
    except ProbeCompileError as e:
        raise ConfigError(
            f"train.compile: torch {torch.__version__} cannot compile {what} on {device.type} ({e}); "
            "set train.compile=false"
        ) from e
    if not err <= TOLERANCE:
        raise ConfigError(
            f"train.compile: torch {torch.__version__} compiles {what} on {device.type} with wrong gradients "
            f"(a probe's compiled weight gradients differ from eager by {err:.2g} of their size); "
            "set train.compile=false"
        )
