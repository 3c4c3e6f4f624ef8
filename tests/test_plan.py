"""The sweep planner: grid expansion, trial ids, validation, estimates, plan files. Pure Python, no Ray."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from robustprec.cli_display import print_plan, print_sweep_header
from robustprec.config import Config, load_config, validate_config
from robustprec.errors import ConfigError
from robustprec.sweep.plan import SweepPlan, expand_lrs, parameter_count, plan_sweep

REPO = Path(__file__).resolve().parent.parent
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]*")


def _cfg(**sets: object) -> Config:
    """A small base config with `sweep.*` and other dotted keys set (values as Python objects)."""
    data: dict = {
        "name": "t",
        "train": {"steps": 20, "seq_len": 32, "micro_batch_size": 4, "global_batch_size": 8},
    }
    for key, value in sets.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return validate_config(data)


GRID = {
    "sweep__seeds": 3,
    "sweep__lrs": [1e-3, 3e-3],
    "sweep__formats": ["fp32", "bf16", "sim:E4M3"],
    "sweep__models": ["tiny", "tiny-gpt2"],
    "sweep__axes": {"model.qk_norm": [True, False]},
}


def test_grid_is_the_cartesian_product(tmp_path):
    plan = plan_sweep(_cfg(**GRID), root=tmp_path)
    seeds, lrs, fmts, models = range(3), [1e-3, 3e-3], ["fp32", "bf16", "sim:E4M3"], ["tiny", "tiny-gpt2"]
    expected = set(itertools.product(models, fmts, lrs, seeds, [True, False]))
    got = [
        (c["model"]["preset"], c["numerics"]["backend"], c["optim"]["lr"], c["seed"], c["model"]["qk_norm"])
        for c in (t.config for t in plan.trials)
    ]
    assert len(plan.trials) == 3 * 2 * 3 * 2 * 2
    assert len(set(got)) == len(got) and set(got) == expected
    assert set(plan.axes) == {"seed", "optim.lr", "numerics.backend", "model.preset", "model.qk_norm"}
    assert plan.axes["seed"] == [0, 1, 2]


def test_trial_configs_validate_and_carry_their_axis_values(tmp_path):
    base = _cfg(**GRID, optim={"lr": 5e-4, "warmup_steps": 3})
    plan = plan_sweep(base, name="grid", root=tmp_path)
    assert Path(plan.root) == tmp_path / "grid"
    for t in plan.trials:
        cfg = validate_config(t.config)
        assert cfg.name == t.trial_id
        assert Path(t.out_dir) == tmp_path / "grid" / "trials" / t.trial_id
        assert cfg.seed == t.axes["seed"]
        assert cfg.optim.lr == t.axes["optim.lr"]
        assert cfg.numerics.backend == t.axes["numerics.backend"]
        assert cfg.model.preset == t.axes["model.preset"]
        assert cfg.model.qk_norm is t.axes["model.qk_norm"]
        # keys that are not swept keep the base config's values
        assert cfg.optim.warmup_steps == 3 and cfg.train.steps == 20


def test_unswept_axes_use_the_base_config(tmp_path):
    base = _cfg(
        sweep__seeds=[7, 11], numerics={"backend": "bf16"}, optim={"lr": 2e-3}, model={"preset": "nano"}
    )
    plan = plan_sweep(base, root=tmp_path)
    assert [t.config["seed"] for t in plan.trials] == [7, 11]
    assert {t.config["numerics"]["backend"] for t in plan.trials} == {"bf16"}
    assert {t.config["optim"]["lr"] for t in plan.trials} == {2e-3}
    assert {t.config["model"]["preset"] for t in plan.trials} == {"nano"}
    assert list(plan.axes) == ["seed"]
    assert all(set(t.axes) == {"seed"} for t in plan.trials)
    assert [t.trial_id for t in plan.trials] == ["s7", "s11"]


def test_ids_follow_the_documented_pattern(tmp_path):
    plan = plan_sweep(_cfg(**GRID), root=tmp_path)
    ids = set(plan.trial_ids)
    assert "tiny-bf16-lr3e-03-s0-qk_norm=true" in ids
    assert "tiny-gpt2-sim_E4M3-lr1e-03-s2-qk_norm=false" in ids
    # ordered by the axes: model outermost, then format, lr, seed, extra axes
    assert plan.trial_ids[:3] == [
        "tiny-fp32-lr1e-03-s0-qk_norm=true",
        "tiny-fp32-lr1e-03-s0-qk_norm=false",
        "tiny-fp32-lr1e-03-s1-qk_norm=true",
    ]


def test_ids_are_unique_stable_and_filesystem_safe(tmp_path):
    formats = ["bf16", "sim:E4M3:rounding=stochastic,scaling=block:32", "sim:E5M2"]
    cfg = _cfg(**{**GRID, "sweep__lrs": "logspace(1e-4, 1e-2, 9)", "sweep__formats": formats})
    a, b = plan_sweep(cfg, root=tmp_path), plan_sweep(cfg, root=tmp_path)
    assert a.trial_ids == b.trial_ids
    ids = a.trial_ids
    assert len({i.lower() for i in ids}) == len(ids)
    for tid in ids:
        assert SAFE_ID.fullmatch(tid) and len(tid) <= 100, tid
        (tmp_path / "ids" / tid).mkdir(parents=True)
    assert len(list((tmp_path / "ids").iterdir())) == len(ids)


def test_very_long_ids_are_shortened_but_stay_unique(tmp_path):
    long_fmt = "sim:E4M3:rounding=stochastic,scaling=block:32,overflow=saturate,subnormals=false,special=fn"
    cfg = _cfg(
        sweep__seeds=2,
        sweep__formats=[long_fmt, long_fmt.replace("block:32", "block:64")],
        sweep__axes={"train.sharpness.all_positions": [True, False], "optim.weight_decay": [0.0, 0.1]},
    )
    ids = plan_sweep(cfg, root=tmp_path).trial_ids
    assert len(ids) == 16 and len(set(ids)) == 16
    assert all(len(i) <= 100 and SAFE_ID.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    ("lo", "hi", "n"), [(1e-4, 1e-2, 5), (3e-5, 2e-1, 13), (1e-2, 1e-4, 4), (5e-3, 5e-3, 1)]
)
def test_logspace_matches_numpy(lo, hi, n):
    got = expand_lrs(f"logspace({lo}, {hi}, {n})")
    oracle = np.logspace(np.log10(lo), np.log10(hi), n)
    assert len(got) == n
    np.testing.assert_allclose(got, oracle, rtol=1e-12)
    assert got[0] == lo and got[-1] == hi  # endpoints included exactly


def test_linspace_matches_numpy_and_planned_lrs_come_from_the_string(tmp_path):
    np.testing.assert_allclose(expand_lrs("linspace(1e-3, 5e-3, 5)"), np.linspace(1e-3, 5e-3, 5), rtol=1e-12)
    plan = plan_sweep(_cfg(sweep__seeds=1, sweep__lrs="logspace(1e-4, 1e-2, 5)"), root=tmp_path)
    lrs = [t.config["optim"]["lr"] for t in plan.trials]
    np.testing.assert_allclose(lrs, np.logspace(-4, -2, 5), rtol=1e-12)


def test_extra_axes_are_applied(tmp_path):
    cfg = _cfg(
        sweep__seeds=1,
        sweep__axes={
            "model.qk_norm": [True, False],
            "train.divergence.spike_tol": [0.25, 1.0],
            "init_seed": [5],
        },
    )
    plan = plan_sweep(cfg, root=tmp_path)
    got = {(t.cfg.model.qk_norm, t.cfg.train.divergence.spike_tol, t.cfg.init_seed) for t in plan.trials}
    assert got == {(q, s, 5) for q in (True, False) for s in (0.25, 1.0)}
    assert "qk_norm=true-spike_tol=0.25-init_seed=5" in plan.trial_ids


def _raises(cfg_or_call, needle: str) -> str:
    with pytest.raises(ConfigError) as e:
        cfg_or_call()
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        ({"sweep__formats": ["bf16", "fp7"]}, "'fp7'"),
        ({"sweep__models": ["tiny", "huge-model"]}, "'huge-model'"),
        ({"sweep__lrs": "geomspace(1e-4, 1e-2, 5)"}, "geomspace(1e-4, 1e-2, 5)"),
        ({"sweep__lrs": "logspace(1e-4, 1e-2)"}, "logspace(1e-4, 1e-2)"),
        ({"sweep__lrs": "logspace(0, 1e-2, 3)"}, "logspace(0, 1e-2, 3)"),
        ({"sweep__lrs": "logspace(1e-4, 1e-2, 2.5)"}, "2.5"),
        ({"sweep__lrs": [1e-3, -1e-3]}, "-0.001"),
        ({"sweep__axes": {"model.qk_nrm": [True]}}, "model.qk_nrm"),
        ({"sweep__axes": {"optimizer.lr": [1.0]}}, "optimizer.lr"),
        ({"sweep__axes": {"model.qk_norm": ["maybe"]}}, "'maybe'"),
        ({"sweep__axes": {"train.zero_stage": [0, 7]}}, "invalid value 7"),
        ({"sweep__axes": {"optim.lr": [1e-3]}}, "sweep.lrs"),
        ({"sweep__axes": {"model.qk_norm": []}}, "model.qk_norm"),
        ({"sweep__seeds": [0, 1, 0]}, "sweep.seeds"),
        ({"sweep__seeds": 0}, "sweep.seeds"),
        ({"sweep__formats": ["bf16", " bf16"]}, "twice"),
    ],
)
def test_invalid_axes_fail_fast_naming_the_value(tmp_path, sets, needle):
    cfg = _cfg(**sets)
    _raises(lambda: plan_sweep(cfg, root=tmp_path), needle)


def test_bad_lrs_string_lists_the_accepted_forms():
    msg = _raises(lambda: expand_lrs("1e-4..1e-2"), "1e-4..1e-2")
    assert "logspace(lo, hi, n)" in msg and "linspace(lo, hi, n)" in msg


def test_invalid_combination_names_the_trial_values(tmp_path):
    # each value is fine with the base config (micro 4, global 8), but micro 8 does not divide global 12
    cfg = _cfg(
        sweep__seeds=1, sweep__axes={"train.micro_batch_size": [4, 8], "train.global_batch_size": [8, 12]}
    )
    _raises(lambda: plan_sweep(cfg, root=tmp_path), "train.micro_batch_size=8, train.global_batch_size=12")


def test_flops_estimate_matches_a_hand_count_for_tiny(tmp_path):
    steps, gbs, seq = 20, 8, 32
    plan = plan_sweep(_cfg(sweep__seeds=2), root=tmp_path, mfu=0.5, peak_flops=1e12)
    # tiny: llama, d=64, 2 layers, 4 heads, d_ff=176, byte vocabulary 256, untied head
    d, n_layers, ff, vocab = 64, 2, 176, 256
    gemm_weights = n_layers * (4 * d * d + 3 * d * ff) + d * vocab  # qkv + proj, gate/up/down, lm_head
    forward = 2 * gemm_weights + n_layers * 2 * (2 * seq * d)  # + QK^T and AV per layer
    flops = 3 * forward * steps * gbs * seq
    params = vocab * d + n_layers * (2 * d + 4 * d * d + 3 * d * ff) + d + d * vocab
    for t in plan.trials:
        est = plan.estimates[t.trial_id]
        assert est.flops == flops
        assert est.params == params
        assert est.tokens == steps * gbs * seq
        assert est.gpu_hours == pytest.approx(flops / (0.5 * 1e12) / 3600, rel=1e-12)
    assert plan.total_flops == 2 * flops
    assert plan.total_gpu_hours == pytest.approx(2 * flops / 0.5e12 / 3600, rel=1e-12)


def test_default_assumptions_are_h100_bf16_at_35_percent_mfu(tmp_path):
    plan = plan_sweep(_cfg(sweep__seeds=1), root=tmp_path)
    assert plan.mfu == 0.35 and plan.peak_flops == 989.4e12


@pytest.mark.parametrize(
    "model",
    [{"preset": "tiny"}, {"preset": "tiny-gpt2", "qk_norm": True}, {"preset": "nano", "qk_norm": True}],
)
def test_parameter_count_matches_the_built_model(model):
    pytest.importorskip("torch")
    from robustprec.model.presets import resolve_spec
    from robustprec.model.transformer import build_model, count_parameters

    spec = resolve_spec(_cfg(model=model).model, 256, 48)
    assert parameter_count(spec) == count_parameters(build_model(spec))


def test_unknown_tokenizer_vocab_is_assumed_and_said(tmp_path):
    byte = plan_sweep(_cfg(sweep__seeds=1), root=tmp_path)
    other = plan_sweep(_cfg(sweep__seeds=1, data={"tokenizer": "tok.json"}), root=tmp_path)
    (b,), (o,) = byte.estimates.values(), other.estimates.values()
    assert o.params - b.params == 2 * 64 * (50257 - 256)  # embedding + untied head grow with the vocabulary
    assert not byte.notes and any("50257" in n for n in other.notes)
    sized = plan_sweep(
        _cfg(sweep__seeds=1, data={"tokenizer": "tok.json"}, model={"vocab_size": 1000}), root=tmp_path
    )
    assert not sized.notes and next(iter(sized.estimates.values())).params - b.params == 2 * 64 * (1000 - 256)


def test_plan_json_round_trip_and_fingerprint(tmp_path):
    cfg = _cfg(**{**GRID, "sweep__lrs": "logspace(1e-4, 1e-2, 3)"})
    plan = plan_sweep(cfg, root=tmp_path)
    path = plan.write()
    assert path == Path(plan.root) / "plan.json"
    back = SweepPlan.read(plan.root)
    assert back == plan and back.fingerprint == plan.fingerprint
    assert json.loads(path.read_text())["fingerprint"] == plan.fingerprint
    assert SweepPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan_sweep(cfg, root=tmp_path).fingerprint == plan.fingerprint  # stable across calls

    changed = _cfg(**{**GRID, "sweep__lrs": "logspace(1e-4, 1e-2, 3)"}, optim={"weight_decay": 0.05})
    assert plan_sweep(changed, root=tmp_path).fingerprint != plan.fingerprint
    other_lr = _cfg(**{**GRID, "sweep__lrs": "logspace(1e-4, 2e-2, 3)"})
    assert plan_sweep(other_lr, root=tmp_path).fingerprint != plan.fingerprint
    # scheduling settings of the sweep are not part of any trial
    sched = _cfg(**{**GRID, "sweep__lrs": "logspace(1e-4, 1e-2, 3)", "sweep__max_concurrent": 2})
    assert plan_sweep(sched, root=tmp_path).fingerprint == plan.fingerprint


def test_read_reports_missing_and_malformed_plans(tmp_path):
    _raises(lambda: SweepPlan.read(tmp_path / "nope.json"), "not found")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    _raises(lambda: SweepPlan.read(bad), "malformed")


def test_smoke_config_plans():
    plan = plan_sweep(load_config(REPO / "configs" / "smoke.yaml"), root="/tmp/sweeps")
    assert len(plan.trials) == 2 * 3 * 2 * 1
    assert plan.name == "smoke" and plan.root == "/tmp/sweeps/smoke"
    assert "tiny-bf16-lr3e-03-s1" in plan.trial_ids


def _printed(plan: SweepPlan) -> str:
    buf = io.StringIO()
    print_plan(plan, Console(file=buf, width=200, color_system=None))
    return buf.getvalue()


def test_print_plan_small_shows_every_trial_and_totals(tmp_path):
    plan = plan_sweep(_cfg(**{**GRID, "sweep__models": ["tiny"], "sweep__axes": {}}), root=tmp_path)
    out = _printed(plan)
    assert all(tid in out for tid in plan.trial_ids)
    assert "more trials" not in out
    assert f"{len(plan.trials)} trials" in out and "GPU-hours" in out and "35% MFU" in out
    assert f"{plan.estimates[plan.trial_ids[0]].params:,}" in out


def test_print_plan_elides_large_sweeps(tmp_path):
    plan = plan_sweep(_cfg(**{**GRID, "sweep__seeds": 10}), root=tmp_path)  # 240 trials
    assert len(plan.trials) == 240
    out = _printed(plan)
    ids = plan.trial_ids
    assert all(re.search(rf"^{re.escape(t)} ", out, re.M) for t in ids[:50] + ids[-5:])
    assert not any(re.search(rf"^{re.escape(t)} ", out, re.M) for t in ids[50:-5])
    assert f"{240 - 55} more trials" in out
    assert len(out.splitlines()) < 70
    total = plan.total_flops
    assert out.splitlines()[-1].startswith(f"total: 240 trials, {total:.3g}".replace("e+", "e"))


def test_planning_does_not_import_torch_or_ray():
    code = (
        "import sys\n"
        "from robustprec.config import load_config\n"
        "from robustprec.sweep.plan import plan_sweep\n"
        "from robustprec.cli_display import print_plan\n"
        "plan = plan_sweep(load_config('configs/smoke.yaml'), root='/tmp/sweeps')\n"
        "print_plan(plan)\n"
        "heavy = {'torch', 'ray', 'deepspeed', 'mlflow'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "tiny-fp32-lr1e-03-s0" in out.stdout


def test_gpu_hours_scale_inversely_with_mfu(tmp_path):
    cfg = _cfg(sweep__seeds=1)
    a = plan_sweep(cfg, root=tmp_path, mfu=0.2).total_gpu_hours
    b = plan_sweep(cfg, root=tmp_path, mfu=0.4).total_gpu_hours
    assert math.isclose(a, 2 * b, rel_tol=1e-12)
    _raises(lambda: plan_sweep(cfg, root=tmp_path, mfu=1.5), "1.5")


def test_colliding_trial_ids_fail_clearly(tmp_path):
    # "experiment=a" + "uri=b-uri=c" and "experiment=a-uri=b" + "uri=c" spell the same id
    axes = {"tracking.experiment": ["a", "a-uri=b"], "tracking.uri": ["b-uri=c", "c"]}
    _raises(
        lambda: plan_sweep(_cfg(sweep__seeds=1, sweep__axes=axes), root=tmp_path), "experiment=a-uri=b-uri=c"
    )


def test_exclude_removes_exactly_the_matching_grid_points(tmp_path):
    """An arm run for two formats only: the excluded set is computed independently from the full product."""
    sets = {
        "sweep__seeds": 2,
        "sweep__lrs": "logspace(1e-3, 1e-1, 3)",
        "sweep__formats": ["bf16", "sim:E8M3", "sim:E4M3"],
        "sweep__axes": {"model.qk_norm": [False, True], "model.z_loss": [0.0, 1e-4]},
        "sweep__exclude": [
            {"model.qk_norm": True, "model.z_loss": 0.0},
            {"model.qk_norm": False, "model.z_loss": 1e-4},
            {"model.qk_norm": True, "numerics.backend": ["sim:E4M3"]},
            {"optim.lr": 1e-2, "seed": 1, "numerics.backend": "bf16"},  # 1e-2 names logspace's 0.01000...
        ],
    }
    plan = plan_sweep(_cfg(**sets), root=tmp_path)
    full = itertools.product(
        ["bf16", "sim:E8M3", "sim:E4M3"], np.logspace(-3, -1, 3), [0, 1], [False, True], [0.0, 1e-4]
    )
    kept = {
        (f, round(lr, 6), s, q, z)
        for f, lr, s, q, z in full
        if q == (z > 0)
        and not (q and f == "sim:E4M3")
        and not (f == "bf16" and abs(lr - 1e-2) < 1e-9 and s == 1)
    }
    got = [
        (
            c["numerics"]["backend"],
            round(c["optim"]["lr"], 6),
            c["seed"],
            c["model"]["qk_norm"],
            c["model"]["z_loss"],
        )
        for c in (t.config for t in plan.trials)
    ]
    assert len(got) == len(set(got)) and set(got) == kept
    assert len(kept) == 3 * 3 * 2 + 2 * 3 * 2 - 2  # the last rule hits bf16 with qk-norm off and on


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"model.qk_norm": True}, "not an axis of this sweep"),
        ({"numerics.backend": ["bf16", "sim:E4M3"]}, "leaves no trial"),
        ({"numerics.backend": "bf16"}, "removes every trial with numerics.backend='bf16'"),
        ({}, "is empty"),
    ],
)
def test_bad_exclude_rules_fail_clearly(tmp_path, rule, needle):
    cfg = _cfg(sweep__formats=["bf16", "sim:E4M3"], sweep__exclude=[rule])
    with pytest.raises(ConfigError, match=re.escape(needle)):
        plan_sweep(cfg, root=tmp_path)


def test_exclude_values_outside_the_grid_are_ignored_with_a_note(tmp_path):
    """A `--set sweep.formats=[...]` override must not break a config whose rules name other formats."""
    rule = {"numerics.backend": ["sim:E5M2", "sim:E4M3"], "model.qk_norm": True}
    cfg = _cfg(
        sweep__formats=["bf16", "sim:E4M3"],
        sweep__axes={"model.qk_norm": [False, True]},
        sweep__exclude=[rule],
    )
    plan = plan_sweep(cfg, root=tmp_path)
    got = sorted(
        (t.config["numerics"]["backend"], t.config["model"]["qk_norm"], t.config["seed"]) for t in plan.trials
    )
    assert got == sorted(itertools.product(["bf16"], [False, True], range(3))) + [
        ("sim:E4M3", False, s) for s in range(3)
    ]
    assert any("'sim:E5M2' is not a value of numerics.backend" in n for n in plan.notes)


def test_a_setting_a_named_axis_replaces_is_noted(tmp_path):
    # `--set model.preset=nano` on a config that sweeps sweep.models=[tiny] trains tiny: said, not silent
    plan = plan_sweep(
        _cfg(sweep__seeds=1, sweep__models=["tiny"], model={"preset": "nano"}, optim={"lr": 0.01},
             sweep__lrs=[1e-3, 3e-3], numerics={"backend": "bf16"}, sweep__formats=["bf16", "fp32"]),
        root=tmp_path,
    )  # fmt: skip
    assert {t.config["model"]["preset"] for t in plan.trials} == {"tiny"}
    assert [n.split(" is replaced")[0] for n in plan.notes] == ["model.preset=nano", "optim.lr=0.01"]
    assert "sweep.models=[tiny]" in plan.notes[0] and "sweep.lrs=[0.001, 0.003]" in plan.notes[1]
    for show in (print_plan, print_sweep_header):  # the dry run's plan and a real sweep's header
        buf = io.StringIO()
        show(plan, Console(file=buf, width=300, color_system=None))
        assert [line for line in buf.getvalue().splitlines() if line.startswith("note: ")] == [
            f"note: {n}" for n in plan.notes
        ]
    # a value the axis sweeps (within the 0.1% that names a logspace point), or one left at its default: no note
    quiet = plan_sweep(
        _cfg(sweep__seeds=1, sweep__models=["tiny", "nano"], model={"preset": "nano"}, optim={"lr": 0.0030001},
             sweep__lrs=[1e-3, 3e-3], sweep__formats=["bf16", "fp32"]),
        root=tmp_path,
    )  # fmt: skip
    assert quiet.notes == []


def test_packed_gpu_trials_without_bytecode_are_noted(tmp_path, monkeypatch):
    """Fresh trial processes inherit PYTHONDONTWRITEBYTECODE and compile their imports from source: said once, and
    only for trials packed on a GPU (fractional share) while it is set."""
    packed = _cfg(sweep__seeds=1, sweep__resources={"CPU": 1.0, "GPU": 0.125})
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    notes = [n for n in plan_sweep(packed, root=tmp_path).notes if "PYTHONDONTWRITEBYTECODE" in n]
    assert len(notes) == 1 and "PYTHONPYCACHEPREFIX" in notes[0]
    for gpu in (1.0, 0.0):  # a whole GPU per trial, or none
        unpacked = _cfg(sweep__seeds=1, sweep__resources={"CPU": 1.0, "GPU": gpu})
        assert not any("PYTHONDONTWRITEBYTECODE" in n for n in plan_sweep(unpacked, root=tmp_path).notes)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    assert not any("PYTHONDONTWRITEBYTECODE" in n for n in plan_sweep(packed, root=tmp_path).notes)
