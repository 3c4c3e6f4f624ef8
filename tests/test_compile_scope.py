"""`train.compile_scope: blocks`: identical transformer blocks share one compiled graph and give eager's numbers."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
import torch
from torch._dynamo.utils import counters

from robustprec.config import NumericsConfig, load_config
from robustprec.model.presets import PRESETS
from robustprec.model.transformer import build_model
from robustprec.numerics.backends import make_backend
from robustprec.train.callbacks import Callbacks
from robustprec.train.evaluation import evaluate
from robustprec.train.loop import train
from robustprec.train.monitors import ActivationTelemetry
from robustprec.train.run import compile_in_place, compile_model, setup_run
from tests.conftest import tiny_overrides


def _loss_and_grads(scope: str | None) -> tuple[float, list[torch.Tensor], torch.nn.Module]:
    spec = dataclasses.replace(PRESETS["tiny"], n_layers=4, vocab_size=256)
    model = build_model(spec, seed=0)
    backend = make_backend(NumericsConfig(backend="sim:E4M3"), torch.device("cpu"))
    wrapped = backend.wrap(model, seed=0)
    backend.count_numerics(False)
    if scope is not None:
        compile_in_place(model, scope)
    idx = torch.randint(0, spec.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    loss = wrapped(idx, idx)["loss"]
    loss.backward()
    return float(loss), [p.grad.clone() for p in model.parameters()], model


def test_blocks_share_one_graph_and_match_eager():
    eager_loss, eager_grads, _ = _loss_and_grads(None)
    torch._dynamo.reset()
    counters.clear()
    loss, grads, model = _loss_and_grads("blocks")
    # four compiled blocks (not the model) sharing one graph, and the head's graph: compile time does not grow
    # with depth, and the float32 logits and loss do not run eager
    assert model._compiled_call_impl is None
    assert all(b._compiled_call_impl is not None for b in model.blocks) and len(model.blocks) == 4
    assert counters["stats"]["unique_graphs"] == 2
    assert "head" in vars(model)  # the compiled head stands in for the method
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    scale = max(float(g.abs().max()) for g in eager_grads)
    assert max(float((g - e).abs().max()) for g, e in zip(grads, eager_grads, strict=True)) <= 1e-4 * scale


@pytest.mark.slow
def test_block_compiled_run_gives_the_eager_losses(tmp_path):
    sets = {"numerics.backend": "sim:E4M3", "train.steps": 6, "train.eval_interval": 6}
    train(load_config(None, tiny_overrides(**sets)), tmp_path / "eager")
    blocks = {"train.compile": True, "train.compile_scope": "blocks"}
    train(load_config(None, tiny_overrides(**sets, **blocks)), tmp_path / "blocks")
    a, b = (pq.read_table(tmp_path / n / "curve.parquet").to_pydict() for n in ("eager", "blocks"))
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert b["eval_loss"][-1] == pytest.approx(a["eval_loss"][-1], rel=1e-4)


def test_the_ninth_configuration_in_one_process_still_compiles():
    # a Ray actor runs trials one after another: past dynamo's per-frame recompile limit (8) the model's forward ran
    # eagerly from the ninth configuration on; the trainer starts each trial's compile afresh
    spec = dataclasses.replace(PRESETS["tiny"], n_layers=1, vocab_size=256)
    idx = torch.randint(0, spec.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    for i in range(9):  # nine configurations: the linears of each model are of a class of their own
        model = build_model(spec, seed=0)
        kind = type(f"Linear{i}", (torch.nn.Linear,), {})
        for m in model.modules():
            if type(m) is torch.nn.Linear:
                m.__class__ = kind
        model.compile(backend="eager")
        model(idx, idx)
    cfg = load_config(None, tiny_overrides(**{"train.compile": True, "numerics.backend": "bf16"}))
    backend = make_backend(cfg.numerics, torch.device("cpu"))
    model = build_model(spec, seed=0)
    wrapped = backend.wrap(model, seed=0)
    counters.clear()
    compile_model(cfg, backend, model, torch.device("cpu"))
    wrapped(idx, idx)
    assert counters["stats"]["unique_graphs"] == 1


def test_evaluation_hooks_do_not_recompile_each_block(tmp_path):
    # the max-attention-logit hooks once indexed a tensor by their layer number: each block compiled on its own
    # recompiled per layer, and past dynamo's limit of 8 the deeper blocks ran eagerly
    sets = {"train.eval_sequences": 4, "model.n_layers": 10}
    eager = setup_run(load_config(None, tiny_overrides(**sets)), tmp_path / "eager")
    expected = evaluate(eager, Callbacks([ActivationTelemetry(eager)]))
    blocks = {"train.compile": True, "train.compile_scope": "blocks"}
    run = setup_run(load_config(None, tiny_overrides(**sets, **blocks)), tmp_path / "blocks")
    counters.clear()
    row = evaluate(run, Callbacks([ActivationTelemetry(run)]))
    assert counters["stats"]["unique_graphs"] == 2  # a block with its hook, and the head
    logits = [f"max_attn_logit_{i}" for i in range(10)]
    assert [row[k] for k in logits] == pytest.approx([expected[k] for k in logits], rel=1e-5)
