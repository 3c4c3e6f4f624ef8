"""Training recipes on `nn.Linear` (issue 14): every GEMM quantizes its own operand copies, as torchao and TE do.

`apply_recipe` converts linears to `SimLinear` driven by a `TrainingRecipe` (`training_recipes`): six slots, one
per operand of the forward, dgrad and wgrad GEMMs, each quantized from the high-precision tensor with its blocks
along that GEMM's contraction dimension. Forward quantizes x (by rows) and W (by rows); backward keeps the
high-precision x (in the base precision) and the weight parameter (nothing quantized is saved) and quantizes
g by rows and W by columns for dgrad, gᵀ and xᵀ (by columns of g and x, along tokens) for wgrad. A slot without
quantization (``fp8_rowwise_gw_hp``'s wgrad, ``numerics.wgrad: high``) multiplies base-precision operands.

**GEMMs as the hardware computes them** (`scaled_mm`): every operand is split by `recipes.recipe_operand` into
values exact in bfloat16 (elements times power-of-two or E4M3 block scales) and FP32 factors per row and
K chunk (FP8 scales that are not powers of two, NVFP4's tensor scale). The GEMM multiplies the values (on CUDA
on bf16 tensor cores with float32 output, elsewhere in float32: the same exact products) and multiplies the
factors into the float32 output: ``out = acc · (f_a ⊗ f_b)``, per 128-column K chunk for 1×128 tiles with FP32
scales (DeepSeek-V3's promotion, chunks summed in float32). Only the float32 rounding order differs from
dequantize-then-multiply (torchao's emulation).

Base precision (``numerics.base``, bf16 for recipes by default): the high-precision act and grad copies are
rounded to it before quantization (as bf16 activations and gradients are in real recipes; the weight is quantized
from the FP32 master, as torchao does).

Stream keys: ``base + 8·call + slot`` (slot in `SLOTS` order) key the stochastic rounding of each slot.
Telemetry per operand adds every copy: overflow, underflow, elements, clamped block scales, blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustprec.numerics.accumulate import Accumulator
from robustprec.numerics.recipes import RecipePlan, recipe_operand, recipe_plan
from robustprec.numerics.simulated import (
    DEFAULT_EXCLUDE,
    OPERANDS,
    SimLinear,
    SimulatedHandle,
    _match,
    _SimState,
    autocast_off,
    bf16_values,
    function_output,
    gemm,
    round_output,
)
from robustprec.numerics.training_recipes import SLOTS, TrainingRecipe, check_linear, parse_training_recipe

__all__ = ["RecipeGemms", "RecipeHandle", "apply_recipe", "recipe_linear", "rht", "scaled_mm"]

KEY_STRIDE = 8
RHT_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)  # Transformer Engine's wgrad signs
_COUNT_COLS = 5  # overflow, underflow, elements, clamped scales, blocks


def rht(x: Tensor) -> Tensor:
    """TE's 16×16 random Hadamard transform of each 16 consecutive values of `x` (last dim a multiple of 16):
    ``x_16 @ (diag(RHT_SIGNS) · H16 / 4)``, H16 Sylvester's. The fast Walsh–Hadamard butterfly, one ±-stage per
    bit of the index, in elementwise ops (a 16-wide matmul ran as float32 FFMA GEMMs on an H200, 0.54 ms of
    nvfp4's 4.8 ms per gpt2 MLP step; the butterfly's stages ran as three unfused kernels, 0.50 ms, in s9_2).
    Exact where the float32 partial sums are, as a float32 GEMM is; the order of the sums may differ from it."""
    signs = torch.tensor(RHT_SIGNS, dtype=x.dtype, device=x.device)
    y = (x.reshape(-1, 16) * signs).reshape(-1, 2, 2, 2, 2)
    for dim in range(1, 5):
        a, b = y.select(dim, 0), y.select(dim, 1)
        y = torch.stack((a + b, a - b), dim=dim)
    return (y * 0.25).reshape(x.shape)


@dataclass(frozen=True)
class _Slot:
    plan: RecipePlan
    rht: bool
    stochastic: bool

    @property
    def transposable(self) -> bool:
        """Quantizing the transpose gives the transposed copy (one scale for the tensor, no random bits)."""
        return self.plan.recipe.block == (0, 0) and not self.stochastic and not self.rht


def _reused(a: _Slot | None, b: _Slot | None) -> bool:
    return a is not None and a == b and a.transposable


@dataclass(frozen=True)
class RecipeGemms:
    """Static choices of one converted model: the slots' plans, each GEMM's carrier, base dtype, output."""

    name: str
    slots: tuple[_Slot | None, ...]
    fwd: str
    dgrad: str
    wgrad: str
    base: torch.dtype
    out_bf16: bool
    token_multiple: int  # what tokens (rows of x) must be a multiple of
    acc: Accumulator | None = None  # numerics.accumulate, for the GEMMs whose two operands are quantized
    # backward copies that are the forward's (x for wgrad, W for dgrad) or dgrad's (g for wgrad) transposed
    reuse: tuple[bool, bool, bool] = (False, False, False)

    def accumulator(self, first_slot: int) -> Accumulator | None:
        """The accumulator of the GEMM of slots `first_slot` and `first_slot + 1` (0 fwd, 2 dgrad, 4 wgrad)."""
        quantized = self.slots[first_slot] is not None and self.slots[first_slot + 1] is not None
        return self.acc if quantized else None

    def output(self, out: Tensor) -> Tensor:
        return round_output(out, self.out_bf16)


def _gemms(
    recipe: TrainingRecipe, base: torch.dtype, gemm_output: str, acc: Accumulator | None = None
) -> RecipeGemms:
    slots = tuple(
        None if s is None else _Slot(recipe_plan(s.recipe, s.stochastic), s.rht, s.stochastic)
        for s in recipe.slots
    )
    hp_carrier = (
        "bf16" if base == torch.bfloat16 else "fp32"
    )  # unquantized slots multiply base-precision values

    def carrier(i: int) -> str:
        return hp_carrier if slots[i] is None or slots[i + 1] is None else "bf16"

    multiple = 1
    for i, s in enumerate(slots):
        if s is not None and i in (0, 2):  # fwd act, dgrad grad: tokens are rows
            multiple = math.lcm(multiple, s.plan.recipe.row_multiple)
        if s is not None and i in (4, 5):  # wgrad: tokens are K
            multiple = math.lcm(multiple, s.plan.recipe.k_multiple, 16 if s.rht else 1)
    reuse = (_reused(slots[0], slots[5]), _reused(slots[1], slots[3]), _reused(slots[2], slots[4]))
    return RecipeGemms(
        recipe.name,
        slots,
        carrier(0),
        carrier(2),
        carrier(4),
        base,
        gemm_output == "bf16",
        multiple,
        acc,
        reuse,
    )


def _outer(pa: Tensor | None, pb: Tensor | None, c: int) -> Tensor:
    """The output factor of K chunk c: f_a[:, c] ⊗ f_b[:, c] (a factor of one column serves every chunk)."""
    a = None if pa is None else pa[:, c : c + 1] if pa.shape[1] > 1 else pa
    b = None if pb is None else (pb[:, c : c + 1] if pb.shape[1] > 1 else pb).t()
    if a is None:
        assert b is not None
        return b
    return a if b is None else a * b


def scaled_mm(
    a: Tensor, pa: Tensor | None, b: Tensor, pb: Tensor | None, carrier: str, acc: Accumulator | None = None
) -> Tensor:
    """a @ bᵀ for operands (M, K), (N, K) with output factors (`recipe_operand`), float32 (M, N); `acc`: the
    accumulator along K (`robustprec.numerics.accumulate`), promoted at each factor chunk too."""
    if pa is None and pb is None:
        return gemm(a, b.t(), carrier, acc)
    chunks = max(p.shape[1] for p in (pa, pb) if p is not None)
    if chunks == 1:
        return gemm(a, b.t(), carrier, acc) * _outer(pa, pb, 0)
    k = a.shape[1] // chunks
    out = None
    for c in range(chunks):  # FP32 promotion per K chunk, as DeepSeek-V3's fine-grained FP8 GEMM
        part = gemm(a[:, c * k : (c + 1) * k], b[:, c * k : (c + 1) * k].t(), carrier, acc) * _outer(
            pa, pb, c
        )
        out = part if out is None else out + part
    assert out is not None
    return out


_Q = tuple[Tensor, Tensor | None, Tensor | None]


def _to_base(t: Tensor, base: torch.dtype) -> Tensor:
    """`t` in the base precision, its bf16 rounding by integer ops (`bf16_values`): it is read back in float32."""
    return bf16_values(t).to(base) if base == torch.bfloat16 and t.dtype != base else t.to(base)


def _quantize(
    t: Tensor, slot: _Slot | None, base: torch.dtype, key: Tensor | None, i: int, stats: bool
) -> _Q:
    """One slot's operand (2-D, blocks along the last dim): (values, output factors, counts or None)."""
    if slot is None:
        return _to_base(t, base), None, None
    x = t.float()
    if slot.rht:
        x = rht(x)
    k = None if key is None or not slot.stochastic else key + i
    return recipe_operand(x, slot.plan, k, stats)


def _count_rows(parts: Sequence[tuple[int, Tensor | None]], like: Tensor) -> Tensor:
    """Counts of slots (operand row, counts) as an (operands, 5) float64 tensor."""
    rows = [like.new_zeros(_COUNT_COLS, dtype=torch.float64) for _ in OPERANDS]
    for row, c in parts:
        if c is not None:
            rows[row] = rows[row] + c
    return torch.stack(rows)


_ROW = {op: OPERANDS.index(op) for op in OPERANDS}


def _saved_copy(q: _Q) -> _Q:
    """A quantized copy kept for backward: its values in bf16 (exact: elements times power-of-two or E4M3 scales)."""
    return q[0].to(torch.bfloat16), q[1], q[2]


def _transposed(q: _Q) -> _Q:
    """The copy of the transposed tensor, from a `_Slot.transposable` copy (its factor is one per tensor)."""
    return q[0].t(), q[1], q[2]


def _quantize_transposed(
    t: Tensor, slot: _Slot | None, base: torch.dtype, key: Tensor | None, i: int, stats: bool
) -> _Q:
    """The copy of `t`ᵀ. Where quantizing the transpose gives the transposed copy (no quantization, or
    `_Slot.transposable`), `t` is quantized in its own layout: a compiled per-tensor amax of a transposed view read
    it column by column (gpt2 MLP on an H200: 387 µs for a 16,384 × 3,072 gradient, s12_2)."""
    if slot is None or slot.transposable:
        return _transposed(_quantize(t, slot, base, key, i, stats))
    return _quantize(t.t(), slot, base, key, i, stats)


class _RecipeLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        x_hp: Tensor,
        xa: Tensor,
        xp: Tensor | None,
        c_x: Tensor | None,
        wa: Tensor,
        wp: Tensor | None,
        c_w: Tensor | None,
        key: Tensor | None,
        sink: Tensor | None,
        gemms: RecipeGemms,
    ) -> Tensor:
        xq, wq = (xa, xp, c_x), (wa, wp, c_w)
        out = scaled_mm(xa, xp, wa, wp, gemms.fwd, gemms.accumulator(0))
        if bias is not None:
            out = out + bias.float()
        reuse_x, reuse_w, _ = gemms.reuse
        xs = _saved_copy(xq) if reuse_x else (x_hp, None, None)
        ws = _saved_copy(wq) if reuse_w else (None, None, None)
        ctx.save_for_backward(*xs, weight, *ws, key)
        ctx.gemms = gemms
        ctx.meta = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        shape = (*x.shape[:-1], out.shape[-1])
        return function_output(gemms.output(out).reshape(shape), torch.promote_types(x.dtype, torch.float32))

    @staticmethod
    @autocast_off
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x_saved, xp, c_x, weight, w_saved, wp, c_w, key = ctx.saved_tensors
        gm: RecipeGemms = ctx.gemms
        reuse_x, reuse_w, reuse_g = gm.reuse
        x_dtype, w_dtype, b_dtype = ctx.meta
        g = grad_out.reshape(-1, grad_out.shape[-1])
        g_hp = _to_base(g, gm.base)
        stats = ctx.needs_input_grad[11]  # the telemetry sink is passed only when counting
        parts: list[tuple[int, Tensor | None]] = []
        dx = dw = db = None
        gq = None
        if ctx.needs_input_grad[0]:
            gq = _quantize(g_hp, gm.slots[2], gm.base, key, 2, stats)
            wt = (
                _transposed((w_saved, wp, c_w))
                if reuse_w
                else _quantize_transposed(weight.detach(), gm.slots[3], gm.base, key, 3, stats)
            )
            dx = gm.output(scaled_mm(gq[0], gq[1], wt[0], wt[1], gm.dgrad, gm.accumulator(2)))
            dx = dx.reshape(*grad_out.shape[:-1], weight.shape[1]).to(x_dtype)
            parts += [(_ROW["grad"], gq[2]), (_ROW["weight"], wt[2])]
        if ctx.needs_input_grad[1]:
            gt = (
                _transposed(gq)
                if reuse_g and gq is not None
                else _quantize_transposed(g_hp, gm.slots[4], gm.base, key, 4, stats)
            )
            xt = (
                _transposed((x_saved, xp, c_x))
                if reuse_x
                else _quantize_transposed(x_saved, gm.slots[5], gm.base, key, 5, stats)
            )
            dw = gm.output(scaled_mm(gt[0], gt[1], xt[0], xt[1], gm.wgrad, gm.accumulator(4))).to(w_dtype)
            parts += [(_ROW["grad"], gt[2]), (_ROW["act"], xt[2])]
        if b_dtype is not None and ctx.needs_input_grad[2]:
            db = g.float().sum(0).to(b_dtype)
        counts = _count_rows(parts, g) if stats else None
        return dx, dw, db, None, None, None, None, None, None, None, None, counts, None


def recipe_linear(mod: SimLinear, input: Tensor) -> Tensor:
    """`SimLinear.forward` under a training recipe (autocast is off: the recipe sets the precision)."""
    st = mod._sim
    gm: RecipeGemms = st.recipe
    tokens = input.numel() // input.shape[-1]
    if tokens % gm.token_multiple:
        raise ValueError(
            f"{gm.name}: the GEMMs' blocks need the number of tokens per micro-batch to be a multiple of "
            f"{gm.token_multiple}, got {tokens}"
        )
    key = st.next_key()
    x_hp = _to_base(input.detach().reshape(-1, input.shape[-1]), gm.base)
    counting = st.counting
    xq = _quantize(x_hp, gm.slots[0], gm.base, key, 0, counting)
    wq = _quantize(mod.weight.detach(), gm.slots[1], gm.base, key, 1, counting)
    if counting:
        st.counts.add_(_count_rows([(_ROW["act"], xq[2]), (_ROW["weight"], wq[2])], x_hp))
    sink = st.sink if counting and any(s is not None for s in gm.slots[2:]) else None
    return _RecipeLinearFn.apply(input, mod.weight, mod.bias, x_hp, *xq, *wq, key, sink, gm)


class _RecipeState(_SimState):
    """`_SimState` for a training recipe: per-operand counts of all copies, 8 stream keys per call."""

    def __init__(self, gemms: RecipeGemms, seed: int, device: torch.device) -> None:
        self.formats = {}
        self.recipe = gemms
        self.recipe_forward = recipe_linear
        self.gemms = gemms
        self.stochastic = any(s is not None and s.stochastic for s in gemms.slots)
        shape = (len(OPERANDS), _COUNT_COLS)
        self._init_streams(seed, device, shape, shape, stride=KEY_STRIDE)


class RecipeHandle(SimulatedHandle):
    """`SimulatedHandle` of a training recipe; `pop_stats` also reports the clamped block-scale fraction."""

    def __init__(self, modules: dict[str, SimLinear], recipe: TrainingRecipe, state: _RecipeState) -> None:
        super().__init__(modules, {}, state)
        self.recipe = recipe
        self.operands = [op for op in OPERANDS if any(s is not None for (_, o), s in zip(SLOTS, recipe.slots, strict=True) if o == op)]  # fmt: skip

    def pop_stats(self) -> dict[str, float]:
        """Per quantized operand, over all its copies since the last call (one host sync; resets):
        ``{kind}_overflow_frac``, ``{kind}_underflow_frac``, ``{kind}_scale_clamp_frac`` (blocks whose scale
        clamped to the scale format's range)."""
        st = self._state
        grad = st.sink.grad if st.sink.grad is not None else torch.zeros_like(st.sink)
        rows = (st.counts + grad.detach()).tolist()
        st.counts.zero_()
        st.sink.grad = None
        out: dict[str, float] = {}
        for kind in self.operands:
            ovf, unf, n, clamped, blocks = rows[OPERANDS.index(kind)]
            if n:  # nothing counted (counters off since the last reading): no reading
                out[f"{kind}_overflow_frac"], out[f"{kind}_underflow_frac"] = ovf / n, unf / n
                out[f"{kind}_scale_clamp_frac"] = clamped / blocks if blocks else 0.0
        return out

    def __repr__(self) -> str:
        return f"RecipeHandle({len(self.modules)} modules, {self.recipe.name})"


def apply_recipe(
    model: nn.Module,
    recipe: TrainingRecipe | str,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    base: str = "bf16",
    gemm_output: str = "fp32",
    accumulate: Accumulator | None = None,
) -> RecipeHandle:
    """Convert matching `nn.Linear` modules in place to `SimLinear` running `recipe` (a `TrainingRecipe` or spec).

    `base` (``bf16`` or ``fp32``) is the precision of the high-precision act/grad copies and of unquantized
    slots. `accumulate` gives the quantized GEMMs a limited-precision accumulator. Raises ValueError if nothing matched or a layer's dimensions do not fit the recipe's blocks.
    """
    r = parse_training_recipe(recipe) if isinstance(recipe, str) else recipe
    matched = _match(model, tuple(include), tuple(exclude))
    for name, mod in matched.items():
        try:
            check_linear(r, mod.in_features, mod.out_features)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
    if device is None:
        device = next(iter(matched.values())).weight.device
    gemms = _gemms(r, torch.bfloat16 if base == "bf16" else torch.float32, gemm_output, accumulate)
    state = _RecipeState(gemms, 0 if seed is None else seed, torch.device(device))
    for mod in matched.values():
        mod.__class__ = SimLinear
        mod._sim = state
    return RecipeHandle(dict(matched), r, state)  # type: ignore[arg-type]
