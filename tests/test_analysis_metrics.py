"""Metrics of METHODS §4–5 on small tables worked out by hand (robustprec.analysis.metrics)."""

import math

import numpy as np
import pytest

from robustprec.analysis.frame import Frame
from robustprec.analysis.metrics import (
    divergence_by_lr,
    eta_stable,
    l0_by_model,
    lr_key,
    lr_sensitivity,
    seed_spread,
    sensitivity,
    sharpness_summary,
    trial_losses,
    wilson_ci,
)

Z975 = 1.959963984540054  # standard normal 97.5% quantile


def hand_wilson(k: int, n: int, z: float = Z975) -> tuple[float, float]:
    """Wilson score interval, written out: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (7, 20), (1, 3)])
def test_wilson_ci_equals_hand_formula(k, n):
    lo, hi = wilson_ci(k, n)
    hlo, hhi = hand_wilson(k, n)
    assert lo == pytest.approx(max(hlo, 0.0), abs=1e-12)
    assert hi == pytest.approx(min(hhi, 1.0), abs=1e-12)


def test_wilson_ci_3_of_10_known_value():
    # p = 0.3, z² = 3.8415: centre = (0.3 + 0.19207)/1.38415 = 0.35550; half = 1.95996/1.38415 * sqrt(0.021 +
    # 0.0096037) = 1.41599 * 0.174939 = 0.24771 -> [0.1078, 0.6032]
    lo, hi = wilson_ci(3, 10)
    assert lo == pytest.approx(0.1078, abs=1e-4)
    assert hi == pytest.approx(0.6032, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_ci(0, 0)


def test_divergence_by_lr_hand_table():
    # lr 1e-3: seeds diverged 0,0,0,1 -> 1/4; lr 2e-3: 1,1,0,1 -> 3/4; lr 4e-3: 1,1 -> 2/2
    lr = [1e-3] * 4 + [2e-3] * 4 + [4e-3] * 2
    div = [0, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    table = divergence_by_lr(np.array(lr), np.array(div, dtype=bool))
    assert list(table) == [1e-3, 2e-3, 4e-3]
    assert [(r.diverged, r.seeds) for r in table.values()] == [(1, 4), (3, 4), (2, 2)]
    assert [r.rate for r in table.values()] == [0.25, 0.75, 1.0]
    assert table[2e-3].ci == pytest.approx(hand_wilson(3, 4))
    assert table[1e-3].to_dict() == {"diverged": 1, "seeds": 4, "rate": 0.25, "ci": list(table[1e-3].ci)}


def test_eta_stable_is_largest_all_converged_lr():
    # rates by lr: 1e-3: 0/2, 2e-3: 0/2, 4e-3: 1/2, 8e-3: 2/2 -> 2e-3
    lr = np.array([1e-3, 1e-3, 2e-3, 2e-3, 4e-3, 4e-3, 8e-3, 8e-3])
    assert eta_stable(lr, np.array([0, 0, 0, 0, 1, 0, 1, 1], dtype=bool)) == 2e-3
    # literal definition: a fully converged LR above a partly diverged one counts (4e-3 here)
    assert eta_stable(lr, np.array([0, 0, 1, 0, 0, 0, 1, 1], dtype=bool)) == 4e-3
    assert eta_stable(lr, np.ones(8, dtype=bool)) is None
    assert eta_stable(lr, np.zeros(8, dtype=bool)) == 8e-3


def test_trial_losses_diverged_take_l0():
    out = trial_losses(np.array([3.0, np.nan, 2.5]), np.array([False, True, False]), 5.0)
    assert out.tolist() == [3.0, 5.0, 2.5]


def test_seed_spread_hand():
    # 3.0, 3.2, 3.4: mean 3.2, std = sqrt((0.04 + 0 + 0.04) / 2) = 0.2, range 0.4
    s = seed_spread([3.0, 3.2, 3.4, float("nan")])
    assert (s.n, s.mean, s.std, s.range) == (3, pytest.approx(3.2), pytest.approx(0.2), pytest.approx(0.4))
    one = seed_spread([2.0])
    assert (one.n, one.mean, one.std, one.range) == (1, 2.0, None, 0.0)
    assert seed_spread([]).n == 0


def test_lr_sensitivity_hand_table():
    # l0 = 5.  Seeds (a, b) per lr; D = diverged (takes l0):
    #   lr1: 3.0, 3.2  -> mean 3.1
    #   lr2: 2.8, 3.0  -> mean 2.9   (l* = 2.9, best lr)
    #   lr3: D,   3.4  -> mean (5 + 3.4)/2 = 4.2
    #   lr4: 6.0, 5.0  -> mean 5.5, clamped to l0 = 5
    # S = mean(3.1-2.9, 0, 4.2-2.9, 5-2.9) = (0.2 + 0 + 1.3 + 2.1)/4 = 0.9
    # against a reference l* = 2.7: mean(0.4, 0.2, 1.5, 2.3) = 1.1
    lr = np.repeat([1e-3, 2e-3, 4e-3, 8e-3], 2)
    fin = np.array([3.0, 3.2, 2.8, 3.0, np.nan, 3.4, 6.0, 5.0])
    div = np.array([0, 0, 0, 0, 1, 0, 0, 0], dtype=bool)
    s = lr_sensitivity(lr, fin, div, 5.0, l_star_ref=2.7)
    assert pytest.approx(0.9) == s.S
    assert s.S_vs_ref == pytest.approx(1.1)
    assert s.l_star == pytest.approx(2.9)
    assert s.best_lr == 2e-3
    assert s.per_lr[4e-3]["mean_loss"] == pytest.approx(4.2)
    assert s.per_lr[8e-3]["clamped_loss"] == pytest.approx(5.0)
    spread1 = s.per_lr[1e-3]["spread"]
    assert spread1["std"] == pytest.approx(math.sqrt(0.02))  # ((0.1)^2 + (0.1)^2) / 1
    assert spread1["range"] == pytest.approx(0.2)
    assert s.per_lr[4e-3]["spread"] == {"n": 1, "mean": 3.4, "std": None, "range": 0.0}
    d = s.to_dict()
    assert set(d["per_lr"]) == {lr_key(v) for v in (1e-3, 2e-3, 4e-3, 8e-3)}


def test_lr_sensitivity_unknown_l0_with_divergence_is_none():
    s = lr_sensitivity(np.array([1e-3, 2e-3]), np.array([3.0, np.nan]), np.array([False, True]), math.nan)
    assert s.S is None


def test_sensitivity_vectorised_over_replicates():
    # two replicates, grid of 3: [3, 2, 4] -> (1 + 0 + 2)/3 = 1; [3, 3, 9] with l0 5 -> (0 + 0 + 2)/3
    m = np.array([[3.0, 2.0, 4.0], [3.0, 3.0, 9.0]])
    assert sensitivity(m, 5.0).tolist() == pytest.approx([1.0, 2.0 / 3.0])


def test_l0_by_model_median_with_fallback():
    rows = [{"model.preset": "a", "status": "converged", "initial_loss": v} for v in (5.0, 5.2, 9.0)]
    rows.append({"model.preset": "b", "status": "converged"})
    fr = Frame.from_rows(rows)
    assert l0_by_model(fr)["a"] == pytest.approx(5.2)
    assert math.isnan(l0_by_model(fr)["b"])
    fr = fr.with_columns(loss_first=np.array([1.0, 1.0, 1.0, 4.5]))
    assert l0_by_model(fr)["b"] == 4.5


def test_sharpness_summary_hand():
    # evals at 100..600; baseline = median(1.0, 1.2, 0.8) = 1.0; first eval after it above 2 x 1.0 is step 500
    step = np.array([100, 200, 300, 400, 500, 600, 650])
    phi = np.array([1.0, 1.2, 0.8, 1.1, 2.5, 4.0, np.nan])  # the last row has no eval
    s = sharpness_summary(step, phi, diverged_at=650)
    assert s["sharp_n"] == 6
    assert (s["sharp_first"], s["sharp_last"], s["sharp_max"], s["sharp_max_step"]) == (1.0, 4.0, 4.0, 600)
    assert s["sharp_warn_step"] == 500
    assert s["sharp_lead"] == 150
    assert sharpness_summary(step, phi, diverged_at=None)["sharp_lead"] is None
    assert sharpness_summary(step, phi, diverged_at=450)["sharp_lead"] is None  # warned after it diverged


def test_sharpness_log_slope_and_no_warning():
    # phi = 0.1 exp(0.5 * step / 1000): ln-slope 0.5 per 1000 steps, never doubles within 3 evals' baseline
    step = np.arange(100, 1100, 100)
    s = sharpness_summary(step, 0.1 * np.exp(0.5 * step / 1000))
    assert s["sharp_log_slope"] == pytest.approx(0.5)
    assert s["sharp_warn_step"] is None
    empty = sharpness_summary(np.array([1, 2]), np.array([np.nan, np.nan]))
    assert empty["sharp_n"] == 0 and empty["sharp_max"] is None
