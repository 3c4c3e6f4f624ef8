"""Simulated GEMMs: exactness against native Linear and hand-computed quantized forward/backward, telemetry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustprec.numerics.formats import parse_format, value_set
from robustprec.numerics.quantize import quantize
from robustprec.numerics.simulated import SimLinear, _tf32, apply_simulated, exact_in_tf32


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
    assert stats["grad_overflow_frac"] == 0.0  # no backward yet
    out.sum().backward()
    stats = handle.pop_stats()
    assert stats["act_overflow_frac"] == 0.0  # reset by the previous pop
    assert stats["grad_underflow_frac"] == 0.0 and stats["grad_overflow_frac"] == 0.0  # grads are all ones
    lin(torch.randn(32, 16) * 1e-3)
    stats = handle.pop_stats()
    assert stats["act_underflow_frac"] > 0.9 and stats["act_overflow_frac"] == 0.0
    assert stats["weight_underflow_frac"] > 0  # default init weights ~U(-0.25, 0.25)
    handle.stats_enabled = False
    lin(x)
    assert handle.pop_stats()["act_overflow_frac"] == 0.0


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


def test_stochastic_rounding_uses_generator() -> None:
    torch.manual_seed(8)
    base = nn.Linear(32, 32)
    x = torch.randn(64, 32)
    outs = []
    for seed in (0, 0, 1):
        lin = copy.deepcopy(base)
        apply_simulated(lin, "E4M3:rounding=stochastic", generator=torch.Generator().manual_seed(seed))
        outs.append(lin(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    nearest = copy.deepcopy(base)
    apply_simulated(nearest, "E4M3")
    assert not torch.equal(outs[0], nearest(x))
    # unbiased: averaging many stochastic forwards approaches the unquantized product
    lin = copy.deepcopy(base)
    apply_simulated(
        lin, "E4M3:rounding=stochastic", operands=("weight",), generator=torch.Generator().manual_seed(2)
    )
    mean = torch.stack([lin(x) for _ in range(200)]).mean(0)
    exact = base(x)
    err_sr = (mean - exact).abs().mean()
    err_rn = (nearest(x) - exact).abs().mean()
    assert err_sr < err_rn / 3


@pytest.mark.parametrize(
    "spec", ["E4M3", "fp8_e4m3", "E5M2", "E5M7", "E8M3", "E8M6", "bf16", "fp16", "E3M10", "E8M10"]
)
def test_formats_taken_to_tf32_hold_only_tf32_numbers(spec):
    """Oracle: a float32 number is a TF32 number iff its 13 low mantissa bits are zero. Every value of every
    format `exact_in_tf32` accepts, times powers of two (tensor scaling), must pass."""
    fmt = parse_format(spec)
    assert exact_in_tf32(fmt)
    vals = value_set(fmt)
    vals = torch.cat([vals, -vals])
    for shift in (-20, 0, 7):
        scaled = vals * 2.0**shift
        # float32 normals (the documented exception is float32 denormals, which tensor cores may flush)
        scaled = scaled[(scaled.abs() >= 2.0**-126) & (scaled.abs() < 2.0**128)]
        assert scaled.numel() > 0
        bits = scaled.float().view(torch.int32)
        assert int((bits & 0x1FFF).count_nonzero()) == 0


@pytest.mark.parametrize("spec", ["E5M11", "E8M12", "fp32"])
def test_wider_mantissas_are_refused_and_do_hold_non_tf32_numbers(spec):
    fmt = parse_format(spec)
    assert not exact_in_tf32(fmt)
    vals = (
        value_set(fmt).float()
        if fmt.exp_bits + fmt.man_bits <= 20
        else torch.tensor([1.0 + 2.0**-fmt.man_bits])
    )
    assert int((vals.view(torch.int32) & 0x1FFF).count_nonzero()) > 0


def test_tf32_only_for_gemms_whose_both_operands_are_quantized():
    lin = nn.Linear(8, 8)
    for operands, expect in [
        (["act", "weight", "grad"], (True, True, True)),
        (["act", "weight"], (True, False, False)),
        (["weight", "grad"], (False, True, False)),
        (["act", "grad"], (False, False, True)),
    ]:
        m = copy.deepcopy(lin)
        apply_simulated(m, "E4M3", operands=operands)
        st = m._sim
        assert (st.tf32_fwd, st.tf32_dgrad, st.tf32_wgrad) == expect
    m = copy.deepcopy(lin)
    apply_simulated(m, "E5M11")
    assert not (m._sim.tf32_fwd or m._sim.tf32_dgrad or m._sim.tf32_wgrad)


def test_tf32_switch_is_restored_even_on_error():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with pytest.raises(RuntimeError), _tf32(True):
        assert matmul.fp32_precision == "tf32"
        raise RuntimeError("boom")
    assert matmul.fp32_precision == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tf32_gemms_match_float64_like_the_float32_path():
    """On CUDA the TF32 path must be as close to a float64 oracle as the float32 GEMM is (exact products)."""
    torch.manual_seed(0)
    lin = nn.Linear(256, 128).cuda()
    apply_simulated(lin, "E5M7")
    x = torch.randn(64, 256, device="cuda", requires_grad=True)
    y = lin(x)
    xq = quantize(x.detach(), parse_format("E5M7")).double()
    wq = quantize(lin.weight.detach(), parse_format("E5M7")).double()
    ref = xq @ wq.T + lin.bias.detach().double()
    assert torch.allclose(y.double(), ref, rtol=0, atol=1e-4)
    before = torch.backends.cuda.matmul.fp32_precision
    y.sum().backward()
    assert torch.backends.cuda.matmul.fp32_precision == before
    g = quantize(torch.ones_like(y), parse_format("E5M7")).double()
    assert torch.allclose(x.grad.double(), g @ wq, rtol=0, atol=1e-4)
