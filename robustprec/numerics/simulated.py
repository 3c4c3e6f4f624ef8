"""Simulated reduced-precision GEMMs for `nn.Linear` (the "masked GEMM" simulation of Lee et al. 2024, METHODS §2).

Forward quantizes the input activation (``act``) and the weight (``weight``) and multiplies them with float32
accumulation; backward quantizes the output gradient (``grad``) and uses it for both the input gradient (dgrad,
g @ W_q) and the weight gradient (wgrad, gᵀ @ x_q). The bias is added, and its gradient summed, in float32 from
the unquantized gradient (it is not a GEMM operand). Master weights are untouched: the quantized weight is a
temporary.

Everything is traceable: under torch.compile the quantizer, the counters and the GEMMs form one graph with the
model (no graph breaks, no host syncs).

**Carrier of each GEMM** (`gemm_carrier`): the quantized operands are exact in a narrower dtype, so the GEMM can
run on faster tensor cores with the same exact products and float32 accumulation:

- ``bf16`` when both operands' formats are exact in bfloat16 (`exact_in_bf16`: m <= 7; e <= 8 always holds, and
  scaled formats keep their dequantized values multiples of bf16's smallest subnormal, `FloatFormat.max_scale_exp`):
  on CUDA ``torch.mm(a, b, out_dtype=torch.float32)`` on bf16 tensors; the bf16 copies are also what backward
  keeps (half the activation memory of float32);
- ``tf32`` when both have m <= 10: a float32 GEMM with TF32 allowed, on CUDA (float32-denormal operands,
  < 2^-126, may be flushed by tensor cores);
- ``fp32`` otherwise (or when an operand is not quantized).

On other devices every carrier is the float32 GEMM of the same values. The output is float32-valued, in the
wider of the input's and the weight's dtypes (fp32 master weights: float32, also for a bf16 input such as
attention's under the backend's bf16 ``base``); ``gemm_output="bf16"`` rounds each GEMM's output (after the bias)
to bfloat16 values, as bf16 training does.

**Stochastic rounding** is counter-based (see `robustprec.numerics.quantize`): a call of a converted module takes
the next value `n` of a shared int64 call counter (a device tensor advanced in the graph), and its act, weight
and grad operands use the stream keys ``base + 4n + {0, 1, 2}`` with ``base = mix64(seed)``. Keys are unique per
call and operand, so no two quantizations share random bits (the quantizer mixes the key before use); backward
reuses the key saved by its forward call. Evaluation forwards (`SimulatedHandle.evaluation`) draw from a separate
counter, reset on entry, with ``base = mix64(seed ^ EVAL_SEED)``.

**Telemetry**: forward counts (overflow, underflow, elements) are added to a float64 device tensor; backward
counts travel as the "gradient" of a small float64 leaf tensor (autograd accumulates them in its ``.grad``), since
an autograd function's backward cannot mutate state without breaking the graph. `SimulatedHandle.pop_stats` reads
both with one host sync.

`apply_simulated` converts matching modules in place by switching their class to `SimLinear`, so parameter
objects, hooks and state_dict keys are unchanged (optimizers and DeepSpeed/ZeRO can be set up afterwards).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import Tensor, nn

from robustprec.numerics.accumulate import Accumulator, accumulated_mm
from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.quantize import QuantPlan, mix64_int, quant_plan, quantize_values

__all__ = [
    "GEMM_OUTPUTS",
    "OPERANDS",
    "SimLinear",
    "SimulatedHandle",
    "apply_simulated",
    "exact_in_bf16",
    "exact_in_tf32",
    "gemm_carrier",
]

OPERANDS = ("act", "weight", "grad")
GEMM_OUTPUTS = ("fp32", "bf16")
DEFAULT_EXCLUDE = ("*embed*", "*lm_head*", "*wte*", "*wpe*")
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "hpu", "mps")
EVAL_SEED = 0x5EED_E7A1  # salt of the evaluation stream (fixed: evals are comparable across steps)
BF16_MAN_BITS = 7
BF16_MIN_QUANTUM_EXP = -133  # bf16's smallest subnormal is 2^-133
TF32_MAN_BITS = 10


def exact_in_bf16(fmt: FloatFormat | None) -> bool:
    """Whether every value of `fmt` (after its scaling, if any) is a bfloat16 number: at most 7 mantissa bits, and
    its smallest quantum 2^(min_exp - m - k) (k up to `max_scale_exp` when scaled) a multiple of 2^-133; the
    largest value needs no check (e <= 8 and m <= 7 fit bf16's range). An unquantized operand (None) is not."""
    if fmt is None or fmt.man_bits > BF16_MAN_BITS:
        return False
    k = fmt.max_scale_exp if fmt.scaling != "none" else 0
    return fmt.min_exp - fmt.man_bits - k >= BF16_MIN_QUANTUM_EXP


def exact_in_tf32(fmt: FloatFormat | None) -> bool:
    """Whether every value of `fmt` (scaled by a power of two or not) is a TF32 number: at most 10 mantissa bits
    (exponent range is float32's in both). An unquantized operand (None) is not."""
    return fmt is not None and fmt.man_bits <= TF32_MAN_BITS


def gemm_carrier(a: FloatFormat | None, b: FloatFormat | None) -> str:
    """The carrier of a GEMM whose operands are quantized to `a` and `b` (None: not quantized)."""
    if exact_in_bf16(a) and exact_in_bf16(b):
        return "bf16"
    if exact_in_tf32(a) and exact_in_tf32(b):
        return "tf32"
    return "fp32"


def _tf32_mm(a: Tensor, b: Tensor) -> Tensor:
    """float32 mm with TF32 allowed for this call (the kernel of `_mm_tf32`)."""
    matmul = torch.backends.cuda.matmul
    prev = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        return torch.mm(a, b)
    finally:
        matmul.fp32_precision = prev


@torch.library.custom_op("robustprec::mm_tf32", mutates_args=())
def _mm_tf32(a: Tensor, b: Tensor) -> Tensor:
    """float32 mm with TF32 allowed: an opaque op, so the global switch never enters a traced graph."""
    return _tf32_mm(a, b)


@_mm_tf32.register_fake
def _mm_tf32_fake(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], b.shape[1])


@torch.library.custom_op("robustprec::advance_stream", mutates_args=("calls",))
def _advance_stream(calls: Tensor, base: Tensor, stride: int) -> Tensor:
    """Advance the call counter by one and return this call's stream key, base + stride·calls. An opaque op: the
    compiled backward must read the key saved by its forward, and AOT autograd would otherwise recompute it there
    from the counter buffer, which the forward has advanced by then (measured: wrong grad keys in every SimLinear
    but the last, under aot_eager and inductor)."""
    calls.add_(1)
    return base + calls * stride


@_advance_stream.register_fake
def _advance_stream_fake(calls: Tensor, base: Tensor, stride: int) -> Tensor:
    return torch.empty_like(base)


def carrier_mm(a: Tensor, b: Tensor, carrier: str) -> Tensor:
    """a @ b (2-D) on `carrier`, float32 output. Off CUDA every carrier is the float32 GEMM."""
    if a.is_cuda and carrier == "bf16":
        return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16), out_dtype=torch.float32)
    if a.is_cuda and carrier == "tf32":
        return _mm_tf32(a.float(), b.float())
    return torch.mm(a.float(), b.float())


def gemm(a: Tensor, b: Tensor, carrier: str, acc: Accumulator | None = None) -> Tensor:
    """a @ b (2-D) on `carrier`, float32 output, with the limited-precision accumulator `acc` along K if given
    (`robustprec.numerics.accumulate`)."""
    return accumulated_mm(a, b, acc, functools.partial(carrier_mm, carrier=carrier))


_Acc3 = tuple[Accumulator | None, Accumulator | None, Accumulator | None]


@dataclass(frozen=True)
class _Gemms:
    """Static choices of one handle: carriers of the three GEMMs, output rounding, and the grad quantizer."""

    fwd: str
    dgrad: str
    wgrad: str
    out_bf16: bool
    grad_plan: QuantPlan | None
    grad_store: torch.dtype
    wgrad_hp: torch.dtype | None = (
        None  # wgrad unquantized, from operands in this dtype (numerics.wgrad: high)
    )
    # the accumulator (numerics.accumulate) of the fwd, dgrad, wgrad GEMMs: those whose operands are both quantized
    acc: _Acc3 = (None, None, None)

    def output(self, out: Tensor) -> Tensor:
        return round_output(out, self.out_bf16)


_BF16 = quant_plan(parse_format("bf16"))


def bf16_values(t: Tensor) -> Tensor:
    """`t` rounded to bfloat16 (round to nearest even), as float32 values. With the integer rounding of
    `quantize_values`, not ``.to(bfloat16).float()``: Inductor drops such a round trip inside a fused kernel (torch
    2.11 even with ``emulate_precision_casts``), so compiled ≠ eager (0.07 of a probe's gradient, CPU-measured)."""
    return quantize_values(t, _BF16)[0]


def round_output(out: Tensor, to_bf16: bool) -> Tensor:
    """A float32 GEMM output, rounded to bf16 values for ``numerics.gemm_output=bf16``."""
    return bf16_values(out) if to_bf16 else out


_HP_CARRIER = {torch.bfloat16: "bf16", torch.float32: "fp32"}


def _accumulators(acc: Accumulator | None, *gemms: tuple[FloatFormat | None, FloatFormat | None]) -> _Acc3:
    """`acc` for each GEMM whose two operands are quantized (formats not None); None for the others."""
    out = tuple(acc if a is not None and b is not None else None for a, b in gemms)
    assert len(out) == 3
    return out  # type: ignore[return-value]


def _store_dtype(fmt: FloatFormat | None) -> torch.dtype:
    """Dtype in which a quantized operand is kept: bf16 when exact, else float32."""
    return torch.bfloat16 if exact_in_bf16(fmt) else torch.float32


class _SimState:
    """What converted modules share: formats and plans, carriers, the stochastic-rounding counters and the
    telemetry tensors (all on one device)."""

    def __init__(
        self,
        formats: dict[str, FloatFormat],
        seed: int,
        device: torch.device,
        gemm_output: str,
        wgrad_hp: torch.dtype | None = None,
        accumulate: Accumulator | None = None,
    ) -> None:
        if gemm_output not in GEMM_OUTPUTS:
            raise ValueError(f"gemm_output must be one of {', '.join(GEMM_OUTPUTS)}; got {gemm_output!r}")
        self.formats = formats
        self.plans = {k: quant_plan(f) for k, f in formats.items()}
        act, weight, grad = (formats.get(k) for k in OPERANDS)
        self.store = {k: _store_dtype(formats.get(k)) for k in OPERANDS}
        wgrad = gemm_carrier(grad, act) if wgrad_hp is None else _HP_CARRIER[wgrad_hp]
        self.gemms = _Gemms(
            gemm_carrier(act, weight), gemm_carrier(grad, weight), wgrad,
            gemm_output == "bf16", self.plans.get("grad"), self.store["grad"], wgrad_hp,
            _accumulators(accumulate, (act, weight), (grad, weight), (grad, None if wgrad_hp else act)),
        )  # fmt: skip
        self.stochastic = any(f.rounding == "stochastic" for f in formats.values())
        self.recipe: Any = None  # training recipes: a recipe_linear.RecipeGemms and its forward
        self.recipe_forward: Any = None
        # act, weight: ovf, unf, numel; the sink's gradient: the grad operand's
        self._init_streams(seed, device, (2, 3), (3,), stride=4)

    def _init_streams(
        self, seed: int, device: torch.device, counts: tuple[int, ...], sink: tuple[int, ...], stride: int
    ) -> None:
        """Stochastic-rounding counters (stream keys ``base + stride·call``) and telemetry tensors."""
        self.telemetry = True
        self.evaluating = False
        self.stride = stride
        i64 = {"dtype": torch.int64, "device": device}
        self.seed = int(seed)
        self.train_base = torch.tensor(mix64_int(self.seed), **i64)
        self.eval_base = torch.tensor(mix64_int(self.seed ^ EVAL_SEED), **i64)
        self.calls = torch.zeros((), **i64)  # calls of converted modules so far: the training stream position
        self.eval_calls = torch.zeros((), **i64)
        self.counts = torch.zeros(*counts, dtype=torch.float64, device=device)  # forward counts
        self.sink = torch.zeros(*sink, dtype=torch.float64, device=device, requires_grad=True)  # backward's

    def to(self, device: torch.device) -> None:
        """Move the counters and telemetry tensors to `device` (a no-op if they are there)."""
        if self.calls.device == device:
            return
        for name in ("train_base", "eval_base", "calls", "eval_calls", "counts"):
            setattr(self, name, getattr(self, name).to(device))
        self.sink = self.sink.detach().to(device).requires_grad_(True)

    def next_key(self) -> Tensor | None:
        """The stream key of this call (None without stochastic rounding); advances the call counter."""
        if not self.stochastic:
            return None
        calls, base = (self.eval_calls, self.eval_base) if self.evaluating else (self.calls, self.train_base)
        return _advance_stream(calls, base, self.stride)

    @property
    def counting(self) -> bool:
        return self.telemetry and not self.evaluating

    def operand(self, kind: str, t: Tensor, key: Tensor | None) -> Tensor:
        """The quantized forward operand `kind` (0 act, 1 weight) in its store dtype; adds its counts."""
        plan = self.plans.get(kind)
        if plan is None:
            return t.detach().float()
        i = OPERANDS.index(kind)
        q, counts = quantize_values(t.detach(), plan, None if key is None else key + i, self.counting)
        if counts is not None:
            self.counts[i].add_(counts)
        return q.to(self.store[kind])


def function_output(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t` in `dtype`, as an autograd function's forward returns it. Never ``t.to(t.dtype)``: torch 2.11's dynamo
    traces the backward of a function whose output is that no-op alias with a zero gradient, so every compiled
    weight gradient came out 0 (measured: tests/test_compile_check.py)."""
    return t if t.dtype == dtype else t.to(dtype)


def autocast_off(backward: Callable[[Any, Tensor], Any]) -> Callable[[Any, Tensor], Any]:
    """Run an autograd function's backward with autocast off, as eager backward runs: a compiled backward inherits
    the forward's autocast (torch's ``backward_pass_autocast="same_as_forward"``), which rounded the GEMM
    operands of the simulated and recipe backward to bf16 under the bf16 base."""

    @functools.wraps(backward)
    def run(ctx: Any, grad_out: Tensor) -> Any:
        with _no_autocast(grad_out.device.type):
            return backward(ctx, grad_out)

    return run


class _SimLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        xq: Tensor,
        wq: Tensor,
        key: Tensor | None,
        sink: Tensor | None,
        gemms: _Gemms,
    ) -> Tensor:
        out = gemm(xq.reshape(-1, xq.shape[-1]), wq.t(), gemms.fwd, gemms.acc[0])
        if bias is not None:
            out = out + bias.float()
        # wgrad: high keeps the unquantized input (in the base precision) for the grad-weight GEMM
        xw = xq if gemms.wgrad_hp is None else x.detach().to(gemms.wgrad_hp)
        ctx.save_for_backward(wq, key, xw)
        ctx.gemms = gemms
        ctx.meta = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.stats = sink is not None  # the telemetry leaf is passed only when grad is quantized and counted
        out = gemms.output(out).reshape(*x.shape[:-1], out.shape[-1])
        return function_output(out, torch.promote_types(x.dtype, weight.dtype))

    @staticmethod
    @autocast_off
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        wq, key, xw = ctx.saved_tensors
        gemms: _Gemms = ctx.gemms
        x_dtype, w_dtype, b_dtype = ctx.meta
        g = grad_out.reshape(-1, grad_out.shape[-1]).float()
        gq, counts = g, None
        if gemms.grad_plan is not None:
            gq, counts = quantize_values(g, gemms.grad_plan, None if key is None else key + 2, ctx.stats)
            gq = gq.to(gemms.grad_store)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = gemms.output(gemm(gq, wq, gemms.dgrad, gemms.acc[1]))
            dx = dx.reshape(*grad_out.shape[:-1], wq.shape[1]).to(x_dtype)
        if ctx.needs_input_grad[1]:
            gw = gq if gemms.wgrad_hp is None else g.to(gemms.wgrad_hp)
            dw = gemms.output(gemm(gw.t(), xw.reshape(-1, xw.shape[-1]), gemms.wgrad, gemms.acc[2])).to(
                w_dtype
            )
        if b_dtype is not None and ctx.needs_input_grad[2]:
            db = g.sum(0).to(b_dtype)
        return dx, dw, db, None, None, None, counts, None


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    if device_type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class SimLinear(nn.Linear):
    """`nn.Linear` whose GEMM operands are quantized to simulated formats (created by `apply_simulated`)."""

    _sim: _SimState

    def forward(self, input: Tensor) -> Tensor:
        # Autocast off: the simulated format, not bf16/fp16 autocast, sets the operand precision.
        st = self._sim
        with _no_autocast(input.device.type):
            if st.recipe is not None:  # a training recipe (robustprec.numerics.recipe_linear)
                return st.recipe_forward(self, input)
            key = st.next_key()
            xq = st.operand("act", input, key)
            wq = st.operand("weight", self.weight, key)
            sink = st.sink if st.counting and "grad" in st.formats else None
            return _SimLinearFn.apply(input, self.weight, self.bias, xq, wq, key, sink, st.gemms)

    def _apply(self, fn: Any, recurse: bool = True) -> SimLinear:
        """`.to(device)`, `.cuda()` ...: the shared counters follow the weight's device."""
        super()._apply(fn, recurse)
        self._sim.to(self.weight.device)
        return self

    def extra_repr(self) -> str:
        if self._sim.recipe is not None:
            return f"{super().extra_repr()}, recipe={self._sim.recipe.name}"
        fmts = ", ".join(f"{k}={f.spec}" for k, f in self._sim.formats.items())
        return f"{super().extra_repr()}, sim=({fmts})"


class SimulatedHandle:
    """Result of `apply_simulated`: the converted modules, their formats, telemetry, the stochastic-rounding
    stream state and `remove()`."""

    def __init__(self, modules: dict[str, SimLinear], formats: dict[str, FloatFormat], state: _SimState):
        self.modules = modules
        self.formats = formats
        self._state = state

    @property
    def names(self) -> list[str]:
        """Qualified names of the converted modules."""
        return list(self.modules)

    @property
    def carriers(self) -> dict[str, str]:
        """Carrier of each GEMM: {"fwd", "dgrad", "wgrad"} -> bf16 / tf32 / fp32."""
        g = self._state.gemms
        return {"fwd": g.fwd, "dgrad": g.dgrad, "wgrad": g.wgrad}

    @property
    def stats_enabled(self) -> bool:
        return self._state.telemetry

    @stats_enabled.setter
    def stats_enabled(self, value: bool) -> None:
        self._state.telemetry = bool(value)

    def pop_stats(self) -> dict[str, float]:
        """Overflow/underflow fractions per quantized operand over the elements counted since the last call (one
        host sync; none for an operand with nothing counted); resets.

        Keys: ``{kind}_overflow_frac`` (finite elements that saturated or became Inf/NaN) and
        ``{kind}_underflow_frac`` (nonzero elements that became zero), for kind in the quantized operands.
        """
        st = self._state
        grad = st.sink.grad if st.sink.grad is not None else torch.zeros_like(st.sink)
        rows = torch.cat((st.counts, grad.detach().reshape(1, 3))).tolist()
        st.counts.zero_()
        st.sink.grad = None
        out: dict[str, float] = {}
        for kind in self.formats:
            ovf, unf, n = rows[OPERANDS.index(kind)]
            if n:  # nothing counted (counters off since the last reading): no reading
                out[f"{kind}_overflow_frac"], out[f"{kind}_underflow_frac"] = ovf / n, unf / n
        return out

    def state_dict(self) -> dict[str, Any]:
        """The stochastic-rounding stream's state (what a checkpoint must hold for an exact resume)."""
        return {"seed": self._state.seed, "calls": int(self._state.calls)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (the same stream continues where it stopped)."""
        st = self._state
        st.seed = int(state["seed"])
        st.train_base.fill_(mix64_int(st.seed))
        st.eval_base.fill_(mix64_int(st.seed ^ EVAL_SEED))
        st.calls.fill_(int(state["calls"]))

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Forwards inside the block round stochastically from a fixed evaluation stream (restarted on every
        entry) and neither draw from nor advance the training stream, nor add to the telemetry counters."""
        st = self._state
        st.eval_calls.zero_()
        st.evaluating = True
        try:
            yield
        finally:
            st.evaluating = False

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


def _match(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, nn.Linear]:
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
    return matched


def apply_simulated(
    model: nn.Module,
    fmt: FloatFormat | str | Mapping[str, FloatFormat | str],
    operands: Sequence[str] = OPERANDS,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    gemm_output: str = "fp32",
    wgrad_hp: torch.dtype | None = None,
    accumulate: Accumulator | None = None,
) -> SimulatedHandle:
    """Convert the `nn.Linear` modules of `model` whose qualified name matches an `include` glob and no
    `exclude` glob into `SimLinear`, in place.

    `fmt` is one format for all `operands` (subset of act/weight/grad) or a dict operand -> format (operands
    missing from the dict are not quantized). Only modules of class exactly `nn.Linear` are converted.
    `seed` selects the stochastic-rounding streams (default 0). `device` is where the counters are created
    (default: the first converted weight's device); they follow the modules on `.to(device)`. `gemm_output`
    ``bf16`` rounds GEMM outputs to bfloat16. `wgrad_hp` (a dtype) computes the grad-weight GEMM from the
    unquantized input and output gradient in that dtype. `accumulate` gives the quantized GEMMs a
    limited-precision accumulator (`robustprec.numerics.accumulate`). Raises ValueError if nothing matched.
    """
    formats = _resolve_formats(fmt, operands)
    matched = _match(model, tuple(include), tuple(exclude))
    if device is None:
        device = next(iter(matched.values())).weight.device
    state = _SimState(
        formats, 0 if seed is None else seed, torch.device(device), gemm_output, wgrad_hp, accumulate
    )
    converted: dict[str, SimLinear] = {}
    for name, mod in matched.items():
        mod.__class__ = SimLinear
        mod._sim = state
        converted[name] = mod  # type: ignore[assignment]
    return SimulatedHandle(converted, formats, state)
