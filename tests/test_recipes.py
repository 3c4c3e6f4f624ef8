"""Recipes (MX, NVFP4, FP8 per-tensor/row/tile) against torchao's CPU references and independent oracles."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from robustprec.numerics import quantize
from robustprec.numerics.recipe_spec import RECIPE_NAMES, is_recipe, parse_recipe
from robustprec.numerics.recipes import (
    quantize_recipe,
    quantize_recipe_with_stats,
    recipe_plan,
    recipe_scales,
    recipe_values,
)

mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
nvfp4_tensor = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
float8_utils = pytest.importorskip("torchao.float8.float8_utils")
ScaleCalculationMode = pytest.importorskip("torchao.prototype.mx_formats.config").ScaleCalculationMode

MX_TORCHAO = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e2m3": "fp6_e2m3",
    "mxfp6_e3m2": "fp6_e3m2",
    "mxfp4": torch.float4_e2m1fn_x2,
}
# element dtype in ml_dtypes, largest value, exponent of the largest binade, explicit mantissa bits
MX_ELEM = {
    "mxfp8_e4m3": (ml_dtypes.float8_e4m3fn, 448.0, 8, 3),
    "mxfp8_e5m2": (ml_dtypes.float8_e5m2, 57344.0, 15, 2),
    "mxfp6_e2m3": (ml_dtypes.float6_e2m3fn, 7.5, 2, 3),
    "mxfp6_e3m2": (ml_dtypes.float6_e3m2fn, 28.0, 4, 2),
    "mxfp4": (ml_dtypes.float4_e2m1fn, 6.0, 2, 1),
}
MODES = ("floor", "ceil", "even", "rceil")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _near_pow2(shape: tuple[int, ...], seed: int, lo: int = -100, hi: int = 100) -> torch.Tensor:
    """Powers of two and their float32 neighbours (one ulp above or below), random signs."""
    g = _gen(seed)
    p = torch.exp2(torch.randint(lo, hi, shape, generator=g).float())
    step = torch.randint(-1, 2, shape, generator=g)
    x = torch.where(step > 0, torch.nextafter(p, torch.tensor(math.inf)), p)
    x = torch.where(step < 0, torch.nextafter(p, torch.tensor(0.0)), x)
    return x * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)


def _inputs(seed: int, rows: int = 16, k: int = 128) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    n = torch.randn(rows, k, generator=g)
    zero_blocks = n.clone()
    zero_blocks[:, :32] = 0.0
    zero_blocks[3] = 0.0
    nonfinite = n.clone()
    nonfinite[0, 3], nonfinite[1, 40], nonfinite[2, 70] = math.inf, -math.inf, math.nan
    return {
        "normal": n,
        "heavy": n * torch.exp(3 * torch.randn(rows, k, generator=g)),
        "zero_blocks": zero_blocks,
        "tiny": n * 1e-30,
        "subnormal": n * 1e-39,
        "huge": n * 1e30,
        "near_pow2": _near_pow2((rows, k), seed),
        "nonfinite": nonfinite,
    }


def _assert_bits_equal(got: torch.Tensor, ref: torch.Tensor) -> None:
    same = (got.view(torch.int32) == ref.view(torch.int32)) | (got.isnan() & ref.isnan())
    if not bool(same.all()):
        i = tuple((~same).nonzero()[0].tolist())
        raise AssertionError(
            f"{int((~same).sum())} elements differ; first at {i}: got {got[i]}, ref {ref[i]}"
        )


# ----- MX: bit-exact against torchao to_mx + to_dtype ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(MX_TORCHAO))
def test_mx_matches_torchao(name: str, mode: str) -> None:
    elem = MX_TORCHAO[name]
    for kind, x in _inputs(seed=len(name) + MODES.index(mode)).items():
        scale, data = mx_tensor.to_mx(x, elem, 32, getattr(ScaleCalculationMode, mode.upper()))
        ref = mx_tensor.to_dtype(data, scale, elem, 32, torch.float32)
        try:
            _assert_bits_equal(quantize(x, f"{name}:scale={mode}"), ref)  # the public quantize() interface
        except AssertionError as err:
            raise AssertionError(f"{name}:scale={mode} on {kind} input: {err}") from None


@pytest.mark.parametrize("name", list(MX_TORCHAO))
def test_mx_bf16_in_bf16_out_matches_torchao(name: str) -> None:
    elem = MX_TORCHAO[name]
    for mode in ("floor", "rceil"):
        for kind in ("heavy", "subnormal", "near_pow2"):
            xb = _inputs(seed=9)[kind].to(torch.bfloat16)
            scale, data = mx_tensor.to_mx(xb, elem, 32, getattr(ScaleCalculationMode, mode.upper()))
            ref = mx_tensor.to_dtype(data, scale, elem, 32, torch.bfloat16)
            got = quantize_recipe(xb, f"{name}:scale={mode}")
            assert got.dtype == torch.bfloat16
            _assert_bits_equal(got.float(), ref.float())


def _exact_mx_exponent(amax: float, mode: str, emax: int, mbits: int, elem_max: float) -> int:
    """The E8M0 exponent of RECIPES.md from Python floats (no torch), before torchao's clamp to [-127, ...]."""
    if mode == "rceil":
        descale = float(np.float32(amax) / np.float32(elem_max))  # float32 division, as the recipe
        m, e = math.frexp(descale)
        return e - 1 if m == 0.5 else e
    if mode == "even":  # round amax to mbits mantissa bits, half away from zero
        m, e = math.frexp(amax)
        amax = math.floor(m * 2 ** (mbits + 1) + 0.5) * 2.0 ** (e - mbits - 1)
    m, e = math.frexp(amax)
    e -= 1  # floor(log2(amax))
    if mode == "ceil" and m != 0.5:
        e += 1
    return e - emax


def _check_mx_block_property(x: torch.Tensor, name: str, mode: str) -> None:
    dtype, elem_max, emax, mbits = MX_ELEM[name]
    spec = f"{name}:scale={mode}"
    out = quantize_recipe(x, spec).reshape(-1, 32).double().numpy()
    scales = recipe_scales(x, spec).reshape(-1).double().numpy()
    for block, deq, scale in zip(x.reshape(-1, 32).double().numpy(), out, scales, strict=True):
        amax = float(np.abs(block).max())
        if amax == 0:
            continue
        e = max(_exact_mx_exponent(amax, mode, emax, mbits, elem_max), -127)
        assert scale == 2.0**e, (spec, amax, scale, e)
        if e > -127:  # the clamped exponent is torchao's 2^-126 / 2^-127 quirk, checked against torchao above
            q = deq / scale
            assert np.array_equal(q.astype(dtype).astype(np.float64), q), (spec, q)  # in the value set
            assert np.all(np.abs(q) <= elem_max)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.integers(-128, 100), mode=st.sampled_from(MODES))
def test_mx_scale_is_function_of_amax_and_values_in_set(seed: int, log_scale: int, mode: str) -> None:
    g = _gen(seed)
    x = torch.randn(4, 64, generator=g) * torch.exp(2 * torch.randn(4, 64, generator=g)) * 2.0**log_scale
    for name in MX_ELEM:
        _check_mx_block_property(x, name, mode)


@pytest.mark.parametrize("name", list(MX_ELEM))
def test_mx_scale_at_power_of_two_edges(name: str) -> None:
    """Block maxima at powers of two and one ulp away, also at elem_max * 2^k (where rceil's ceiling flips)."""
    elem_max = MX_ELEM[name][1]
    x = _near_pow2((8, 128), seed=7, lo=-60, hi=60)
    edge = torch.nextafter(torch.tensor(elem_max * 2.0**20), torch.tensor(math.inf))
    x[:, ::32] = x[:, ::32].sign() * _near_pow2((8, 4), seed=8, lo=-40, hi=40).abs() * elem_max
    x[0, :32] = x[0, :32].clamp(-1.0, 1.0)
    x[0, 0] = edge  # amax / elem_max is one ulp above 2^20: rceil must give 2^21
    for mode in MODES:
        _check_mx_block_property(x, name, mode)


# ----- NVFP4: bit-exact against torchao nvfp4_quantize -------------------------------------------------------------
def _nvfp4_reference(x_bf16: torch.Tensor, out: torch.dtype = torch.float32) -> torch.Tensor:
    pts = nvfp4_tensor.per_tensor_amax_to_scale(x_bf16.abs().amax())
    t = nvfp4_tensor.NVFP4Tensor.to_nvfp4(x_bf16, 16, per_tensor_scale=pts)
    return t.dequantize(out)


def test_nvfp4_matches_torchao() -> None:
    for kind, x in _inputs(seed=3).items():
        if kind in ("nonfinite", "subnormal"):  # torchao's 1/per_tensor_scale overflows for amax < ~8e-36
            continue
        xb = x.to(torch.bfloat16)
        try:
            _assert_bits_equal(quantize(xb.float(), "nvfp4"), _nvfp4_reference(xb))
            ref_bf16 = _nvfp4_reference(xb, torch.bfloat16).float()
            _assert_bits_equal(quantize_recipe(xb, "nvfp4").float(), ref_bf16)
        except AssertionError as err:
            raise AssertionError(f"nvfp4 on {kind} input: {err}") from None


def test_nvfp4_block_scales_and_values() -> None:
    g = _gen(11)
    x = (torch.randn(8, 64, generator=g) * torch.exp(2 * torch.randn(8, 64, generator=g))).to(torch.bfloat16)
    x32 = x.float()
    pts = np.float32(x32.abs().max().item()) / np.float32(448.0 * 6.0)
    blocks = x32.reshape(-1, 16).numpy()
    expected = np.clip((np.abs(blocks).max(1) / np.float32(6.0)) / pts, 2.0**-6, 448.0)
    expected = expected.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert np.array_equal(recipe_scales(x32, "nvfp4").reshape(-1).numpy(), expected)
    q = blocks * ((np.float32(1.0) / pts) / expected[:, None])
    q = np.clip(q, -6, 6).astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
    deq = q * (pts * expected)[:, None]
    assert np.array_equal(quantize_recipe(x32, "nvfp4").reshape(-1, 16).numpy(), deq)


def test_nvfp4_all_zero_tensor_is_zero_not_nan() -> None:
    out = quantize_recipe(torch.zeros(2, 32), "nvfp4")
    assert torch.equal(out, torch.zeros(2, 32))


# ----- FP8 per-tensor / per-row / tiles -----------------------------------------------------------------------------
@pytest.mark.parametrize("elem", ["e4m3", "e5m2"])
def test_tensorwise_scale_and_values_match_torchao(elem: str) -> None:
    dtype = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[elem]
    for kind, x in _inputs(seed=5).items():
        if kind == "nonfinite":
            continue
        scale = float8_utils.amax_to_scale(x.abs().max(), dtype)
        assert torch.equal(recipe_scales(x, f"fp8_tensorwise:elem={elem}").reshape(()), scale), kind
        ref = float8_utils.to_fp8_saturated(x * scale, dtype).float() / scale
        _assert_bits_equal(quantize_recipe(x, f"fp8_tensorwise:elem={elem}"), ref)


def test_rowwise_scales_match_torchao() -> None:
    for kind, x in _inputs(seed=6).items():
        if kind in ("nonfinite", "near_pow2"):  # near_pow2: see test_pow2_scale_is_exact_floor
            continue
        amax = x.abs().amax(dim=-1, keepdim=True)
        scale = float8_utils.amax_to_scale(amax, torch.float8_e4m3fn, round_scales_to_power_of_2=True)
        assert torch.equal(recipe_scales(x, "fp8_rowwise").reshape(-1, 1), scale), kind
        ref = float8_utils.to_fp8_saturated(x * scale, torch.float8_e4m3fn).float() / scale
        _assert_bits_equal(quantize_recipe(x, "fp8_rowwise"), ref)


def test_pow2_scale_is_exact_floor() -> None:
    """448 / amax one ulp below a power of two: the scale is the power of two below (torchao's log2 rounds up)."""
    targets = [np.nextafter(np.float32(2.0**k), np.float32(0)) for k in range(-20, 30, 3)]
    amax = [float(np.float32(448.0) / t) for t in targets]
    x = torch.tensor(amax, dtype=torch.float32)[:, None] * torch.tensor([1.0, 0.5, -0.25, 0.1])
    s = recipe_scales(x, "fp8_rowwise").reshape(-1).double().numpy()
    for amax_i, s_i in zip(x.abs().amax(1).tolist(), s, strict=True):
        exact = float(np.float32(np.float64(448.0) / np.float64(amax_i)))
        assert s_i == 2.0 ** (math.frexp(exact)[1] - 1), (amax_i, s_i)


def _tile_reference(x: np.ndarray, tile: tuple[int, int], pow2: bool) -> tuple[np.ndarray, np.ndarray]:
    """Transformer Engine's blockwise reference (quantize_scale_calc.py, eps 0) in numpy float32."""
    r, c = x.shape
    tiles = x.reshape(r // tile[0], tile[0], c // tile[1], tile[1])
    amax = np.abs(tiles).max(axis=(1, 3), keepdims=True)
    with np.errstate(divide="ignore"):
        s = np.float32(448.0) / amax
    s = np.where(np.isinf(s), np.finfo(np.float32).max, s).astype(np.float32)
    if pow2:
        s = np.ldexp(np.float32(1), np.frexp(s)[1] - 1).astype(np.float32)
    s = np.where(amax == 0, np.float32(1), s)
    q = np.clip(tiles * s, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    return (q * (np.float32(1) / s)).reshape(r, c), s.reshape(r // tile[0], c // tile[1])


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    log_scale=st.integers(-60, 60),
    tile=st.sampled_from(["1x128", "128x128"]),
    pow2=st.booleans(),
)
def test_fp8_block_tiles(seed: int, log_scale: int, tile: str, pow2: bool) -> None:
    g = _gen(seed)
    x = (
        torch.randn(256, 256, generator=g)
        * torch.exp(2 * torch.randn(256, 256, generator=g))
        * 2.0**log_scale
    )
    x[:128, :128] = 0.0  # an all-zero tile (and 128 all-zero 1x128 tiles)
    spec = f"fp8_block:tile={tile},pow2={str(pow2).lower()}"
    ref, ref_scale = _tile_reference(x.numpy(), (1, 128) if tile == "1x128" else (128, 128), pow2)
    assert np.array_equal(recipe_scales(x, spec).reshape(ref_scale.shape).numpy(), ref_scale)
    out = quantize_recipe(x, spec).numpy()
    assert np.array_equal(out, ref)
    if pow2:  # elements divided by their (power-of-two) scale are e4m3 values
        s = np.repeat(np.repeat(ref_scale, 256 // ref_scale.shape[0], 0), 256 // ref_scale.shape[1], 1)
        q = out * s
        assert np.array_equal(q.astype(ml_dtypes.float8_e4m3fn).astype(np.float32), q)


# ----- telemetry -------------------------------------------------------------------------------------------------
def test_stats_count_saturation_underflow_and_clamped_blocks() -> None:
    x = torch.ones(4, 64)
    x[0, :32] = 250.0  # floor: scale 2^(7-8), 250 / 2^-1 = 500 > 448: the 32 elements saturate
    x[1, 1] = 1e-10  # 1e-10 / 2^-8 < 2^-10, half of e4m3's smallest subnormal: underflows (the only one)
    x[2, :32] = 1e-39  # amax exponent -130: scale exponent -138 clamps to -127 (values survive, see to_mx)
    x[3, 32:] = 0.0  # an all-zero block is not a clamp
    out, st_ = quantize_recipe_with_stats(x, "mxfp8_e4m3:scale=floor")
    assert (st_.numel, st_.blocks) == (256, 8)
    assert int(st_.overflow) == 32
    assert int(st_.underflow) == 1
    assert out[1, 1] == 0
    assert int(st_.scale_clamped) == 1


def test_mxfp4_underflows_more_than_mxfp8() -> None:
    g = _gen(2)
    x = torch.randn(64, 256, generator=g) * torch.exp(2 * torch.randn(64, 256, generator=g))
    u4 = quantize_recipe_with_stats(x, "mxfp4")[1].underflow
    u8 = quantize_recipe_with_stats(x, "mxfp8")[1].underflow
    assert float(u4) > float(u8) > 0


# ----- element formats ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MX_ELEM))
def test_element_spelling_is_the_saturating_ml_dtypes_cast(name: str) -> None:
    dtype, elem_max, emax, _ = MX_ELEM[name]
    g = _gen(4)
    x = torch.randn(4096, generator=g) * torch.exp2(torch.randint(-20 - emax, emax + 3, (4096,), generator=g))
    x = torch.cat([x, _near_pow2((512,), seed=5, lo=-20, hi=emax + 2), torch.tensor([math.inf, -math.inf])])
    ties = torch.tensor(
        np.arange(0, 2 * elem_max, elem_max / 64), dtype=torch.float32
    )  # grid incl. midpoints
    x = torch.cat([x, ties, -ties])
    ref = np.clip(x.numpy(), -elem_max, elem_max).astype(dtype).astype(np.float32)
    assert np.array_equal(quantize(x, parse_recipe(name).element).numpy(), ref)


# ----- interface -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["mxfp8:scale=even", "mxfp4:scale=floor", "nvfp4", "fp8_tensorwise", "fp8_rowwise", "fp8_block"]
)
def test_traceable_without_data_dependent_control_flow(spec: str) -> None:
    plan = recipe_plan(spec)
    x = torch.randn(128, 128, generator=_gen(0))
    graph = make_fx(lambda t: recipe_values(t, plan, stats=True))(x)  # fails on .item() / value branching
    q, counts = graph(x)
    assert torch.equal(q, quantize_recipe(x, spec))
    assert counts.shape == (3,)


def test_shape_and_dtype_preserved() -> None:
    x = torch.randn(2, 3, 64, generator=_gen(1))
    assert quantize_recipe(x, "mxfp6_e3m2").shape == x.shape
    xb = x.to(torch.bfloat16)
    out = quantize_recipe(xb, "mxfp8_e4m3")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), quantize_recipe(xb.float(), "mxfp8_e4m3"))  # MX values are bf16-exact
    for spec in ("mxfp4", "nvfp4", "fp8_tensorwise", "fp8_block:tile=128x128"):
        empty, stats = quantize_recipe_with_stats(torch.zeros(0, 128), spec)
        assert empty.shape == (0, 128) and int(stats.underflow) == 0
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        quantize_recipe(x.double(), "mxfp4")


def test_is_recipe() -> None:
    assert is_recipe("mxfp8:scale=up") and is_recipe(" NVFP4") and is_recipe("fp8_block:tile=128x128")
    assert not is_recipe("fp8_e4m3") and not is_recipe("E4M3:scaling=block:32") and not is_recipe("bf16")


def test_parse_canonical_names_and_defaults() -> None:
    assert parse_recipe("mxfp8").name == "mxfp8_e4m3:scale=rceil"
    assert parse_recipe("MXFP6_E2M3:scale=Floor").name == "mxfp6_e2m3:scale=floor"
    assert parse_recipe("fp8_rowwise").scale.pow2 is True
    assert parse_recipe("fp8_block:tile=128x128,pow2=true").block == (128, 128)
    for name in RECIPE_NAMES:
        assert parse_recipe(parse_recipe(name).name) == parse_recipe(name)


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        ("mxfp8:scale=up", (4, 32), "scale=up is not valid; valid: floor, ceil, even, rceil"),
        ("mxfp9", (4, 32), "unknown recipe 'mxfp9'; valid recipes: mxfp8_e4m3, mxfp8_e5m2"),
        ("mxfp8:block=16", (4, 32), "valid keys: scale"),
        ("nvfp4:scale=rceil", (4, 32), "valid keys: tile"),
        ("fp8_block:tile=64x64", (4, 128), "valid: 1x128, 128x128"),
        ("fp8_rowwise:pow2=maybe", (4, 128), "valid: true, 1, yes, false, 0, no"),
        ("mxfp4", (4, 48), "blocks of 32 along the last dimension (K), but K=48 is not a multiple of 32"),
        ("nvfp4", (4, 40), "blocks of 16 along the last dimension (K), but K=40 is not a multiple of 16"),
        ("fp8_block", (4, 100), "blocks of 128 along the last dimension (K), but K=100"),
        ("fp8_block:tile=128x128", (64, 128), "128x128 tiles, but the second-to-last dimension (64)"),
    ],
)
def test_bad_specs_get_one_line_errors(spec: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError) as err:
        quantize_recipe(torch.zeros(shape), spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _positive_float32_kinds(seed: int) -> np.ndarray:
    """Random positive finite float32 bit patterns, subnormals, powers of two and their neighbours."""
    rng = np.random.default_rng(seed)
    bits = np.concatenate([
        rng.integers(1, 0x7F800000, 20_000), rng.integers(1, 0x00800000, 5_000),  # any; subnormal
        *((np.arange(1, 255, dtype=np.int64) << 23) + d for d in (-1, 0, 1)), [1, 0x007FFFFF, 0x00800000],
    ]).astype(np.uint32)  # fmt: skip
    return bits[(bits > 0) & (bits < 0x7F800000)].view(np.float32)


def test_log2_by_bits_is_exact_for_every_kind_of_float32() -> None:
    # rceil's exponent and pow2 scales by integer ops (CUDA's compiled frexp flushes float32 subnormals): against
    # math.frexp
    from robustprec.numerics.recipes import _ceil_log2, _log2_parts

    values = _positive_float32_kinds(3)
    frexp = [math.frexp(v) for v in values.astype(np.float64)]
    floor, inexact = _log2_parts(torch.from_numpy(values))
    assert floor.tolist() == [e - 1 for _, e in frexp]
    assert inexact.tolist() == [m != 0.5 for m, _ in frexp]
    assert _ceil_log2(torch.from_numpy(values)).tolist() == [e - 1 if m == 0.5 else e for m, e in frexp]


def test_div_rn_is_float32_division() -> None:
    # the recipes' divisions through float64 (Inductor's CUDA float32 division is approximate): numpy's float32
    # division is the oracle, by tensors and by the recipes' constant divisors, subnormal quotients included
    from robustprec.numerics.recipes import _div_rn

    a, b = _positive_float32_kinds(4), np.random.default_rng(5).permutation(_positive_float32_kinds(6))
    n = min(a.size, b.size)
    a, b = a[:n], b[:n]
    with np.errstate(over="ignore", under="ignore"):
        assert np.array_equal(_div_rn(torch.from_numpy(a), torch.from_numpy(b)).numpy(), a / b)
        for c in (6.0, 28.0, 448.0, 57344.0, 448.0 * 6):
            assert np.array_equal(_div_rn(torch.from_numpy(a), c).numpy(), a / np.float32(c)), c
        assert np.array_equal(_div_rn(1.0, torch.from_numpy(b)).numpy(), np.float32(1.0) / b)
        # the float64 lowerings Inductor uses on CUDA (a times the rounded reciprocal of b) round to the same float32
        # quotient wherever it is normal (_div_rn's claim)
        want = a / b
        normal = np.abs(want) >= np.finfo(np.float32).tiny
        by_reciprocal = (a.astype(np.float64) * (1.0 / b.astype(np.float64))).astype(np.float32)
        assert np.array_equal(by_reciprocal[normal], want[normal])


def test_float64_reciprocal_lowerings_round_to_the_float32_quotient_for_every_significand() -> None:
    # _div_rn's claim for the constants the recipes divide by and into, exhaustively: every float32 significand (the
    # binade [1, 2); other binades scale the normal quotients by powers of two), a / c and c / a lowered as Inductor
    # does on CUDA (a float64 multiplication by a rounded float64 reciprocal), against float32 division
    a = (np.arange(1 << 23, dtype=np.uint32) | np.uint32(0x3F800000)).view(np.float32)
    wide = a.astype(np.float64)
    for c in (6.0, 7.5, 28.0, 448.0, 57344.0, 448.0 * 6):
        assert np.array_equal((wide * (1.0 / c)).astype(np.float32), a / np.float32(c)), c
        assert np.array_equal((c * (1.0 / wide)).astype(np.float32), np.float32(c) / a), c
