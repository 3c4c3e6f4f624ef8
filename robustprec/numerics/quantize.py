"""Quantize tensors to a simulated `FloatFormat` by integer bit manipulation (METHODS §1).

One implementation, written in pure functional torch ops (no in-place updates of inputs, no host syncs, no
Python branching on tensor values): it runs eagerly on any device and is traced and fused by torch.compile when
it is called from a compiled model (the simulated GEMMs call it from inside their autograd function).

The values stay in a float container; only the set of values changes. float32, bfloat16 and float16 inputs are
processed on the float32 bit pattern (bf16/fp16 are exact in float32), float64 inputs on the float64 bit
pattern, so every finite input is rounded exactly once.

Algorithm, for |x| as a container bit pattern `a` (sign put back at the end):

- normal range of the target (|x| >= min_normal): add a rounding increment below the kept mantissa bits and mask
  them off (`d = container mantissa bits - m`); the carry moves into the exponent field by itself;
- subnormal range of the target when it lies among container normals: scale |x| by the (power-of-two)
  subnormal quantum, round to an integer (`torch.round` is half-to-even) and scale back, both exact;
- overflow: compare the rounded pattern with the largest finite one and replace by ±Inf, ±max or NaN;
- NaN inputs stay NaN; ±0 and the sign of values that underflow are preserved.

FP8 formats that are torch dtypes (``fp8_e4m3`` as ``float8_e4m3fn``, ``E5M2:overflow=saturate`` as
``float8_e5m2``: saturating, nearest-even, unscaled) are rounded by clamping to ±max and casting when no counts are
asked for (`QuantPlan.native`, on CPU and on NVIDIA Hopper); with counts, by the integer path below. Both give the
same bits, NaN payloads aside (tested against each other and ml_dtypes, compiled and eager, on CPU and an H200);
the cast fuses into its neighbours, where the integer path's intermediates were realized as int32 buffers.

Stochastic rounding is counter-based: element i of a call with stream key `k` gets the random integer
``mix64((mix64(k) + i) * φ)`` (splitmix64's finalizer, `φ` = 2^64 / golden ratio), computed in-graph with int64
ops, so it is deterministic, traceable and needs no `torch.Generator`. Its low `d` bits are added in the normal
range (exactly unbiased); its top 24 (float32) / 53 (float64) bits form a uniform number compared against the
fraction in the subnormal range. Truncation rounds toward zero, so a finite input beyond the range becomes ±max
(IEEE round-toward-zero); an Inf input still follows `overflow`.

Scaling (``tensor``, ``block:N``) multiplies by a power of two 2^k chosen from the amax so that amax maps to at
most max_normal, rounds, and divides back. k is at most `FloatFormat.max_scale_exp`, so that every dequantized
value is exact in float32 (and in bfloat16 for formats with m <= 7), and at least -126 (float32 containers).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustprec.numerics.formats import FloatFormat, parse_format
from robustprec.numerics.recipe_spec import is_recipe

__all__ = [
    "QuantPlan",
    "QuantStats",
    "mix64",
    "quant_plan",
    "quantize",
    "quantize_values",
    "quantize_with_stats",
]

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's increment, as a signed int64
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)


def _srl(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: Tensor) -> Tensor:
    """splitmix64's finalizer on int64 tensors (a bijection of 64-bit words; wrapping multiplies)."""
    z = (z ^ _srl(z, 30)) * _MUL1
    z = (z ^ _srl(z, 27)) * _MUL2
    return z ^ _srl(z, 31)


def mix64_int(z: int) -> int:
    """`mix64` of a Python int, as a signed int64 (for keys computed on the host)."""
    mask = (1 << 64) - 1
    z &= mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z - (1 << 64) if z >= 1 << 63 else z


@dataclass(frozen=True)
class _Container:
    float_dtype: torch.dtype
    int_dtype: torch.dtype
    np_float: type
    np_int: type
    man: int  # explicit mantissa bits
    exp: int  # exponent bits
    bias: int
    rand_bits: int  # random bits per element (non-negative integers below 2^rand_bits)
    uniform_bits: int  # bits of the uniform number used in the subnormal range


_F32 = _Container(torch.float32, torch.int32, np.float32, np.int32, 23, 8, 127, 31, 24)
_F64 = _Container(torch.float64, torch.int64, np.float64, np.int64, 52, 11, 1023, 63, 53)


@dataclass(frozen=True)
class QuantPlan:
    """Everything the traced quantizer needs for one (format, container) pair, as Python constants."""

    rounding: str
    overflow: str
    scaling: str  # none, tensor or block
    block: int
    scale_lo: int  # clamp of the scale exponent k
    scale_hi: int
    c: _Container
    d: int
    keep: int
    low: int
    half_minus_one: int
    abs_mask: int
    sign_mask: int
    inf_bits: int
    max_bits: int
    overflow_bits: int
    nan_bits: int
    natural_inf: bool  # rounding past max lands exactly on the Inf pattern (overflow handled for free)
    min_norm_bits: int
    half_min_bits: int
    sub_path: bool  # target subnormals lie among container normals: handled by scaled integer rounding
    flush: bool  # subnormals disabled
    up_exp: (
        int  # exponents of the power-of-two scales of the subnormal range (ints: under dynamic=True, float
    )
    down_exp: int  # attributes become symbolic and cannot enter a traced backward)
    identity: bool  # the format holds every value of the container: a no-op
    native: (
        torch.dtype | None
    )  # a torch float8 dtype with this value set: saturating RNE is its cast (`_cast`)
    max_normal: float


def _bits(value: float, c: _Container) -> int:
    return int(np.array(value, dtype=c.np_float).view(c.np_int))


@functools.lru_cache(maxsize=512)
def quant_plan(fmt: FloatFormat, c: _Container = _F32) -> QuantPlan:
    """The integer constants of `fmt` on container `c` (float32 by default); computed once, on the host."""
    m = fmt.man_bits
    d = c.man - m
    low = (1 << d) - 1
    inf_bits = ((1 << c.exp) - 1) << c.man
    max_bits = _bits(fmt.max_normal, c)
    nan_bits = inf_bits | (1 << (c.man - 1))
    min_norm_bits = _bits(fmt.min_normal, c)
    flush = not fmt.subnormals
    scaling = "block" if fmt.block_size else fmt.scaling
    return QuantPlan(
        rounding=fmt.rounding,
        overflow=fmt.overflow or "inf",
        scaling=scaling,
        block=fmt.block_size or 1,
        scale_lo=-(c.bias - 1),
        scale_hi=min(c.bias - 1, fmt.max_scale_exp),
        c=c,
        d=d,
        keep=~low,
        low=low,
        half_minus_one=low >> 1,
        abs_mask=(1 << (c.man + c.exp)) - 1,
        sign_mask=-(1 << (c.man + c.exp)),
        inf_bits=inf_bits,
        max_bits=max_bits,
        overflow_bits={"inf": inf_bits, "saturate": max_bits, "nan": nan_bits}[fmt.overflow or "inf"],
        nan_bits=nan_bits,
        natural_inf=fmt.overflow == "inf" and max_bits + (1 << d) == inf_bits,
        min_norm_bits=min_norm_bits,
        half_min_bits=_bits(fmt.min_normal / 2, c),
        sub_path=fmt.subnormals and min_norm_bits > (1 << c.man),
        flush=flush,
        up_exp=-fmt.min_exp if flush else m - fmt.min_exp,
        down_exp=fmt.min_exp - m,
        identity=c is _F32 and d == 0 and fmt.subnormals and fmt.overflow == "inf" and scaling == "none",
        native=_native_dtype(fmt) if c is _F32 else None,
        max_normal=fmt.max_normal,
    )


# torch's float8 dtypes by (exponent bits, mantissa bits, special): the same finite value set, subnormals included
_FLOAT8 = {(4, 3, "fn"): torch.float8_e4m3fn, (5, 2, "ieee"): torch.float8_e5m2}


def _native_dtype(fmt: FloatFormat) -> torch.dtype | None:
    """The float8 dtype whose cast, after clamping to ±max, is `fmt`'s rounding: saturating, nearest-even, unscaled."""
    if fmt.rounding != "nearest" or fmt.overflow != "saturate" or not fmt.subnormals or fmt.scaling != "none":
        return None
    return _FLOAT8.get((fmt.exp_bits, fmt.man_bits, fmt.special))


def _random_bits(key: Tensor, n: int, p: QuantPlan, device: torch.device) -> Tensor:
    """n random integers in [0, 2^rand_bits) of stream `key` (0-d int64), as the container's int dtype."""
    idx = torch.arange(n, device=device, dtype=torch.int64)
    # splitmix64 state (mix64(key) + i) * φ; the sum comes first, or inductor folds i * φ into an index expression
    z = mix64((idx + mix64(key)) * _GOLDEN)
    return (z & ((1 << p.c.rand_bits) - 1)).to(p.c.int_dtype)


def _round(x: Tensor, rnd: Tensor | None, p: QuantPlan, stats: bool) -> tuple[Tensor, Tensor | None]:
    """Round a container-dtype tensor (no scaling); returns (q, float64 [overflow, underflow] or None)."""
    c = p.c
    xi = x.view(c.int_dtype)
    a = xi & p.abs_mask
    nan = a > p.inf_bits
    a = a.clamp(max=p.inf_bits)  # NaN -> Inf pattern until the end; keeps the integer additions in range
    # --- normal range of the target: add the rounding increment below bit d, then mask ---
    if p.d == 0:
        r = a
    elif p.rounding == "nearest":
        r = (((a >> p.d) & 1) + a + p.half_minus_one) & p.keep
    elif p.rounding == "stochastic":
        assert rnd is not None
        r = ((rnd & p.low) + a) & p.keep
    else:
        r = a & p.keep
    ovf = ((r > p.max_bits) & (a < p.inf_bits)).sum(dtype=torch.float64) if stats else None
    # --- overflow (the subnormal range below cannot overflow) ---
    if p.rounding == "truncate" and p.overflow != "saturate":
        r = r.clamp(max=p.max_bits).masked_fill(a == p.inf_bits, p.overflow_bits)
    elif p.overflow == "saturate":
        r = r.clamp(max=p.max_bits)
    elif not p.natural_inf:
        r = r.masked_fill(r > p.max_bits, p.overflow_bits)
    # --- target subnormal range (or flush-to-zero range) ---
    if p.sub_path or p.flush:
        r = _round_small(a, r, rnd, p)
    unf = ((r == 0) & (a != 0) & ~nan).sum(dtype=torch.float64) if stats else None
    r = r.masked_fill(nan, p.nan_bits)
    q = (r | (xi & p.sign_mask)).view(c.float_dtype)  # r >= 0: this is copysign(r, x)
    return q, (torch.stack((ovf, unf)) if stats else None)  # type: ignore[arg-type]


def _round_small(a: Tensor, r: Tensor, rnd: Tensor | None, p: QuantPlan) -> Tensor:
    """Replace r below min_normal: gradual underflow by scaled integer rounding, or flush to 0 / min_normal."""
    c = p.c
    sub = a < p.min_norm_bits
    ax = a.view(c.float_dtype)
    u = None
    if rnd is not None:
        u = (rnd >> (c.rand_bits - c.uniform_bits)).to(c.float_dtype) * 2.0**-c.uniform_bits
    if p.flush:
        if p.rounding == "truncate":
            return r.masked_fill(sub, 0)
        up = a > p.half_min_bits if p.rounding == "nearest" else u < ax * 2.0**p.up_exp  # type: ignore[operator]
        return torch.where(sub, up.to(c.int_dtype) * p.min_norm_bits, r)
    s = ax * 2.0**p.up_exp  # exact: the subnormal quantum becomes 1
    if p.rounding == "nearest":
        s = torch.round(s)
    elif p.rounding == "truncate":
        s = torch.trunc(s)
    else:
        frac = torch.frac(s)  # s >= 0: s - frac(s) is floor(s), exactly
        s = (s - frac) + (u < frac).to(c.float_dtype)  # type: ignore[operator]
    return torch.where(sub, (s * 2.0**p.down_exp).view(c.int_dtype), r)


def _pow2(k: Tensor, c: _Container) -> Tensor:
    """2^k for integer tensor k within the container's normal exponent range (exact, via bits)."""
    return ((k.to(c.int_dtype) + c.bias) << c.man).view(c.float_dtype)


def _scale_exponent(amax: Tensor, p: QuantPlan) -> Tensor:
    """Largest integer k with amax * 2^k <= max_normal (0 where amax is 0), clamped to [scale_lo, scale_hi].

    From the bits (torch.frexp does not trace in a backward with dynamic shapes): amax = 1.f * 2^e and
    max_normal = 1.F * 2^E give k = E - e, less one if f > F."""
    c = p.c
    small = amax < 2.0 ** (1 - c.bias)  # container subnormals: lifted exactly into the normal range first
    bits = torch.where(small, amax * 2.0**c.man, amax).view(c.int_dtype)
    e = (bits >> c.man) - c.bias - small.to(c.int_dtype) * c.man
    mant_mask = (1 << c.man) - 1
    k = (p.max_bits >> c.man) - c.bias - e - ((bits & mant_mask) > (p.max_bits & mant_mask)).to(c.int_dtype)
    return torch.where(amax > 0, k, 0).clamp(p.scale_lo, p.scale_hi)


def _cast(x: Tensor, p: QuantPlan) -> Tensor:
    """`_round` by torch's float8 cast (`QuantPlan.native`): clamped to ±max (saturation; NaN stays NaN), cast, read
    back. Bit for bit the integer rounding, NaN as NaN (tested against it and ml_dtypes); compiled, a few ops that
    fuse into their neighbours, where the integer path's intermediates were realized as int32 buffers."""
    assert p.native is not None
    return x.clamp(-p.max_normal, p.max_normal).to(p.native).to(p.c.float_dtype)


def _cast_exact_on(device: torch.device) -> bool:
    """Where the float8 cast is used: CPU, and NVIDIA Hopper (sm90), where the compiled cast was checked bit for bit
    (GPU suite, H200). Elsewhere the integer path: Triton rounds float32 through float16 on Ada
    (triton-lang/triton#11753), and other GPUs (ROCm's float8 types, Blackwell) are unchecked."""
    return device.type == "cpu" or (device.type == "cuda" and _checked_gpu(device.index))


@torch.compiler.assume_constant_result
def _checked_gpu(index: int | None) -> bool:
    return _is_hopper(torch.cuda.current_device() if index is None else index)


@functools.cache
def _is_hopper(index: int) -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability(index) == (9, 0)


def _blocks(x: Tensor, n: int) -> Tensor:
    """x as (..., rows of n): the last dimension zero-padded to a multiple of n."""
    xb = x.reshape(1) if x.dim() == 0 else x
    pad = (-xb.shape[-1]) % n
    if pad:
        xb = F.pad(xb, (0, pad))
    return xb.unflatten(-1, (-1, n))


def _quantize_plan(x: Tensor, p: QuantPlan, key: Tensor | None, stats: bool) -> tuple[Tensor, Tensor | None]:
    """Quantize a container-dtype tensor; counts are float64 [overflow, underflow, numel] (or None)."""
    if p.identity:
        return x, (_with_numel(x.new_zeros(2, dtype=torch.float64), x) if stats else None)
    xb = x if p.scaling != "block" else _blocks(x, p.block)
    rnd = None
    if p.rounding == "stochastic":
        assert key is not None
        rnd = _random_bits(key, xb.numel(), p, x.device).view(xb.shape)
    if p.scaling == "none" and not stats and p.native is not None and _cast_exact_on(x.device):
        q, counts = _cast(xb, p), None
    elif p.scaling == "none":
        q, counts = _round(xb, rnd, p, stats)
    else:
        finite_abs = torch.where(torch.isfinite(xb), xb.abs(), 0)
        amax = finite_abs.amax() if p.scaling == "tensor" else finite_abs.amax(-1, keepdim=True)
        k = _scale_exponent(amax, p)
        q, counts = _round(xb * _pow2(k, p.c), rnd, p, stats)
        q = q * _pow2(-k, p.c)
        if p.scaling == "block":
            q = q.flatten(-2)[..., : x.shape[-1] if x.dim() else 1].reshape_as(x)
    return q, (None if counts is None else _with_numel(counts, x))


def _with_numel(counts: Tensor, x: Tensor) -> Tensor:
    return torch.cat((counts, counts.new_full((1,), x.numel())))


def _as_format(fmt: FloatFormat | str) -> FloatFormat:
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, str):
        return parse_format(fmt)
    raise TypeError(f"expected a FloatFormat or a spec string, got {type(fmt).__name__}")


def _container(dtype: torch.dtype) -> _Container:
    if dtype == torch.float64:
        return _F64
    if dtype in (torch.float32, torch.bfloat16, torch.float16):
        return _F32
    raise TypeError(f"quantize expects a float16/bfloat16/float32/float64 tensor, got {dtype}")


def quantize_values(
    x: Tensor, plan: QuantPlan, key: Tensor | None = None, stats: bool = False
) -> tuple[Tensor, Tensor | None]:
    """The traceable core: `x` rounded to `plan`'s format, in the plan's container dtype (float32 or float64).

    `key` (0-d int64 tensor) selects the stochastic-rounding stream (required for stochastic rounding). With
    `stats`, also returns a float64 tensor [overflow, underflow, numel] of this call (no host sync).
    """
    return _quantize_plan(x.to(plan.c.float_dtype), plan, key, stats)


def _key_tensor(key: Tensor | int | None, device: torch.device) -> Tensor:
    if key is None:  # a fresh stream from torch's global RNG
        key = int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64))
    if isinstance(key, int):
        return torch.tensor(key, dtype=torch.int64, device=device)
    return key.to(device=device, dtype=torch.int64)


def _quantize(
    x: Tensor, fmt: FloatFormat | str, key: Tensor | int | None, stats: bool
) -> tuple[Tensor, Tensor | None]:
    plan = quant_plan(_as_format(fmt), _container(x.dtype))
    x = x.detach()
    k = _key_tensor(key, x.device) if plan.rounding == "stochastic" else None
    q, counts = quantize_values(x, plan, k, stats)
    return (q.clone() if q is x else q.to(x.dtype)), counts


def quantize(x: Tensor, fmt: FloatFormat | str, key: Tensor | int | None = None) -> Tensor:
    """Round `x` to the values of `fmt`; returns a new tensor of x's dtype and shape (not differentiable).

    bf16/fp16 results are the quantized float32 values cast back to x.dtype (exact when the format's values
    are representable in that dtype). `key` (an int or 0-d int64 tensor) selects the stochastic-rounding
    stream: the same key gives the same bits; None draws a key from torch's global RNG. `fmt` may also name a
    scaled recipe (`mxfp8_e4m3`, `nvfp4`, `fp8_block`, ... see `numerics.recipes`): blocks run along x's last
    dimension and the result is dequantized.
    """
    if isinstance(fmt, str) and is_recipe(fmt):
        return importlib.import_module("robustprec.numerics.recipes").quantize_recipe(x, fmt)
    return _quantize(x, fmt, key, stats=False)[0]


@dataclass(frozen=True)
class QuantStats:
    """Per-call counts (0-d float64 tensors on the input's device; reading them synchronises)."""

    numel: int
    overflow: Tensor  # finite inputs whose rounded magnitude exceeded max (became ±Inf, NaN or ±max)
    underflow: Tensor  # nonzero finite inputs that became ±0

    @property
    def overflow_frac(self) -> float:
        return float(self.overflow) / max(self.numel, 1)

    @property
    def underflow_frac(self) -> float:
        return float(self.underflow) / max(self.numel, 1)


def quantize_with_stats(
    x: Tensor, fmt: FloatFormat | str, key: Tensor | int | None = None
) -> tuple[Tensor, QuantStats]:
    """`quantize` plus overflow/underflow counts kept on x's device (two extra reductions, no sync)."""
    if isinstance(fmt, str) and is_recipe(fmt):
        q, st = importlib.import_module("robustprec.numerics.recipes").quantize_recipe_with_stats(x, fmt)
        return q, QuantStats(st.numel, st.overflow, st.underflow)
    q, counts = _quantize(x, fmt, key, stats=True)
    assert counts is not None
    return q, QuantStats(x.numel(), counts[0], counts[1])
