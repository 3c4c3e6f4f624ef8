"""Stability boundary (robustprec.analysis.boundary): logistic η_c, bootstrap CI, censoring, boundary curves."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from robustprec.analysis.boundary import (
    EtaC,
    bits_curves,
    fit_boundary,
    fit_eta_c,
    logistic_fit,
    size_curve,
)

GRID = 1e-3 * 2.0 ** np.arange(6)  # 6 LRs, a factor 2 apart


def simulate(rng, eta_c, k, seeds=10, grid=GRID):
    """Bernoulli outcomes with P(diverge | lr) = sigmoid(k (ln lr - ln eta_c)) on grid x seeds."""
    lr = np.repeat(grid, seeds)
    seed = np.tile(np.arange(seeds), len(grid))
    p = 1.0 / (1.0 + np.exp(-k * (np.log(lr) - math.log(eta_c))))
    return lr, rng.random(len(lr)) < p, seed


def test_logistic_fit_matches_direct_optimisation():
    rng = np.random.default_rng(3)
    z = rng.normal(size=40)
    y = (rng.random(40) < 1 / (1 + np.exp(-(0.3 + 1.5 * z)))).astype(float)
    w = rng.integers(0, 3, size=40).astype(float)
    for l2 in (0.01, 1.0):

        def neg(b, l2=l2):
            eta = b[0] + b[1] * z
            return np.sum(w * (np.logaddexp(0, eta) - y * eta)) + 0.5 * l2 * b[1] ** 2

        ref = minimize(neg, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
        assert logistic_fit(z, y, w, l2=l2) == pytest.approx(ref, abs=1e-5)
        batch = logistic_fit(z, y, np.stack([w, np.ones(40)]), l2=l2)
        assert batch[0] == pytest.approx(ref, abs=1e-5)


def test_eta_c_recovered_with_many_seeds():
    rng = np.random.default_rng(0)
    grid = 1e-3 * 2.0 ** np.arange(0, 6, 0.5)
    lr, div, seed = simulate(rng, 5e-3, 3.0, seeds=200, grid=grid)
    e = fit_eta_c(lr, div, seed, n_boot=200)
    assert e.censored is None
    assert e.value == pytest.approx(5e-3, rel=0.1)
    assert e.slope == pytest.approx(3.0, rel=0.25)
    assert e.ci[0] < 5e-3 < e.ci[1]
    assert e.ci[1] / e.ci[0] < 1.5


@pytest.mark.parametrize(("seeds", "k"), [(10, 4.0), (5, 2.0)])
def test_bootstrap_ci_covers_true_eta_c(seeds, k):
    # 50 repetitions of 6 LRs x `seeds`, slope k per unit ln(lr), true eta_c drawn inside the grid. With 5 seeds
    # the plain percentile bootstrap (no few-seed correction) covers only ~85%.
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(50):
        true = math.exp(rng.uniform(math.log(GRID[1]), math.log(GRID[4])))
        lr, div, seed = simulate(rng, true, k, seeds=seeds)
        e = fit_eta_c(lr, div, seed, n_boot=500, rng=rep)
        lo, hi = e.ci
        hits += (lo is None or lo <= true) and (hi is None or true <= hi)
    assert hits >= 45


def test_bootstrap_is_seeded():
    lr, div, seed = simulate(np.random.default_rng(1), 4e-3, 3.0)
    a, b = fit_eta_c(lr, div, seed, rng=7), fit_eta_c(lr, div, seed, rng=7)
    assert a.ci == b.ci and np.array_equal(a.boot, b.boot)


def test_censored_when_none_or_all_diverge():
    lr = np.repeat(GRID, 3)
    none = fit_eta_c(lr, np.zeros(len(lr), dtype=bool))
    assert (none.censored, none.value, none.ci) == ("above", GRID[-1], (GRID[-1], None))
    assert none.to_dict() == {"value": GRID[-1], "ci": [GRID[-1], None], "censored": "above"}
    every = fit_eta_c(lr, np.ones(len(lr), dtype=bool))
    assert (every.censored, every.value, every.ci) == ("below", GRID[0], (None, GRID[0]))
    assert fit_eta_c([], []).value is None


def test_censored_when_boundary_outside_tested_range():
    # only 1 of 10 seeds diverged, at the largest LR: P = 0.5 lies beyond it
    lr = np.repeat(GRID, 10)
    div = np.zeros(len(lr), dtype=bool)
    div[-1] = True
    e = fit_eta_c(lr, div, np.tile(np.arange(10), 6))
    assert e.censored == "above" and e.value == GRID[-1] and e.ci[1] is None
    # mirror image: 9 of 10 diverged at the smallest LR, all at the others
    e = fit_eta_c(lr, ~div[::-1], np.tile(np.arange(10), 6))
    assert e.censored == "below" and e.value == GRID[0] and e.ci[0] is None


def test_separated_outcomes_ci_spans_the_gap():
    # converged at the 3 smallest LRs, diverged at the 3 largest: eta_c somewhere in (GRID[2], GRID[3])
    lr = np.repeat(GRID, 5)
    div = lr > GRID[2]
    e = fit_eta_c(lr, div, np.tile(np.arange(5), 6))
    assert e.censored is None and GRID[2] < e.value < GRID[3]
    assert e.ci[0] <= GRID[2] and e.ci[1] >= GRID[3]


def test_boundary_fit_recovers_known_slope_exactly():
    m = np.arange(3, 8)
    eta = np.exp(-9.0 + 0.7 * m)  # ln eta_c = -9 + 0.7 m
    fit = fit_boundary(m, list(eta), x_name="man_bits")
    assert fit.slope == pytest.approx(0.7) and fit.intercept == pytest.approx(-9.0)
    value, ci = fit.predict(10)
    assert value == pytest.approx(math.exp(-2.0))
    assert ci[0] == pytest.approx(value) and ci[1] == pytest.approx(value)  # zero residual
    assert fit.monotone == "increasing"


def test_boundary_fit_noisy_slope_ci_and_censored_points():
    rng = np.random.default_rng(5)
    m = np.arange(2, 10)
    ln_eta = -8.0 + 0.5 * m + rng.normal(0, 0.1, len(m))
    points: list = [EtaC(math.exp(v), (None, None), None) for v in ln_eta]
    points[0] = EtaC(1e-4, (None, 1e-4), "below")  # censored: left out, reported
    fit = fit_boundary(m, points, labels=[f"E8M{v}" for v in m])
    assert fit.n == 7 and fit.excluded == {"E8M2": "censored below 0.0001"}
    assert fit.slope_ci[0] < 0.5 < fit.slope_ci[1]
    assert fit.slope == pytest.approx(0.5, abs=0.1)
    d = fit.to_dict()
    assert d["slope_ci"] == list(fit.slope_ci) and d["monotone"] == "increasing"
    two = fit_boundary([1, 2], [1e-3, 2e-3])
    assert two.slope == pytest.approx(math.log(2)) and two.slope_ci is None and two.predict(3)[1] is None


def test_bits_curves_group_by_fixed_bits():
    def e(v):
        return EtaC(v, (None, None), None)

    etas = {
        "sim:E8M3": e(1e-3),
        "sim:E8M5": e(4e-3),
        "sim:E8M7": e(1.6e-2),  # x4 per 2 mantissa bits: slope ln(2) per bit
        "sim:E5M3": e(5e-4),
        "bf16": e(1.6e-2),  # native: left out by default
        "fp8": e(1e-3),  # two formats: never on a bits curve
    }
    man = bits_curves(etas, "man_bits")
    assert set(man) == {"E8M*"}
    assert man["E8M*"].labels == ["sim:E8M3", "sim:E8M5", "sim:E8M7"]
    assert man["E8M*"].slope == pytest.approx(math.log(2))
    exp = bits_curves(etas, "exp_bits")
    assert set(exp) == {"E*M3"} and exp["E*M3"].x == [5.0, 8.0]
    assert "E8M*" in bits_curves(etas, "man_bits", include_native=True)
    assert len(bits_curves(etas, "man_bits", include_native=True)["E8M*"].x) == 4


def test_size_curve_power_law():
    params = {"s": 1e6, "m": 1e7, "l": 1e8, "x": 0}
    etas = {k: EtaC(1e-2 * (p / 1e6) ** -0.3 if p else 1e-3, (None, None), None) for k, p in params.items()}
    fit = size_curve(etas, params)
    assert fit.slope == pytest.approx(-0.3) and fit.labels == ["s", "m", "l"]
    assert fit.excluded == {"x": "no parameter count"}


def test_boundary_overview_groups_by_exponent_width_and_condition(tmp_path):
    """Series come from the conditions' own fields: exponent width from the format, suffix from the label
    (`@model` here), fp8 (torchao, not an ExMy simulation) left out, bf16 kept as a native E8M7 point."""
    from robustprec.analysis.analyze import analyze, overview_series
    from robustprec.analysis.frame import Frame
    from robustprec.analysis.plots import boundary_overview
    from tests.test_analysis_verdict import sweep_rows

    rows = sweep_rows()
    rows += [{**r, "numerics.backend": "fp8"} for r in rows if r["numerics.backend"] == "bf16"]
    for r in rows:
        if r["numerics.backend"] == "sim:E8M7":
            r["model.preset"] = "nano"
    analysis = analyze(Frame.from_rows(rows), n_boot=100)
    series = overview_series(analysis)
    assert list(series) == ["E8@nano", "E8@tiny"]
    assert [(p["label"], p["x"], p["native"]) for p in series["E8@tiny"]] == [
        ("sim:E8M3", 3, False),
        ("bf16", 7, True),
    ]
    assert [p["label"] for p in series["E8@nano"]] == ["sim:E8M7"]
    e83 = analysis.conditions["sim:E8M3@tiny"].eta_c
    assert series["E8@tiny"][0]["value"] == e83.value and series["E8@tiny"][0]["censored"] == e83.censored
    out = boundary_overview(series, tmp_path / "b.png")
    assert out is not None and out.stat().st_size > 1000
    assert boundary_overview({}, tmp_path / "none.png") is None
