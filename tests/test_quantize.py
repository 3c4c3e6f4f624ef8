"""quantize(): bit-exact against real casts, against an enumeration oracle, and statistical/property checks."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustprec.numerics.formats import FloatFormat, parse_format, value_set
from robustprec.numerics.quantize import (
    QuantStats,
    quant_plan,
    quantize,
    quantize_values,
    quantize_with_stats,
)

INF_BITS = 0x7F800000
# Random float32 bit patterns include signalling NaNs; numpy warns when casting them.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

# ----------------------------------------------------------------------------------------------------------
# Independent oracles
# ----------------------------------------------------------------------------------------------------------


def torch_e4m3fn_overflow() -> str:
    """torch's float32 -> float8_e4m3fn cast: torch <= 2.11 (CPU and CUDA) turns overflow and Inf into NaN,
    torch 2.13 on CPU saturates to ±448. Each matches one of our modes bit for bit; detect which is installed."""
    return "nan" if torch.isnan(torch.tensor([1e4]).to(torch.float8_e4m3fn).float()).item() else "saturate"


# (format spec, real dtype): torch dtypes cast through torch, numpy (ml_dtypes) dtypes through numpy.
REAL_CASTS: list[tuple[str, object]] = [
    ("bf16", torch.bfloat16),
    ("fp16", torch.float16),
    (f"fp8_e4m3:overflow={torch_e4m3fn_overflow()}", torch.float8_e4m3fn),
    ("fp8_e5m2", torch.float8_e5m2),
    ("fp8_e4m3:overflow=nan", ml_dtypes.float8_e4m3fn),
    ("fp8_e5m2", ml_dtypes.float8_e5m2),
    ("float6_e2m3fn", ml_dtypes.float6_e2m3fn),
    ("float6_e3m2fn", ml_dtypes.float6_e3m2fn),
    ("float4_e2m1fn", ml_dtypes.float4_e2m1fn),
]
REAL_IDS = [f"{spec}-{'torch' if isinstance(d, torch.dtype) else 'ml_dtypes'}" for spec, d in REAL_CASTS]
HAS_NAN = {"float6_e2m3fn": False, "float6_e3m2fn": False, "float4_e2m1fn": False}


def real_cast(x: np.ndarray, dtype: object) -> np.ndarray:
    """Round float32 values through the real dtype and back to float32."""
    if isinstance(dtype, torch.dtype):
        return torch.from_numpy(x).to(dtype).to(torch.float32).numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype).astype(np.float32)


def oracle(
    x: np.ndarray, fmt: FloatFormat, with_overflow: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Round float64 values by enumeration of value_set(fmt): nearest (ties to the even code) or truncate.

    With `with_overflow`, also return the mask of finite inputs whose unbounded-exponent rounding passes max.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _oracle(x, fmt, with_overflow)


def _oracle(
    x: np.ndarray, fmt: FloatFormat, with_overflow: bool
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    vs = value_set(fmt).numpy()
    n, m = vs.size, fmt.man_bits
    # Integer codes of the non-negative values (codes 1 .. 2^m - 1 are the subnormals).
    codes = np.arange(n) if fmt.subnormals else np.concatenate([[0], np.arange(1, n) + 2**m - 1])
    nxt = vs[-1] + 2.0 ** (fmt.max_exp - m)  # the first value past the range, had the exponent been unbounded
    ext, ext_codes = np.append(vs, nxt), np.append(codes, codes[-1] + 1)
    finite = np.isfinite(x)
    ax = np.where(finite, np.abs(x), 0.0)
    if fmt.rounding == "nearest":
        i = np.searchsorted(ext, ax, side="left").clip(1, n)
        lo, hi = ext[i - 1], ext[i]
        twice, total = 2 * ax, lo + hi  # exact in float64
        tie_up = (twice == total) & (ext_codes[i] % 2 == 0) & (ext_codes[i - 1] % 2 == 1)
        idx = np.where((twice > total) | tie_up, i, i - 1)
        overflow = idx == n
        res = ext[idx]
    elif fmt.rounding == "truncate":
        res = vs[np.searchsorted(vs, ax, side="right") - 1]  # toward zero: finite overflow saturates
        overflow = ax >= nxt
    else:
        raise AssertionError(fmt.rounding)
    finite_overflow = overflow & finite
    ovf_value = {"inf": np.inf, "saturate": vs[-1], "nan": np.nan}[fmt.overflow]
    if fmt.rounding == "truncate":
        res = np.where(np.isinf(x), ovf_value, res)
    else:
        res = np.where(overflow | np.isinf(x), ovf_value, res)
    res = np.copysign(np.where(np.isnan(x), np.nan, res), x)
    return (res, finite_overflow) if with_overflow else res


def assert_bits_equal(got: np.ndarray, want: np.ndarray, x: np.ndarray, label: str = "") -> None:
    gn, wn = np.isnan(got), np.isnan(want)
    assert np.array_equal(gn, wn), f"{label}: NaN positions differ at x={x[gn != wn][:5]}"
    int_t = {4: np.int32, 8: np.int64}[got.dtype.itemsize]
    bad = (got.view(int_t) != want.view(int_t)) & ~wn
    assert not bad.any(), (
        f"{label}: {bad.sum()} mismatches, x={x[bad][:6]} got={got[bad][:6]} want={want[bad][:6]}"
    )


# ----------------------------------------------------------------------------------------------------------
# Input generators
# ----------------------------------------------------------------------------------------------------------


def f32_neighbours(points: np.ndarray, steps: tuple[int, ...] = (-2, -1, 0, 1, 2)) -> np.ndarray:
    """Each non-negative float32-exact point and its float32 neighbours, with both signs."""
    points = points[points <= np.finfo(np.float32).max]
    p = points.astype(np.float32)
    assert np.array_equal(p.astype(np.float64), points), "points must be exact in float32"
    b = p.view(np.int32).astype(np.int64)
    out = np.concatenate([b + k for k in steps])
    out = out[(out >= 0) & (out <= INF_BITS)].astype(np.int32).view(np.float32)
    return np.concatenate([out, -out])


def rounding_points(fmt: FloatFormat, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """Every value of the format, every midpoint (incl. 0..min_sub and max..first value past max), float64."""
    vs = value_set(fmt).numpy()
    ext = np.append(vs, vs[-1] + 2.0 ** (fmt.max_exp - fmt.man_bits))
    pts = np.concatenate([ext, (ext[:-1] + ext[1:]) / 2])
    if limit is not None and pts.size > limit:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([pts[:500], pts[ext.size - 500 : ext.size + 500], pts[-500:]])
        pts = np.concatenate([keep, rng.choice(pts, limit, replace=False)])
    return pts


def random_bits_f32(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def loguniform_f32(n: int, rng: np.random.Generator, lo_exp: int, hi_exp: int) -> np.ndarray:
    """Random sign, exponent uniform in [lo_exp, hi_exp] (clipped to float32), random 23-bit mantissa."""
    field = (rng.integers(lo_exp, hi_exp + 1, n) + 127).clip(0, 254).astype(np.uint32)
    mant = rng.integers(0, 2**23, n).astype(np.uint32)
    sign = rng.integers(0, 2, n).astype(np.uint32)
    return ((sign << 31) | (field << 23) | mant).view(np.float32)


def edge_values(fmt: FloatFormat) -> np.ndarray:
    mx, ulp = fmt.max_normal, 2.0 ** (fmt.max_exp - fmt.man_bits)
    vals = [
        0.0, 2.0**-149, 2.0**-149 * 3, 2.0**-127, 2.0**-126 - 2.0**-149, 2.0**-126, 1.0, 3.4028234663852886e38,
        fmt.min_subnormal, fmt.min_subnormal / 2, fmt.min_subnormal * 1.5, fmt.min_subnormal / 4,
        fmt.min_normal, fmt.min_normal / 2, fmt.min_normal * (1 - 2.0**-20),
        mx, mx + ulp / 2, mx + ulp / 2 * (1 - 2.0**-20), mx + ulp / 2 * (1 + 2.0**-20), mx + ulp, 2 * mx, 1e30,
        np.inf, np.nan,
    ]  # fmt: skip
    with np.errstate(over="ignore"):
        v = np.array(vals, dtype=np.float32)
    return np.concatenate([v, -v])


def alias_inputs(alias: str) -> np.ndarray:
    fmt = parse_format(alias)
    rng = np.random.default_rng(1234)
    bf16_patterns = (np.arange(2**16, dtype=np.uint32) << 16).view(np.float32)
    fp16_patterns = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    return np.concatenate(
        [
            f32_neighbours(rounding_points(fmt)),
            bf16_patterns,
            fp16_patterns,
            random_bits_f32(200_000, rng),
            loguniform_f32(200_000, rng, fmt.min_exp - fmt.man_bits - 3, fmt.max_exp + 3),
            random_bits_f32(20_000, rng)
            .view(np.uint32)
            .__and__(np.uint32(0x807FFFFF))
            .view(np.float32),  # fp32 subnormals
            edge_values(fmt),
        ]
    )


# ----------------------------------------------------------------------------------------------------------
# Bit-exact against real casts
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "dtype"), REAL_CASTS, ids=REAL_IDS)
def test_bit_exact_against_real_cast(spec: str, dtype: object) -> None:
    x = alias_inputs(spec)
    if not HAS_NAN.get(spec, True):
        x = x[~np.isnan(x)]  # ml_dtypes' formats without NaN map NaN to -0; ours keep NaN (tested below)
    # the integer path (with counts): without, fp8_e4m3 rounds by torch's own cast (tested below against ml_dtypes)
    got = quantize_with_stats(torch.from_numpy(x), spec)[0].numpy()
    assert_bits_equal(got, real_cast(x, dtype), x, spec)


def test_alias_defaults() -> None:
    """Overflow defaults: Inf for ieee; saturation for fn/finite (torch 2.13's e4m3fn cast, ml_dtypes float6/4)."""
    assert parse_format("fp8_e5m2").overflow == "inf" and parse_format("bf16").overflow == "inf"
    assert parse_format("fp8_e4m3").overflow == "saturate"
    assert all(parse_format(a).overflow == "saturate" for a in HAS_NAN)


def test_oracle_agrees_with_real_casts() -> None:
    """Sanity check of the enumeration oracle itself, on the formats that have a real cast."""
    for spec, dtype in REAL_CASTS:
        fmt = parse_format(spec)
        x = np.concatenate([f32_neighbours(rounding_points(fmt, limit=5000)), edge_values(fmt)])
        if not HAS_NAN.get(spec, True):
            x = x[~np.isnan(x)]
        want = real_cast(x, dtype).astype(np.float64)
        assert_bits_equal(oracle(x.astype(np.float64), fmt), want, x, spec)


@pytest.mark.parametrize(("spec", "real"), REAL_CASTS[:4], ids=[c[0] for c in REAL_CASTS[:4]])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(spec: str, real: torch.dtype, dtype: torch.dtype) -> None:
    """bf16/fp16 inputs are exact in float32; every bit pattern of the input dtype is checked."""
    codes = torch.arange(2**16, dtype=torch.int32).to(torch.int16).view(dtype)
    got = quantize(codes, spec)
    assert got.dtype == dtype and got.shape == codes.shape
    want = quantize(codes.float(), spec).to(dtype)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    # the integer path (with counts) against the real cast: without counts fp8_e4m3 is torch's cast itself
    integer = quantize_with_stats(codes, spec)[0]
    nan = torch.isnan(integer)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got.view(torch.int16)[~nan], integer.view(torch.int16)[~nan])
    real = codes.to(real).to(dtype)
    # NaN inputs, and overflow where the cast signals it with NaN (payloads may differ)
    nan = torch.isnan(real)
    assert torch.equal(torch.isnan(integer), nan)
    assert torch.equal(integer.view(torch.int16)[~nan], real.view(torch.int16)[~nan])


def test_large_tensor() -> None:
    """A few million elements: same as the real cast, and the counts match."""
    rng = np.random.default_rng(7)
    x = loguniform_f32(3_000_001, rng, -30, 20)
    q, stats = quantize_with_stats(torch.from_numpy(x), "fp8_e5m2")
    assert_bits_equal(q.numpy(), real_cast(x, torch.float8_e5m2), x)
    assert int(stats.overflow) == int((np.isinf(q.numpy()) & np.isfinite(x)).sum()) > 0
    assert int(stats.underflow) == int(((q.numpy() == 0) & (x != 0)).sum()) > 0


# ----------------------------------------------------------------------------------------------------------
# Arbitrary formats against the enumeration oracle
# ----------------------------------------------------------------------------------------------------------

GENERIC = [
    "E8M3", "E5M7", "E3M4", "E6M1", "E2M1", "E4M3", "E4M3:special=fn", "E4M3:special=fn,overflow=nan",
    "E5M2:overflow=saturate",
    "E3M2:special=finite", "E4M0", "E8M0", "E7M5", "E8M10", "E2M3:special=fn", "E5M10", "E7M0:special=fn",
]  # fmt: skip


def generic_inputs_f32(fmt: FloatFormat, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            f32_neighbours(rounding_points(fmt, limit=40_000, seed=seed)),
            random_bits_f32(50_000, rng),
            loguniform_f32(100_000, rng, fmt.min_exp - fmt.man_bits - 3, fmt.max_exp + 3),
            edge_values(fmt),
        ]
    )


@pytest.mark.parametrize("spec", GENERIC)
@pytest.mark.parametrize("subnormals", [True, False])
@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
def test_generic_formats_against_oracle(spec: str, subnormals: bool, rounding: str) -> None:
    fmt = parse_format(spec).replace(subnormals=subnormals, rounding=rounding)
    x = generic_inputs_f32(fmt, seed=len(spec))
    got = quantize(torch.from_numpy(x), fmt).numpy()
    assert got.dtype == np.float32
    assert_bits_equal(got.astype(np.float64), oracle(x.astype(np.float64), fmt), x, fmt.spec)
    if rounding == "truncate":
        fin = np.isfinite(x)
        assert np.all(np.abs(got[fin]) <= np.abs(x[fin]))
    if fmt.overflow == "saturate" or rounding == "truncate":
        assert not np.isinf(got[np.isfinite(x)]).any()


@pytest.mark.parametrize(
    "spec",
    [
        "E8M3",
        "E5M2",
        "E3M4:subnormals=false",
        "fp8_e4m3",
        "bf16:rounding=truncate",
        "E4M0",
        "E8M10:subnormals=false",
    ],
)
def test_float64_inputs_against_oracle(spec: str) -> None:
    """float64 inputs are rounded once, on the float64 bit pattern: check at float64 neighbours of midpoints."""
    fmt = parse_format(spec)
    rng = np.random.default_rng(3)
    pts = rounding_points(fmt, limit=20_000)
    steps = np.concatenate([np.nextafter(pts, -np.inf), pts, np.nextafter(pts, np.inf)])
    steps = steps[steps >= 0]
    x = np.concatenate([steps, -steps, rng.standard_normal(50_000) * 10.0 ** rng.uniform(-45, 40, 50_000)])
    x = np.concatenate([x, edge_values(fmt).astype(np.float64), [1e300, -1e-300, 5e-324]])
    got = quantize(torch.from_numpy(x), fmt)
    assert got.dtype == torch.float64
    assert_bits_equal(got.numpy(), oracle(x, fmt), x, spec)


@pytest.mark.parametrize("subnormals", [True, False])
def test_float64_inputs_fp32_format(subnormals: bool) -> None:
    """E8M23 on float64 inputs is a float32 rounding (numpy's cast is correctly rounded), probed at midpoints."""
    rng = np.random.default_rng(5)
    f = random_bits_f32(100_000, rng)
    f = np.abs(f[np.isfinite(f)])
    f = np.concatenate(
        [f, np.arange(1, 3000, dtype=np.int32).view(np.float32)]
    )  # smallest float32 subnormals
    nxt = np.nextafter(f, np.float32(np.inf)).astype(np.float64)
    mid = (f.astype(np.float64) + nxt) / 2
    x = np.concatenate(
        [
            mid,
            np.nextafter(mid, 0),
            np.nextafter(mid, np.inf),
            f.astype(np.float64),
            [1e300, 2.0**-150, 2.0**-151 * 3],
        ]
    )
    x = np.concatenate([x, -x])
    with np.errstate(over="ignore"):
        want = x.astype(np.float32).astype(np.float64)
    if not subnormals:  # flush: below 2^-126 only 0 and 2^-126 remain, ties (at 2^-127) go to zero
        tiny = np.abs(x) < 2.0**-126
        want[tiny] = np.copysign(np.where(np.abs(x[tiny]) > 2.0**-127, 2.0**-126, 0.0), x[tiny])
    got = quantize(torch.from_numpy(x), parse_format("fp32").replace(subnormals=subnormals))
    assert_bits_equal(got.numpy(), want, x)


def test_fp32_format_on_float32_inputs() -> None:
    """E8M23 is the identity on float32; without subnormals it flushes float32 subnormals (ties to zero)."""
    x = np.concatenate(
        [
            random_bits_f32(100_000, np.random.default_rng(6)),
            np.arange(-3000, 3000, dtype=np.int32).view(np.float32),
        ]
    )
    x = np.concatenate([x, [2.0**-127, -(2.0**-127), 2.0**-127 + 2.0**-149, np.inf, -np.inf, np.nan]]).astype(
        np.float32
    )
    assert_bits_equal(quantize(torch.from_numpy(x), "fp32").numpy(), x, x)
    want = x.copy()
    tiny = np.abs(x) < 2.0**-126
    want[tiny] = np.copysign(np.where(np.abs(x[tiny]) > 2.0**-127, 2.0**-126, 0.0), x[tiny])
    assert_bits_equal(quantize(torch.from_numpy(x), "fp32:subnormals=false").numpy(), want, x)


# ----------------------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------------------

ALL_ROUNDINGS = ["nearest", "truncate", "stochastic"]


@pytest.mark.parametrize("rounding", ALL_ROUNDINGS)
@pytest.mark.parametrize(
    "spec", ["E4M3", "fp8_e4m3", "E8M7", "float4_e2m1fn", "E3M4:subnormals=false", "fp32"]
)
def test_signed_zero_nan_and_sign(spec: str, rounding: str) -> None:
    fmt = parse_format(spec).replace(rounding=rounding)
    x = torch.tensor([0.0, -0.0, float("nan"), -float("nan"), 1e-44, -1e-44, 1.0, -1.0])
    q = quantize(x, fmt, key=0)
    assert torch.equal(q[:2].view(torch.int32), x[:2].view(torch.int32))  # +0, -0 preserved
    assert torch.isnan(q[2:4]).all()
    if spec != "fp32":
        assert torch.equal(q[4:6].view(torch.int32), torch.tensor([0.0, -0.0]).view(torch.int32))
    assert q[6] == 1.0 and q[7] == -1.0


@pytest.mark.parametrize(
    ("spec", "pos_inf", "big"),
    [
        ("E5M2", float("inf"), float("inf")),
        ("E5M2:overflow=saturate", 57344.0, 57344.0),
        ("E5M2:rounding=truncate", float("inf"), 57344.0),
        ("fp8_e4m3", 448.0, 448.0),
        ("fp8_e4m3:overflow=nan", float("nan"), float("nan")),
        ("fp8_e4m3:overflow=nan,rounding=truncate", float("nan"), 448.0),
        ("float6_e3m2fn", 28.0, 28.0),
        ("bf16", float("inf"), float("inf")),
        ("bf16:overflow=saturate", 3.3895313892515355e38, 3.3895313892515355e38),
    ],
)
def test_overflow_and_inf(spec: str, pos_inf: float, big: float) -> None:
    x = torch.tensor([float("inf"), -float("inf"), 3.4e38, -3.4e38])
    q = quantize(x, spec).double()
    want = torch.tensor([pos_inf, -pos_inf, big, -big], dtype=torch.float64)
    assert torch.equal(torch.isnan(q), torch.isnan(want))
    ok = ~torch.isnan(want)
    assert torch.equal(q[ok], want[ok])


def test_shapes_dtypes_and_input_untouched() -> None:
    x = torch.randn(4, 6, 5)
    x_copy = x.clone()
    for t in [x, x[:, ::2, 1:], x.transpose(0, 2), x[0, 0, 0], x[:0], x.double(), x.bfloat16(), x.half()]:
        q = quantize(t, "E4M3")
        assert q.shape == t.shape and q.dtype == t.dtype
        x64 = t.double().reshape(-1).numpy()
        want = torch.from_numpy(oracle(x64, parse_format("E4M3"))).to(t.dtype).reshape(t.shape)
        assert torch.equal(q, want)
    assert torch.equal(x, x_copy)
    y = torch.randn(8, requires_grad=True)
    assert not quantize(y, "bf16").requires_grad
    with pytest.raises(TypeError):
        quantize(torch.arange(3), "bf16")


# ----------------------------------------------------------------------------------------------------------
# Stochastic rounding
# ----------------------------------------------------------------------------------------------------------


def neighbours(x: np.ndarray, fmt: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """Largest value <= |x| and smallest value >= |x| in the value set."""
    vs = value_set(fmt).numpy()
    ax = np.abs(x)
    lo = vs[np.searchsorted(vs, ax, side="right") - 1]
    hi = vs[np.minimum(np.searchsorted(vs, ax, side="left"), vs.size - 1)]
    return lo, hi


@pytest.mark.parametrize("spec", ["E4M3", "E8M3", "E3M4:subnormals=false", "fp8_e4m3", "E2M1", "E5M10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stochastic_unbiased_and_members(spec: str, dtype: torch.dtype) -> None:
    fmt = parse_format(spec).replace(rounding="stochastic")
    rng = np.random.default_rng(11)
    vs = value_set(fmt).numpy()
    # points strictly inside the range: normals, the target's subnormals, below min_subnormal, fp32 subnormals
    pts = np.concatenate(
        [
            rng.uniform(vs[1], vs[-1], 12),
            rng.uniform(0, fmt.min_normal, 8),
            rng.uniform(0, fmt.min_subnormal, 4),
            [
                fmt.min_subnormal * 0.3,
                fmt.min_normal * 0.75,
                (vs[-1] + vs[-2]) / 2,
                vs[1] + (vs[2] - vs[1]) / 4,
                2.0**-140,
                3.3e-39,
            ],
        ]
    )
    pts = np.concatenate([pts, -pts[:6]]).astype(np.float32).astype(np.float64)
    n = 20_000
    x = torch.from_numpy(np.repeat(pts[None, :], n, axis=0)).to(dtype)
    q = quantize(x, fmt, key=42).double().numpy()
    lo, hi = neighbours(pts, fmt)
    is_lo, is_hi = np.abs(q) == lo, np.abs(q) == hi
    assert np.all(is_lo | is_hi), "stochastic rounding must return one of the two neighbours"
    assert np.all(np.sign(q) * np.sign(pts) >= 0)
    mean = q.mean(axis=0)
    p = np.where(hi > lo, (np.abs(pts) - lo) / np.where(hi > lo, hi - lo, 1), 0)
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / n)
    tol = 6 * sigma + (hi - lo) * 2.0**-20
    assert np.all(np.abs(mean - pts) <= tol), (pts, mean, tol)


def test_stochastic_exact_probability() -> None:
    """x a quarter of the way between two values: rounds up with probability 1/4 in every range."""
    fmt = parse_format("E4M3:rounding=stochastic")
    lo_hi = [(1.0, 1.125), (2.0**-7, 2.0**-7 + 2.0**-9), (2.0**-9, 2.0**-8), (0.0, 2.0**-9), (224.0, 240.0)]
    for lo, hi in lo_hi:
        x = torch.full((200_000,), lo + (hi - lo) / 4)
        q = quantize(x, fmt, key=1)
        assert set(q.unique().tolist()) <= {lo, hi}
        frac = (q == hi).double().mean().item()
        assert abs(frac - 0.25) < 6 * (0.25 * 0.75 / 200_000) ** 0.5, (lo, hi, frac)


def test_stochastic_reproducible() -> None:
    x = torch.randn(10_000)
    fmt = "E5M2:rounding=stochastic"
    a = quantize(x, fmt, key=3)
    b = quantize(x, fmt, key=3)
    c = quantize(x, fmt, key=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert quantize(x, fmt).shape == x.shape  # a key from the global RNG


def test_stochastic_streams_differ_by_key_and_position() -> None:
    """Keys k and k+1, and the two halves of one call, must not share random bits (no correlated rounding)."""
    fmt = "E8M0:rounding=stochastic"  # 1.5 rounds to 1 or 2 with probability 1/2: one random bit per element
    x = torch.full((20_000,), 1.5)
    q = {k: quantize(x, fmt, key=k) == 2.0 for k in (0, 1, 2**40, -(2**62))}
    for a in q:
        for b in q:
            if a != b:
                agree = (q[a] == q[b]).double().mean().item()
                assert abs(agree - 0.5) < 6 * (0.25 / x.numel()) ** 0.5, (a, b, agree)
    half = x.numel() // 2
    assert abs((q[0][:half] == q[0][half:]).double().mean().item() - 0.5) < 6 * (0.25 / half) ** 0.5
    k = torch.tensor(5, dtype=torch.int64)
    assert torch.equal(quantize(x, fmt, key=k), quantize(x, fmt, key=5))


def test_mix64_splitmix64_vectors() -> None:
    """The in-graph mixer is splitmix64's finalizer: its published outputs for seed 0 (state = i * golden)."""
    from robustprec.numerics.quantize import mix64, mix64_int

    golden = 0x9E3779B97F4A7C15
    want = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    states = [(golden * (i + 1)) % 2**64 for i in range(3)]
    signed = torch.tensor([s - 2**64 if s >= 2**63 else s for s in states], dtype=torch.int64)
    got = [v % 2**64 for v in mix64(signed).tolist()]
    assert got == want
    assert [mix64_int(s) % 2**64 for s in states] == want


# ----------------------------------------------------------------------------------------------------------
# The float8 cast (QuantPlan.native): saturating nearest-even FP8 formats round by torch's cast
# ----------------------------------------------------------------------------------------------------------

NATIVE = {"fp8_e4m3": torch.float8_e4m3fn, "E5M2:overflow=saturate": torch.float8_e5m2}


def test_native_cast_only_where_the_cast_is_the_rounding() -> None:
    assert {s: quant_plan(parse_format(s)).native for s in NATIVE} == NATIVE
    others = [
        "fp8_e5m2", "fp8_e4m3:overflow=nan", "fp8_e4m3:rounding=stochastic", "fp8_e4m3:subnormals=false",
        "fp8_e4m3:rounding=truncate", "fp8_e4m3:scaling=block:32", "E4M3", "E5M3:overflow=saturate",
    ]  # fmt: skip
    for spec in others:
        assert quant_plan(parse_format(spec)).native is None, spec


@pytest.mark.parametrize("spec", list(NATIVE))
def test_native_cast_equals_integer_rounding_and_ml_dtypes(spec: str) -> None:
    """Without counts the cast rounds; with counts the integer path does: same bits, and ml_dtypes' cast of the
    input clamped to ±max (an independent implementation of saturating nearest-even)."""
    fmt = parse_format(spec)
    x = alias_inputs(spec)
    plan = quant_plan(fmt)
    cast, _ = quantize_values(torch.from_numpy(x), plan)
    integer, counts = quantize_values(torch.from_numpy(x), plan, stats=True)
    assert counts is not None
    assert_bits_equal(cast.numpy(), integer.numpy(), x, spec)
    ml = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "E5M2:overflow=saturate": ml_dtypes.float8_e5m2}[spec]
    assert_bits_equal(cast.numpy(), real_cast(np.clip(x, -fmt.max_normal, fmt.max_normal), ml), x, spec)


@pytest.mark.parametrize("spec", list(NATIVE))
def test_native_cast_compiled_equals_eager_on_cpu(spec: str) -> None:
    plan = quant_plan(parse_format(spec))
    x = torch.from_numpy(alias_inputs(spec))
    compiled = torch.compile(lambda t: quantize_values(t, plan)[0], fullgraph=True)
    assert_bits_equal(compiled(x).numpy(), quantize_values(x, plan, stats=True)[0].numpy(), x.numpy(), spec)


# ----------------------------------------------------------------------------------------------------------
# Telemetry
# ----------------------------------------------------------------------------------------------------------


def test_stats_known_counts() -> None:
    fmt = parse_format("E4M3")  # ieee: max 240, next would be 256, midpoint 248 ties up (240 is odd)
    ms = fmt.min_subnormal
    x = torch.tensor(
        [300.0, -1000.0, 248.0, 247.0, float("inf"), float("nan"), 1e-30, 0.0, ms / 2, -ms * 0.51, -ms / 3]
    )
    q, s = quantize_with_stats(x, fmt)
    assert isinstance(s, QuantStats) and s.numel == 11
    assert int(s.overflow) == 3 and int(s.underflow) == 3
    assert s.overflow_frac == pytest.approx(3 / 11) and s.underflow_frac == pytest.approx(3 / 11)
    q_plain = quantize(x, fmt)
    assert torch.equal(q.nan_to_num(), q_plain.nan_to_num()) and torch.isnan(q[5])


@pytest.mark.parametrize(
    "spec",
    [
        "fp8_e4m3",
        "E3M2:special=finite",
        "E5M2:rounding=truncate",
        "E4M3:subnormals=false",
        "bf16",
        "fp8_e4m3:overflow=nan",
    ],
)
def test_stats_match_oracle_counts(spec: str) -> None:
    fmt = parse_format(spec)
    rng = np.random.default_rng(2)
    x = loguniform_f32(100_000, rng, fmt.min_exp - fmt.man_bits - 4, fmt.max_exp + 4)
    x = np.concatenate([x, edge_values(fmt)])
    q, s = quantize_with_stats(torch.from_numpy(x), fmt)
    assert torch.equal(q.nan_to_num(), quantize(torch.from_numpy(x), fmt).nan_to_num())
    want, overflow = oracle(x.astype(np.float64), fmt, with_overflow=True)
    assert int(s.overflow) == int(overflow.sum()) > 0
    assert int(s.underflow) == int(((want == 0) & (x != 0) & ~np.isnan(x)).sum()) > 0
    assert s.numel == x.size


def test_stats_stochastic() -> None:
    """Overflow under stochastic rounding: the same random draws with overflow=inf show which ones overflowed."""
    x = torch.from_numpy(loguniform_f32(100_000, np.random.default_rng(4), -15, 10))
    fmt = parse_format("E4M3:rounding=stochastic,overflow=saturate")
    q, s = quantize_with_stats(x, fmt, key=9)
    q_inf = quantize(x, fmt.replace(overflow="inf"), key=9)
    assert torch.equal(q, q_inf.clamp(-fmt.max_normal, fmt.max_normal))
    assert int(s.overflow) == int(torch.isinf(q_inf).sum()) > 0
    assert int(s.underflow) == int(((q == 0) & (x != 0)).sum()) > 0


def test_stats_fp32_is_zero() -> None:
    x = torch.randn(1000) * 1e30
    _, s = quantize_with_stats(x, "fp32")
    assert int(s.overflow) == 0 and int(s.underflow) == 0


# ----------------------------------------------------------------------------------------------------------
# Scaling
# ----------------------------------------------------------------------------------------------------------


def pow2_scale_exponent(amax: float, max_normal: float) -> int:
    """Largest k with amax * 2^k <= max_normal (written independently, by search)."""
    if amax == 0:
        return 0
    k = int(np.floor(np.log2(max_normal / amax)))
    while amax * 2.0 ** (k + 1) <= max_normal:
        k += 1
    while amax * 2.0**k > max_normal:
        k -= 1
    return k


@pytest.mark.parametrize("spec", ["E4M3", "fp8_e5m2", "float4_e2m1fn", "E3M2:rounding=truncate"])
@pytest.mark.parametrize("amax_kind", ["random", "exact_power_of_two_multiple_of_max"])
def test_tensor_scaling(spec: str, amax_kind: str) -> None:
    fmt = parse_format(spec)
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * 1e5
    x[3, 4] = 7.3e6 if amax_kind == "random" else -fmt.max_normal * 2.0**20  # scale lands exactly on max
    q = quantize(x, fmt.replace(scaling="tensor"))
    k = pow2_scale_exponent(float(x.abs().max()), fmt.max_normal)
    want = (quantize(x.double() * 2.0**k, fmt).double() / 2.0**k).float()
    assert torch.equal(q, want)
    assert torch.isfinite(q).all()
    in_range = (x.abs().double() * 2.0**k) >= fmt.min_normal
    rel = ((q - x).abs() / x.abs())[in_range]
    bound = fmt.epsilon if fmt.rounding == "truncate" else fmt.epsilon / 2
    assert rel.max() <= bound
    # values too large for the unscaled format survive; tiny tensors are scaled up
    assert torch.isfinite(quantize(torch.full((3,), 1e30), fmt.replace(scaling="tensor"))).all()
    tiny = torch.tensor([3e-30, -1e-30])
    assert (quantize(tiny, fmt.replace(scaling="tensor")) != 0).all()


@pytest.mark.parametrize(
    "spec",
    [
        "fp8_e4m3:scaling=block:32",
        "E5M2:scaling=block:16",
        "float4_e2m1fn:scaling=block:32",
        "E4M3:scaling=block:7",
    ],
)
def test_block_scaling_against_loop_reference(spec: str) -> None:
    fmt = parse_format(spec)
    n = fmt.block_size
    assert n is not None
    base = fmt.replace(scaling="none")
    vs = value_set(base).numpy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 70, generator=g) * torch.exp(torch.randn(3, 5, 1, generator=g) * 6)
    x[0, 0, :40] = 0.0  # an all-zero block
    x[1, 1, 5] = 1e4
    x[2, 3, 40] = base.max_normal * 2.0**-3  # amax lands exactly on max_normal
    q = quantize(x, fmt)
    assert q.shape == x.shape and torch.isfinite(q).all()
    for row_x, row_q in zip(x.reshape(-1, x.shape[-1]), q.reshape(-1, q.shape[-1]), strict=True):
        for start in range(0, row_x.numel(), n):
            bx, bq = row_x[start : start + n].double(), row_q[start : start + n].double()
            k = pow2_scale_exponent(float(bx.abs().max()), base.max_normal)
            want = quantize(bx * 2.0**k, base).double() / 2.0**k
            assert torch.equal(bq, want)
            # the shared scale is a power of two: the scaled outputs are exact members of the value set
            assert np.isin(np.abs((bq * 2.0**k).numpy()), vs).all()
            normal = (bx.abs() * 2.0**k) >= base.min_normal
            assert ((bq - bx).abs() <= bx.abs() * base.epsilon / 2)[normal].all()


def test_block_scaling_edge_shapes_and_nonfinite() -> None:
    fmt = "E4M3:scaling=block:32"
    assert quantize(torch.tensor(3.3), fmt).item() == 3.25
    short = torch.tensor([1.0, 1000.0, 1e-3])
    assert torch.equal(quantize(short, fmt), quantize(short, "E4M3:scaling=tensor"))
    assert quantize(torch.empty(2, 0), fmt).shape == (2, 0)
    x = torch.tensor([float("nan"), 1.0, 3.0, float("inf")] + [0.5] * 28)
    q = quantize(x, fmt)
    assert torch.isnan(q[0]) and q[1] == 1.0 and q[2] == 3.0 and torch.isinf(q[3]) and q[4] == 0.5
    qs = quantize(
        torch.randn(4, 100),
        "E4M3:scaling=block:32,rounding=stochastic",
        key=0,
    )
    assert torch.isfinite(qs).all()


# ----------------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ----------------------------------------------------------------------------------------------------------

PROPERTY_FORMATS = [
    "E4M3",
    "fp8_e4m3",
    "E5M2",
    "E3M4:subnormals=false",
    "E8M3",
    "E2M1",
    "float6_e3m2fn",
    "E6M9",
    "E8M0",
]
f32s = st.floats(width=32, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(PROPERTY_FORMATS),
    st.sampled_from(["nearest", "truncate"]),
    st.lists(f32s, min_size=2, max_size=40),
)
def test_properties(spec: str, rounding: str, values: list[float]) -> None:
    fmt = parse_format(spec).replace(rounding=rounding)
    x = torch.tensor(values, dtype=torch.float32)
    q = quantize(x, fmt)
    assert torch.equal(quantize(q, fmt), q)  # idempotent
    assert torch.equal(quantize(-x, fmt), -q)  # odd
    _, order = torch.sort(x)
    qs = q[order]
    assert (qs[1:] >= qs[:-1]).all()  # monotone
    fin = torch.isfinite(q)
    assert np.isin(q[fin].abs().double().numpy(), value_set(fmt).numpy()).all()
    assert_bits_equal(q.double().numpy(), oracle(x.double().numpy(), fmt), x.numpy(), spec)


def test_package_level_quantize_is_the_function():
    import robustprec.numerics as numerics
    import robustprec.numerics.quantize  # noqa: F401  (importing the submodule must not shadow the function)

    x = torch.tensor([1.0, 1.0625, 1.1875])  # two ties of a 3-bit mantissa: both go to the even neighbour
    assert callable(numerics.quantize)
    assert numerics.quantize(x, "E4M3").tolist() == [1.0, 1.0, 1.25]


def test_stochastic_exact_expectation_on_a_grid() -> None:
    """Enumerate the random bits that decide: the mean of the outcomes is x exactly (normal and subnormal range)."""
    from robustprec.numerics.quantize import _round, quant_plan

    # normal range, E8M20 (d = 3 dropped bits): x = 1 + i * 2^-23, every value of the 3 low random bits
    p = quant_plan(parse_format("E8M20:rounding=stochastic"))
    x = (1.0 + torch.arange(8, dtype=torch.float64) * 2.0**-23).float()
    rnd = torch.arange(8, dtype=torch.int32) | (0x5A5A5 << 3)  # high bits do not matter here
    q, _ = _round(x.repeat_interleave(8), rnd.repeat(8), p, False)
    assert torch.equal(q.double().view(8, 8).mean(1), x.double())
    # subnormal range, E4M3 (quantum 2^-9): x = 2^-9 * (1 + i / 8), every value of the top 3 random bits
    p = quant_plan(parse_format("E4M3:rounding=stochastic"))
    x = (2.0**-9 * (1 + torch.arange(8, dtype=torch.float64) / 8)).float()
    rnd = (torch.arange(8, dtype=torch.int32) << 28) | 0x1F
    q, _ = _round(x.repeat_interleave(8), rnd.repeat(8), p, False)
    assert torch.equal(q.double().view(8, 8).mean(1), x.double())
