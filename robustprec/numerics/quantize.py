"""Quantize tensors to a simulated `FloatFormat` by integer bit manipulation (METHODS §1).

The values stay in their container dtype; only the set of values changes. float32, bfloat16 and float16 inputs
are processed on the float32 bit pattern (bf16/fp16 are exact in float32), float64 inputs on the float64 bit
pattern, so every finite input is rounded exactly once.

Algorithm, for |x| as a container bit pattern `a` (sign handled separately):

- normal range of the target (|x| >= min_normal): add a rounding increment below the kept mantissa bits and mask
  them off (`d = container mantissa bits - m`); the carry moves into the exponent field by itself;
- subnormal range of the target when it lies among container normals: scale |x| by the (power-of-two)
  subnormal quantum, round to an integer (`torch.round` is half-to-even) and scale back, both exact;
- overflow: compare the rounded pattern with the largest finite one and replace by ±Inf, ±max or NaN;
- NaN inputs stay NaN (same payload); ±0 and the sign of values that underflow are preserved.

Stochastic rounding adds `d` uniform random bits (exactly unbiased) in the normal range and compares against a
uniform number with 24 (float32) / 53 (float64) random bits in the subnormal range. Truncation rounds toward
zero, so a finite input beyond the range becomes ±max (IEEE round-toward-zero); an Inf input still follows
`overflow`.

Two implementations compute the same bits (tests/test_fused_quantize.py). The eager one (this module) runs the
steps above as separate vectorised torch ops (chunked on CPU): 20-30 small kernels per call. The fused one
(`robustprec.numerics.fused`) compiles the same steps, with the scaling and the overflow/underflow counts, into
one torch.compile graph per format (a few generated kernels); stochastic rounding draws the same random bits
from the same generator outside the graph. `set_fused` picks the path: ``auto`` (default: fused for CUDA
tensors, eager elsewhere, where compile time would dominate short runs), ``on`` or ``off``; the environment
variable ``ROBUSTPREC_FUSED_QUANT`` sets the initial mode.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustprec.numerics.formats import FloatFormat, parse_format

__all__ = ["FUSED_MODES", "QuantStats", "get_fused", "quantize", "quantize_with_stats", "set_fused"]

FUSED_MODES = ("auto", "on", "off")
FUSED_ENV = "ROBUSTPREC_FUSED_QUANT"
_ENV_ALIASES = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}


def _mode_from_env() -> str:
    raw = os.environ.get(FUSED_ENV, "").strip().lower()
    mode = _ENV_ALIASES.get(raw, raw) or "auto"
    if mode not in FUSED_MODES:
        warnings.warn(
            f"{FUSED_ENV}={raw!r} is not one of {', '.join(FUSED_MODES)}; using auto",
            RuntimeWarning,
            stacklevel=2,
        )
        return "auto"
    return mode


_fused_mode = _mode_from_env()


def set_fused(mode: str) -> str:
    """Choose the quantizer implementation; returns the previous mode.

    ``auto``: fused (torch.compile) for CUDA tensors, eager otherwise; ``on``: fused on every device;
    ``off``: eager everywhere. Results are the same bits either way. Initial value: ``$ROBUSTPREC_FUSED_QUANT``
    (auto/on/off, or 1/0), else auto.
    """
    global _fused_mode
    if mode not in FUSED_MODES:
        raise ValueError(f"fused mode must be one of {', '.join(FUSED_MODES)}; got {mode!r}")
    previous, _fused_mode = _fused_mode, mode
    return previous


def get_fused() -> str:
    """The current `set_fused` mode."""
    return _fused_mode


@dataclass(frozen=True)
class _Container:
    float_dtype: torch.dtype
    int_dtype: torch.dtype
    np_float: type
    np_int: type
    man: int  # explicit mantissa bits
    exp: int  # exponent bits
    bias: int
    rand_bits: int  # bits produced by Tensor.random_() on int_dtype (non-negative)
    uniform_bits: int  # bits of the uniform number used in the subnormal range


_F32 = _Container(torch.float32, torch.int32, np.float32, np.int32, 23, 8, 127, 31, 24)
_F64 = _Container(torch.float64, torch.int64, np.float64, np.int64, 52, 11, 1023, 63, 53)


@dataclass(frozen=True)
class _Plan:
    """Integer constants for one (format, container) pair."""

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
    up_scale: float
    down_scale: float
    identity: bool


def _bits(value: float, c: _Container) -> int:
    return int(np.array(value, dtype=c.np_float).view(c.np_int))


@functools.lru_cache(maxsize=512)
def _plan(fmt: FloatFormat, c: _Container) -> _Plan:
    m = fmt.man_bits
    d = c.man - m
    low = (1 << d) - 1
    inf_bits = ((1 << c.exp) - 1) << c.man
    max_bits = _bits(fmt.max_normal, c)
    nan_bits = inf_bits | (1 << (c.man - 1))
    overflow_bits = {"inf": inf_bits, "saturate": max_bits, "nan": nan_bits}[fmt.overflow]
    min_norm_bits = _bits(fmt.min_normal, c)
    flush = not fmt.subnormals
    return _Plan(
        d=d,
        keep=~low,
        low=low,
        half_minus_one=low >> 1,
        abs_mask=(1 << (c.man + c.exp)) - 1,
        sign_mask=-(1 << (c.man + c.exp)),
        inf_bits=inf_bits,
        max_bits=max_bits,
        overflow_bits=overflow_bits,
        nan_bits=nan_bits,
        natural_inf=fmt.overflow == "inf" and max_bits + (1 << d) == inf_bits,
        min_norm_bits=min_norm_bits,
        half_min_bits=_bits(fmt.min_normal / 2, c),
        sub_path=fmt.subnormals and min_norm_bits > (1 << c.man),
        flush=flush,
        up_scale=2.0 ** (-fmt.min_exp if flush else m - fmt.min_exp),
        down_scale=2.0 ** (fmt.min_exp - m),
        identity=c is _F32 and d == 0 and fmt.subnormals and fmt.overflow == "inf",
    )


@dataclass(frozen=True)
class QuantStats:
    """Per-call counts (0-d int64 tensors on the input's device; reading them synchronises)."""

    numel: int
    overflow: Tensor  # finite inputs whose rounded magnitude exceeded max (became ±Inf, NaN or ±max)
    underflow: Tensor  # nonzero finite inputs that became ±0

    @property
    def overflow_frac(self) -> float:
        return float(self.overflow) / max(self.numel, 1)

    @property
    def underflow_frac(self) -> float:
        return float(self.underflow) / max(self.numel, 1)


def _as_format(fmt: FloatFormat | str) -> FloatFormat:
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, str):
        return parse_format(fmt)
    raise TypeError(f"expected a FloatFormat or a spec string, got {type(fmt).__name__}")


_CPU_CHUNK = 1 << 20  # elements per chunk on CPU: keeps temporaries cache- and allocator-friendly


def _round_core(
    x: Tensor, fmt: FloatFormat, c: _Container, generator: torch.Generator | None, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Round a contiguous container-dtype tensor (no scaling). Returns (q, overflow count, underflow count)."""
    p = _plan(fmt, c)
    if p.identity:
        q = x.clone()
        zero = torch.zeros((), dtype=torch.int64, device=x.device) if stats else None
        return q, zero, (zero.clone() if zero is not None else None)
    if x.device.type == "cpu" and x.numel() > _CPU_CHUNK:
        flat, out = x.view(-1), torch.empty_like(x)
        ovf = unf = torch.zeros((), dtype=torch.int64) if stats else None
        for start in range(0, flat.numel(), _CPU_CHUNK):
            q, o, u = _round_flat(flat[start : start + _CPU_CHUNK], fmt, p, c, generator, stats)
            out.view(-1)[start : start + _CPU_CHUNK] = q
            if stats:
                ovf, unf = ovf + o, unf + u
        return out, ovf, unf
    return _round_flat(x, fmt, p, c, generator, stats)


def _round_flat(
    x: Tensor, fmt: FloatFormat, p: _Plan, c: _Container, generator: torch.Generator | None, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    a = x.abs().view(c.int_dtype)
    nan = a > p.inf_bits
    a.clamp_(max=p.inf_bits)  # NaN -> Inf pattern until the end; keeps the integer additions in range
    rnd = None
    if fmt.rounding == "stochastic":
        rnd = torch.empty_like(a).random_(generator=generator)  # uniform in [0, 2^rand_bits)
    # --- normal range of the target: add the rounding increment below bit d, then mask ---
    if p.d == 0:
        r = a.clone()
    elif fmt.rounding == "nearest":
        r = (a >> p.d).bitwise_and_(1).add_(a).add_(p.half_minus_one).bitwise_and_(p.keep)
    elif fmt.rounding == "stochastic":
        assert rnd is not None
        r = (rnd & p.low).add_(a).bitwise_and_(p.keep)
    else:
        r = a & p.keep
    # --- overflow (the subnormal range below cannot overflow) ---
    ovf_count = None
    if stats:
        ovf_count = torch.count_nonzero((r > p.max_bits) & (a < p.inf_bits))
    if fmt.rounding == "truncate" and fmt.overflow != "saturate":
        inf_in = a == p.inf_bits
        r.clamp_(max=p.max_bits).masked_fill_(inf_in, p.overflow_bits)
    elif fmt.overflow == "saturate":
        r.clamp_(max=p.max_bits)
    elif not p.natural_inf:
        r.masked_fill_(r > p.max_bits, p.overflow_bits)
    # --- target subnormal range (or flush-to-zero range); reuses a's storage ---
    if p.sub_path or p.flush:
        sub = a < p.min_norm_bits
        ax = a.view(c.float_dtype)
        u = None
        if rnd is not None:
            u = (rnd >> (c.rand_bits - c.uniform_bits)).to(c.float_dtype).mul_(2.0**-c.uniform_bits)
        if p.flush:
            if fmt.rounding == "nearest":
                up = a > p.half_min_bits
            elif fmt.rounding == "truncate":
                up = torch.zeros((), dtype=torch.bool, device=x.device)
            else:
                assert u is not None
                up = u < ax.mul_(p.up_scale)
            torch.where(sub, up.to(c.int_dtype).mul_(p.min_norm_bits), r, out=r)
        else:
            s = ax.mul_(p.up_scale)  # exact: power-of-two scale; the subnormal quantum becomes 1
            if fmt.rounding == "nearest":
                s.round_()
            elif fmt.rounding == "truncate":
                s.trunc_()
            else:
                assert u is not None
                frac = torch.frac(s)  # s >= 0: s - frac(s) is floor(s), exactly
                s.sub_(frac).add_(u < frac)
            torch.where(sub, s.mul_(p.down_scale).view(c.int_dtype), r, out=r)
    unf_count = torch.count_nonzero((r == 0) & (x != 0)) if stats else None
    # --- NaN passthrough and sign ---
    r.masked_fill_(nan, p.nan_bits)
    return r.view(c.float_dtype).copysign_(x), ovf_count, unf_count


def _pow2(k: Tensor, c: _Container) -> Tensor:
    """2^k for integer tensor k within the container's normal exponent range (exact, via bits)."""
    return ((k.to(c.int_dtype) + c.bias) << c.man).view(c.float_dtype)


def _scale_exponent(amax: Tensor, fmt: FloatFormat, c: _Container) -> Tensor:
    """Largest integer k with amax * 2^k <= max_normal (0 where amax is 0); clamped to keep 2^±k normal."""
    frac, exp = torch.frexp(amax)
    fm, em = np.frexp(fmt.max_normal)
    k = (em - exp) - (frac > fm).to(exp.dtype)
    k = torch.where(amax > 0, k, torch.zeros_like(k))
    return k.clamp_(-(c.bias - 1), c.bias - 1)


def _quantize_container(
    x: Tensor, fmt: FloatFormat, c: _Container, generator: torch.Generator | None, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if fmt.scaling == "none":
        return _round_core(x, fmt, c, generator, stats)
    base = fmt.replace(scaling="none")
    if fmt.scaling == "tensor":
        xb = x
        amax = torch.where(torch.isfinite(x), x.abs(), 0).amax() if x.numel() else x.new_zeros(())
    else:
        n = fmt.block_size
        assert n is not None
        xb = x.reshape(1) if x.dim() == 0 else x
        pad = (-xb.shape[-1]) % n
        if pad:
            xb = F.pad(xb, (0, pad))
        xb = xb.reshape(*xb.shape[:-1], xb.shape[-1] // n, n)
        amax = torch.where(torch.isfinite(xb), xb.abs(), 0).amax(-1, keepdim=True)
    k = _scale_exponent(amax, fmt, c)
    q, ovf, unf = _round_core((xb * _pow2(k, c)).contiguous(), base, c, generator, stats)
    q = q * _pow2(-k, c)
    if fmt.scaling != "tensor":
        q = q.reshape(*q.shape[:-2], -1)[..., : x.shape[-1] if x.dim() else 1].reshape(x.shape)
    return q, ovf, unf


def _quantize(
    x: Tensor, fmt: FloatFormat | str, generator: torch.Generator | None, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    fmt = _as_format(fmt)
    if x.dtype == torch.float64:
        c = _F64
    elif x.dtype in (torch.float32, torch.bfloat16, torch.float16):
        c = _F32
    else:
        raise TypeError(f"quantize expects a float16/bfloat16/float32/float64 tensor, got {x.dtype}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, tensor on {x.device}")
    x = x.detach()
    if _fused_mode == "on" or (_fused_mode == "auto" and x.device.type == "cuda"):
        from robustprec.numerics.fused import quantize_fused

        fused = quantize_fused(x, fmt, c, generator, stats)
        if fused is not None:
            return fused
    q, ovf, unf = _quantize_container(x.to(c.float_dtype).contiguous(), fmt, c, generator, stats)
    return q.to(x.dtype), ovf, unf


def quantize(x: Tensor, fmt: FloatFormat | str, generator: torch.Generator | None = None) -> Tensor:
    """Round `x` to the values of `fmt`; returns a new tensor of x's dtype and shape (not differentiable).

    bf16/fp16 results are the quantized float32 values cast back to x.dtype (exact when the format's values
    are representable in that dtype). `generator` (on x's device) drives stochastic rounding; None uses the
    global RNG.
    """
    return _quantize(x, fmt, generator, stats=False)[0]


def quantize_with_stats(
    x: Tensor, fmt: FloatFormat | str, generator: torch.Generator | None = None
) -> tuple[Tensor, QuantStats]:
    """`quantize` plus overflow/underflow counts kept on x's device (two extra reductions, no sync)."""
    q, ovf, unf = _quantize(x, fmt, generator, stats=True)
    assert ovf is not None and unf is not None
    return q, QuantStats(x.numel(), ovf, unf)
