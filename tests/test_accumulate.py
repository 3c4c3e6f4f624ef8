"""Limited-precision GEMM accumulation (`numerics.accumulate`): against an integer oracle, an error bound in float64,
through the simulated and recipe GEMMs, under compile, and in training."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from robustprec.config import load_config
from robustprec.numerics.accumulate import parse_accumulator
from robustprec.numerics.compile_check import compiled_gradient_error
from robustprec.numerics.recipe_linear import apply_recipe
from robustprec.numerics.simulated import apply_simulated, gemm
from robustprec.train.loop import train
from tests.conftest import tiny_overrides

SIGNIFICANT = 14  # E8M13


def _round_int(v: int, bits: int, truncate: bool) -> int:
    """An integer rounded to `bits` significant bits: to nearest, ties to even, or toward zero."""
    sign, a = (-1 if v < 0 else 1), abs(v)
    shift = a.bit_length() - bits
    if shift <= 0:
        return v
    q, r = divmod(a, 1 << shift)
    half = 1 << (shift - 1)
    if not truncate and (r > half or (r == half and q % 2)):
        q += 1
    return sign * (q << shift)


def _oracle(a: list[list[int]], b: list[list[int]], chunk: int, step: int, truncate: bool) -> list[list[int]]:
    """Exact integer model: per chunk, the partial sum rounded after every `step` products; chunks summed exactly."""
    k = len(b)
    out = []
    for row in a:
        out_row = []
        for j in range(len(b[0])):
            total = 0
            for c0 in range(0, k, chunk):
                part = 0
                for s0 in range(c0, min(c0 + chunk, k), step):
                    p = sum(row[i] * b[i][j] for i in range(s0, min(s0 + step, k)))
                    part = _round_int(part + p, SIGNIFICANT, truncate)
                total += part
            out_row.append(total)
        out.append(out_row)
    return out


def test_parse_accumulator():
    acc = parse_accumulator("E8M13:chunk=128")
    assert (acc.fmt.exp_bits, acc.fmt.man_bits, acc.chunk, acc.step) == (8, 13, 128, 128)
    assert parse_accumulator(acc.spec) == acc
    acc = parse_accumulator("E8M13:chunk=128,step=32,rounding=truncate")
    assert (acc.step, acc.fmt.rounding) == (32, "truncate")
    assert parse_accumulator(acc.spec) == acc
    for spec, needle in [
        ("E8M13", "needs chunk=N"),
        ("E8M13:chunk=0", "positive integer"),
        ("E8M13:chunk=128,step=48", "must divide chunk"),
        ("E8M13:chunk=128,colour=red", "valid knobs"),
        ("E4M3:chunk=32,scaling=tensor", "not scaled"),
    ]:
        with pytest.raises(ValueError, match=needle):
            parse_accumulator(spec)


@pytest.mark.parametrize("step", [None, 16])
@pytest.mark.parametrize("rounding", ["nearest", "truncate"])
def test_accumulated_gemm_matches_an_integer_oracle(step, rounding):
    # integer operands |v| <= 64: every float32 sum below is exact (< 2^24), so the only roundings are the
    # accumulator's, and the oracle's exact integer arithmetic must match bit for bit
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-64, 65, (5, 300), generator=gen)
    b = torch.randint(-64, 65, (300, 7), generator=gen)
    spec = f"E8M13:chunk=128{f',step={step}' if step else ''},rounding={rounding}"
    out = gemm(a.float(), b.float(), "fp32", parse_accumulator(spec))
    want = _oracle(a.tolist(), b.tolist(), 128, step or 128, rounding == "truncate")
    assert torch.equal(out, torch.tensor(want, dtype=torch.float32))
    assert not torch.equal(out, (a @ b).float())  # the accumulator did round (|partial sums| reach 2^18)


def test_accumulation_error_is_within_its_bound():
    # each chunk's partial sum is rounded once to 14 significant bits: |error| <= sum_c 2^-14 |partial_c| plus
    # float32's own summation error; and it is larger than float32 accumulation's
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, 4096, generator=gen), torch.randn(4096, 16, generator=gen)
    exact = a.double() @ b.double()
    out = gemm(a, b, "fp32", parse_accumulator("E8M13:chunk=128")).double()
    parts = torch.stack([a[:, c : c + 128].double() @ b[c : c + 128].double() for c in range(0, 4096, 128)])
    fp32_bound = 4096 * 2.0**-24 * (a.abs().double() @ b.abs().double())
    assert ((out - exact).abs() <= 2.0**-14 * parts.abs().sum(0) + fp32_bound).all()
    assert (out - exact).abs().mean() > 4 * ((a @ b).double() - exact).abs().mean()


def _layer_grads(convert, acc, x):
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    convert(lin, acc)
    out = lin(x)
    out.square().sum().backward()  # gradients of order 1: within E4M3's range
    return out.detach(), lin.weight.grad, lin


def test_simulated_and_recipe_gemms_use_the_accumulator():
    x = torch.randn(256, 128, generator=torch.Generator().manual_seed(2), requires_grad=True)
    acc = parse_accumulator("E8M10:chunk=32")
    for convert in (
        lambda m, a: apply_simulated(m, "E4M3", exclude=(), accumulate=a),
        lambda m, a: apply_recipe(m, "mxfp8", exclude=(), base="fp32", accumulate=a),
    ):
        plain_out, plain_dw, _ = _layer_grads(convert, None, x)
        out, dw, lin = _layer_grads(convert, acc, x)
        gemms = lin._sim.gemms
        assert getattr(gemms, "acc", None) is not None
        # the forward GEMM rounds its 4 chunks to 11 significant bits: within 4 · 2^-11 of the largest output
        assert not torch.equal(out, plain_out) and not torch.equal(dw, plain_dw)
        assert torch.allclose(out, plain_out, rtol=0, atol=4 * 2.0**-11 * float(plain_out.abs().max()))
        # dw also sees the output gradient's E4M3 roundings move with the forward: a small relative change
        assert float((dw - plain_dw).norm() / plain_dw.norm()) < 0.02


def test_unquantized_gemms_keep_float32_accumulation():
    acc = parse_accumulator("E8M13:chunk=32")
    lin = torch.nn.Linear(64, 64)
    h = apply_simulated(
        lin, {"act": "E4M3", "weight": "E4M3"}, operands=("act", "weight"), exclude=(), accumulate=acc
    )
    assert h._state.gemms.acc == (acc, None, None)  # dgrad and wgrad multiply an unquantized gradient
    lin2 = torch.nn.Linear(64, 64)
    h2 = apply_recipe(lin2, "fp8_rowwise_gw_hp", exclude=(), accumulate=acc)
    gm = h2._state.recipe
    assert (gm.accumulator(0), gm.accumulator(2), gm.accumulator(4)) == (acc, acc, None)


def test_compiled_accumulated_gemms_match_eager():
    acc = parse_accumulator("E8M13:chunk=32,step=16")
    prepare = lambda m: (apply_simulated(m, "E5M2", exclude=(), accumulate=acc), m)[1]  # noqa: E731
    assert compiled_gradient_error(prepare, torch.device("cpu"), compiler="inductor") == 0.0


def test_tiny_trains_with_an_accumulator(tmp_path):
    def run(name, **extra):
        cfg = load_config(
            None, tiny_overrides(**{"numerics.backend": "sim:E4M3", "train.steps": 12, **extra})
        )
        summary = train(cfg, tmp_path / name)
        return summary, pq.read_table(tmp_path / name / "curve.parquet").column("loss").to_pylist()

    s, loss = run("acc", **{"numerics.accumulate": "E8M7:chunk=16"})
    _, plain = run("plain")
    assert s["status"] == "converged" and s["numerics"]["accumulate"] == "E8M7:chunk=16"
    assert loss != plain  # bf16-like partial sums change the training
    assert loss[-1] == pytest.approx(plain[-1], rel=0.05)
