"""benchmarks/packing.py: the concurrent-throughput ceiling against a brute-force oracle, and the benchmark on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.packing import (
    SMOKE,
    concurrent_rate,
    parser,
    phases,
    slot_use,
    startup_medians,
    sweep_overrides,
)
from robustprec.config import load_config
from robustprec.model.presets import resolve_spec
from robustprec.sweep.plan import parameter_count, plan_sweep
from tests.conftest import REPO


def _trial(rng: np.random.Generator, steps: int, tokens: float) -> list[tuple[float, float, float]]:
    """Consecutive steps of random length from a random start."""
    ends = rng.uniform(0, 2) + np.cumsum(rng.uniform(0.05, 0.3, steps))
    return [(a, b, tokens) for a, b in zip(np.r_[ends[0] - 0.1, ends[:-1]], ends, strict=True)]


def _sampled(intervals: list[tuple[float, float, float]], at_least: int, dt: float = 1e-4) -> float:
    """The oracle: the rate summed over active intervals on a fine time grid, averaged where enough are active."""
    t = np.arange(min(a for a, _, _ in intervals), max(b for _, b, _ in intervals), dt) + dt / 2
    count, rate = np.zeros_like(t), np.zeros_like(t)
    for a, b, n in intervals:
        on = (t >= a) & (t < b)
        count += on
        rate += on * n / (b - a)
    return float(rate[count >= at_least].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concurrent_rate_matches_a_sampled_timeline(seed):
    rng = np.random.default_rng(seed)
    intervals = [s for _ in range(4) for s in _trial(rng, 20, tokens=rng.uniform(100, 1000))]
    for at_least in (1, 2, 3):
        got = concurrent_rate(intervals, at_least)
        assert got is not None
        assert got[0] == pytest.approx(_sampled(intervals, at_least), rel=2e-3)


def test_trials_that_never_overlap_have_no_concurrent_rate():
    # each trial alone at 100 tokens/s: summing their own rates (the old ceiling) would claim 300 tokens/s
    staggered = [(0.0, 1.0, 100.0), (1.0, 2.0, 100.0), (2.5, 3.5, 100.0)]
    assert concurrent_rate(staggered, 2) is None
    assert concurrent_rate(staggered, 1) == pytest.approx((100.0, 3.0))
    assert concurrent_rate([(0.0, 1.0, 10.0), (0.5, 1.5, 30.0)], 2) == pytest.approx((40.0, 0.5))


def test_phases_split_the_sweeps_wall_time():
    # (asked, first step's start, last step's end): the first asked at 10, the last step ends at 20
    trials = [(12.0, 13.0, 20.0), (10.0, 11.0, 15.0)]
    assert phases(trials, start=4.0, end=22.5) == {
        "before_first_trial_s": 6.0, "trials_s": 10.0, "after_last_step_s": 2.5,
    }  # fmt: skip


def test_slot_use_splits_the_slots_time():
    # two slots over the span 10..20 (20 slot-seconds): stepping 4 + 7, starting 1 + 1, the rest idle
    use = slot_use([(10.0, 11.0, 15.0), (12.0, 13.0, 20.0)], per_gpu=2)
    assert use == pytest.approx({"stepping": 0.55, "starting": 0.10, "idle": 0.35})


def test_startup_medians_split_the_first_trials_from_the_later():
    trials = [
        {"engine": e, "first_step": f}
        for e, f in ((1.0, 0.5), (3.0, 0.7), (2.0, 0.6), (9.0, 4.0), (7.0, 2.0))
    ]
    assert startup_medians(trials, first=3) == {
        "first": {"engine": 2.0, "first_step": 0.6}, "later": {"engine": 8.0, "first_step": 3.0},
    }  # fmt: skip
    assert startup_medians(trials[:2], first=3) == {"first": {"engine": 2.0, "first_step": 0.6}}
    assert startup_medians([None, *trials[1:4]], first=3)["first"] == pytest.approx(
        {"engine": 2.5, "first_step": 0.65}
    )


def test_packed_trials_train_the_preset_asked_for(tmp_path):
    # the smoke config the sweeps start from sweeps its own model (tiny): sessions 10-11 measured tiny trials
    args = parser().parse_args(["--preset", "nano", "--formats", "bf16", "--per-gpu", "4", "--cpus", "2"])
    sets = sweep_overrides(args, "sim:E4M3", trials=3, gpu=0.25)
    assert sets[::2] == ["--set"] * (len(sets) // 2)
    cfg = load_config(SMOKE, sets[1::2])
    plan = plan_sweep(cfg, name="pack", root=tmp_path)
    assert len(plan.trials) == 3
    assert {(s.cfg.model.preset, s.cfg.numerics.backend, s.cfg.optim.lr) for s in plan.trials} == {
        ("nano", "sim:E4M3", 1e-3)
    }
    assert cfg.sweep.resources == {"CPU": 2.0, "GPU": 0.25} and cfg.sweep.max_concurrent == 4


@pytest.mark.slow
def test_packing_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "packing.json"
    res = subprocess.run(
        [sys.executable, "benchmarks/packing.py", "--preset", "tiny", "--formats", "fp32", "--trials", "2",
         "--per-gpu", "2", "--steps", "40", "--seq-len", "32", "--batch", "4", "--device", "cpu",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["trials"] == 2 and row["alone_tokens_per_s"] > 0 and row["packed_wall_s"] > 0
    assert row["errored_trials"] == {} and "warning: trial" not in res.stderr
    # the model the trials trained, checked against the preset and printed
    assert row["params"] == parameter_count(
        resolve_spec(load_config(SMOKE, ["model.preset=tiny"]).model, 256, 32)
    )
    assert f"settings: tiny ({row['params']:,} parameters)" in res.stdout
    # two trials at a time: the ceiling is measured where both stepped together, or reported as missing
    assert row["ceiling_tokens_per_s"] is None or row["ceiling_overlap_s"] > 0
    assert "| fp32 | 2 |" in res.stdout
    parts = row["before_first_trial_s"] + row["trials_s"] + row["after_last_step_s"]
    assert min(row["before_first_trial_s"], row["trials_s"], row["after_last_step_s"]) > 0
    assert parts == pytest.approx(row["packed_wall_s"], abs=1e-6)
    # the same tokens over the trials' span alone: a higher rate than over the whole sweep
    assert row["trials_span_tokens_per_s"] == pytest.approx(2 * 40 * 32 * 4 / row["trials_s"])
    assert row["trials_span_tokens_per_s"] > row["packed_tokens_per_s"]
    assert min(row["slot_use"].values()) >= 0 and row["slot_use"]["stepping"] > 0
    assert len(row["trial_startup_s"]) == 2
    table = [line for line in res.stdout.splitlines() if line.startswith("|")]
    # three tables of header, rule, rows (the start-up table: one row, both trials started together): as many
    # cells each within a table
    assert len(table) == 9 and all(
        len({line.count("|") for line in table[i : i + 3]}) == 1 for i in (0, 3, 6)
    )
    assert set(row["startup_phases_s"]) == {"first"} and row["startup_phases_s"]["first"]["engine"] > 0
