"""Fused (torch.compile) quantizer: bit-identical to the eager path, no recompiles, switch and fallback.

Compiled here with inductor's CPU backend: each format costs one compile (a few seconds on 2 cores, plus a
one-time warm-up of inductor's cache), so the default run compiles ~10 graphs; the wider matrix is marked slow.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from test_quantize import edge_values, generic_inputs_f32, loguniform_f32, neighbours, random_bits_f32
from torch import nn

from robustprec.numerics import fused
from robustprec.numerics.formats import parse_format
from robustprec.numerics.quantize import get_fused, quantize, quantize_with_stats, set_fused
from robustprec.numerics.simulated import apply_simulated

qmod = importlib.import_module("robustprec.numerics.quantize")

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")


@pytest.fixture(autouse=True)
def _fused_on() -> Iterator[None]:
    previous = set_fused("on")
    yield
    set_fused(previous)
    fused._error = None  # a failure (e.g. a recompile under error_on_recompile) stays with its test


def run(
    x: torch.Tensor, spec: str, mode: str, seed: int | None = None, stats: bool = True
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """Quantize under one mode; returns (q, (overflow, underflow) or None)."""
    previous = set_fused(mode)
    try:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        if not stats:
            return quantize(x, spec, generator=gen), None
        q, s = quantize_with_stats(x, spec, generator=gen)
        return q, (int(s.overflow), int(s.underflow))
    finally:
        set_fused(previous)


def assert_same_bits(got: torch.Tensor, want: torch.Tensor, label: str = "") -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, label
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), f"{label}: NaN positions differ"
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[want.element_size()]
    bad = (got.view(ints) != want.view(ints)) & ~nan
    assert not bad.any(), f"{label}: {int(bad.sum())} mismatches, x at {bad.nonzero()[:5].flatten().tolist()}"


def check_identical(
    x: torch.Tensor, spec: str, seed: int | None = None, stats: bool = True
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    want, want_counts = run(x, spec, "off", seed, stats)
    got, got_counts = run(x, spec, "on", seed, stats)
    assert fused.fused_error() is None, fused.fused_error()
    assert_same_bits(got, want, spec)
    assert got_counts == want_counts, (spec, got_counts, want_counts)
    return got, got_counts


def dense_inputs(spec: str, seed: int = 0) -> torch.Tensor:
    """Random bit patterns, log-uniform values around the range, midpoints and their neighbours, edge values."""
    fmt = parse_format(spec).replace(scaling="none")
    if fmt.exp_bits + fmt.man_bits <= 16:
        return torch.from_numpy(generic_inputs_f32(fmt, seed))
    rng = np.random.default_rng(seed)  # fp32-like formats: too many values to enumerate their midpoints
    parts = [random_bits_f32(100_000, rng), loguniform_f32(100_000, rng, -160, 130), edge_values(fmt)]
    return torch.from_numpy(np.concatenate(parts))


# Every rounding branch of the core: sub-range rounding, Inf at the container's Inf (bf16), saturation, truncation
# with Inf overflow, flush-to-zero, tensor scaling. One compiled graph each (with stats).
FAST_SPECS = [
    "E4M3",
    "E5M2",
    "bf16",
    "E2M1",
    "fp8_e4m3",
    "E4M3:scaling=tensor",
    "E5M2:rounding=truncate",
    "E3M4:subnormals=false,rounding=truncate",
]


@pytest.mark.parametrize("spec", FAST_SPECS)
def test_bit_identical_to_eager(spec: str) -> None:
    x = dense_inputs(spec)
    _, counts = check_identical(x, spec)
    assert counts is not None and counts[1] > 0
    if "scaling" not in spec:
        assert counts[0] > 0
    # a 2-D, a shorter and a longer tensor reuse the graph (dynamic sizes)
    with torch._dynamo.config.patch(error_on_recompile=True):
        check_identical(x[: 120 * 1000].reshape(120, 1000), spec)
        check_identical(x[:777], spec)
        check_identical(torch.cat([x, x * 3.0]), spec)


def test_plain_quantize_shapes_and_no_recompile() -> None:
    spec = "E4M3"
    base = torch.randn(6, 70, 33, generator=torch.Generator().manual_seed(1)) * 100
    check_identical(base, spec, stats=False)
    views = [base[:, ::2, 1:], base.transpose(0, 2), base[0], base[:1, :1, :2], base.reshape(-1)[:4097]]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for t in views:
            q, _ = check_identical(t, spec, stats=False)
            assert q.is_contiguous() and q.shape == t.shape
    assert torch.equal(run(base[0, 0, :1], spec, "on", stats=False)[0], quantize(base[0, 0, :1], spec))
    assert quantize(torch.empty(0, 3), spec).shape == (0, 3)
    y = torch.randn(50, requires_grad=True)
    assert not quantize(y, spec).requires_grad


def test_stochastic_same_stream_unbiased_and_reproducible() -> None:
    spec = "E4M3:rounding=stochastic"
    fmt = parse_format(spec)
    x = torch.from_numpy(loguniform_f32(200_000, np.random.default_rng(3), -12, 9))
    check_identical(x, spec, seed=5)  # same generator draws as the eager path: the same bits
    # more elements than one eager CPU chunk: the eager path draws per chunk, the fused one at once
    check_identical(
        torch.from_numpy(loguniform_f32(1_300_000, np.random.default_rng(4), -12, 9)), spec, seed=6
    )
    a, _ = run(x, spec, "on", seed=7)
    b, _ = run(x, spec, "on", seed=7)
    c, _ = run(x, spec, "on", seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # unbiased: points in the normal and subnormal ranges, repeated; mean error within 6 sigma
    pts = np.array([1.0 + 1 / 32, 3.3, -0.07, 200.0, 2.0**-7 * 1.3, 2.0**-9 * 0.3, -(2.0**-8) * 0.7])
    pts = pts.astype(np.float32).astype(np.float64)
    n = 40_000
    q, _ = run(torch.from_numpy(pts).float().repeat(n), spec, "on", seed=9)
    q = q.view(n, -1).double().numpy()
    lo, hi = neighbours(pts, fmt)
    assert np.all((np.abs(q) == lo) | (np.abs(q) == hi))
    p = (np.abs(pts) - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(q.mean(0) - pts) <= 6 * sigma), (q.mean(0) - pts, sigma)


def test_simulated_linear_through_fused_path() -> None:
    """SimLinear forward/backward and telemetry: the same bits with the fused quantizer (reuses a graph above)."""
    torch.manual_seed(0)
    base = nn.Linear(48, 40)
    x = torch.randn(3, 11, 48) * 300
    results = []
    for mode in ("off", "on"):
        set_fused(mode)
        lin = copy.deepcopy(base)
        handle = apply_simulated(lin, "fp8_e4m3")
        xr = x.clone().requires_grad_(True)
        out = lin(xr)
        (out * 1e-4).sum().backward()
        results.append((out.detach(), xr.grad, lin.weight.grad, handle.pop_stats()))
    assert fused.fused_error() is None
    (o1, dx1, dw1, s1), (o2, dx2, dw2, s2) = results
    assert torch.equal(o1, o2) and torch.equal(dx1, dx2) and torch.equal(dw1, dw2)
    assert s1 == s2 and s1["act_overflow_frac"] > 0 and s1["grad_underflow_frac"] > 0


# ----------------------------------------------------------------------------------------------------------
# Switch, environment and fallback (no compiling)
# ----------------------------------------------------------------------------------------------------------


def test_set_fused_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_fused() == "on"
    assert set_fused("off") == "on" and get_fused() == "off"
    with pytest.raises(ValueError, match="auto, on, off"):
        set_fused("cuda")
    for raw, want in [
        ("", "auto"),
        ("on", "on"),
        ("OFF", "off"),
        ("1", "on"),
        ("0", "off"),
        ("auto", "auto"),
    ]:
        monkeypatch.setenv(qmod.FUSED_ENV, raw)
        assert qmod._mode_from_env() == want
    monkeypatch.setenv(qmod.FUSED_ENV, "fast")
    with pytest.warns(RuntimeWarning, match="ROBUSTPREC_FUSED_QUANT"):
        assert qmod._mode_from_env() == "auto"


def test_auto_is_eager_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("fused path used on CPU in auto mode")

    monkeypatch.setattr(fused, "quantize_fused", boom)
    set_fused("auto")
    quantize(torch.randn(100), "E4M3")
    set_fused("off")
    quantize(torch.randn(100), "E4M3")


def test_fallback_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler\nmore detail")

    monkeypatch.setattr(fused, "_compiled", broken)
    monkeypatch.setattr(fused, "_error", None)
    x = torch.randn(300) * 500
    with pytest.warns(RuntimeWarning, match="fused quantizer unavailable .RuntimeError: no compiler.") as rec:
        q = quantize(x, "E5M2:overflow=saturate")
    assert len(rec) == 1 and "more detail" not in str(rec[0].message)
    assert fused.fused_error() == "RuntimeError: no compiler"
    set_fused("off")
    assert torch.equal(q, quantize(x, "E5M2:overflow=saturate"))
    set_fused("on")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize(x, "E5M2:overflow=saturate")  # eager from now on, no second warning


def test_out_of_memory_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(fused, "_compiled", oom)
    monkeypatch.setattr(fused, "_error", None)
    with pytest.raises(torch.OutOfMemoryError):
        quantize(torch.randn(300), "E4M3")
    assert fused.fused_error() is None


# ----------------------------------------------------------------------------------------------------------
# Wider matrix (slow: one compile per case)
# ----------------------------------------------------------------------------------------------------------

SLOW_SPECS = [
    "E4M3:subnormals=false",
    "E3M4:subnormals=false,rounding=stochastic",
    "E4M3:rounding=truncate",
    "fp8_e4m3:overflow=nan",
    "fp8_e4m3:overflow=nan,rounding=truncate",
    "float4_e2m1fn",
    "E8M3:rounding=truncate",
    "E8M0",
    "fp32:subnormals=false",
    "fp8_e4m3:scaling=block:32",
    "E4M3:scaling=block:7,rounding=stochastic",
    "E5M2:scaling=tensor,rounding=stochastic",
    "fp32:scaling=tensor",
]


@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW_SPECS)
def test_bit_identical_wider_matrix(spec: str) -> None:
    x = dense_inputs(spec, seed=1)
    check_identical(x[: 70 * 2000].reshape(2000, 70), spec, seed=2)
    with torch._dynamo.config.patch(error_on_recompile=True):
        check_identical(x[: 33 * 1000].reshape(-1, 33), spec, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spec", ["E5M2", "E4M3:scaling=tensor,rounding=truncate"])
def test_bit_identical_other_dtypes(spec: str, dtype: torch.dtype) -> None:
    x = dense_inputs(spec, seed=4)
    x = torch.cat([x, torch.from_numpy(edge_values(parse_format(spec)))]).to(dtype)
    check_identical(x, spec)


# ----------------------------------------------------------------------------------------------------------
# CUDA (Triton): run on a GPU machine
# ----------------------------------------------------------------------------------------------------------

CUDA_SPECS = [
    *FAST_SPECS,
    "E4M3:rounding=stochastic",
    "E3M4:subnormals=false",
    "fp8_e4m3:overflow=nan",
    "fp8_e4m3:scaling=block:32",
    "E4M3:scaling=block:7,rounding=stochastic",
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", CUDA_SPECS)
def test_cuda_bit_identical(spec: str) -> None:
    """On the GPU: fused == eager on the GPU, and (deterministic roundings) == eager on the CPU."""
    x = dense_inputs(spec, seed=5)[: 97 * 1000].reshape(97, 1000)
    xc = x.cuda()
    results = {}
    for mode in ("off", "on"):
        previous = set_fused(mode)
        try:
            gen = torch.Generator(device="cuda").manual_seed(0)
            q, s = quantize_with_stats(xc, spec, generator=gen)
            results[mode] = (q.cpu(), int(s.overflow), int(s.underflow))
        finally:
            set_fused(previous)
    assert fused.fused_error() is None, fused.fused_error()
    (want, *want_counts), (got, *got_counts) = results["off"], results["on"]
    assert_same_bits(got, want, spec)
    assert got_counts == want_counts
    if "stochastic" not in spec:
        cpu, _ = run(x, spec, "off")
        assert_same_bits(got, cpu, spec)
    with torch._dynamo.config.patch(error_on_recompile=True):
        quantize_with_stats(xc[:50, :999], spec)
        quantize_with_stats(xc.reshape(-1)[:12345], spec)
    assert fused.fused_error() is None, fused.fused_error()
