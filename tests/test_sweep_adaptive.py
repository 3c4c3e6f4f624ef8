"""Adaptive η_c sweeps (issue 16): the plan (conditions, budget, checks), the Tune searcher's state, and real
sweeps of `tiny` on a local Ray: trials added as proposed are records like any other, the live status line shows
η_c per condition, `robustprec analyze` reads them, and a killed driver resumes the search where it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robustprec.config import load_config
from robustprec.errors import ConfigError
from robustprec.sweep.adaptive import budget, new_search, search_trial
from robustprec.sweep.plan import SweepPlan, plan_sweep
from robustprec.sweep.run import result_rows, trial_status
from tests.conftest import REPO, kill_driver_when, tiny_overrides
from tests.test_sweep import SMALL
from tests.test_train import _cli

SEARCH = {"mode": "adaptive", "lo": 0.01, "hi": 1.0, "seeds_per_point": 1, "coarse_points": 3}


def _overrides(**sweep: object) -> list[str]:
    sets = {**SMALL, **{f"sweep.{k}": v for k, v in sweep.items()}}
    return [o for o in tiny_overrides(**sets) if not o.startswith("train.threads=")]


def adaptive_plan(tmp_path: Path, name: str, **search: object) -> SweepPlan:
    sweep = {f"lr_search.{k}": v for k, v in {**SEARCH, **search}.items()}
    return plan_sweep(load_config(None, _overrides(**sweep)), name=name, root=tmp_path)


# ------------------------------------------------------------------------------------------- the plan


def test_adaptive_plan_has_one_search_per_condition_and_a_budget(tmp_path):
    plan = adaptive_plan(tmp_path, "a", max_trials=10)
    grid = plan_sweep(load_config(None, _overrides(formats="[fp32, bf16]")), name="g", root=tmp_path)

    def two_formats(**search: object) -> SweepPlan:
        sets = {f"lr_search.{k}": v for k, v in {**SEARCH, **search}.items()}
        return plan_sweep(
            load_config(None, _overrides(formats="[fp32, bf16]", **sets)), name="a2", root=tmp_path
        )

    plan2 = two_formats()
    assert plan.trials == [] and [c["label"] for c in plan.search["conditions"]] == ["a"]
    assert [c["label"] for c in plan2.search["conditions"]] == ["fp32", "bf16"]
    assert {c["axes"]["numerics.backend"] for c in plan2.search["conditions"]} == {"fp32", "bf16"}
    b = budget(plan2)
    per_trial = grid.estimates[grid.trials[0].trial_id]
    assert b["trials"] == 2 * 24 and b["gpu_hours"] == pytest.approx(48 * per_trial.gpu_hours)
    assert plan2.search["settings"]["lo"] == 0.01 and plan.search["settings"]["max_trials"] == 10
    # the plan file round-trips and its fingerprint ignores the trials a search adds, not its settings
    back = SweepPlan.read(plan2.write())
    assert back.search == plan2.search and back.fingerprint == plan2.fingerprint
    spec = search_trial(plan2, plan2.search["conditions"][1], 0.2, 3)
    before = plan2.fingerprint
    plan2.trials.append(spec)
    plan2.search["trials"].append(spec.trial_id)
    assert plan2.fingerprint == before != two_formats(max_trials=10).fingerprint
    assert spec.trial_id == "bf16-lr2.0e-01-s3" and spec.out_dir == str(
        tmp_path / "a2" / "trials" / spec.trial_id
    )
    assert (
        spec.config["optim"]["lr"] == 0.2
        and spec.config["seed"] == 3
        and spec.config["name"] == spec.trial_id
    )
    assert spec.axes == {"numerics.backend": "bf16", "optim.lr": 0.2, "seed": 3}


def test_a_grid_in_adaptive_mode_is_the_coarse_stage(tmp_path):
    sets = {"lrs": "[0.01, 0.1, 1.0]", "seeds": 2, "formats": "[fp32, bf16]", "lr_search.mode": "adaptive"}
    plan = plan_sweep(load_config(None, _overrides(**sets)), name="m", root=tmp_path)
    assert len(plan.trials) == 12  # the grid is planned as in grid mode
    for cond in plan.search["conditions"]:
        fmt = cond["axes"]["numerics.backend"]
        assert sorted(cond["grid"]) == sorted(t.trial_id for t in plan.trials if fmt in t.trial_id)
        search = new_search(plan, cond)
        assert search.proposed == 6 and search.next_seed == 2 and search.propose() == []  # waits for the grid
    assert plan.search["settings"]["lo"] == 0.01 and plan.search["settings"]["hi"] == 1.0  # the grid's ends


@pytest.mark.parametrize(
    ("sets", "needle"),
    [({"lr_search.mode": "adaptive"}, "adaptive mode needs lo and hi"),
     ({**{f"lr_search.{k}": v for k, v in SEARCH.items()}, "lr_search.lo": 2.0}, "needs 0 < lo < hi"),
     ({**{f"lr_search.{k}": v for k, v in SEARCH.items()}, "lr_search.max_trials": 2}, "below the coarse bracket"),
     ({"lrs": "[0.01, 0.1, 1.0]", "seeds": 2, "lr_search.mode": "adaptive", "lr_search.max_trials": 5},
      "below the 6 grid trials"),
     ({"lr_search.mode": "adaptiv"}, "sweep.lr_search.mode")],
)  # fmt: skip
def test_bad_search_settings_are_one_line_errors(tmp_path, sets, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        plan_sweep(load_config(None, _overrides(**sets)), name="x", root=tmp_path)
    assert "\n" not in str(e.value)


def test_dry_run_states_the_budget(tmp_path):
    sets = [f"--set=sweep.lr_search.{k}={v}" for k, v in SEARCH.items() if k != "mode"]
    res = _cli(["sweep", "--storage", str(tmp_path), "--name", "d", "--dry-run", "--lr-search", "adaptive",
                *(f"--set={o}" for o in _overrides(formats="[fp32, bf16]")), *sets],
               env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "budget: at most 24 trials x 2 conditions = 48 trials" in res.stdout and "GPU-hours" in res.stdout
    assert "fp32" in res.stdout and "bf16" in res.stdout and not (tmp_path / "d").exists()


def _finish(searcher, tune_id: str, plan: SweepPlan) -> None:
    """Write the record a finished trial leaves (its status is all the searcher reads) and tell the searcher."""
    from robustprec.tracking.store import write_json

    spec = plan.trials[plan.trial_ids.index(searcher.running[tune_id])]
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    status = "diverged" if spec.config["optim"]["lr"] > 0.2 else "converged"
    write_json(Path(spec.out_dir) / "summary.json", {"status": status})
    searcher.on_trial_complete(tune_id, {"done": 1})


def _drive(searcher, plan: SweepPlan, prefix: str) -> list[str]:
    """Run the searcher to FINISHED as Tune would, one round at a time: the trial ids it suggested."""
    from ray.tune.search import Searcher

    ids: list[str] = []
    for n in range(100):
        cfg = searcher.suggest(f"{prefix}{n}")
        if cfg in (None, Searcher.FINISHED):  # the trials under way end (Tune waits for them)
            for tune_id in list(searcher.running):
                _finish(searcher, tune_id, plan)
        if cfg == Searcher.FINISHED:
            return ids
        if isinstance(cfg, dict):
            ids.append(cfg["trial_id"])
    raise AssertionError("the searcher never finished")


def test_searcher_restored_mid_search_continues_without_rerunning(tmp_path):
    """Tune's contract on its own: a searcher restored from `save` into the object pickled at the start (what
    `Tuner.restore` does) maps the snapshot's running trials back, takes trials that finished after the snapshot
    from their records (nothing re-runs), and ends where the uninterrupted search ended."""
    import copy

    from robustprec.sweep import adaptive
    from robustprec.sweep.searcher import EtaCSearcher

    plan = adaptive_plan(tmp_path, "s", max_trials=9)
    adaptive.register(plan)
    try:
        a = EtaCSearcher(plan.root)
        pristine = copy.deepcopy(a)
        first = [a.suggest(f"t{n}")["trial_id"] for n in range(3)]  # the coarse bracket
        for tune_id in list(a.running):
            _finish(a, tune_id, plan)
        second = [a.suggest("t3")["trial_id"], a.suggest("t4")["trial_id"]]  # a round under way
        a.save(str(tmp_path / "searcher.pkl"))
        rest = _drive(a, plan, "t5-")  # the uninterrupted search, which also leaves every record
        b = pristine
        b.restore(str(tmp_path / "searcher.pkl"))
        assert sorted(b.running.values()) == sorted(second)
        for tune_id in list(b.running):  # Tune resumes them; their records are there
            b.on_trial_complete(tune_id, {"done": 1})
        assert _drive(b, plan, "u") == []  # every later proposal is a finished trial: none is suggested again
    finally:
        adaptive.unregister(plan)
    label = plan.search["conditions"][0]["label"]
    assert sorted(b.searches[label].outcomes) == sorted(a.searches[label].outcomes)
    assert b.searches[label].proposed == a.searches[label].proposed == len(plan.trials) <= 9
    assert (
        plan.trial_ids == first + second + rest
        and len(rest) > 0
        and len(set(plan.trial_ids)) == len(plan.trials)
    )
    replay(plan)


# ------------------------------------------------------------------------------------------- real sweeps


def replay(plan: SweepPlan) -> None:
    """Re-run every condition's search offline on the outcomes the records hold: an uninterrupted search would
    have proposed exactly the trials the sweep ran (no proposal lost, repeated or made up after a resume)."""
    for cond in plan.search["conditions"]:
        mine = [t for t in plan.trials if t.trial_id not in cond["grid"] and _of(t, cond)]
        ran = {(t.config["optim"]["lr"], t.config["seed"]): trial_status(t)[0] for t in mine}
        search, proposed = new_search(plan, cond), []
        while batch := search.propose():
            for lr, seed in batch:
                assert (lr, seed) in ran, f"{cond['label']}: the search would have run lr={lr}, seed={seed}"
                search.record(lr, seed, ran[(lr, seed)] == "diverged")
                proposed.append((lr, seed))
        assert sorted(proposed) == sorted(ran), cond["label"]


def _of(trial, cond) -> bool:
    return all(trial.axes.get(k) == v for k, v in cond["axes"].items())


@pytest.mark.slow
def test_adaptive_sweep_trains_its_proposals_and_analyze_reads_them(tmp_path):
    import ray

    from robustprec.analysis.report import run_analysis
    from robustprec.cli_display import search_line
    from robustprec.sweep.run import run_sweep

    sweep = {f"lr_search.{k}": v for k, v in {**SEARCH, "max_trials": 6}.items()}
    plan = plan_sweep(
        load_config(None, _overrides(formats="[fp32, bf16]", **sweep)), name="ad", root=tmp_path
    )
    seen: list[dict] = []
    try:
        outcome = run_sweep(plan, progress=seen.append)
    finally:
        ray.shutdown()
    on_disk = SweepPlan.read(tmp_path / "ad")
    ids = [t.trial_id for t in on_disk.trials]
    assert ids == plan.trial_ids == [r["trial_id"] for r in outcome.rows] == on_disk.search["trials"]
    assert outcome.counts["error"] == 0 and outcome.counts["pending"] == 0 and 6 < len(ids) <= 12
    coarse = np.geomspace(0.01, 1.0, 3)
    for cond in plan.search["conditions"]:
        mine = [t for t in plan.trials if _of(t, cond)]
        assert 3 < len(mine) <= 6
        assert [t.config["optim"]["lr"] for t in mine[:3]] == pytest.approx(coarse)
        assert {t.config["seed"] for t in mine[3:]} == {1}  # fresh seeds for the points after the bracket
    replay(plan)
    status = json.loads((tmp_path / "ad" / "search.json").read_text())
    assert set(status) == {"fp32", "bf16"} and all(s["done"] and s["value"] for s in status.values())
    live = [s["search"] for s in seen if s.get("search", {}).get("bf16", {}).get("value")]
    assert live and "bf16 eta_c " in search_line(live[-1]) and " trials" in search_line(live[-1])

    # trials are trials: the mirror holds every one, and the report's LR grid is whatever was run
    result = run_analysis(outcome.tracking["parent_run_id"], reference="bf16", out_dir=tmp_path / "an")
    for fmt, r in result.data["formats"].items():
        lrs = sorted({t.config["optim"]["lr"] for t in plan.trials if t.config["numerics"]["backend"] == fmt})
        assert sorted(float(v) for v in r["divergence"]) == pytest.approx(lrs)
        assert r["eta_c"]["value"] is not None and 0.1 <= r["eta_c"]["value"] <= 1.0


@pytest.mark.slow
def test_killed_driver_resumes_the_search_without_rerunning_trials(tmp_path):
    sets = [f"--set=sweep.lr_search.{k}={v}" for k, v in {**SEARCH, "max_trials": 9}.items()]
    args = [sys.executable, "-m", "robustprec", "sweep", "--storage", str(tmp_path), "--name", "r",
            *(f"--set={o}" for o in _overrides(max_concurrent=1)), *sets]  # fmt: skip
    root = tmp_path / "r"
    # kill it once the coarse bracket and a proposal after it have finished
    kill_driver_when(args, lambda: len(list(root.glob("trials/*/summary.json"))) >= 4)
    finished = {p: p.stat().st_mtime_ns for p in root.glob("trials/*/summary.json")}
    registered = SweepPlan.read(root).trial_ids

    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed and finished" in res.stdout
    plan = SweepPlan.read(root)
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p.parent.name} was re-run"
    assert plan.trial_ids[: len(registered)] == registered  # earlier proposals kept, in order
    assert len(finished) < len(plan.trials) <= 9  # the search went on after the restart, within its budget
    assert [r["status"] for r in result_rows(plan)].count("pending") == 0
    replay(plan)
    assert json.loads((root / "search.json").read_text())["r"]["done"]
