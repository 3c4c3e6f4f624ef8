"""Training recipes on one linear layer: forward, dgrad and wgrad against independent oracles.

The float64 oracle quantizes each GEMM operand with the already-tested `quantize(x, recipe)` along the stated axis
(fwd: x and W by rows; dgrad: g by rows, W by columns; wgrad: g and x by columns) and multiplies in float64. The
simulation runs scaled GEMMs in float32 (values exact in bf16, FP32 scales applied to the output), so the stated
tolerance is float32 accumulation: |sim - oracle| <= (K + 4) 2^-24 (|A| |B|ᵀ), elementwise. torchao's own float8
training linear (emulated on CPU) is the second oracle for the float8 recipes.
"""

from __future__ import annotations

import dataclasses

import pytest
import scipy.linalg
import torch
from torch import nn

from robustprec.numerics.quantize import quantize
from robustprec.numerics.recipe_linear import apply_recipe, rht
from robustprec.numerics.recipes import recipe_operand, recipe_plan
from robustprec.numerics.simulated import OPERANDS
from robustprec.numerics.training_recipes import TrainingRecipe, parse_training_recipe

T, IN, OUT = 128, 256, 128  # tokens, in-features, out-features: every recipe's blocks divide them


def _heavy(*shape: int, seed: int) -> torch.Tensor:
    """Heavy-tailed values on a grid of 1/16 (so the 16x16 Hadamard transform is exact in float32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.exp(1.5 * torch.randn(*shape, generator=g))
    return torch.round(x * 16) / 16


def _hadamard64() -> torch.Tensor:
    signs = torch.tensor([1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1], dtype=torch.float64)
    return torch.diag(signs) @ torch.tensor(scipy.linalg.hadamard(16), dtype=torch.float64) / 4


def _q(t: torch.Tensor, slot) -> torch.Tensor:
    """The oracle's copy of one operand (rows, K): float32 in, dequantized float64 out (None: unquantized)."""
    if slot is None:
        return t.double()
    if slot.rht:
        t = (t.double().reshape(-1, 16) @ _hadamard64()).reshape(t.shape).float()
    return quantize(t, slot.recipe).double()


def _check(sim: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """sim ≈ a @ bᵀ within float32 accumulation (elementwise bound)."""
    ref = a @ b.t()
    bound = (a.shape[1] + 4) * 2.0**-24 * (a.abs() @ b.abs().t())
    err = (sim.double() - ref).abs()
    assert (err <= bound + 1e-30).all(), float((err - bound).max())


def _layer(spec: str | TrainingRecipe, seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """One converted linear (weights, input and output gradient from `_heavy`); `seed` keys its SR streams."""
    lin = nn.Linear(IN, OUT, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_heavy(OUT, IN, seed=1) / 64)
    apply_recipe(lin, spec, exclude=(), base="fp32", seed=seed)
    return lin, _heavy(T, IN, seed=2).requires_grad_(True), _heavy(T, OUT, seed=3)


SPECS = ["fp8_tensorwise", "fp8_rowwise", "fp8_rowwise_gw_hp", "mxfp8", "mxfp8:grad=e5m2,scale=floor",
         "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "nvfp4:sr=false", "nvfp4:sr=false,rht=false,weight2d=false",
         "fp8_block", "fp8_block:pow2=true", "mxfp8:act=e2m1,weight=e3m2"]  # fmt: skip


@pytest.mark.parametrize("spec", SPECS)
def test_forward_dgrad_wgrad_match_the_float64_oracle(spec: str) -> None:
    lin, x, g = _layer(spec)
    y = lin(x)
    y.backward(g)
    r = parse_training_recipe(spec)
    w = lin.weight.detach()
    xd = x.detach()
    _check(y, _q(xd, r.slot("fwd", "act")), _q(w, r.slot("fwd", "weight")))
    _check(x.grad, _q(g, r.slot("dgrad", "grad")), _q(w.t().contiguous(), r.slot("dgrad", "weight")))
    _check(
        lin.weight.grad,
        _q(g.t().contiguous(), r.slot("wgrad", "grad")),
        _q(xd.t().contiguous(), r.slot("wgrad", "act")),
    )


@pytest.mark.parametrize("spec", ["fp8_tensorwise", "fp8_rowwise_gw_hp", "mxfp8", "fp8_block"])
def test_wgrad_without_an_input_gradient_matches_the_float64_oracle(spec: str) -> None:
    # no dgrad (a first layer): wgrad quantizes its own copy of g, from g's layout when that gives the same values
    lin, x, g = _layer(spec)
    x = x.detach()
    lin(x).backward(g)
    r = parse_training_recipe(spec)
    _check(
        lin.weight.grad,
        _q(g.t().contiguous(), r.slot("wgrad", "grad")),
        _q(x.t().contiguous(), r.slot("wgrad", "act")),
    )


_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float64: torch.int64}


@pytest.mark.parametrize("base", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("spec", "slots"), [("fp8_tensorwise", 6), ("fp8_tensorwise:pow2=true", 6),
                                             ("fp8_rowwise_gw_hp", 3)])  # fmt: skip
def test_a_transposable_copy_is_the_copy_of_the_transpose_bit_for_bit(spec, slots, base) -> None:
    # backward quantizes such a copy (one scale, no random bits, or none) in the tensor's own layout and transposes
    # it: the same values, factors and counts as quantizing the transpose, extremes included (huge, subnormal, 0)
    from robustprec.numerics.recipe_linear import _gemms, _quantize, _quantize_transposed

    t = _heavy(T, OUT, seed=7)
    t[0, :3] = torch.tensor([3e38, 1e-40, 0.0])
    t = t.to(base)
    checked = 0
    for i, slot in enumerate(_gemms(parse_training_recipe(spec), base, "fp32").slots):
        if slot is None or slot.transposable:
            new = _quantize_transposed(t, slot, base, None, i, True)
            old = _quantize(t.t(), slot, base, None, i, True)
            for a, b in zip(new, old, strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a.shape == b.shape and a.dtype == b.dtype
                    assert torch.equal(a.contiguous().view(_INT[a.dtype]), b.contiguous().view(_INT[b.dtype]))
            checked += 1
    assert checked == slots


def test_each_gemm_quantizes_its_own_copy() -> None:
    # Blocks along different axes give different copies of the same tensor (FP4: few binades per block), so
    # a simulation reusing the forward copy of W for dgrad would fail the oracle test above.
    w = _heavy(OUT, IN, seed=5)
    by_rows = quantize(w, "mxfp4")
    by_cols = quantize(w.t().contiguous(), "mxfp4").t()
    assert not torch.equal(by_rows, by_cols)


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "rowwise_with_gw_hp"])
def test_float8_recipes_match_torchao_float8_linear(recipe: str) -> None:
    from torchao.float8 import Float8LinearConfig
    from torchao.float8.float8_linear import Float8Linear

    ours = {
        "tensorwise": "fp8_tensorwise",
        "rowwise": "fp8_rowwise",
        "rowwise_with_gw_hp": "fp8_rowwise_gw_hp",
    }
    lin, x, g = _layer(ours[recipe])
    ref_lin = nn.Linear(IN, OUT, bias=False)
    ref_lin.weight.data.copy_(lin.weight.data)
    config = dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), emulate=True)
    ref_lin = Float8Linear.from_float(ref_lin, config=config)
    xr = x.detach().clone().requires_grad_(True)
    y, yr = lin(x), ref_lin(xr)
    y.backward(g)
    yr.backward(g)
    # torchao emulates with dequantize-then-float32-GEMM; the simulation scales the float32 output: rounding order
    for a, b in ((y, yr), (x.grad, xr.grad), (lin.weight.grad, ref_lin.weight.grad)):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6 * float(b.abs().max()))


def test_tensorwise_operands_are_torchaos_bit_for_bit() -> None:
    # The GEMM operands after quantization: torchao's float8 data and inverse scale, element for element.
    from torchao.float8.config import ScalingGranularity
    from torchao.float8.float8_scaling_utils import hp_tensor_to_float8_dynamic
    from torchao.float8.float8_training_tensor import LinearMMConfig

    for t, spec, dtype in ((_heavy(T, IN, seed=9), "fp8_tensorwise:elem=e4m3", torch.float8_e4m3fn),
                           (_heavy(T, IN, seed=9) * 1e-6, "fp8_tensorwise:elem=e5m2", torch.float8_e5m2),
                           (_heavy(T, IN, seed=8), "fp8_rowwise:elem=e4m3,pow2=true", torch.float8_e4m3fn)):  # fmt: skip
        rowwise = spec.startswith("fp8_rowwise")
        ref = hp_tensor_to_float8_dynamic(
            t, dtype, LinearMMConfig(), scaling_granularity=ScalingGranularity.AXISWISE if rowwise
            else ScalingGranularity.TENSORWISE, axiswise_dim=-1 if rowwise else None,
            round_scales_to_power_of_2=rowwise,
        )  # fmt: skip
        vals, post, _ = recipe_operand(t, recipe_plan(spec))
        if post is None:  # power-of-two scales are folded into the values
            assert torch.equal(vals, ref._data.float() / ref._scale)
        else:
            assert torch.equal(vals, ref._data.float())
            assert torch.equal(post.expand(t.shape[0], 1), (1 / ref._scale).expand(t.shape[0], 1))


@pytest.mark.parametrize(
    ("spec", "reuse"),
    [("fp8_tensorwise", (True, True, True)), ("fp8_rowwise", (False, False, False)),
     ("mxfp8", (False, False, False)), ("fp8_tensorwise:grad=e4m3,act=e5m2", (True, True, True)),
     ("nvfp4:sr=false,rht=false,weight2d=false", (False, False, False))],
)  # fmt: skip
def test_tensorwise_backward_reuses_the_forward_copies_and_counts_each_use(spec, reuse) -> None:
    # one scale per tensor and no random bits: the transpose's copy is the copy transposed, so the backward reuses
    # x's and W's forward copies and dgrad's g copy (torchao casts each once); telemetry still counts every use
    lin = nn.Linear(IN, OUT, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_heavy(OUT, IN, seed=1) / 64)
    handle = apply_recipe(lin, spec, exclude=(), base="fp32", seed=0)
    assert lin._sim.recipe.reuse == reuse
    x, g = _heavy(T, IN, seed=2), _heavy(T, OUT, seed=3)
    x[:, :8] *= 1e-6  # underflows in every copy of x
    lin(x.requires_grad_(True)).backward(g)
    st = handle._state
    # every copy's counts, before pop_stats turns them into fractions
    raw = (st.counts + st.sink.grad).tolist()
    stats = handle.pop_stats()
    r = parse_training_recipe(spec)
    w = lin.weight.detach()
    copies = {"act": [(x.detach(), "fwd"), (x.detach().t().contiguous(), "wgrad")],
              "weight": [(w, "fwd"), (w.t().contiguous(), "dgrad")],
              "grad": [(g, "dgrad"), (g.t().contiguous(), "wgrad")]}  # fmt: skip
    for kind, uses in copies.items():
        counts = sum(
            recipe_operand(t, recipe_plan(r.slot(gemm, kind).recipe), None, True)[2] for t, gemm in uses
        )
        assert counts[1] > 0 or kind != "act"
        assert raw[OPERANDS.index(kind)][:3] == counts[:3].tolist()
        assert stats[f"{kind}_underflow_frac"] == pytest.approx(float(counts[1] / counts[2]), rel=1e-12)
        assert stats[f"{kind}_overflow_frac"] == pytest.approx(float(counts[0] / counts[2]), rel=1e-12)


def test_wgrad_high_is_the_unquantized_gemm() -> None:
    lin, x, g = _layer("mxfp4")
    lin2, x2, _ = _layer(parse_training_recipe("mxfp4").with_high_wgrad())
    lin(x).backward(g)
    lin2(x2).backward(g)
    _check(lin2.weight.grad, g.t().double(), x2.detach().t().double())
    assert torch.equal(x.grad, x2.grad)  # dgrad unchanged
    assert not torch.equal(lin.weight.grad, lin2.weight.grad)


def test_rht_is_tes_hadamard_transform() -> None:
    # the butterfly against scipy's Sylvester matrix with TE's signs: exactly on the identity (the matrix itself)
    # and on values of a 1/16 grid, within float32 rounding of each output on generic values
    m = _hadamard64()
    assert torch.equal(rht(torch.eye(16)).double(), m)
    assert torch.equal(m @ m.t(), torch.eye(16, dtype=torch.float64))
    grid = _heavy(8, 64, seed=6)
    assert torch.equal(rht(grid).double(), (grid.double().reshape(-1, 16) @ m).reshape(grid.shape))
    x = torch.randn(32, 48, generator=torch.Generator().manual_seed(7)) * 1e3
    ref = (x.double().reshape(-1, 16) @ m).reshape(x.shape)
    bound = 4 * 2.0**-24 * (x.double().abs().reshape(-1, 16) @ m.abs()).reshape(x.shape)  # 4 rounded stages
    assert ((rht(x).double() - ref).abs() <= bound).all()


def test_nvfp4_stochastic_rounding_is_seeded_and_unbiased() -> None:
    grads = []
    for seed in (1, 1, 2):
        lin, x, g = _layer("nvfp4:rht=false", seed=seed)
        lin(x).backward(g)
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1]) and not torch.equal(grads[0], grads[2])
    # unbiased: the mean over many keys of the stochastically rounded grad copy approaches g
    plan = recipe_plan("nvfp4", True)
    g = _heavy(16, 64, seed=4)
    copies = [recipe_operand(g, plan, torch.tensor(k)) for k in range(400)]
    mean = sum(vals * post for vals, post, _ in copies) / len(copies)
    rne = quantize(g, "nvfp4")
    assert (mean - g).abs().mean() < 0.5 * (rne - g).abs().mean()


@pytest.mark.parametrize("spec", ["fp8_tensorwise", "fp8_rowwise_gw_hp", "mxfp8", "nvfp4", "fp8_block"])
def test_recipes_compile_with_zero_graph_breaks(spec: str) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()

    def build() -> tuple[nn.Module, object]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(IN, OUT), nn.ReLU(), nn.Linear(OUT, OUT, bias=False))
        return model, apply_recipe(model, spec, exclude=(), seed=3)

    (model, handle), (eager, _) = build(), build()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)  # raises on any graph break
    for step in range(2):
        x = _heavy(2, T // 2, IN, seed=step)
        compiled(x).square().sum().backward()
        eager(x).square().sum().backward()
        assert counter.frame_count == 1, step
    for p, q in zip(model.parameters(), eager.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    stats = handle.pop_stats()
    assert {f"{k}_scale_clamp_frac" for k in ("act", "weight", "grad")} <= set(stats)
    assert all(0.0 <= v <= 1.0 for v in stats.values())


def test_exmy_wgrad_high_and_per_operand_formats() -> None:
    from robustprec.numerics.simulated import apply_simulated

    torch.manual_seed(0)
    lin = nn.Linear(IN, OUT, bias=False)
    x, g = _heavy(T, IN, seed=2).requires_grad_(True), _heavy(T, OUT, seed=3) / 1024
    h = apply_simulated(lin, {"act": "E4M3", "weight": "E4M3", "grad": "E5M2"}, wgrad_hp=torch.float32)
    lin(x).backward(g)
    assert torch.equal(lin.weight.grad, g.t() @ x.detach())  # grad-weight from unquantized operands
    w = quantize(lin.weight.detach(), "E4M3")
    torch.testing.assert_close(x.grad, quantize(g, "E5M2") @ w)  # dgrad still quantized
    assert h.carriers["wgrad"] == "fp32"


def test_backend_high_precision_layers_and_per_operand_specs() -> None:
    from robustprec.config import load_config
    from robustprec.model.presets import resolve_spec
    from robustprec.model.transformer import build_model
    from robustprec.numerics.backends import make_backend

    def convert(*sets: str):
        cfg = load_config(None, list(sets))
        backend = make_backend(cfg.numerics, torch.device("cpu"))
        backend.convert(build_model(resolve_spec(cfg.model, 256, 32), seed=0), 0)
        return backend

    b = convert("numerics.backend=sim:nvfp4", "numerics.high_precision_layers.first=1")
    assert b.handle.names and all(n.startswith("blocks.1.") for n in b.handle.names)
    assert b.describe()["base"] == "bf16" and b.autocast_dtype == torch.bfloat16
    b = convert(
        "numerics.backend=sim:E4M3:rounding=stochastic,grad=E5M2", "numerics.high_precision_layers.last=1"
    )
    assert all(n.startswith("blocks.0.") for n in b.handle.names)
    assert b.handle.formats["grad"].spec == "E5M2:rounding=stochastic" and b.handle.formats[
        "act"
    ].spec.startswith("E4M3")
    assert b.describe()["base"] == "fp32"
    b = convert("numerics.backend=sim:fp8_rowwise_gw_hp")
    assert b.handle.carriers == {"fwd": "bf16", "dgrad": "bf16", "wgrad": "bf16"}


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs CUDA")])],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_tensorwise_gemm_operands_are_torchaos_real_ones(
    device: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchao's float8 training (tensorwise, not emulated: its real torch._scaled_mm calls) on one layer against
    # sim:fp8_tensorwise: each of the three GEMMs (fwd, dgrad, wgrad) gets the same FP8 elements and the same
    # inverse scales, bit for bit; the layer's output and gradients then differ only by the GEMMs' accumulation.
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    import robustprec.numerics.recipe_linear as rl

    w, x, g = (_heavy(*s, seed=i).to(device, dtype) for i, s in ((1, (OUT, IN)), (2, (T, IN)), (3, (T, OUT))))
    ref, ours = (nn.Sequential(nn.Linear(IN, OUT, bias=False)).to(device, dtype) for _ in range(2))
    for m in (ref, ours):
        m[0].weight.data.copy_(w / 64)
    convert_to_float8_training(ref, config=Float8LinearConfig.from_recipe_name("tensorwise"))
    apply_recipe(ours, "fp8_tensorwise", exclude=(), base="fp32" if dtype == torch.float32 else "bf16")
    recorded: list[tuple[torch.Tensor, ...]] = []
    real_scaled_mm = rl.scaled_mm

    def recording(a, pa, b, pb, carrier, acc=None):  # type: ignore[no-untyped-def]
        recorded.append((a.float(), b.float().t(), pa.reshape(()), pb.reshape(())))
        return real_scaled_mm(a, pa, b, pb, carrier, acc)

    monkeypatch.setattr(rl, "scaled_mm", recording)
    theirs: list[tuple[torch.Tensor, ...]] = []
    real_torch_scaled_mm = torch._scaled_mm

    def torchao_gemm(a, b, scale_a, scale_b, **kwargs):  # type: ignore[no-untyped-def]
        theirs.append((a.float(), b.float(), scale_a.float(), scale_b.float()))
        return real_torch_scaled_mm(a, b, scale_a, scale_b, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", torchao_gemm)
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yr, yo = ref(xr), ours(xo)
    yr.backward(g)
    yo.backward(g)
    assert len(theirs) == len(recorded) == 3  # fwd, dgrad, wgrad
    for gemm, their, mine in zip(("fwd", "dgrad", "wgrad"), theirs, recorded, strict=True):
        for name, t, m in zip(("A", "B", "scale_a", "scale_b"), their, mine, strict=True):
            assert torch.equal(m, t.reshape(m.shape)), (gemm, name)
    for a, b in ((yo, yr), (xo.grad, xr.grad), (ours[0].weight.grad, ref[0].weight.grad)):
        scale = float(b.detach().float().abs().max())
        # bf16: outputs rounded to bf16 (one ulp); CUDA: the forward's fast accumulation; CPU fp32: rounding order
        tol = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-8 if device == "cuda" else 1e-6
        assert float((a.float() - b.float()).abs().max()) <= tol * scale
