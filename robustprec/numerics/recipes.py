"""Real low-precision recipes' operand quantization (MX, NVFP4, per-tensor/row/tile FP8), simulated bit-exactly.

`quantize_recipe(x, spec)` returns `x` quantized by the recipe and dequantized (same shape and dtype); it follows
the reference implementations operation by operation, in float32, with traceable torch ops (no host syncs, no
branching on tensor values). The element rounding is `robustprec.numerics.quantize`'s saturating round-to-nearest-
even cast. Spec strings and the recipe data live in `robustprec.numerics.recipe_spec` (docs/recipes.md).

Reference behaviour reproduced on purpose (torchao 0.18 `mx_tensor.to_mx`/`to_dtype`, `nvfp4_quantize`):

- MX floor/ceil/even: a block whose scale exponent clamps to -127 has its elements divided by 2^-126 (torchao
  clamps the fp32 scale to the smallest normal) but is dequantized with 2^-127.
- MX rceil: a block with scale exponent -127 has its elements multiplied by 1, not 2^127 (torchao and Transformer
  Engine), so it dequantizes to (nearly) zero.

Deliberate differences (docs/recipes.md has the inputs that show them):

- rceil takes the exact ceiling of log2(amax / max_elem) (Blackwell's ``cvt.rp.satfinite.ue8m0``, Transformer
  Engine); torchao's CPU/eager fallback uses float32 ``ceil(log2(.))``, one too small when amax / max_elem lies one
  ulp above a power of two.
- ``pow2`` FP8 scales are the exact power of two at or below the scale (its exponent bits, as Transformer
  Engine's frexp); torchao's ``exp2(floor(log2(s)))`` rounds up when s lies one ulp below a power of two.
- nvfp4 on an all-zero tensor returns zeros (torchao: NaN, from 0/0).

Compiled for CUDA, Inductor's ``frexp`` flushes float32 subnormals and its float32 division is approximate
(docs/recipes.md, "Compiled on CUDA"): exponents come from the bits (`_log2_parts`) and divisions go through
float64 (`_div_rn`), so compiled = eager = CPU bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.quantize import QuantPlan, quant_plan, quantize_values
from robustprec.numerics.recipe_spec import (
    AmaxScale,
    MXScale,
    NVFP4Scale,
    Recipe,
    check_block_shape,
    parse_recipe,
)

__all__ = [
    "RecipePlan",
    "RecipeStats",
    "quantize_recipe",
    "quantize_recipe_with_stats",
    "recipe_operand",
    "recipe_plan",
    "recipe_scales",
    "recipe_values",
]

_E8M0_MIN = -127  # smallest E8M0 scale exponent
_F32_MIN_NORMAL_EXP = -126
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class RecipePlan:
    """A recipe with its element (and NVFP4 block-scale) formats resolved on the host, for tracing."""

    recipe: Recipe
    fmt: FloatFormat
    plan: QuantPlan
    scale_fmt: FloatFormat | None = None
    scale_plan: QuantPlan | None = None


@functools.lru_cache(maxsize=64)
def recipe_plan(spec: Recipe | str, stochastic: bool = False) -> RecipePlan:
    """Parse `spec` and resolve its formats (cached); pass the result to `recipe_values`. `stochastic` rounds the
    elements stochastically (the block scales keep round-to-nearest-even)."""
    recipe = parse_recipe(spec) if isinstance(spec, str) else spec
    fmt = parse_format(recipe.element)
    if stochastic:
        fmt = fmt.replace(rounding="stochastic")
    scale_fmt = None
    if isinstance(recipe.scale, NVFP4Scale):
        scale_fmt = parse_format(recipe.scale.block_scale_format)
    return RecipePlan(
        recipe, fmt, quant_plan(fmt), scale_fmt, quant_plan(scale_fmt) if scale_fmt is not None else None
    )


def _exp2(k: Tensor) -> Tensor:
    """2^k as float32 for integer k in [-149, 128] (exact, subnormals included; 128 gives inf)."""
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64).to(torch.float32)


def _tiles(x: Tensor, block: tuple[int, int]) -> Tensor:
    """x viewed as (batch, row tiles, rows per tile, col tiles, cols per tile); one scale per (.., :, .., :)."""
    br, bc = block
    if br == 0:
        return x.reshape(1, 1, 1, 1, -1)
    c = x.shape[-1]
    bc = bc or c
    if br == 1:
        return x.reshape(-1, 1, 1, c // bc, bc)
    return x.reshape(-1, x.shape[-2] // br, br, c // bc, bc)


def _amax(xt: Tensor) -> Tensor:
    return xt.abs().amax(dim=(2, 4), keepdim=True)


def _finite_nonzero(a: Tensor) -> Tensor:
    return torch.isfinite(a) & (a > 0)


def _div_rn(a: Tensor | float, b: Tensor | float) -> Tensor:
    """a / b as float32 division rounds it, on every backend. Compiled for CUDA, Inductor lowers float32 division to
    Triton's approximate ``div.full`` and division by a constant to a multiplication by its rounded reciprocal. In
    float64 instead: the quotient of two float32 numbers is exactly a float32 rounding midpoint never in the normal
    range, and at least 2^-49 (relatively) from one, so a float64 result within 2^-50 of it (exact division, or a
    rounded reciprocal times a, the lowerings seen) rounds to the float32 quotient. Not guaranteed: a quotient that
    is exactly a midpoint between float32 subnormals, divided by a constant (none changes an rceil exponent: such
    quotients give exponents below -127, which E8M0 clamps to -127)."""
    wide = [t.to(torch.float64) if isinstance(t, Tensor) else float(t) for t in (a, b)]
    return (wide[0] / wide[1]).to(torch.float32)


def _log2_parts(d: Tensor) -> tuple[Tensor, Tensor]:
    """floor(log2(d)) (int64) of positive finite float32 `d`, subnormals included, and whether d is no power of two,
    by integer ops on its float64 bits (where every float32 is normal). Not `torch.frexp`: compiled for CUDA (torch
    2.11) it flushes float32 subnormals (libdevice built with FTZ: pytorch/pytorch#195007, fixed by #195041)."""
    bits = d.to(torch.float64).view(torch.int64)
    return ((bits >> 52) & 0x7FF) - 1023, (bits & ((1 << 52) - 1)) != 0


def _ceil_log2(d: Tensor) -> Tensor:
    """Exact ceil(log2(d)) (int32) of positive finite float32 `d` (`_log2_parts`)."""
    floor, inexact = _log2_parts(d)
    return (floor + inexact.to(torch.int64)).to(torch.int32)


def _mx_exponent(amax: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    """Unclamped E8M0 exponent of each block (torchao ScaleCalculationMode; rceil by exact ceiling)."""
    if mode == "rceil":
        descale = _div_rn(amax, fmt.max_normal)
        e = torch.where(descale > 0, _ceil_log2(descale), _E8M0_MIN - 1)
        return torch.where(torch.isinf(descale), -_E8M0_MIN, e)
    bits = amax.view(torch.int32)
    if mode == "even":  # amax rounded (half up) to the element's mantissa width first
        bits = (bits + (1 << (22 - fmt.man_bits))) & 0x7F800000
    e = ((bits >> 23) & 0xFF) - 127
    if mode == "ceil":
        e = e + ((bits & 0x7FFFFF) > 0).to(e.dtype)
    return e - fmt.max_exp


class _Out(NamedTuple):
    deq: Tensor  # dequantized values, as the reference dequantizes
    counts: Tensor | None  # float64 [overflow, underflow, numel] of the elements, or None
    clamped: Tensor  # blocks whose scale clamped
    scale: Tensor  # block scales (`recipe_scales`)
    vals: Tensor  # what a hardware GEMM multiplies: exact in bfloat16 for every recipe
    post: (
        Tensor | None
    )  # FP32 factor per tile that the GEMM applies to its output (None: 1, folded into vals)


def _mx(xt: Tensor, p: RecipePlan, stats: bool, key: Tensor | None) -> _Out:
    assert isinstance(p.recipe.scale, MXScale)
    mode = p.recipe.scale.mode
    amax = _amax(xt)
    e_raw = _mx_exponent(amax, p.fmt, mode)
    if mode == "rceil":
        e = e_raw.clamp(_E8M0_MIN, -_E8M0_MIN)
        scaled = xt * torch.where(e == _E8M0_MIN, 1.0, _exp2(-e))
    else:
        e = e_raw.clamp(_E8M0_MIN, -_E8M0_MIN + 1)
        # xt / 2^e exactly: 2^-e is exact (a subnormal for e = 127); 2^128 is inf, and x / inf = x * 0
        scaled = xt * torch.where(e > 127, 0.0, _exp2(-e.clamp(min=_F32_MIN_NORMAL_EXP)))
    q, counts = quantize_values(scaled, p.plan, key, stats)
    scale = torch.where(torch.isnan(amax), torch.nan, _exp2(e))
    deq = q * scale
    return _Out(deq, counts, _finite_nonzero(amax) & (e_raw < _F32_MIN_NORMAL_EXP), scale, deq, None)


def _nvfp4(xt: Tensor, p: RecipePlan, stats: bool, key: Tensor | None) -> _Out:
    s_fmt, s_plan = p.scale_fmt, p.scale_plan
    assert s_fmt is not None and s_plan is not None
    elem_max = p.fmt.max_normal
    pts = _div_rn(xt.abs().amax(), s_fmt.max_normal * elem_max)  # torchao per_tensor_amax_to_scale
    pts = torch.where(pts > 0, pts, 1.0)  # all-zero tensor: zeros, not NaN
    amax = _amax(xt)
    s = _div_rn(_div_rn(amax, elem_max), pts)
    s8, _ = quantize_values(s.clamp(s_fmt.min_normal, s_fmt.max_normal), s_plan)
    q, counts = quantize_values(xt * _div_rn(_div_rn(1.0, pts), s8), p.plan, key, stats)
    deq = q * (pts * s8)
    clamped = _finite_nonzero(amax) & ((s < s_fmt.min_normal) | (s > s_fmt.max_normal))
    return _Out(deq, counts, clamped, s8, q * s8, pts.reshape(1, 1, 1, 1, 1))


def _amax_scale(xt: Tensor, p: RecipePlan, stats: bool, key: Tensor | None) -> _Out:
    rule = p.recipe.scale
    assert isinstance(rule, AmaxScale)
    amax = _amax(xt)
    te = rule.convention == "te"
    # amax clamped in float64, as before (eps = 1e-12 is not a float32 number)
    s = _div_rn(p.fmt.max_normal, amax.to(torch.float64).clamp(min=rule.eps))
    clamped = _finite_nonzero(amax) & ((amax < rule.eps) | torch.isinf(s))
    if te:
        s = torch.where(torch.isinf(s), torch.finfo(torch.float32).max, s)
    if rule.pow2:
        s = torch.where(s > 0, _exp2(_log2_parts(s)[0]), s)
    if te:
        s = torch.where(amax == 0, 1.0, s)
    q, counts = quantize_values(xt * s, p.plan, key, stats)
    inv = _div_rn(1.0, s)  # the factor a scaled GEMM applies (torch._scaled_mm's scale_a / scale_b)
    deq = q * inv if te else _div_rn(q, s)
    if rule.pow2:  # a power of two: folded into exact values
        return _Out(deq, counts, clamped, s, q * inv, None)
    return _Out(deq, counts, clamped, s, q, inv)


_SCHEMES = {MXScale: _mx, NVFP4Scale: _nvfp4, AmaxScale: _amax_scale}


def _run(x: Tensor, p: RecipePlan, stats: bool, key: Tensor | None = None) -> _Out:
    r = p.recipe
    if x.numel() == 0:  # a shape-only branch: nothing to scale
        zero = x.new_zeros(0, 0, 1, 0, 1)
        counts = x.new_zeros(3, dtype=torch.float64) if stats else None
        return _Out(x.clone(), counts, zero.bool(), zero, x.clone(), None)
    out = _SCHEMES[type(r.scale)](_tiles(x, r.block), p, stats, key)
    return out._replace(deq=out.deq.reshape(x.shape), vals=out.vals.reshape(x.shape))


def recipe_values(x: Tensor, plan: RecipePlan, stats: bool = False) -> tuple[Tensor, Tensor | None]:
    """The traceable core: float32 `x` quantized and dequantized by `plan` (`recipe_plan`; shape already checked).

    With `stats`, also a float64 tensor [overflow, underflow, scale_clamped] (no host sync): elements that
    saturated, nonzero finite elements that became 0, blocks with a nonzero finite amax whose scale clamped.
    """
    r = _run(x, plan, stats)
    return r.deq, (_counts(x, r) if stats else None)


def _counts(x: Tensor, r: _Out) -> Tensor:
    assert r.counts is not None
    underflow = ((r.deq == 0) & (x != 0) & torch.isfinite(x)).sum(dtype=torch.float64)
    return torch.stack((r.counts[0], underflow, r.clamped.sum(dtype=torch.float64)))


def _post_per_row(post: Tensor, rows: int, block: tuple[int, int]) -> Tensor:
    """A scheme's per-tile output factor (batch, row tiles, 1, col tiles, 1) as (rows or 1, col tiles)."""
    if block[0] <= 1 or post.shape[1] == 1:  # per row, or one factor for the whole tensor (NVFP4)
        return post.reshape(-1, post.shape[3])
    return post.expand(-1, -1, block[0], -1, -1).reshape(rows, post.shape[3])


def recipe_operand(
    x: Tensor, plan: RecipePlan, key: Tensor | None = None, stats: bool = False
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A 2-D float32 GEMM operand (rows, K) as a scaled GEMM takes it: (values, factors, counts).

    ``values`` are exact in bfloat16 (elements times their power-of-two or E4M3 block scale); ``factors`` (None,
    or (1 or rows, K chunks)) are the FP32 scales the GEMM multiplies into its output per row and K chunk (FP8
    scales that are not powers of two, the NVFP4 tensor scale). `key` keys stochastic rounding. With `stats`,
    float64 [overflow, underflow, numel, scale_clamped, blocks] (no host sync).
    """
    r = _run(x, plan, stats, key)
    post = None if r.post is None else _post_per_row(r.post, x.shape[0], plan.recipe.block)
    if not stats:
        return r.vals, post, None
    c = _counts(x, r)
    numel, blocks = c.new_full((1,), x.numel()), c.new_full((1,), r.clamped.numel())
    return r.vals, post, torch.cat((c[:2], numel, c[2:], blocks))


@dataclass(frozen=True)
class RecipeStats:
    """Per-call telemetry (0-d float64 tensors on x's device; reading them synchronises)."""

    numel: int
    blocks: int
    overflow: Tensor  # elements whose scaled value saturated to ±max of the element format
    underflow: Tensor  # nonzero finite elements that became ±0
    scale_clamped: Tensor  # blocks (nonzero finite amax) whose scale hit the scale format's range


def _prepare(x: Tensor, spec: Recipe | str) -> tuple[Tensor, RecipePlan]:
    plan = recipe_plan(spec)
    if x.dtype not in _DTYPES:
        raise TypeError(f"{plan.recipe.name} expects a float32, bfloat16 or float16 tensor, got {x.dtype}")
    check_block_shape(plan.recipe, tuple(x.shape))
    return x.detach().to(torch.float32), plan


def quantize_recipe(x: Tensor, spec: Recipe | str) -> Tensor:
    """`x` quantized by the recipe `spec` (e.g. ``"mxfp8_e4m3:scale=floor"``, ``"nvfp4"``) and dequantized.

    Same shape and dtype as `x` (computed in float32; bf16/fp16 results are cast back). Not differentiable.
    """
    x32, plan = _prepare(x, spec)
    return recipe_values(x32, plan)[0].to(x.dtype)


def quantize_recipe_with_stats(x: Tensor, spec: Recipe | str) -> tuple[Tensor, RecipeStats]:
    """`quantize_recipe` plus overflow / underflow / clamped-scale counts (kept on x's device)."""
    x32, plan = _prepare(x, spec)
    out, counts = recipe_values(x32, plan, stats=True)
    assert counts is not None
    br, bc = plan.recipe.block
    blocks = 1 if br == 0 else x.numel() // ((bc or x.shape[-1]) * br)
    return out.to(x.dtype), RecipeStats(x.numel(), blocks, counts[0], counts[1], counts[2])


def recipe_scales(x: Tensor, spec: Recipe | str) -> Tensor:
    """The block scales `quantize_recipe` uses, shaped (batch, row tiles, column tiles), float32.

    MX: the E8M0 scale 2^e (dequantized = element * scale; NaN for a NaN block). nvfp4: the E4M3 block scale (the
    per-tensor FP32 scale is ``amax(x) / (448·6)``). FP8 per-tensor/row/tile: torchao's scale s (elements are
    ``x * s`` rounded, dequantized ``/ s``).
    """
    x32, plan = _prepare(x, spec)
    return _run(x32, plan, stats=False).scale.squeeze(4).squeeze(2)
