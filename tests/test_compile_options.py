"""`train.compile_options`: Inductor options reach the model's compile and the compiled-gradient probe; bad ones
are refused before anything runs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from robustprec.config import NumericsConfig, load_config
from robustprec.errors import ConfigError
from robustprec.numerics.backends import make_backend
from robustprec.numerics.compile_check import compiled_gradient_error
from robustprec.sweep.preflight import check_configs
from robustprec.train.loop import train
from robustprec.train.run import compiler_failures_as_config_errors
from tests.conftest import tiny_overrides


def _traced(directory) -> set[str]:
    """The graphs Inductor traced into `directory` (`trace.enabled`), as forward/backward/inference kinds."""
    root = directory / "torchinductor"
    return {p.name.split("_")[-2] for p in root.iterdir()} if root.is_dir() else set()


def test_options_reach_the_probe(tmp_path):
    backend = make_backend(NumericsConfig(backend="sim:E4M3"), torch.device("cpu"))
    options = {"trace.enabled": True, "trace.debug_dir": str(tmp_path)}
    err = compiled_gradient_error(lambda m: backend.wrap(m, seed=0), torch.device("cpu"), options=options)
    assert err <= 1e-6
    assert _traced(tmp_path) == {"forward", "backward"}


def test_options_reach_the_model_and_leave_its_numbers_alone(tmp_path):
    sets = {"numerics.backend": "fp32", "train.steps": 2, "train.eval_interval": 2, "train.compile": True}
    plain = train(load_config(None, tiny_overrides(**sets)), tmp_path / "plain")
    trace = tmp_path / "trace"
    # the graph is the plain run's: without Inductor's cache it is compiled (and traced) again
    options = {"trace.enabled": True, "trace.debug_dir": str(trace), "fx_graph_cache": False}
    traced = train(
        load_config(None, tiny_overrides(**sets, **{"train.compile_options": options})), tmp_path / "t"
    )
    assert {"forward", "backward"} <= _traced(trace)
    losses = [
        pq.read_table(tmp_path / n / "curve.parquet").column("loss").to_pylist() for n in ("plain", "t")
    ]
    # a fresh compile of the same graphs (a cached one may come from another test's shapes): the same numbers up to
    # the order of float32 sums (in the whole suite under bf16: 4e-6 of the eval loss)
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and len(losses[0]) == 2
    assert traced["final_eval_loss"] == pytest.approx(plain["final_eval_loss"], rel=1e-5)


def test_a_model_the_compiler_cannot_build_is_a_config_error_naming_the_compiler(tmp_path):
    # a real compiler failure: Inductor's C++ compiler is a path that does not exist (no cached graph to reuse)
    options = {"cpp.cxx": ["/nonexistent/c++"], "fx_graph_cache": False}
    sets = {
        "numerics.backend": "fp32",
        "train.steps": 2,
        "train.compile": True,
        "train.compile_options": options,
    }
    with pytest.raises(ConfigError) as caught:
        train(load_config(None, tiny_overrides(**sets)), tmp_path / "run")
    message = str(caught.value)
    assert "No working C++ compiler" in message and "train.compile_options" in message
    assert "\n" not in message and not (tmp_path / "run" / "summary.json").exists()


def test_running_out_of_memory_while_compiling_stays_a_retried_failure():
    # dynamo wraps whatever the compiler raises; an allocation that failed while autotuning (beside packed trials)
    # says nothing about the settings, and a retry may succeed
    cfg = load_config(None, tiny_overrides(**{"train.compile": True}))
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    failure = torch._dynamo.exc.BackendCompilerFailed(lambda *a: None, oom, None)
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed), compiler_failures_as_config_errors(cfg):
        raise failure
    with pytest.raises(ConfigError, match="PassManager::run failed"), compiler_failures_as_config_errors(cfg):
        raise torch._dynamo.exc.BackendCompilerFailed(
            lambda *a: None, RuntimeError("PassManager::run failed"), None
        )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"train.compile_options": {"realize_opcount_threshold": 1000}}, "set train.compile: true"),
        (
            {"train.compile": True, "train.compile_options": {"realize_opcount": 1}},
            "'realize_opcount' is not",
        ),
        ({"train.compile": True, "train.compile_options": {"triton": 1}}, "'triton' is not an option"),
    ],
)
def test_bad_compile_options_are_refused_before_anything_runs(sets, message):
    with pytest.raises(ConfigError, match=message):
        check_configs([load_config(None, tiny_overrides(**sets))])


def test_inductor_options_pass_the_preflight():
    options = {"realize_opcount_threshold": 1000, "triton.cudagraphs": False}
    check_configs(
        [load_config(None, tiny_overrides(**{"train.compile": True, "train.compile_options": options}))]
    )
