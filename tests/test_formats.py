"""Format specs: parsing, knobs, round-trips, derived numbers and value sets against real dtypes."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustprec.numerics.formats import ALIASES, FloatFormat, format_table, parse_format, value_set


def _torch_values(dtype: torch.dtype, nbits: int) -> np.ndarray:
    """Finite non-negative values of a torch dtype, by decoding every bit pattern."""
    int_dtype = {8: torch.uint8, 16: torch.int16}[nbits]
    codes = torch.arange(1 << nbits, dtype=torch.int64).to(int_dtype)
    vals = codes.view(dtype).to(torch.float64).numpy()
    return np.unique(vals[np.isfinite(vals) & (vals >= 0)])


def _ml_values(dtype: type) -> np.ndarray:
    """Finite non-negative values of an ml_dtypes sub-byte dtype, by decoding every code."""
    nbits = {"float6_e2m3fn": 6, "float6_e3m2fn": 6, "float4_e2m1fn": 4}[np.dtype(dtype).name]
    vals = np.arange(1 << nbits, dtype=np.uint8).view(dtype).astype(np.float64)
    return np.unique(vals[np.isfinite(vals) & (vals >= 0)])


REAL_VALUE_SETS = {
    "bf16": lambda: _torch_values(torch.bfloat16, 16),
    "fp16": lambda: _torch_values(torch.float16, 16),
    "fp8_e4m3": lambda: _torch_values(torch.float8_e4m3fn, 8),
    "fp8_e5m2": lambda: _torch_values(torch.float8_e5m2, 8),
    "float6_e2m3fn": lambda: _ml_values(ml_dtypes.float6_e2m3fn),
    "float6_e3m2fn": lambda: _ml_values(ml_dtypes.float6_e3m2fn),
    "float4_e2m1fn": lambda: _ml_values(ml_dtypes.float4_e2m1fn),
}


@pytest.mark.parametrize("alias", sorted(REAL_VALUE_SETS))
def test_value_set_matches_real_dtype(alias: str) -> None:
    expected = REAL_VALUE_SETS[alias]()
    got = value_set(alias).numpy()
    np.testing.assert_array_equal(got, expected)
    fmt = parse_format(alias)
    assert fmt.max_normal == expected[-1]
    assert fmt.min_subnormal == expected[1]


def test_tf32_value_set_is_fp32_rounded_to_10_bits() -> None:
    vs = value_set("tf32").numpy()
    assert vs.size == 1 + 254 * 2**10 + 2**10 - 1
    assert vs[-1] == float(np.finfo(np.float32).max) - (2.0**127 * (2.0**-10 - 2.0**-23))


@pytest.mark.parametrize(
    ("alias", "finfo"),
    [
        ("bf16", ml_dtypes.finfo(ml_dtypes.bfloat16)),
        ("fp16", np.finfo(np.float16)),
        ("fp32", np.finfo(np.float32)),
        ("fp8_e4m3", ml_dtypes.finfo(ml_dtypes.float8_e4m3fn)),
        ("fp8_e5m2", ml_dtypes.finfo(ml_dtypes.float8_e5m2)),
        ("float6_e2m3fn", ml_dtypes.finfo(ml_dtypes.float6_e2m3fn)),
        ("float6_e3m2fn", ml_dtypes.finfo(ml_dtypes.float6_e3m2fn)),
        ("float4_e2m1fn", ml_dtypes.finfo(ml_dtypes.float4_e2m1fn)),
    ],
)
def test_derived_numbers_match_finfo(alias: str, finfo: object) -> None:
    fmt = parse_format(alias)
    assert fmt.max_normal == float(finfo.max)  # type: ignore[attr-defined]
    assert fmt.min_normal == float(finfo.smallest_normal)  # type: ignore[attr-defined]
    assert fmt.min_subnormal == float(finfo.smallest_subnormal)  # type: ignore[attr-defined]
    assert fmt.epsilon == float(finfo.eps)  # type: ignore[attr-defined]
    assert fmt.max_exp == int(finfo.maxexp) - 1  # type: ignore[attr-defined]
    assert fmt.min_exp == int(finfo.minexp)  # type: ignore[attr-defined]


def test_known_numbers() -> None:
    assert parse_format("fp8_e4m3").max_normal == 448.0
    assert parse_format("E4M3").max_normal == 240.0  # ieee variant: top exponent reserved
    assert parse_format("fp8_e5m2").max_normal == 57344.0
    assert parse_format("fp16").bias == 15 and parse_format("bf16").bias == 127
    f = parse_format("E3M4")
    assert (f.bias, f.min_exp, f.max_exp) == (3, -2, 3)
    assert f.min_subnormal == 2.0**-6 and f.max_normal == 8 * (2 - 2**-4)
    assert parse_format("E3M4:subnormals=false").min_subnormal == 2.0**-2
    assert parse_format("E4M0:special=fn").max_normal == 2.0**7


def _count(e: int, m: int, special: str, subnormals: bool) -> int:
    normals = {"ieee": (2**e - 2) * 2**m, "fn": (2**e - 1) * 2**m - 1, "finite": (2**e - 1) * 2**m}[special]
    return 1 + (2**m - 1 if subnormals else 0) + normals


_GENERIC = [
    (e, m, special, sub)
    for e in (2, 3, 5, 8)
    for m in (0, 1, 3)
    for special in ("ieee", "fn", "finite")
    for sub in (True, False)
    if e < 8 or special == "ieee"
]


@pytest.mark.parametrize(("e", "m", "special", "subnormals"), _GENERIC)
def test_value_set_generic(e: int, m: int, special: str, subnormals: bool) -> None:
    fmt = FloatFormat(e, m, special=special, subnormals=subnormals)
    vs = value_set(fmt).numpy()
    assert vs.dtype == np.float64 and vs[0] == 0.0
    assert np.all(np.diff(vs) > 0)
    assert vs.size == _count(e, m, special, subnormals)
    assert vs[-1] == fmt.max_normal and vs[1] == fmt.min_subnormal
    assert fmt.min_normal in vs
    # every normal value is (1 + k 2^-m) 2^E within [min_exp, max_exp]
    normals = vs[vs >= fmt.min_normal]
    mant, exp = np.frexp(normals)
    assert np.all((exp - 1 >= fmt.min_exp) & (exp - 1 <= fmt.max_exp))
    assert np.all(np.mod(mant * 2.0 ** (m + 1), 1.0) == 0)


def test_value_set_too_large() -> None:
    with pytest.raises(ValueError, match="too many"):
        value_set("fp32")


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ("E4M3", (4, 3, "ieee", True, "inf", "nearest", "none")),
        ("e8m3", (8, 3, "ieee", True, "inf", "nearest", "none")),
        ("fp8_e4m3", (4, 3, "fn", True, "saturate", "nearest", "none")),
        ("FP8_E5M2", (5, 2, "ieee", True, "inf", "nearest", "none")),
        ("bf16", (8, 7, "ieee", True, "inf", "nearest", "none")),
        ("tf32", (8, 10, "ieee", True, "inf", "nearest", "none")),
        ("fp16", (5, 10, "ieee", True, "inf", "nearest", "none")),
        ("fp32", (8, 23, "ieee", True, "inf", "nearest", "none")),
        ("float6_e2m3fn", (2, 3, "finite", True, "saturate", "nearest", "none")),
        ("float6_e3m2fn", (3, 2, "finite", True, "saturate", "nearest", "none")),
        ("float4_e2m1fn", (2, 1, "finite", True, "saturate", "nearest", "none")),
        (
            "E5M2:overflow=saturate,rounding=stochastic",
            (5, 2, "ieee", True, "saturate", "stochastic", "none"),
        ),
        ("E4M3:scaling=block:32", (4, 3, "ieee", True, "inf", "nearest", "block:32")),
        ("bf16:rounding=truncate", (8, 7, "ieee", True, "inf", "truncate", "none")),
        ("E4M3:special=fn", (4, 3, "fn", True, "saturate", "nearest", "none")),
        ("E4M3:special=fn,overflow=nan", (4, 3, "fn", True, "nan", "nearest", "none")),
        ("E3M4: subnormals = FALSE , scaling=tensor", (3, 4, "ieee", False, "inf", "nearest", "tensor")),
        ("fp8_e4m3:special=ieee", (4, 3, "ieee", True, "inf", "nearest", "none")),
        ("E2M1", (2, 1, "ieee", True, "inf", "nearest", "none")),
    ],
)
def test_parse(spec: str, fields: tuple[object, ...]) -> None:
    f = parse_format(spec)
    assert (f.exp_bits, f.man_bits, f.special, f.subnormals, f.overflow, f.rounding, f.scaling) == fields
    again = parse_format(f.spec)
    assert again == f and again.name == f.name and again.spec == f.spec
    assert str(f) == f.spec


def test_names_and_canonical_spec() -> None:
    assert parse_format("fp8_e4m3").name == "fp8_e4m3"
    assert parse_format("e8m3").name == "E8M3"
    assert parse_format("fp8_e4m3") == parse_format("E4M3:special=fn")  # name is not part of equality
    assert parse_format("E4M3:special=fn").spec == "E4M3:special=fn"
    assert parse_format("fp8_e4m3").spec == "fp8_e4m3"
    assert parse_format("bf16:rounding=truncate").spec == "bf16:rounding=truncate"
    assert (
        parse_format("E5M2:rounding=stochastic,overflow=saturate").spec
        == "E5M2:overflow=saturate,rounding=stochastic"
    )
    assert parse_format("E3M4:subnormals=no").spec == "E3M4:subnormals=false"
    assert parse_format("E4M3:scaling=block:32").block_size == 32


def test_aliases_all_parse_and_table() -> None:
    table = {row["name"]: row for row in format_table()}
    assert set(table) == set(ALIASES)
    for alias in ALIASES:
        f = parse_format(alias)
        row = table[alias]
        assert (row["exp_bits"], row["man_bits"]) == (f.exp_bits, f.man_bits)
        assert row["max_normal"] == f.max_normal and row["min_normal"] == f.min_normal
        assert row["min_subnormal"] == f.min_subnormal and row["epsilon"] == f.epsilon
    assert table["fp8_e4m3"]["max_normal"] == 448.0


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("E1M2", r"\[2, 8\]"),
        ("E9M2", r"\[2, 8\]"),
        ("E0M3", r"\[2, 8\]"),
        ("E4M24", r"\[0, 23\]"),
        ("fp7", r"aliases: .*bf16"),
        ("E4", r"E\{e\}M\{m\}"),
        ("E4M-1", r"E\{e\}M\{m\}"),
        ("", r"empty"),
        ("E4M3:foo=1", r"valid knobs: special, subnormals, overflow, rounding, scaling"),
        ("E4M3:rounding", r"valid knobs"),
        ("E4M3:rounding=up", r"nearest, truncate, stochastic"),
        ("E4M3:special=weird", r"ieee, fn, finite"),
        ("E4M3:subnormals=maybe", r"true or false"),
        ("E4M3:overflow=wrap", r"valid: inf, saturate"),
        ("E4M3:special=fn,overflow=inf", r"valid: saturate, nan"),
        ("float4_e2m1fn:overflow=nan", r"valid: saturate"),
        ("E4M3:overflow=nan", r"valid: inf, saturate"),
        ("E4M3:scaling=block:0", r"block:N"),
        ("E4M3:scaling=block:x", r"block:N"),
        ("E4M3:scaling=channel", r"none, tensor or block:N"),
        ("E4M3:rounding=nearest,rounding=truncate", r"twice"),
        ("E8M3:special=fn", r"\[2, 7\]"),
        ("E8M23:special=finite", r"\[2, 7\]"),
    ],
)
def test_invalid_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_format(spec)


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        FloatFormat(1, 2)
    with pytest.raises(ValueError, match=r"\[0, 23\]"):
        FloatFormat(5, -1)
    with pytest.raises(ValueError, match="alias"):
        FloatFormat(4, 3, name="bf16")
    assert FloatFormat(4, 3, special="fn").overflow == "saturate"
    assert FloatFormat(4, 3, special="fn", name="fp8_e4m3").spec == "fp8_e4m3"
    assert FloatFormat(2, 1).max_normal == 3.0


_formats = st.builds(
    lambda e, m, special, sub, rounding, scaling: (e, m, special, sub, rounding, scaling),
    st.integers(2, 8),
    st.integers(0, 23),
    st.sampled_from(["ieee", "fn", "finite"]),
    st.booleans(),
    st.sampled_from(["nearest", "truncate", "stochastic"]),
    st.sampled_from(["none", "tensor", "block:16", "block:32", "block:7"]),
)


@settings(max_examples=200, deadline=None)
@given(_formats, st.data())
def test_round_trip_property(params: tuple[object, ...], data: st.DataObject) -> None:
    e, m, special, sub, rounding, scaling = params
    if e == 8 and special != "ieee":
        with pytest.raises(ValueError):
            FloatFormat(e, m, special=special)  # type: ignore[arg-type]
        return
    overflow = data.draw(
        st.sampled_from(
            {"ieee": ["inf", "saturate"], "fn": ["saturate", "nan"], "finite": ["saturate"]}[special]
        )
    )  # type: ignore[index]
    fmt = FloatFormat(e, m, special, sub, overflow, rounding, scaling)  # type: ignore[arg-type]
    again = parse_format(fmt.spec)
    assert again == fmt and again.spec == fmt.spec
    assert parse_format(fmt.spec.lower()) == fmt
    assert math.isfinite(fmt.max_normal) and fmt.max_normal < 2.0**128
    assert fmt.min_subnormal <= fmt.min_normal < fmt.max_normal or (
        m == 0 and fmt.min_normal <= fmt.max_normal
    )
