"""Fused quantizer: `quantize`'s rounding, scaling and telemetry counts compiled with torch.compile.

`robustprec.numerics.quantize` routes here according to its `set_fused` switch (by default only CUDA tensors).
Each (format, input dtype, device type, stats) gets its own compiled graph: the format's integer constants are
baked into it as Python ints, and tensor sizes are marked dynamic, so new shapes do not recompile.

The graph is a functional twin of the eager path (`quantize._round_flat` and `quantize._quantize_container`):
the same arithmetic step by step (the sign is handled by integer masks where the eager path uses abs and
copysign, which set the same bits), so results and overflow/underflow counts are bit-identical
(tests/test_fused_quantize.py). Stochastic rounding draws its random bits outside the graph with the same call
on the same generator as the eager path, so it too is bit-identical and seeded-reproducible.

If torch.compile is unavailable or fails (no C++ compiler, no Triton, unsupported Python), the first failure
warns once and the process falls back to the eager path; CUDA out-of-memory errors are re-raised.
"""

from __future__ import annotations

import re
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustprec.numerics.formats import FloatFormat
from robustprec.numerics.quantize import _F32, _Container, _Plan, _plan, _pow2

__all__ = ["fused_error", "quantize_fused"]

Kernel = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None, Tensor | None]]

_KERNELS: dict[tuple[Any, ...], Kernel] = {}
_error: str | None = None


def fused_error() -> str | None:
    """Why the fused path was switched off in this process (None while it works or was never tried)."""
    return _error


def _round_pure(
    x: Tensor, rnd: Tensor | None, fmt: FloatFormat, p: _Plan, c: _Container, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Functional twin of `quantize._round_flat` (no in-place updates); `rnd` holds the stochastic bits."""
    if p.identity:
        if not stats:
            return x, None, None
        return x, x.new_zeros((), dtype=torch.int64), x.new_zeros((), dtype=torch.int64)
    xi = x.view(c.int_dtype)
    a = xi & p.abs_mask
    nan = a > p.inf_bits
    a = a.clamp(max=p.inf_bits)
    if p.d == 0:
        r = a
    elif fmt.rounding == "nearest":
        r = (((a >> p.d) & 1) + a + p.half_minus_one) & p.keep
    elif fmt.rounding == "stochastic":
        assert rnd is not None
        r = ((rnd & p.low) + a) & p.keep
    else:
        r = a & p.keep
    ovf = torch.count_nonzero((r > p.max_bits) & (a < p.inf_bits)) if stats else None
    if fmt.rounding == "truncate" and fmt.overflow != "saturate":
        r = r.clamp(max=p.max_bits).masked_fill(a == p.inf_bits, p.overflow_bits)
    elif fmt.overflow == "saturate":
        r = r.clamp(max=p.max_bits)
    elif not p.natural_inf:
        r = r.masked_fill(r > p.max_bits, p.overflow_bits)
    if p.sub_path or p.flush:
        sub = a < p.min_norm_bits
        ax = a.view(c.float_dtype)
        u = None
        if rnd is not None:
            u = (rnd >> (c.rand_bits - c.uniform_bits)).to(c.float_dtype) * 2.0**-c.uniform_bits
        if p.flush:
            if fmt.rounding == "truncate":
                r = r.masked_fill(sub, 0)
            else:
                if fmt.rounding == "nearest":
                    up = a > p.half_min_bits
                else:
                    assert u is not None
                    up = u < ax * p.up_scale
                r = torch.where(sub, up.to(c.int_dtype) * p.min_norm_bits, r)
        else:
            s = ax * p.up_scale  # exact: the subnormal quantum becomes 1
            if fmt.rounding == "nearest":
                s = torch.round(s)
            elif fmt.rounding == "truncate":
                s = torch.trunc(s)
            else:
                assert u is not None
                frac = torch.frac(s)
                s = (s - frac) + (u < frac).to(c.float_dtype)
            r = torch.where(sub, (s * p.down_scale).view(c.int_dtype), r)
    unf = torch.count_nonzero((r == 0) & (x != 0)) if stats else None
    r = r.masked_fill(nan, p.nan_bits)
    return (r | (xi & p.sign_mask)).view(c.float_dtype), ovf, unf  # r >= 0: this is copysign(r, x)


def _scale_exponent_pure(amax: Tensor, fm: float, em: int, c: _Container) -> Tensor:
    """Functional twin of `quantize._scale_exponent`; (fm, em) = np.frexp(max_normal)."""
    frac, exp = torch.frexp(amax)
    k = (em - exp) - (frac > fm).to(exp.dtype)
    k = torch.where(amax > 0, k, torch.zeros_like(k))
    return k.clamp(-(c.bias - 1), c.bias - 1)


def _build(fmt: FloatFormat, c: _Container, stats: bool) -> Kernel:
    """The uncompiled kernel for one format: (x, rnd) -> (q, overflow, underflow), in x's dtype.

    x is 1-D; for block scaling its rows (last dimension) are zero-padded to a multiple of N and flattened.
    `rnd` is None or the random integers the eager path would draw, in x's layout.
    """
    base = fmt.replace(scaling="none")
    p = _plan(base, c)
    scaling, n = fmt.scaling, fmt.block_size or 1
    fm_np, em_np = np.frexp(base.max_normal)
    fm, em = float(fm_np), int(em_np)

    def kernel(x: Tensor, rnd: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        w = x.to(c.float_dtype)
        if scaling == "none":
            q, ovf, unf = _round_pure(w, rnd, base, p, c, stats)
            return q.to(x.dtype), ovf, unf
        if scaling == "tensor":
            wb = w
            amax = torch.where(torch.isfinite(w), w.abs(), 0).amax()
        else:  # x arrives padded to a multiple of n
            wb = w.view(-1, n)
            amax = torch.where(torch.isfinite(wb), wb.abs(), 0).amax(-1, keepdim=True)
            if rnd is not None:
                rnd = rnd.view(-1, n)
        k = _scale_exponent_pure(amax, fm, em, c)
        q, ovf, unf = _round_pure(wb * _pow2(k, c), rnd, base, p, c, stats)
        q = q * _pow2(-k, c)
        return q.view(x.shape).to(x.dtype), ovf, unf

    return kernel


def _compiled(fmt: FloatFormat, c: _Container, dtype: torch.dtype, device: str, stats: bool) -> Kernel:
    key = (fmt, c, dtype, device, stats)
    kern = _KERNELS.get(key)
    if kern is None:
        fn = _build(fmt, c, stats)
        # A code object of its own per key: dynamo keeps its cache (and recompile limit) per code object, and
        # would otherwise treat the closure constants as dynamic once a second format shares the code.
        name = re.sub(r"\W", "_", f"quantize_{fmt.spec}_{str(dtype).removeprefix('torch.')}_{device}")
        name += "_stats" if stats else ""
        code = fn.__code__.replace(co_name=name, co_qualname=name)
        fn = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
        kern = _KERNELS[key] = torch.compile(fn, fullgraph=True)
    return kern


def _disable(exc: BaseException, stacklevel: int) -> None:
    global _error
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    _error = f"{type(exc).__name__}: {first}"
    warnings.warn(
        f"robustprec: fused quantizer unavailable ({_error}); using the eager quantizer from now on",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


_checked = False


def _supported() -> bool:
    """False once the fused path failed; checks on first use that dynamo supports this platform."""
    global _checked
    if _error is not None:
        return False
    if not _checked:
        try:
            import torch._dynamo

            ok = torch._dynamo.is_dynamo_supported()
        except Exception as exc:
            _disable(exc, stacklevel=6)
            return False
        if not ok:
            _disable(RuntimeError("torch.compile is not supported on this Python/platform"), stacklevel=6)
            return False
        _checked = True
    return True


def quantize_fused(
    x: Tensor, fmt: FloatFormat, c: _Container, generator: torch.Generator | None, stats: bool
) -> tuple[Tensor, Tensor | None, Tensor | None] | None:
    """Fused equivalent of `quantize._quantize` for a detached float tensor `x` (any dtype that `quantize`
    accepts, container `c`); None where the eager path should run instead (tiny or empty tensors, the identity
    format, inside an outer torch.compile, or torch.compile unavailable)."""
    if x.numel() <= 1 or torch.compiler.is_compiling() or not _supported():
        return None
    if fmt.scaling == "none" and c is _F32 and _plan(fmt, c).identity:
        return None  # a copy: the eager path is already one kernel
    xf = x.contiguous()
    n = fmt.block_size
    pad = 0 if n is None else (-x.shape[-1]) % n
    if pad:  # the eager path pads each row in the same way
        xf = F.pad(xf.view(-1, x.shape[-1]), (0, pad))
    xf = xf.view(-1)
    torch._dynamo.maybe_mark_dynamic(xf, 0)
    rnd = None
    if fmt.rounding == "stochastic":  # the eager path's draw: same generator call, same count, same order
        rnd = torch.empty_like(xf, dtype=c.int_dtype).random_(generator=generator)
        torch._dynamo.maybe_mark_dynamic(rnd, 0)
    try:
        kern = _compiled(fmt, c, x.dtype, x.device.type, stats)
        with torch.no_grad():
            q, ovf, unf = kern(xf, rnd)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # compile failures (no C++ compiler, no Triton, a dynamo/inductor error)
        _disable(exc, stacklevel=5)  # warn at the caller of quantize()
        return None
    if pad:
        q = q.view(-1, x.shape[-1] + pad)[:, : x.shape[-1]]
    return q.reshape(x.shape), ovf, unf
