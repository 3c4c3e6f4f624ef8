"""Simulated reduced-precision GEMMs for `nn.Linear` (the "masked GEMM" simulation of Lee et al. 2024, METHODS §2).

Forward quantizes the input activation (``act``) and the weight (``weight``) and multiplies them in float32;
backward quantizes the output gradient (``grad``) and uses it for both the input gradient (dgrad, g @ W_q) and
the weight gradient (wgrad, gᵀ @ x_q). The bias is added, and its gradient summed, in float32 from the
unquantized gradient (it is not a GEMM operand). Master weights are untouched: the quantized weight is a
temporary.

Speed without a change of result: when both operands of a GEMM are quantized to formats with at most 10
mantissa bits (every ExMy of a numerics study), each operand is exactly a TF32 number, so on CUDA the GEMM runs on
TF32 tensor cores: the products are exact and accumulate in float32, as in the float32 GEMM (only the summation
order differs, as between any two GEMM kernels; the one exception is a float32-denormal operand, < 2^-126, which
tensor cores may flush). Measured on an H100: this is what made simulated trials cost about as much as bf16 ones.

`apply_simulated` converts matching modules in place by switching their class to `SimLinear`, so parameter
objects, hooks and state_dict keys are unchanged (optimizers and DeepSpeed/ZeRO can be set up afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.quantize import quantize, quantize_with_stats

__all__ = ["OPERANDS", "SimLinear", "SimulatedHandle", "apply_simulated"]

OPERANDS = ("act", "weight", "grad")
DEFAULT_EXCLUDE = ("*embed*", "*lm_head*", "*wte*", "*wpe*")
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "hpu", "mps")
EVAL_SEED = (
    0x5EED_E7A1  # the evaluation stream of stochastic rounding (fixed: evals are comparable across steps)
)


class _Telemetry:
    """Per-operand counters: element counts on the host, overflow/underflow counts as device tensors."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = tuple(kinds)
        self.enabled = True
        self._numel = dict.fromkeys(self.kinds, 0)
        self._counts: dict[str, Tensor] = {}  # kind -> int64 tensor [overflow, underflow]

    def add(self, kind: str, numel: int, overflow: Tensor, underflow: Tensor) -> None:
        self._numel[kind] += numel
        counts = torch.stack((overflow, underflow))
        acc = self._counts.get(kind)
        if acc is None:
            self._counts[kind] = counts
        else:
            acc.add_(counts.to(acc.device))

    def pop(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind in self.kinds:
            n = self._numel[kind]
            counts = self._counts.get(kind)
            ovf, unf = (0, 0) if counts is None else (int(v) for v in counts.tolist())
            out[f"{kind}_overflow_frac"] = ovf / n if n else 0.0
            out[f"{kind}_underflow_frac"] = unf / n if n else 0.0
        self._numel = dict.fromkeys(self.kinds, 0)
        self._counts = {}
        return out


TF32_MAN_BITS = 10


def exact_in_tf32(fmt: FloatFormat | None) -> bool:
    """Whether every value of `fmt` (scaled by a power of two or not) is a TF32 number: at most 10 mantissa bits
    (exponent range is float32's in both). An unquantized operand (None) is not."""
    return fmt is not None and fmt.man_bits <= TF32_MAN_BITS


@contextlib.contextmanager
def _tf32(enabled: bool) -> Any:
    """Allow TF32 for float32 CUDA matmuls inside the block (restored after)."""
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    prev = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = prev


class _SimState:
    """What a converted module needs: per-operand formats, the RNG and the shared telemetry, and which of the
    three GEMMs may run on TF32 tensor cores without changing the result (`exact_in_tf32`)."""

    def __init__(
        self, formats: dict[str, FloatFormat], generator: torch.Generator | None, telemetry: _Telemetry
    ) -> None:
        self.formats, self.generator, self.telemetry = formats, generator, telemetry
        act, weight, grad = (exact_in_tf32(formats.get(k)) for k in OPERANDS)
        self.tf32_fwd, self.tf32_dgrad, self.tf32_wgrad = act and weight, grad and weight, grad and act

    def quantize(self, kind: str, t: Tensor) -> Tensor:
        fmt = self.formats.get(kind)
        if fmt is None:
            return t
        if not self.telemetry.enabled:
            return quantize(t, fmt, self.generator)
        q, stats = quantize_with_stats(t, fmt, self.generator)
        self.telemetry.add(kind, stats.numel, stats.overflow, stats.underflow)
        return q


class _SimLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, state: _SimState) -> Tensor:
        xq = state.quantize("act", x.float())
        wq = state.quantize("weight", weight.float())
        with _tf32(state.tf32_fwd and xq.is_cuda):
            out = F.linear(xq, wq, None if bias is None else bias.float())
        ctx.save_for_backward(xq, wq)
        ctx.state = state
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        xq, wq = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        g = grad_out.float()
        with _no_autocast(g.device.type):
            g2 = ctx.state.quantize("grad", g).reshape(-1, g.shape[-1])
            dx = dw = db = None
            state, cuda = ctx.state, g.is_cuda
            if ctx.needs_input_grad[0]:
                with _tf32(state.tf32_dgrad and cuda):
                    dx = g2.mm(wq).reshape(*g.shape[:-1], wq.shape[1]).to(x_dtype)
            if ctx.needs_input_grad[1]:
                with _tf32(state.tf32_wgrad and cuda):
                    dw = g2.t().mm(xq.reshape(-1, xq.shape[-1])).to(w_dtype)
            if b_dtype is not None and ctx.needs_input_grad[2]:
                db = g.reshape(-1, g.shape[-1]).sum(0).to(b_dtype)
        return dx, dw, db, None


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    if device_type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class SimLinear(nn.Linear):
    """`nn.Linear` whose GEMM operands are quantized to simulated formats (created by `apply_simulated`)."""

    _sim: _SimState

    def forward(self, input: Tensor) -> Tensor:
        # Autocast off: the simulated format, not bf16/fp16 autocast, sets the operand precision.
        with _no_autocast(input.device.type):
            return _SimLinearFn.apply(input, self.weight, self.bias, self._sim)

    def extra_repr(self) -> str:
        fmts = ", ".join(f"{k}={f.spec}" for k, f in self._sim.formats.items())
        return f"{super().extra_repr()}, sim=({fmts})"


class SimulatedHandle:
    """Result of `apply_simulated`: the converted modules, their formats, telemetry and `remove()`."""

    def __init__(self, modules: dict[str, SimLinear], formats: dict[str, FloatFormat], state: _SimState):
        self.modules = modules
        self.formats = formats
        self._state = state
        self._telemetry = state.telemetry

    @property
    def names(self) -> list[str]:
        """Qualified names of the converted modules."""
        return list(self.modules)

    @property
    def stats_enabled(self) -> bool:
        return self._telemetry.enabled

    @stats_enabled.setter
    def stats_enabled(self, value: bool) -> None:
        self._telemetry.enabled = bool(value)

    def pop_stats(self) -> dict[str, float]:
        """Overflow/underflow fractions per quantized operand since the last call (synchronises once); resets.

        Keys: ``{kind}_overflow_frac`` (finite elements that saturated or became Inf/NaN) and
        ``{kind}_underflow_frac`` (nonzero elements that became zero), for kind in the quantized operands.
        """
        return self._telemetry.pop()

    def state_dict(self) -> dict[str, Any]:
        """The stochastic-rounding stream's state (what a checkpoint must hold for an exact resume)."""
        gen = self._state.generator
        return {"generator": None if gen is None else gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (the same stream continues where it stopped)."""
        gen = self._state.generator
        if gen is not None and state.get("generator") is not None:
            gen.set_state(state["generator"].cpu())

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Forwards inside the block round stochastically from a fixed evaluation stream (reseeded on every
        entry) and neither draw from nor advance the training stream, nor add to the telemetry counters."""
        state, tele = self._state, self._telemetry
        train_gen, enabled = state.generator, tele.enabled
        if train_gen is not None:
            state.generator = torch.Generator(device=train_gen.device).manual_seed(EVAL_SEED)
        tele.enabled = False
        try:
            yield
        finally:
            state.generator, tele.enabled = train_gen, enabled

    def remove(self) -> None:
        """Turn the converted modules back into plain `nn.Linear`."""
        for mod in self.modules.values():
            mod.__class__ = nn.Linear
            del mod._sim
        self.modules = {}

    def __repr__(self) -> str:
        fmts = ", ".join(f"{k}={f.spec}" for k, f in self.formats.items())
        return f"SimulatedHandle({len(self.modules)} modules, {fmts})"


def _resolve_formats(
    fmt: FloatFormat | str | Mapping[str, FloatFormat | str], operands: Sequence[str]
) -> dict[str, FloatFormat]:
    operands = tuple(operands)
    bad = [k for k in operands if k not in OPERANDS]
    if bad or not operands:
        raise ValueError(
            f"operands must be a non-empty subset of {', '.join(OPERANDS)}; got {list(operands)}"
        )

    def as_fmt(f: FloatFormat | str) -> FloatFormat:
        return f if isinstance(f, FloatFormat) else parse_format(f)

    if isinstance(fmt, Mapping):
        unknown = [k for k in fmt if k not in OPERANDS]
        if unknown:
            raise ValueError(f"format dict keys must be among {', '.join(OPERANDS)}; got {unknown}")
        formats = {k: as_fmt(fmt[k]) for k in OPERANDS if k in operands and k in fmt}
        if not formats:
            raise ValueError(f"no operand to quantize: operands={list(operands)}, format keys={list(fmt)}")
        return formats
    f = as_fmt(fmt)
    return {k: f for k in OPERANDS if k in operands}


def apply_simulated(
    model: nn.Module,
    fmt: FloatFormat | str | Mapping[str, FloatFormat | str],
    operands: Sequence[str] = OPERANDS,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    generator: torch.Generator | None = None,
) -> SimulatedHandle:
    """Convert the `nn.Linear` modules of `model` whose qualified name matches an `include` glob and no
    `exclude` glob into `SimLinear`, in place.

    `fmt` is one format for all `operands` (subset of act/weight/grad) or a dict operand -> format (operands
    missing from the dict are not quantized). Only modules of class exactly `nn.Linear` are converted.
    `generator` drives stochastic rounding (global RNG if None). Raises ValueError if nothing matched.
    """
    formats = _resolve_formats(fmt, operands)
    include, exclude = tuple(include), tuple(exclude)
    matched: dict[str, nn.Linear] = {}
    linears = []
    for name, mod in model.named_modules():
        if isinstance(mod, SimLinear):
            raise ValueError(
                f"module {name!r} is already a SimLinear; call remove() on the previous handle first"
            )
        if type(mod) is not nn.Linear:
            continue
        linears.append(name)
        if any(fnmatchcase(name, p) for p in include) and not any(fnmatchcase(name, p) for p in exclude):
            matched[name] = mod
    if not matched:
        shown = ", ".join(linears[:20]) + (" ..." if len(linears) > 20 else "")
        raise ValueError(
            f"no nn.Linear module matched include={list(include)} exclude={list(exclude)}; "
            f"nn.Linear modules in the model: [{shown}]"
        )
    telemetry = _Telemetry(list(formats))
    state = _SimState(formats, generator, telemetry)
    converted: dict[str, SimLinear] = {}
    for name, mod in matched.items():
        mod.__class__ = SimLinear
        mod._sim = state
        converted[name] = mod  # type: ignore[assignment]
    return SimulatedHandle(converted, formats, state)
