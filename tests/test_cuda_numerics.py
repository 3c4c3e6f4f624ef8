"""The numerics on a CUDA GPU (marker `cuda`, skipped without one): run with ``jobs/gpu/cuda_suite.sh``.

Compiled (Inductor/Triton) = eager bit for bit for every format family, CUDA = CPU bit for bit (stochastic
rounding included: its bits are counter-based), the GEMM carriers (bf16 with out_dtype, TF32, fp32) within the
float32-accumulation bound, zero graph breaks, and the stochastic-rounding properties.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from test_quantize import edge_values, generic_inputs_f32, loguniform_f32, neighbours, random_bits_f32
from test_simulated import GRAPH_CASES, SR, _stack, check_carrier_gemms, gemm_bound
from torch import nn

from robustprec.numerics.formats import parse_format
from robustprec.numerics.quantize import quant_plan, quantize, quantize_values, quantize_with_stats
from robustprec.numerics.simulated import apply_simulated, carrier_mm

DEV = os.environ.get("ROBUSTPREC_CUDA_SUITE_DEVICE", "cuda")  # "cpu": dry-run the suite's code paths on a CPU
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
]

FAMILIES = [
    "E4M3", "E5M2", "bf16", "fp16", "fp8_e4m3", "fp8_e4m3:overflow=nan", "E5M2:overflow=saturate", "float4_e2m1fn",
    "float6_e3m2fn",
    "E8M3", "E8M10", "fp32", "fp32:subnormals=false", "E3M4:subnormals=false", "E4M3:rounding=truncate",
    "E5M2:rounding=stochastic", "E3M4:subnormals=false,rounding=stochastic", "E4M3:scaling=tensor",
    "fp8_e4m3:scaling=block:32", "E4M3:scaling=block:7,rounding=stochastic", "E8M3:scaling=tensor,rounding=truncate",
]  # fmt: skip


def dense_inputs(spec: str, seed: int = 0) -> torch.Tensor:
    """Random bit patterns, log-uniform values around the range, midpoints and neighbours, edge values."""
    fmt = parse_format(spec).replace(scaling="none")
    if fmt.exp_bits + fmt.man_bits <= 16:
        x = generic_inputs_f32(fmt, seed)
    else:
        rng = np.random.default_rng(seed)
        x = np.concatenate(
            [random_bits_f32(100_000, rng), loguniform_f32(100_000, rng, -160, 130), edge_values(fmt)]
        )
    n = x.size // 100 * 100
    return torch.from_numpy(x[:n]).reshape(-1, 100)


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    nan = torch.isnan(want)
    if not torch.equal(torch.isnan(got), nan):
        return False
    return bool(torch.equal(got.view(torch.int32)[~nan], want.view(torch.int32)[~nan]))


def test_compiled_equals_eager_equals_cpu() -> None:
    """Every format family, one compiled graph (one compile): Triton = CUDA eager = CPU, bits and counts."""
    plans = {spec: quant_plan(parse_format(spec)) for spec in FAMILIES}
    inputs = {spec: dense_inputs(spec) for spec in FAMILIES}
    key = torch.tensor(123, dtype=torch.int64)

    def all_formats(
        xs: dict[str, torch.Tensor], k: torch.Tensor
    ) -> dict[tuple[str, bool], tuple[torch.Tensor, ...]]:
        """With and without counts: without, fp8 formats round by the float8 cast (`QuantPlan.native`)."""
        return {
            (s, stats): quantize_values(xs[s], plans[s], k + i, stats)  # type: ignore[misc]
            for i, s in enumerate(FAMILIES)
            for stats in (True, False)
        }

    assert any(p.native is not None for p in plans.values())
    want = all_formats(inputs, key)
    cuda_inputs = {s: x.to(DEV) for s, x in inputs.items()}
    eager = all_formats(cuda_inputs, key.to(DEV))
    torch._dynamo.reset()
    compiled = torch.compile(all_formats, fullgraph=True)(cuda_inputs, key.to(DEV))
    bad = []
    for spec, stats in want:
        c, cpu_values = want[spec, stats][1], want[spec, True][0]  # every mode = the counting (integer) path
        for name, (qd, cd) in (("CUDA eager", eager[spec, stats]), ("compiled", compiled[spec, stats])):
            same_counts = cd is None if c is None else torch.equal(cd.cpu(), c)
            if not (same_bits(qd.cpu(), cpu_values) and same_counts):
                bad.append(f"{spec} (counts {stats}): {name} != CPU")
    assert not bad, bad


@pytest.mark.parametrize(
    ("spec", "dtype"),
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp8_e5m2", torch.float8_e5m2)],
)
def test_bit_exact_against_cuda_casts(spec: str, dtype: torch.dtype) -> None:
    x = dense_inputs(spec).to(DEV)
    fin = torch.isfinite(x)
    got = quantize(x, spec)
    want = x.to(dtype).float()
    assert same_bits(got[fin], want[fin])


def test_e4m3fn_against_cuda_cast() -> None:
    x = dense_inputs("fp8_e4m3").to(DEV)
    real = x.to(torch.float8_e4m3fn).float()
    overflow = "nan" if torch.isnan(real[x.abs() > 1e4]).all() else "saturate"
    got = quantize_with_stats(x, f"fp8_e4m3:overflow={overflow}")[0]  # the integer path: saturate is the cast
    fin = torch.isfinite(x)
    assert same_bits(got[fin], real[fin])


@pytest.mark.parametrize(
    ("spec", "carrier", "gemm_output"),
    [("E4M3", "bf16", "fp32"), ("E8M3:scaling=tensor", "bf16", "fp32"), ("E5M2", "bf16", "bf16"),
     ("E5M10", "tf32", "fp32"), ("E8M10", "tf32", "fp32"), ("E5M11", "fp32", "fp32")],
)  # fmt: skip
def test_carriers_within_bound_on_cuda(spec: str, carrier: str, gemm_output: str) -> None:
    assert set(check_carrier_gemms(spec, DEV, gemm_output).values()) == {carrier}


def test_carriers_really_use_tensor_cores() -> None:
    """Negative controls: unquantized float32 operands break the bound on the bf16 and TF32 carriers (so they
    do run in reduced precision), and stay within it on the fp32 carrier."""
    g = torch.Generator(device=DEV).manual_seed(0)
    # small K: the bound (∝ K) is far below the error of rounding the operands to TF32 or bf16
    a = torch.randn(256, 64, device=DEV, generator=g)
    b = torch.randn(64, 128, device=DEV, generator=g)
    bound = gemm_bound(a.double(), b.double())
    exact = a.double() @ b.double()
    for carrier, within in [("bf16", False), ("tf32", False), ("fp32", True)]:
        err = (carrier_mm(a, b, carrier).double() - exact).abs()
        assert bool((err <= bound).all()) == within, carrier


def test_compiled_carriers_within_bound() -> None:
    """The compiled SimLinear (mm with out_dtype, the TF32 op) gives the same bounded result as eager."""
    for spec in ["E4M3", "E8M10"]:
        torch.manual_seed(0)
        lin = nn.Linear(512, 256).to(DEV)
        apply_simulated(lin, spec)
        x = torch.randn(4, 64, 512, device=DEV)
        torch._dynamo.reset()
        out = torch.compile(lin, fullgraph=True)(x)
        xq = quantize(x, spec).double().reshape(-1, 512)
        wq = quantize(lin.weight.detach(), spec).double()
        want = xq @ wq.T + lin.bias.detach().double()
        limit = gemm_bound(xq, wq.T) + 2.0**-24 * want.abs()
        assert ((out.double().reshape(-1, 256) - want).abs() <= limit).all(), spec


@pytest.mark.parametrize(("spec", "operands"), [GRAPH_CASES[i] for i in (0, 1, 3)])
def test_zero_graph_breaks_cuda(spec: str, operands: tuple[str, ...]) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    model = _stack().to(DEV)
    handle = apply_simulated(model, spec, operands=operands, seed=1)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for _ in range(2):
        compiled(torch.randn(5, 7, 16, device=DEV)).square().sum().backward()
    assert counter.frame_count == 1
    assert set(handle.pop_stats()) == {f"{k}_{w}_frac" for k in operands for w in ("overflow", "underflow")}


def test_compiled_stack_matches_eager_on_cuda() -> None:
    """Compiled vs eager stack. The GEMMs may sum in another order when compiled (other layouts), so results
    are compared to float32 accuracy; act rounds to nearest so that a last-bit difference rarely flips a
    rounding downstream (stochastic rounding is covered bit for bit by the quantizer tests above)."""
    fmts = {"act": "E4M3:scaling=block:8", "weight": "fp8_e4m3:scaling=tensor",
            "grad": "E5M2:rounding=stochastic"}  # fmt: skip
    runs = []
    for compile_it in (False, True):
        torch._dynamo.reset()
        model = _stack().to(DEV)
        handle = apply_simulated(model, fmts, seed=4)
        fn = torch.compile(model, fullgraph=True) if compile_it else model
        res = []
        for step in range(2):
            x = torch.randn(6, 9, 16, generator=torch.Generator().manual_seed(step)).to(DEV) * 50
            model.zero_grad()
            out = fn(x)
            out.square().sum().backward()
            res.append((out.detach(), model[4].weight.grad.clone()))
        runs.append((res, handle.pop_stats()))
    (eager, s_eager), (comp, s_comp) = runs
    for (out, dw), (out_c, dw_c) in zip(eager, comp, strict=True):
        torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dw_c, dw, rtol=1e-5, atol=1e-4)
    assert {k: v for k, v in s_eager.items() if not k.startswith("grad")} == {
        k: v for k, v in s_comp.items() if not k.startswith("grad")
    }


def test_stochastic_rounding_properties_on_cuda() -> None:
    fmt = parse_format("E4M3:rounding=stochastic")
    pts = np.array([1.0 + 1 / 32, 3.3, -0.07, 200.0, 2.0**-7 * 1.3, 2.0**-9 * 0.3, -(2.0**-8) * 0.7])
    pts = pts.astype(np.float32).astype(np.float64)
    n = 40_000
    x = torch.from_numpy(pts).float().repeat(n).to(DEV)
    q = quantize(x, fmt, key=9)
    assert torch.equal(q, quantize(x, fmt, key=9)) and not torch.equal(q, quantize(x, fmt, key=10))
    assert torch.equal(q.cpu(), quantize(x.cpu(), fmt, key=9))  # counter-based: the same bits on every device
    q = q.view(n, -1).double().cpu().numpy()
    lo, hi = neighbours(pts, fmt)
    assert np.all((np.abs(q) == lo) | (np.abs(q) == hi))
    p = (np.abs(pts) - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(q.mean(0) - pts) <= 6 * sigma), (q.mean(0) - pts, sigma)


def test_compiled_resume_and_evaluation_on_cuda() -> None:
    """A compiled stochastic-rounding run resumed from `state_dict` continues bit for bit; evaluation forwards
    leave the training stream where it was."""
    torch.manual_seed(3)
    base = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).to(DEV)
    xs = [torch.randn(32, 64, device=DEV) for _ in range(4)]

    def run(model: nn.Module, handle: object, steps: range, evaluate: bool) -> list[torch.Tensor]:
        fn = torch.compile(model, fullgraph=True)
        outs = []
        for s in steps:
            if evaluate:
                with handle.evaluation(), torch.no_grad():  # type: ignore[attr-defined]
                    fn(xs[s])
            outs.append(fn(xs[s]).detach())
        return outs

    torch._dynamo.reset()
    ref = copy.deepcopy(base)
    want = run(ref, apply_simulated(ref, SR, seed=7), range(4), evaluate=False)
    a = copy.deepcopy(base)
    ha = apply_simulated(a, SR, seed=7)
    got = run(a, ha, range(2), evaluate=True)
    b = copy.deepcopy(base)
    hb = apply_simulated(b, SR, seed=0)
    hb.load_state_dict(ha.state_dict())
    got += run(b, hb, range(2, 4), evaluate=True)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_converted_on_cpu_then_moved_to_cuda() -> None:
    """The plain benchmark loop converts on the CPU and moves the model afterwards: the counters follow."""
    torch.manual_seed(5)
    model = _stack()
    handle = apply_simulated(model, "E4M3:rounding=stochastic", seed=1)
    model.to(DEV)
    fn = torch.compile(model, fullgraph=True)
    for _ in range(2):
        fn(torch.randn(4, 16, device=DEV)).square().sum().backward()
    assert handle.state_dict()["calls"] == 6
    assert set(handle.pop_stats()) == {
        f"{k}_{w}_frac" for k in ("act", "weight", "grad") for w in ("overflow", "underflow")
    }


@pytest.mark.parametrize(
    "backend", ["sim:E4M3", "sim:mxfp8", "sim:mxfp4", "sim:nvfp4", "sim:fp8_tensorwise", "sim:fp8_block"]
)
def test_trainer_compile_probe_passes_on_cuda(backend: str) -> None:
    # the probe the trainer runs before it compiles (counters on, bf16 base): it must build and agree with eager;
    # with a ReLU between its linears Triton could not build mxfp8's kernel (H200, torch 2.11)
    from robustprec.config import load_config
    from robustprec.numerics.backends import make_backend
    from robustprec.train.run import _check_compiled_gradients

    cfg = load_config(None, [f"numerics.backend={backend}", "train.compile=true"])
    device = torch.device(DEV)
    _check_compiled_gradients(cfg, make_backend(cfg.numerics, device), device)


def test_fp8_tensorwise_operands_are_torchaos_on_cuda() -> None:
    # issue 14: sim:fp8_tensorwise's GEMM operands are the real fp8 backend's (torchao's dynamic cast on the device),
    # element for element with the same inverse scale, eager and compiled
    from torchao.float8.float8_scaling_utils import hp_tensor_to_float8_dynamic
    from torchao.float8.float8_training_tensor import LinearMMConfig

    from robustprec.numerics.recipes import recipe_operand, recipe_plan

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(256, 512, generator=gen) * torch.exp(1.5 * torch.randn(256, 512, generator=gen))
    for spec, dtype, scale in (("fp8_tensorwise:elem=e4m3", torch.float8_e4m3fn, 1.0),
                               ("fp8_tensorwise:elem=e5m2", torch.float8_e5m2, 1e-6)):  # fmt: skip
        t = (x * scale).to(DEV)
        ref = hp_tensor_to_float8_dynamic(t, dtype, LinearMMConfig())
        plan = recipe_plan(spec)
        torch._dynamo.reset()  # one graph per spec: a recompile would make the plan's ints symbolic
        for quantizer in (recipe_operand, torch.compile(recipe_operand, fullgraph=True, dynamic=False)):
            vals, post, _ = quantizer(t, plan)
            assert torch.equal(vals, ref._data.float()), spec
            assert torch.equal(post.expand(t.shape[0], 1), (1 / ref._scale).expand(t.shape[0], 1)), spec


RECIPE_SPECS = [
    *(f"mxfp4:scale={m}" for m in ("floor", "ceil", "even", "rceil")), "mxfp8", "mxfp8_e5m2", "mxfp6_e2m3",
    "mxfp6_e3m2", "nvfp4", "fp8_block", "fp8_block:pow2=true", "fp8_tensorwise", "fp8_rowwise",
]  # fmt: skip


def test_recipe_operands_compiled_equal_eager_equal_cpu() -> None:
    """Every recipe's GEMM operand (values, output factors, counters) in one compiled graph: Triton = CUDA eager =
    CPU, bit for bit, round-to-nearest and stochastic (the recipes' own element rounding)."""
    from robustprec.numerics.recipes import recipe_operand, recipe_plan

    cases = [(spec, sr) for spec in RECIPE_SPECS for sr in (False, True)]
    plans = {(spec, sr): recipe_plan(spec, sr) for spec, sr in cases}
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(512, 256, generator=gen) * torch.exp(2 * torch.randn(512, 256, generator=gen))
    x[:128, :32] = 0.0  # all-zero blocks of every recipe
    x[128:256] *= 2.0**-120  # blocks whose scale clamps

    def all_recipes(x: torch.Tensor, key: torch.Tensor, stats: bool) -> list[tuple[torch.Tensor, ...]]:
        return [recipe_operand(x, plans[c], key + i if c[1] else None, stats) for i, c in enumerate(cases)]

    want = all_recipes(x, torch.tensor(7), True)
    bad = []
    for stats in (True, False):  # without counts, FP8 elements round by the float8 cast (`QuantPlan.native`)
        eager = all_recipes(x.to(DEV), torch.tensor(7, device=DEV), stats)
        torch._dynamo.reset()
        compiled = torch.compile(all_recipes, fullgraph=True, dynamic=False)(
            x.to(DEV), torch.tensor(7, device=DEV), stats
        )
        bad += [
            f"{case} (counts {stats}): {name} != CPU in {part}"
            for case, w, e, c in zip(cases, want, eager, compiled, strict=True)
            for name, got in (("CUDA eager", e), ("compiled", c))
            for part, a, b in zip(
                ("values", "factors", "counts"), got, w if stats else (*w[:2], None), strict=True
            )
            if not _same_or_both_none(a, b)
        ]
    assert not bad, bad


def _same_or_both_none(got: torch.Tensor | None, want: torch.Tensor | None) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return same_bits(got.float().cpu(), want.float())
