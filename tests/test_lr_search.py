"""The adaptive η_c search against a synthetic outcome model with a known η_c (P(diverge) logistic in log LR).
Only the searcher is simulated here; its estimate is the analysis package's real fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustprec.analysis.boundary import fit_eta_c
from robustprec.sweep.lr_search import EtaCSearch, SearchSettings

LO, HI, SEEDS = 1e-3, 1.0, 2


def p_diverge(lr: float, eta_c: float, k: float) -> float:
    return 1.0 / (1.0 + math.exp(-k * (math.log(lr) - math.log(eta_c))))


def simulate_search(eta_c: float, k: float, rng: np.random.Generator) -> EtaCSearch:
    search = EtaCSearch(SearchSettings(lo=LO, hi=HI, seeds_per_point=SEEDS, max_trials=48, coarse_points=3))
    while batch := search.propose():
        for lr, seed in batch:
            search.record(lr, seed, rng.random() < p_diverge(lr, eta_c, k))
    return search


def grid_ratio(eta_c: float, k: float, points: int, rng: np.random.Generator) -> float:
    lrs = np.repeat(np.geomspace(LO, HI, points)[None], SEEDS, 0)
    seeds = np.repeat(np.arange(SEEDS)[:, None], points, 1)
    div = rng.random(lrs.shape) < np.vectorize(p_diverge)(lrs, eta_c, k)
    lo, hi = fit_eta_c(lrs.ravel(), div.ravel(), seeds.ravel(), n_boot=400).ci
    return hi / lo if lo and hi else math.inf


@pytest.mark.parametrize("k", [20.0, 8.0])  # sharp (as measured in the ladder study) and gradual boundaries
def test_search_covers_the_true_eta_c_and_reaches_the_target_width(k):
    rng = np.random.default_rng(1)
    etas = np.exp(rng.uniform(math.log(0.01), math.log(0.3), 40))
    runs = [simulate_search(float(eta), k, rng) for eta in etas]
    fits = [s.estimate() for s in runs]
    covered = [(f.ci[0] or 0) <= eta <= (f.ci[1] or math.inf) for f, eta in zip(fits, etas, strict=True)]
    assert np.mean(covered) >= 0.9
    assert np.mean([s.ci_ratio(f) <= 1.5 for s, f in zip(runs, fits, strict=True)]) >= 0.9
    assert all(s.proposed <= 48 for s in runs)


def test_search_needs_at_most_half_the_trials_of_a_grid_of_the_same_width():
    rng = np.random.default_rng(2)
    k = 20.0
    etas = np.exp(rng.uniform(math.log(0.01), math.log(0.3), 30))
    runs = [simulate_search(float(e), k, rng) for e in etas]
    assert np.mean([s.ci_ratio() <= 1.5 for s in runs]) >= 0.9
    search_trials = int(np.median([s.proposed for s in runs]))
    # no grid with the same seeds per point and up to twice the search's trials reaches that width as often
    for points in range(6, search_trials + 1, 2):
        ratios = np.array([grid_ratio(float(e), k, points, rng) for e in etas[:20]])
        assert np.mean(ratios <= 1.5) < 0.9, (points, search_trials)


def test_search_state_round_trips_and_continues_identically():
    a = EtaCSearch(SearchSettings(lo=LO, hi=HI, seeds_per_point=SEEDS))
    for lr, seed in a.propose():
        a.record(lr, seed, lr > 0.05)
    b = EtaCSearch(a.settings)
    b.load_state_dict(a.state_dict())
    assert a.propose() == b.propose() != []
    assert a.state_dict() == b.state_dict()


def test_a_range_that_does_not_bracket_eta_c_ends_censored():
    search = EtaCSearch(SearchSettings(lo=LO, hi=HI, seeds_per_point=SEEDS))
    while batch := search.propose():
        for lr, seed in batch:
            search.record(lr, seed, False)  # nothing diverges: eta_c > hi
    est = search.estimate()
    assert est.censored == "above" and search.proposed == 4 * SEEDS  # the coarse bracket only


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"lo": 0.1, "hi": 0.01}, "0 < lo < hi"), ({"lo": 1e-3, "hi": 1.0, "target_ci_ratio": 1.0}, "target_ci_ratio"),
     ({"lo": 1e-3, "hi": 1.0, "max_trials": 3}, "max_trials")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SearchSettings(**kwargs)
