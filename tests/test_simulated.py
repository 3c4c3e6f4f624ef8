"""Simulated GEMMs: exactness against native Linear and hand-computed quantized forward/backward, telemetry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustprec.numerics.formats import parse_format, value_set
from robustprec.numerics.quantize import quantize
from robustprec.numerics.simulated import (
    SimLinear,
    apply_simulated,
    carrier_mm,
    exact_in_bf16,
    exact_in_tf32,
    gemm_carrier,
)


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = nn.ModuleDict({"qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(3 * d, d, bias=False)})
        self.mlp = nn.ModuleDict({"fc": nn.Linear(d, 4 * d), "proj": nn.Linear(4 * d, d)})
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn["proj"](torch.tanh(self.attn["qkv"](self.norm(x))))
        return x + self.mlp["proj"](F.gelu(self.mlp["fc"](x)))


class Toy(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, n_blocks: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for b in self.blocks:
            x = b(x)
        return self.lm_head(x)


def _model(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy()


def _loss_and_grads(model: nn.Module, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(idx)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx.reshape(-1))
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


IDX = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
BLOCK_LINEARS = [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")]


def test_fp32_format_is_bit_exact() -> None:
    ref = _model()
    sim = copy.deepcopy(ref)
    handle = apply_simulated(sim, "fp32")
    assert sorted(handle.names) == sorted(BLOCK_LINEARS)
    out_ref, g_ref = _loss_and_grads(ref, IDX)
    out_sim, g_sim = _loss_and_grads(sim, IDX)
    assert torch.equal(out_ref, out_sim)
    assert g_ref.keys() == g_sim.keys()
    for name in g_ref:
        assert torch.equal(g_ref[name], g_sim[name]), name
    assert handle.pop_stats() == {
        f"{k}_{w}_frac": 0.0 for k in ("act", "weight", "grad") for w in ("overflow", "underflow")
    }


def test_same_parameters_and_state_dict() -> None:
    model = _model()
    params_before = {n: p for n, p in model.named_parameters()}
    keys_before = list(model.state_dict())
    handle = apply_simulated(model, "E4M3")
    assert {n: p for n, p in model.named_parameters()} == params_before  # same objects
    assert all(p is params_before[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys_before
    assert all(isinstance(model.get_submodule(n), SimLinear) for n in handle.names)
    assert type(model.lm_head) is nn.Linear  # excluded by default
    # an optimizer built afterwards trains the master weights, which stay fp32 and unquantized
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = model.blocks[0].mlp["fc"].weight
    w_before = w.detach().clone()
    _loss_and_grads(model, IDX)
    assert torch.equal(w.detach(), w_before) and w.dtype == torch.float32
    opt.step()
    assert not torch.equal(w.detach(), w_before)
    assert not torch.equal(w.detach(), quantize(w.detach(), "E4M3"))  # master weight is not quantized
    handle.remove()
    assert type(model.blocks[0].mlp["fc"]) is nn.Linear and list(model.state_dict()) == keys_before


def test_forward_bf16_format_matches_manual() -> None:
    torch.manual_seed(2)
    lin = nn.Linear(24, 10)
    x = torch.randn(4, 5, 24) * 3
    want = F.linear(x.bfloat16().float(), lin.weight.detach().bfloat16().float(), lin.bias.detach())
    apply_simulated(lin, "E8M7")
    got = lin(x)
    assert torch.equal(got, want)
    assert not torch.equal(got, F.linear(x, lin.weight, lin.bias))


def test_backward_quantizes_grad_output() -> None:
    """Per-operand formats; expected dgrad/wgrad computed by hand with real casts as the rounding oracle."""
    torch.manual_seed(3)
    lin = nn.Linear(12, 9)
    x = (torch.randn(2, 6, 12) * 2).requires_grad_(True)
    upstream = torch.randn(2, 6, 9) * 1e-3
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    apply_simulated(lin, {"act": "bf16", "weight": "fp8_e4m3", "grad": "fp8_e5m2"})
    out = lin(x)
    out.backward(upstream)

    xq = x.detach().bfloat16().float()
    wq = w.to(torch.float8_e4m3fn).float()
    gq = upstream.to(torch.float8_e5m2).float()
    assert torch.equal(out.detach(), F.linear(xq, wq, b))
    assert not torch.equal(gq, upstream)
    want_dx = gq.reshape(-1, 9) @ wq
    want_dw = gq.reshape(-1, 9).t() @ xq.reshape(-1, 12)
    torch.testing.assert_close(x.grad, want_dx.reshape(2, 6, 12), rtol=1e-6, atol=0)
    torch.testing.assert_close(lin.weight.grad, want_dw, rtol=1e-6, atol=0)
    torch.testing.assert_close(lin.bias.grad, upstream.sum((0, 1)), rtol=1e-6, atol=0)
    # and it is not what unquantized grad-output would give
    assert (x.grad - (upstream.reshape(-1, 9) @ wq).reshape(2, 6, 12)).abs().max() > 1e-6


def test_operand_subset() -> None:
    torch.manual_seed(4)
    lin, ref = nn.Linear(8, 8), None
    ref = copy.deepcopy(lin)
    x = torch.randn(5, 8, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    handle = apply_simulated(lin, "E3M2", operands=("grad",))
    assert list(handle.formats) == ["grad"]
    out, out_ref = lin(x), ref(xr)
    assert torch.equal(out, out_ref)  # forward untouched
    g = torch.randn(5, 8)
    out.backward(g)
    out_ref.backward(g)
    gq = quantize(g, "E3M2")
    torch.testing.assert_close(x.grad, gq @ ref.weight.detach(), rtol=1e-6, atol=0)
    assert not torch.allclose(x.grad, xr.grad)
    assert set(handle.pop_stats()) == {"grad_overflow_frac", "grad_underflow_frac"}


def test_include_exclude_globs() -> None:
    model = _model()
    h = apply_simulated(model, "E4M3", include=("blocks.0.*",))
    assert sorted(h.names) == sorted(n for n in BLOCK_LINEARS if n.startswith("blocks.0."))
    h.remove()
    h = apply_simulated(model, "E4M3", exclude=("*lm_head*", "*.mlp.*"))
    assert sorted(h.names) == sorted(n for n in BLOCK_LINEARS if ".attn." in n)
    h.remove()
    h = apply_simulated(model, "E4M3", exclude=())
    assert "lm_head" in h.names
    h.remove()
    with pytest.raises(ValueError, match=r"no nn\.Linear module matched"):
        apply_simulated(model, "E4M3", include=("decoder.*",))
    with pytest.raises(ValueError, match="already a SimLinear"):
        apply_simulated(model, "E4M3")
        apply_simulated(model, "E4M3")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="act, weight, grad"):
        apply_simulated(_model(), "E4M3", operands=("activations",))
    with pytest.raises(ValueError, match="act, weight, grad"):
        apply_simulated(_model(), {"input": "E4M3"})
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        apply_simulated(_model(), "E1M3")


def test_telemetry_overflow_underflow() -> None:
    torch.manual_seed(5)
    lin = nn.Linear(16, 16)
    handle = apply_simulated(lin, "E2M1")  # ieee E2M1: max 3, min subnormal 0.5
    x = torch.randn(32, 16) * 100
    out = lin(x)
    want_act = torch.isinf(quantize(x, "E2M1")).double().mean().item()
    stats = handle.pop_stats()
    assert stats["act_overflow_frac"] == pytest.approx(want_act) and want_act > 0.5
    assert "grad_overflow_frac" not in stats  # no backward yet: nothing counted, no reading
    out.sum().backward()
    stats = handle.pop_stats()
    assert "act_overflow_frac" not in stats  # reset by the previous pop, no forward since
    assert stats["grad_underflow_frac"] == 0.0 and stats["grad_overflow_frac"] == 0.0  # grads are all ones
    lin(torch.randn(32, 16) * 1e-3)
    stats = handle.pop_stats()
    assert stats["act_underflow_frac"] > 0.9 and stats["act_overflow_frac"] == 0.0
    assert stats["weight_underflow_frac"] > 0  # default init weights ~U(-0.25, 0.25)
    handle.stats_enabled = False
    lin(x)
    assert handle.pop_stats() == {}  # counters off: nothing counted


def test_autocast_does_not_override_format() -> None:
    torch.manual_seed(6)
    lin = nn.Linear(20, 7)
    x = torch.randn(3, 20) * 5
    want = F.linear(x.half().float(), lin.weight.detach().half().float(), lin.bias.detach())
    apply_simulated(lin, "fp16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lin(x)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


def test_low_precision_params_keep_dtypes() -> None:
    torch.manual_seed(7)
    lin = nn.Linear(10, 6).bfloat16()
    x = torch.randn(4, 10, dtype=torch.bfloat16, requires_grad=True)
    apply_simulated(lin, "E4M3")
    out = lin(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and lin.weight.grad.dtype == torch.bfloat16
    want = F.linear(
        quantize(x.detach().float(), "E4M3"),
        quantize(lin.weight.detach().float(), "E4M3"),
        lin.bias.detach().float(),
    )
    assert torch.equal(out, want.bfloat16())


def test_stochastic_rounding_is_seeded() -> None:
    torch.manual_seed(8)
    base = nn.Linear(32, 32)
    x = torch.randn(64, 32)
    outs = []
    for seed in (0, 0, 1):
        lin = copy.deepcopy(base)
        apply_simulated(lin, "E4M3:rounding=stochastic", seed=seed)
        outs.append(lin(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    nearest = copy.deepcopy(base)
    apply_simulated(nearest, "E4M3")
    assert not torch.equal(outs[0], nearest(x))
    # unbiased: averaging many stochastic forwards approaches the unquantized product
    lin = copy.deepcopy(base)
    apply_simulated(lin, "E4M3:rounding=stochastic", operands=("weight",), seed=2)
    mean = torch.stack([lin(x) for _ in range(200)]).mean(0)
    exact = base(x)
    err_sr = (mean - exact).abs().mean()
    err_rn = (nearest(x) - exact).abs().mean()
    assert err_sr < err_rn / 3


# ----------------------------------------------------------------------------------------------------------
# Carriers: which dtype each GEMM runs in, and that it gives the float32 GEMM of the quantized operands
# ----------------------------------------------------------------------------------------------------------


def dequantized_values(spec: str) -> torch.Tensor:
    """Every value a format can produce (float64, both signs): its value set, times 2^-k for the extreme and
    middle scale exponents k when it is scaled."""
    fmt = parse_format(spec)
    vals = value_set(fmt.replace(scaling="none"))
    vals = torch.cat([vals, -vals])
    if fmt.scaling == "none":
        return vals
    ks = (fmt.max_scale_exp, fmt.max_scale_exp - 1, 0, -20)
    vals = torch.cat([vals * 2.0**-k for k in ks])
    return vals[vals.abs() < 2.0**128]  # a finite float32 amax never scales values past float32's range


BF16_EXACT = [
    "E8M7", "E8M3", "E5M2", "E4M3", "fp8_e4m3", "E2M1", "E8M0", "float6_e3m2fn", "E3M4:subnormals=false",
    "E4M3:scaling=tensor", "E5M2:scaling=block:32", "E8M3:scaling=tensor", "E2M1:scaling=block:16",
]  # fmt: skip


@pytest.mark.parametrize("spec", BF16_EXACT)
def test_bf16_carrier_formats_hold_only_bf16_numbers(spec: str) -> None:
    """Oracle: the real bfloat16 cast returns every (dequantized) value of the format unchanged."""
    assert exact_in_bf16(parse_format(spec))
    vals = dequantized_values(spec)
    assert torch.equal(vals.to(torch.bfloat16).double(), vals)


@pytest.mark.parametrize("spec", ["E5M10", "E8M8", "E3M9", "E8M10:scaling=tensor"])
def test_formats_refused_for_bf16_hold_other_numbers(spec: str) -> None:
    assert not exact_in_bf16(parse_format(spec)) and not exact_in_bf16(None)
    vals = dequantized_values(spec)
    assert not torch.equal(vals.to(torch.bfloat16).double(), vals)


@pytest.mark.parametrize("spec", ["E4M3:scaling=tensor", "E5M2:scaling=block:4", "E8M3:scaling=tensor"])
def test_scaled_outputs_of_tiny_tensors_are_bf16_numbers(spec: str) -> None:
    """The scale exponent stops at max_scale_exp: even for amax near 2^-120 the outputs stay bf16 numbers."""
    x = torch.randn(256, generator=torch.Generator().manual_seed(0)) * 2.0**-120
    q = quantize(x, spec)
    assert (q != 0).sum() > 128
    assert torch.equal(q.bfloat16().float(), q)


def test_formats_taken_to_tf32_hold_only_tf32_numbers() -> None:
    """Oracle: a float32 number is a TF32 number iff its 13 low mantissa bits are zero."""
    for spec in ["E5M8", "E8M10", "E5M10", "E3M10:scaling=tensor", "E8M9"]:
        assert exact_in_tf32(parse_format(spec)) and not exact_in_bf16(parse_format(spec))
        vals = dequantized_values(spec).float()
        vals = vals[vals.abs() >= 2.0**-126]  # float32 denormals: the documented exception (may be flushed)
        assert int((vals.view(torch.int32) & 0x1FFF).count_nonzero()) == 0, spec
    for spec in ["E5M11", "E8M12"]:
        assert not exact_in_tf32(parse_format(spec))
        one_ulp = torch.tensor([1.0 + 2.0 ** -parse_format(spec).man_bits])
        assert int((one_ulp.view(torch.int32) & 0x1FFF).count_nonzero()) > 0


def test_carrier_rule() -> None:
    cases = [
        ("E4M3", "E5M2", "bf16"), ("E8M7", "E8M7", "bf16"), ("E4M3:scaling=block:32", "E4M3", "bf16"),
        ("E8M10", "E4M3", "tf32"), ("E5M10", "E5M10", "tf32"), ("E8M10:scaling=tensor", "E8M3", "tf32"),
        ("E8M11", "E4M3", "fp32"), ("fp32", "fp32", "fp32"), (None, "E4M3", "fp32"),
    ]  # fmt: skip
    for a, b, want in cases:
        fa, fb = (None if s is None else parse_format(s) for s in (a, b))
        assert gemm_carrier(fa, fb) == want == gemm_carrier(fb, fa), (a, b)
    lin = nn.Linear(8, 8)
    for operands, want in [
        (("act", "weight", "grad"), ("bf16", "bf16", "bf16")),
        (("act", "weight"), ("bf16", "fp32", "fp32")),
        (("weight", "grad"), ("fp32", "bf16", "fp32")),
        (("act", "grad"), ("fp32", "fp32", "bf16")),
    ]:
        h = apply_simulated(copy.deepcopy(lin), "E4M3", operands=operands)
        assert tuple(h.carriers.values()) == want
    h = apply_simulated(copy.deepcopy(lin), {"act": "E8M10", "weight": "E4M3", "grad": "E5M11"})
    assert h.carriers == {"fwd": "tf32", "dgrad": "fp32", "wgrad": "fp32"}


def gemm_bound(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Error bound of a float32-accumulated GEMM of exact products, any summation order: γ_K · |a| @ |b| with
    γ_K = Kε/(1 - Kε), ε = 2^-23 (any faithful rounding: tensor cores need not round to nearest), plus K · 2^-126
    for partial sums below float32's normal range (flushed to zero)."""
    k = a.shape[-1]
    eps = 2.0**-23
    return k * eps / (1 - k * eps) * (a.abs() @ b.abs()) + k * 2.0**-126


def check_carrier_gemms(spec: str, device: str, gemm_output: str = "fp32") -> dict[str, str]:
    """SimLinear forward/dgrad/wgrad on `device` against the float64 product of the quantized operands (the
    rounding oracle is `quantize`, tested against real casts), within `gemm_bound` (and bf16 output rounding)."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(384, 48)
    x = torch.randn(3, 50, 384, generator=g) * torch.logspace(-4, 1.5, 384)
    x[0, 0, :5] = 2.0**-120  # tiny operands: bf16/fp8 subnormal territory after quantization
    up = torch.randn(3, 50, 48, generator=g)
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    xq, wq, gq = (quantize(t, spec).double().reshape(-1, t.shape[-1]) for t in (x, lin.weight.detach(), up))
    handle = apply_simulated(lin.to(device), spec, gemm_output=gemm_output)
    xd = x.to(device).requires_grad_(True)
    out = lin(xd)
    out.backward(up.to(device))
    rel = 2.0**-8 if gemm_output == "bf16" else 0.0  # bf16 output: one more rounding, half an ulp
    checks = [
        ("fwd", out.detach().reshape(-1, 48), xq @ wq.T + b, gemm_bound(xq, wq.T)),
        ("dgrad", xd.grad.reshape(-1, 384), gq @ wq, gemm_bound(gq, wq)),
        ("wgrad", lin.weight.grad, gq.T @ xq, gemm_bound(gq.T, xq)),
    ]
    for name, got, want, bound in checks:
        err = (got.double().cpu() - want).abs()
        limit = bound * (1 + rel) + rel * want.abs() + 2.0**-24 * want.abs()  # + the bias add
        assert (err <= limit).all(), (spec, name, float((err / limit).max()))
    assert not torch.allclose(w, wq.reshape(w.shape))  # the operands really were quantized
    return handle.carriers


@pytest.mark.parametrize(("spec", "carrier"), [("E4M3", "bf16"), ("E8M3:scaling=tensor", "bf16"),
                                               ("E5M10", "tf32"), ("E5M11", "fp32")])  # fmt: skip
def test_carriers_give_the_float32_gemm_of_quantized_operands(spec: str, carrier: str) -> None:
    assert set(check_carrier_gemms(spec, "cpu").values()) == {carrier}


def test_bound_detects_unquantized_operands() -> None:
    """Negative control: the GEMM of quantized operands is far outside the bound around the unquantized one."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, 256, generator=g), torch.randn(256, 32, generator=g)
    aq, bq = quantize(a, "E5M10"), quantize(b, "E5M10")
    got = carrier_mm(aq, bq, "tf32").double()
    assert ((got - a.double() @ b.double()).abs() > gemm_bound(a.double(), b.double())).any()
    assert ((got - aq.double() @ bq.double()).abs() <= gemm_bound(aq.double(), bq.double())).all()


def test_gemm_output_bf16_rounds_each_gemm_output() -> None:
    torch.manual_seed(9)
    base = nn.Linear(40, 24)
    x = torch.randn(5, 40)
    up = torch.randn(5, 24)
    res = {}
    for mode in ("fp32", "bf16"):
        lin = copy.deepcopy(base)
        apply_simulated(lin, "E5M2", gemm_output=mode)
        xr = x.clone().requires_grad_(True)
        out = lin(xr)
        out.backward(up)
        res[mode] = (out.detach(), xr.grad, lin.weight.grad)
    for r32, r16 in zip(res["fp32"], res["bf16"], strict=True):
        assert r16.dtype == torch.float32 and torch.equal(r16, r32.bfloat16().float())
        assert not torch.equal(r16, r32)
    check_carrier_gemms("E4M3", "cpu", gemm_output="bf16")
    with pytest.raises(ValueError, match="gemm_output"):
        apply_simulated(nn.Linear(4, 4), "E4M3", gemm_output="fp16")


def test_tf32_op_restores_the_global_switch() -> None:
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    assert torch.equal(torch.ops.robustprec.mm_tf32(a, b), a @ b)  # CPU: plain float32
    with pytest.raises(RuntimeError):
        torch.ops.robustprec.mm_tf32(a, a)  # shape mismatch inside the op
    assert matmul.fp32_precision == before


# ----------------------------------------------------------------------------------------------------------
# Stochastic-rounding streams: distinct per call and operand, resumable, separate evaluation stream
# ----------------------------------------------------------------------------------------------------------

SR = "E4M3:rounding=stochastic"


def test_layers_and_calls_get_distinct_streams() -> None:
    """Two identical layers fed the same input, and one layer called twice, round differently."""
    torch.manual_seed(10)
    a = nn.Linear(32, 32)
    b = copy.deepcopy(a)
    pair = nn.ModuleList([a, b])
    apply_simulated(pair, SR, seed=0)
    x = torch.randn(16, 32)
    ya, yb, ya2 = a(x), b(x), a(x)
    assert not torch.equal(ya, yb) and not torch.equal(ya, ya2)
    # act and weight streams of one call differ: a square input equal to the weight rounds differently
    lin = nn.Linear(32, 32, bias=False)
    apply_simulated(lin, SR, operands=("act", "weight"), seed=0)
    w = lin.weight.detach()
    out = lin(w.clone())
    xq_eq_wq = torch.equal(out, torch.mm(quantize(w, "E4M3"), quantize(w, "E4M3").T))
    assert not xq_eq_wq


def _train(model: nn.Module, handle: object, steps: range, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    outs = []
    for step in steps:
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out = model(x)
        out.square().mean().backward()
        opt.step()
        outs.append(out.detach())
    return outs


def test_resume_continues_the_stream_bit_for_bit() -> None:
    torch.manual_seed(11)
    base = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 16))
    ref = copy.deepcopy(base)
    h_ref = apply_simulated(ref, SR, seed=3)
    want = _train(ref, h_ref, range(4), torch.optim.SGD(ref.parameters(), lr=0.1))
    first = copy.deepcopy(base)
    h1 = apply_simulated(first, SR, seed=3)
    opt1 = torch.optim.SGD(first.parameters(), lr=0.1)
    got = _train(first, h1, range(2), opt1)
    saved = (copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict()), h1.state_dict())
    second = copy.deepcopy(base)
    h2 = apply_simulated(second, SR, seed=99)  # the checkpoint's seed wins
    second.load_state_dict(saved[0])
    opt2 = torch.optim.SGD(second.parameters(), lr=0.1)
    opt2.load_state_dict(saved[1])
    h2.load_state_dict(saved[2])
    got += _train(second, h2, range(2, 4), opt2)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    fresh = copy.deepcopy(base)
    h3 = apply_simulated(fresh, SR, seed=3)
    fresh.load_state_dict(saved[0])
    assert not torch.equal(
        _train(fresh, h3, range(2, 3), torch.optim.SGD(fresh.parameters(), lr=0.1))[0], want[2]
    )


def test_evaluation_stream_is_fixed_and_separate() -> None:
    torch.manual_seed(12)
    base = nn.Linear(32, 32)
    x = torch.randn(16, 32) * 30
    lin, twin = copy.deepcopy(base), copy.deepcopy(base)
    h, h_twin = apply_simulated(lin, SR, seed=5), apply_simulated(twin, SR, seed=5)
    assert torch.equal(lin(x), twin(x))
    h.pop_stats()
    with h.evaluation():
        e1 = lin(x)
        e1b = lin(x)
    with h.evaluation():
        e2 = lin(x)
    assert torch.equal(e1, e2) and not torch.equal(e1, e1b)  # restarts on entry, advances within
    assert all(v == 0.0 for v in h.pop_stats().values())  # no telemetry from evaluation
    assert h.state_dict() == h_twin.state_dict()
    assert torch.equal(lin(x), twin(x))  # the training stream did not move
    assert not torch.equal(e1, lin(x))


def test_telemetry_counts_from_compiled_backward_accumulate() -> None:
    """Grad counts arrive through the telemetry leaf's gradient: they add up over backward calls and reset."""
    torch.manual_seed(13)
    lin = nn.Linear(8, 8)
    h = apply_simulated(lin, "E2M1", operands=("grad",))
    x = torch.randn(4, 8)
    for _ in range(3):
        lin(x).backward(torch.full((4, 8), 100.0))  # all overflow E2M1 (max 3)
    assert h.pop_stats()["grad_overflow_frac"] == 1.0
    lin(x).backward(torch.full((4, 8), 0.01))  # all underflow
    assert h.pop_stats() == {"grad_overflow_frac": 0.0, "grad_underflow_frac": 1.0}


# ----------------------------------------------------------------------------------------------------------
# torch.compile: zero graph breaks, no recompiles, compiled == eager bit for bit
# ----------------------------------------------------------------------------------------------------------


def _stack(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32, bias=False), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 8)
    )


GRAPH_CASES = [  # every rounding, every scaling, every operand set, telemetry on
    ("E4M3", ("act", "weight", "grad")),
    ("E5M2:rounding=stochastic", ("act", "weight", "grad")),
    ("E4M3:rounding=truncate,scaling=tensor", ("act", "weight")),
    ("E4M3:scaling=block:8,rounding=stochastic", ("grad",)),
    ("E8M10:subnormals=false", ("weight", "grad")),
    ("E3M2:special=finite,rounding=stochastic", ("act", "grad")),
    ("fp32", ("act", "weight", "grad")),
]


@pytest.mark.parametrize(("spec", "operands"), GRAPH_CASES)
def test_zero_graph_breaks(spec: str, operands: tuple[str, ...]) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _stack()
    handle = apply_simulated(model, spec, operands=operands, seed=1)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)  # raises on any graph break
    for step in range(2):
        compiled(torch.randn(5, 7, 16)).square().sum().backward()
        assert counter.frame_count == 1, step  # the counters are tensors: no recompile per step
    stats = handle.pop_stats()
    assert set(stats) == {f"{k}_{w}_frac" for k in operands for w in ("overflow", "underflow")}
    with handle.evaluation(), torch.no_grad():
        compiled(torch.randn(5, 7, 16))
    compiled(torch.randn(5, 7, 16)).sum().backward()
    assert counter.frame_count <= 2  # evaluation may add one graph, and training reuses its own


@pytest.mark.parametrize(
    ("spec", "operands"), [GRAPH_CASES[3], ("E5M2:scaling=tensor", ("act", "weight", "grad"))]
)
def test_zero_graph_breaks_dynamic_shapes(spec: str, operands: tuple[str, ...]) -> None:
    """dynamic=True: one graph serves every batch size (scaled grad formats once failed to trace here)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _stack()
    handle = apply_simulated(model, spec, operands=operands, seed=1)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for n in (5, 7, 9):
        compiled(torch.randn(n, 3, 16)).square().sum().backward()
    assert counter.frame_count == 1
    assert handle.state_dict()["calls"] == 9 or "stochastic" not in spec


def test_compiled_quantizer_is_bit_identical_to_eager() -> None:
    """Inductor (CPU) compiles the same function: same bits and counts, each rounding branch covered."""
    from test_quantize import generic_inputs_f32

    from robustprec.numerics.quantize import quant_plan, quantize_values

    specs = ["E4M3:scaling=block:7,rounding=stochastic", "bf16", "fp8_e4m3:overflow=nan,rounding=truncate",
             "E3M4:subnormals=false,rounding=stochastic", "E5M2:scaling=tensor,rounding=truncate"]  # fmt: skip
    plans = [quant_plan(parse_format(s)) for s in specs]

    def all_formats(x: torch.Tensor, key: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [quantize_values(x, p, key + i, True) for i, p in enumerate(plans)]

    x = torch.from_numpy(generic_inputs_f32(parse_format("E4M3"), seed=0)[: 700 * 100]).reshape(700, 100)
    key = torch.tensor(7)
    got = torch.compile(all_formats, fullgraph=True)(x, key)
    for spec, (q, c), (q0, c0) in zip(specs, got, all_formats(x, key), strict=True):
        assert torch.equal(q.view(torch.int32), q0.view(torch.int32)), spec
        assert torch.equal(c, c0) and c0[:2].sum() > 0, spec


def test_compiled_sim_stack_is_bit_identical_to_eager() -> None:
    """Inductor (CPU), a stochastic-rounding stack over two steps: forward outputs, forward telemetry and the last
    layer's weight gradient (its operands do not depend on GEMM summation order) are bit-identical. Earlier
    layers' gradients go through GEMMs whose summation order inductor may change (their layouts differ), and
    stochastic rounding turns a last-bit difference into a different rounding; they are compared loosely."""
    fmts = {"act": "E4M3:rounding=stochastic,scaling=block:8", "weight": "fp8_e4m3:scaling=tensor",
            "grad": "E5M2:rounding=stochastic"}  # fmt: skip
    runs = []
    for compile_it in (False, True):
        torch._dynamo.reset()
        model = _stack()
        handle = apply_simulated(model, fmts, seed=4)
        fn = torch.compile(model, fullgraph=True) if compile_it else model
        res = []
        for step in range(2):
            x = torch.randn(6, 9, 16, generator=torch.Generator().manual_seed(step)) * 50
            model.zero_grad()
            out = fn(x)
            out.square().sum().backward()
            res.append((out.detach(), model[4].weight.grad.clone(), model[0].weight.grad.clone()))
        runs.append((res, handle.pop_stats()))
    (eager, s_eager), (comp, s_comp) = runs
    for (out, dw_last, dw_first), (out_c, dw_last_c, dw_first_c) in zip(eager, comp, strict=True):
        assert torch.equal(out, out_c) and torch.equal(dw_last, dw_last_c)
        torch.testing.assert_close(dw_first_c, dw_first, rtol=0.3, atol=0.05 * float(dw_first.abs().max()))
    for key, value in s_eager.items():
        assert value == s_comp[key] if key.startswith(("act", "weight")) else abs(value - s_comp[key]) < 1e-3
    assert s_eager["act_underflow_frac"] > 0


def test_config_gemm_output() -> None:
    from robustprec.config import load_config
    from robustprec.errors import ConfigError

    assert load_config(None, []).numerics.gemm_output == "fp32"
    assert load_config(None, ["numerics.gemm_output=bf16"]).numerics.gemm_output == "bf16"
    with pytest.raises((ConfigError, ValueError)):
        load_config(None, ["numerics.gemm_output=fp16"])


def test_counters_follow_the_module_to_another_dtype_and_device() -> None:
    """`.to()` after conversion (as DeepSpeed and the plain loop do) moves the shared state with the weights
    (a real device move is in tests/test_cuda_numerics.py); a dtype cast leaves it alone."""
    torch.manual_seed(14)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    handle = apply_simulated(model, "E2M1:rounding=stochastic", seed=2)
    st = model[0]._sim
    model.double()
    assert (
        st.calls.dtype == torch.int64 and st.counts.dtype == torch.float64 and st.calls.device.type == "cpu"
    )
    model(torch.randn(3, 8, dtype=torch.float64) * 10).sum().backward()
    stats = handle.pop_stats()
    assert stats["act_overflow_frac"] > 0 and handle.state_dict()["calls"] == 2
    model.to(torch.device("meta"))
    assert st.calls.device.type == "meta" and st.sink.device.type == "meta"
    assert st.sink.is_leaf and st.sink.requires_grad
