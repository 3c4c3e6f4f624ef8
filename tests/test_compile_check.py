"""The compiled-gradient probe: simulated backends pass it on CPU, and a compile that changes gradients fails it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustprec.config import load_config
from robustprec.errors import ConfigError
from robustprec.numerics.backends import make_backend
from robustprec.numerics.compile_check import TOLERANCE, check_compiled_gradients, compiled_gradient_error
from robustprec.train.run import _check_compiled_gradients

CPU = torch.device("cpu")


def _prepare(backend: str, base: str = "auto"):
    overrides = [f"numerics.backend={backend}", "numerics.exclude=[]", f"numerics.base={base}"]
    numerics = load_config(None, overrides).numerics
    return lambda m: make_backend(numerics, CPU).wrap(m, seed=3)


@pytest.mark.parametrize(
    ("backend", "base"),
    [
        ("sim:E4M3:rounding=stochastic", "auto"),
        ("sim:E4M3", "bf16"),
        ("sim:mxfp8", "fp32"),
        ("sim:nvfp4", "fp32"),
        ("sim:nvfp4:sr=false", "bf16"),
        ("sim:mxfp8", "bf16"),
        ("sim:nvfp4", "bf16"),
        ("sim:E2M1", "auto"),  # overflows to non-finite gradients: alike in both
    ],
)
def test_simulated_backends_compile_with_eager_gradients_on_cpu(backend, base):
    # the compiled graph reproduces eager bit for bit: same stochastic-rounding streams, same GEMMs; under the bf16
    # base too (before the backward functions turned autocast off, a compiled backward ran under the forward's
    # autocast: measured 3.6e-3 of the largest gradient for mxfp8, 6.2e-2 for nvfp4)
    assert compiled_gradient_error(_prepare(backend, base), CPU, compiler="aot_eager") == 0.0


class _HalvedWhenCompiled(nn.Linear):
    """A module whose compiled graph differs from its eager code: its weight counts half when traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * 0.5 if torch.compiler.is_compiling() else self.weight
        return F.linear(x, w, self.bias)


def _halve(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.__class__ = _HalvedWhenCompiled
    return model


def test_probe_catches_a_compile_that_changes_gradients():
    assert compiled_gradient_error(_halve, CPU, compiler="aot_eager") > TOLERANCE
    with pytest.raises(
        ConfigError, match=r"train.compile: torch .* wrong gradients .* set train.compile=false"
    ):
        check_compiled_gradients(_halve, CPU, "halved linears", compiler="aot_eager")


def _failing_compiler(gm, example_inputs):
    raise RuntimeError("PassManager::run failed")


def _failing_backward_compiler():
    """Compiles the forward, fails on the backward graph (compiled lazily, at the first backward)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    return aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm.forward), bw_compiler=_failing_compiler)


@pytest.mark.parametrize("failing", ["forward", "backward"])
def test_a_probe_the_compiler_cannot_build_is_a_one_line_config_error(failing):
    # as Triton's failure on an H200 (torch 2.11): the trainer's message names the compiler's error, no traceback
    compiler = _failing_compiler if failing == "forward" else _failing_backward_compiler()
    with pytest.raises(ConfigError) as err:
        check_compiled_gradients(_halve, CPU, "sim:mxfp8", compiler=compiler)
    message = str(err.value)
    assert "cannot compile sim:mxfp8 on cpu" in message and "PassManager::run failed" in message
    assert "\n" not in message and "TORCHDYNAMO_VERBOSE" not in message


def test_probe_still_compiles_after_many_configurations_in_one_process():
    # nine probes whose linears are of nine classes (a recompile each) before the halved one: past dynamo's
    # per-frame recompile limit (8) the probe would run eagerly and find nothing
    for i in range(9):
        kind = type(f"Linear{i}", (nn.Linear,), {})

        def convert(model: nn.Module, kind: type = kind) -> nn.Module:
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.__class__ = kind
            return model

        assert compiled_gradient_error(convert, CPU, compiler="eager") == 0.0
    assert compiled_gradient_error(_halve, CPU, compiler="aot_eager") > TOLERANCE


def test_trainer_probe_converts_every_probe_linear_whatever_the_model_globs():
    # the model's include glob matches none of the probe's modules: the probe converts them anyway
    cfg = load_config(
        None, ["numerics.backend=sim:E4M3", "numerics.include=[blocks.*]", "train.compile=true"]
    )
    backend = make_backend(cfg.numerics, CPU)
    _check_compiled_gradients(cfg, backend, CPU)  # inductor, as the trainer compiles; raises if it disagreed


@pytest.mark.parametrize(
    ("backend", "gemm_output", "base"),
    [("sim:fp8_tensorwise", "bf16", "bf16"), ("sim:mxfp8", "fp32", "bf16"), ("sim:E4M3", "bf16", "fp32")],
)
def test_inductor_keeps_the_bf16_roundings(backend, gemm_output, base):
    # Inductor, as the trainer compiles: the bf16 rounding of GEMM outputs (numerics.gemm_output=bf16) and of the
    # recipes' bf16 copies (base bf16) stay. Written as .to(bfloat16) read back in float32, a fused kernel dropped
    # them: 0.072 of the largest gradient (fp8_tensorwise, torch 2.13 and 2.11), 0.086 (mxfp8).
    cfg = load_config(None, [f"numerics.backend={backend}", f"numerics.gemm_output={gemm_output}",
                             f"numerics.base={base}", "numerics.exclude=[]"])  # fmt: skip
    torch._dynamo.reset()
    prepare = lambda m: make_backend(cfg.numerics, CPU).wrap(m, seed=3)  # noqa: E731
    assert compiled_gradient_error(prepare, CPU) == 0.0
