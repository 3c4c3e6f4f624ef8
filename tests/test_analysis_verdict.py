"""Verdict tests against scipy computed independently, and the analyze_frame JSON (robustprec.analysis)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from robustprec.analysis import Frame, analyze, analyze_frame, boundary_curves
from robustprec.analysis.bootstrap import interval
from robustprec.analysis.boundary import EtaC
from robustprec.analysis.metrics import divergence_by_lr
from robustprec.analysis.verdict import delta_s, eta_c_ratio, fisher_by_lr, holm, judge, paired_wilcoxon


def rates(counts):
    """{lr: (diverged, seeds)} -> divergence_by_lr of an equivalent outcome list."""
    lr, div = [], []
    for v, (k, n) in counts.items():
        lr += [v] * n
        div += [True] * k + [False] * (n - k)
    return divergence_by_lr(np.array(lr), np.array(div))


def test_holm_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_fisher_equals_scipy_where_reference_converged():
    fmt = rates({1e-3: (0, 10), 2e-3: (4, 10), 4e-3: (9, 10), 8e-3: (10, 10)})
    ref = rates({1e-3: (0, 10), 2e-3: (0, 10), 4e-3: (0, 10), 8e-3: (3, 10)})
    out = fisher_by_lr(fmt, ref, correction="none")
    assert [t["lr"] for t in out["tests"]] == [1e-3, 2e-3, 4e-3]  # 8e-3: the reference diverged there
    for t, (k, n) in zip(out["tests"], [(0, 10), (4, 10), (9, 10)], strict=True):
        expect = stats.fisher_exact([[k, n - k], [0, 10]], alternative="greater").pvalue
        assert t["p"] == pytest.approx(expect)
    # hypergeometric by hand for 4/10 vs 0/10: P = C(10,4) C(10,0) / C(20,4) = 210 / 4845
    assert out["tests"][1]["p"] == pytest.approx(210 / 4845)
    assert out["says_otherwise"] and out["tests"][2]["says_otherwise"]
    assert not out["tests"][0]["says_otherwise"]
    holmed = fisher_by_lr(fmt, ref)
    assert [t["p_adj"] for t in holmed["tests"]] == pytest.approx(holm([t["p"] for t in out["tests"]]))
    two = fisher_by_lr(fmt, ref, alternative="two-sided", correction="none")
    assert two["tests"][1]["p"] == pytest.approx(stats.fisher_exact([[4, 6], [0, 10]]).pvalue)
    assert not fisher_by_lr(fmt, rates({1e-3: (1, 10)}))["testable"]


def test_wilcoxon_equals_scipy_on_shared_pairs():
    rng = np.random.default_rng(0)
    f = {(lr, s): 3.0 + rng.normal(0.05, 0.1) for lr in (1e-3, 2e-3) for s in range(6)}
    r = {(lr, s): 3.0 + rng.normal(0.0, 0.1) for lr in (1e-3, 2e-3) for s in range(5)}  # seed 5 unpaired
    f[(1e-3, 0)] = r[(1e-3, 0)]  # a tie: dropped by zero_method="wilcox"
    out = paired_wilcoxon(f, r)
    keys = [(lr, s) for lr in (1e-3, 2e-3) for s in range(5)]
    d = np.array([f[k] - r[k] for k in keys])
    # zero_method="wilcox" drops the zero; scipy then enumerates the 2^10 sign flips instead of using the
    # exact distribution of the 9 non-zero differences: the same p-value
    expect = stats.wilcoxon(d, alternative="greater", zero_method="wilcox")
    assert out["n_pairs"] == 10 and out["n_nonzero"] == 9
    assert out["p"] == pytest.approx(expect.pvalue) and out["statistic"] == pytest.approx(expect.statistic)
    assert out["p"] == pytest.approx(stats.wilcoxon(d[d != 0], alternative="greater", method="exact").pvalue)
    assert out["mean_diff"] == pytest.approx(np.mean(d))
    two = paired_wilcoxon(f, r, alternative="two-sided")
    assert two["p"] == pytest.approx(stats.wilcoxon(d[d != 0], method="exact").pvalue)
    same = paired_wilcoxon(r, dict(r))
    assert not same["testable"] and same["p"] is None


def _eta(v, c=None, boot=(), groups=10**6):
    """An EtaC on the grid [1e-3, 3.2e-2] with raw bootstrap replicates of ln eta_c (+inf: none diverged)."""
    return EtaC(
        v, (None, None), c, lr_min=1e-3, lr_max=3.2e-2, groups=groups, boot=np.array(boot, dtype=float)
    )


def test_eta_c_ratio_values_and_few_seed_widening():
    ln = math.log
    # replicate ratios exp(ln f - ln ref): f boots ln(2e-3 .. 3e-3), ref ln(8e-3): ratio < 1 throughout
    fb = [ln(v) for v in np.linspace(2e-3, 3e-3, 101)]
    rb = [ln(8e-3)] * 101
    r = eta_c_ratio(_eta(2.5e-3, boot=fb), _eta(8e-3, boot=rb))
    assert r["value"] == pytest.approx(2.5e-3 / 8e-3)
    assert r["ci"] == pytest.approx([2.0e-3 / 8e-3, 3e-3 / 8e-3], rel=0.03)
    assert r["says_otherwise"] and r["censored"] is None
    # 5 seeds: deviations of ln(ratio) from the point scaled by sqrt(5/4) t_4(.975) / z(.975)
    c = math.sqrt(5 / 4) * stats.t.ppf(0.975, 4) / stats.norm.ppf(0.975)
    few = eta_c_ratio(_eta(2.5e-3, boot=fb, groups=5), _eta(8e-3, boot=rb, groups=5))
    lo, hi = (math.log(v / 8e-3) for v in np.quantile(np.linspace(2e-3, 3e-3, 101), [0.025, 0.975]))
    point = math.log(2.5e-3 / 8e-3)
    expect = [math.exp(point + c * (lo - point)), math.exp(point + c * (hi - point))]
    assert few["ci"] == pytest.approx(expect, rel=0.03)


def test_eta_c_ratio_one_rule_censored_or_not():
    ln, n = math.log, 200
    rb = [ln(8e-3)] * n
    # all diverged for f ("< 1e-3") vs a reference placed at 8e-3: every replicate ratio is below 1/8
    r = eta_c_ratio(_eta(1e-3, "below", [-np.inf] * n), _eta(8e-3, boot=rb))
    assert (r["censored"], r["says_otherwise"]) == ("below", True) and r["value"] == pytest.approx(0.125)
    assert r["ci"][0] is None and r["ci"][1] == pytest.approx(0.125)
    # none diverged for f ("> 3.2e-2"): ratio > 4, fine
    r = eta_c_ratio(_eta(3.2e-2, "above", [np.inf] * n), _eta(8e-3, boot=rb))
    assert (r["censored"], r["says_otherwise"]) == ("above", False) and r["ci"][1] is None
    # reference never diverged (> 3.2e-2); f's eta_c 8e-3 is well determined: ratio below 1 with confidence
    narrow = [ln(v) for v in np.linspace(6e-3, 1e-2, n)]
    r = eta_c_ratio(_eta(8e-3, boot=narrow), _eta(3.2e-2, "above", [np.inf] * n))
    assert (r["censored"], r["says_otherwise"]) == ("below", True)
    assert r["ci"][1] == pytest.approx(np.quantile(np.linspace(6e-3, 1e-2, n), 0.975) / 3.2e-2, rel=0.01)
    # same point ratio 0.25, but f's bootstrap reaches past the largest LR in 10% of replicates (none diverged
    # there): equality is not excluded, as it would not be for an uncensored reference (the old rule said
    # "less robust" from the point ratio alone)
    wide = [ln(v) for v in np.linspace(3e-3, 2e-2, n - 20)] + [np.inf] * 20
    r = eta_c_ratio(_eta(8e-3, boot=wide), _eta(3.2e-2, "above", [np.inf] * n))
    assert r["censored"] == "below" and r["value"] == pytest.approx(0.25)
    assert not r["says_otherwise"] and r["ci"][1] is None
    uncensored = eta_c_ratio(_eta(8e-3, boot=wide), _eta(3.2e-2, boot=[ln(3.2e-2)] * n))
    assert uncensored["says_otherwise"] == r["says_otherwise"]
    # both "> largest": undetermined
    r = eta_c_ratio(_eta(3.2e-2, "above", [np.inf] * n), _eta(3.2e-2, "above", [np.inf] * n))
    assert r["value"] is None and not r["testable"]


def test_delta_s_hand():
    # l0 = 5; seeds 0, 1; lrs a, b, c.
    # f:   a: 3.0, 3.0  b: 2.0, 2.0  c: 5.0, 5.0 (diverged) -> means 3, 2, 5 -> S_f = (1 + 0 + 3)/3 = 4/3
    # ref: a: 2.5, 2.5  b: 2.0, 2.0  c: 3.0, 3.0             -> means 2.5, 2, 3 -> S_ref = (0.5 + 0 + 1)/3 = 0.5
    f = {(a, s): v for (a, v) in ((1.0, 3.0), (2.0, 2.0), (3.0, 5.0)) for s in (0, 1)}
    r = {(a, s): v for (a, v) in ((1.0, 2.5), (2.0, 2.0), (3.0, 3.0)) for s in (0, 1)}
    r[(4.0, 0)] = 9.0  # an LR the format did not run: not in the shared grid
    out = delta_s(f, r, 5.0, n_boot=200)
    assert out["value"] == pytest.approx(4 / 3 - 0.5)
    assert out["lrs"] == 3 and out["seeds"] == 2
    assert out["ci"] == pytest.approx([4 / 3 - 0.5] * 2)  # no seed variation: every replicate is the same
    assert out["says_otherwise"]
    assert not delta_s(f, r, 5.0, tol=1.0)["says_otherwise"]
    assert delta_s(f, {}, 5.0)["value"] is None


L0 = 5.5
GRID = 1e-3 * 2.0 ** np.arange(6)


def _seed_table(rng, mu, p_div, shared):
    """{(lr, seed): loss}: mean curve `mu`, a per-seed effect shared by both formats (data order), independent
    trial noise, and divergence (loss l0) with probability `p_div` per LR."""
    out = {}
    for j, lr in enumerate(GRID):
        for s, a in enumerate(shared):
            out[(float(lr), s)] = L0 if rng.random() < p_div[j] else mu[j] + a + rng.normal(0, 0.04)
    return out


@pytest.mark.parametrize(
    ("seeds", "p_f", "p_ref"),
    [(4, [0] * 6, [0] * 6), (8, [0] * 6, [0] * 6), (5, [0, 0, 0, 0, 0.5, 1], [0, 0, 0, 0, 0, 0.5])],
)
def test_delta_s_ci_covers_the_true_difference(seeds, p_f, p_ref):
    # truth: S of the expected per-LR mean losses (diverged -> l0), as METHODS defines S, computed by hand
    mu_f = np.array([3.30, 3.15, 3.08, 3.10, 3.25, 3.6])
    mu_r = np.array([3.28, 3.12, 3.05, 3.04, 3.08, 3.2])

    def s_true(mu, p):
        m = np.asarray(p) * L0 + (1 - np.asarray(p)) * mu
        return np.mean(np.minimum(m, L0)) - m.min()

    truth = s_true(mu_f, p_f) - s_true(mu_r, p_ref)
    rng = np.random.default_rng(11)
    hits = 0
    for rep in range(200):
        shared = rng.normal(0, 0.05, seeds)
        out = delta_s(
            _seed_table(rng, mu_f, p_f, shared),
            _seed_table(rng, mu_r, p_ref, shared),
            L0,
            n_boot=400,
            rng=rep,
        )
        lo, hi = out["ci"]
        hits += (lo is None or lo <= truth) and (hi is None or truth <= hi)
    assert hits >= 180, hits / 200


def test_interval_counts_every_replicate_and_contains_the_point():
    reps = np.linspace(0.0, 1.0, 1001)
    big = 10**9  # c_G -> 1: the plain percentile interval
    assert interval(0.5, reps, groups=big) == pytest.approx(
        tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-3
    )
    assert interval(-1.0, reps, groups=big)[0] == -1.0  # the CI always holds the point
    undefined = reps.copy()
    undefined[:30] = np.nan  # 3% undefined replicates: open at both ends, never dropped
    assert interval(0.5, undefined, groups=big) == (None, None)
    assert interval(0.5, reps, groups=1) == (None, None)


def test_judge_categories():
    nothing = judge("x", "bf16", {})
    assert nothing.category == "inconclusive"
    ok = judge("x", "bf16", {"wilcoxon": {"testable": True, "says_otherwise": False, "p": 0.4, "n_pairs": 9}})
    assert ok.category == "as_robust" and ok.words.startswith("x is as robust as bf16")
    bad = judge(
        "x",
        "bf16",
        {
            "wilcoxon": {"testable": True, "says_otherwise": False, "p": 0.4, "n_pairs": 9},
            "delta_S": {"testable": True, "says_otherwise": True, "value": 0.3, "ci": [0.1, 0.5]},
        },
    )
    assert bad.category == "less_robust" and "more LR-sensitive" in bad.words


# --------------------------------------------------------------------------------------------- analyze_frame


def sweep_rows(seed=0):
    """bf16 with eta_c 1.6e-2 and a format 'bad' with eta_c 2e-3, 6 LRs x 8 seeds, steep boundary (k = 6)."""
    rng = np.random.default_rng(seed)
    rows = []
    for fmt, eta in (("bf16", 1.6e-2), ("sim:E8M3", 2e-3), ("sim:E8M7", 1.6e-2)):
        for lr in 1e-3 * 2.0 ** np.arange(6):
            for s in range(8):
                p = 1 / (1 + math.exp(-6 * (math.log(lr) - math.log(eta))))
                d = bool(rng.random() < p)
                rows.append(
                    {
                        "trial_id": f"{fmt}-{lr}-{s}",
                        "model.preset": "tiny",
                        "numerics.backend": fmt,
                        "optim.lr": float(lr),
                        "seed": s,
                        "status": "diverged" if d else "converged",
                        "diverged_at": 10 if d else None,
                        "final_eval_loss": None if d else 3.0 + 0.01 * rng.normal(),
                        "initial_loss": 5.5,
                    }
                )
    rows.append({"numerics.backend": "bf16", "optim.lr": 1e-3, "seed": 99, "status": "error"})
    return rows


def test_analyze_frame_json_keys_and_verdicts():
    fr = Frame.from_rows(sweep_rows())
    out = analyze_frame(fr, n_boot=300)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    assert set(out) == {"bf16", "sim:E8M3", "sim:E8M7"}
    for res in out.values():
        assert set(res) == {"divergence", "lr_sensitivity", "eta_c", "eta_stable", "verdict", "phases"}
        assert set(res["eta_c"]) == {"value", "ci", "censored"}
        assert [float(k) for k in res["divergence"]] == list(1e-3 * 2.0 ** np.arange(6))
        for cell in res["divergence"].values():
            assert set(cell) == {"diverged", "seeds", "rate", "ci"}
            assert cell["seeds"] == 8  # the error trial is not counted
    bad = out["sim:E8M3"]
    assert bad["divergence"]["0.004"]["rate"] > 0.5
    assert bad["eta_c"]["value"] < 4e-3
    assert out["bf16"]["verdict"]["category"] == "reference"
    assert bad["verdict"]["category"] == "less_robust"
    assert out["sim:E8M7"]["verdict"]["category"] == "as_robust"  # same eta_c as bf16
    assert bad["lr_sensitivity"]["l0"] == 5.5
    assert bad["lr_sensitivity"]["S"] > out["bf16"]["lr_sensitivity"]["S"]


def test_analyze_labels_models_and_missing_reference():
    rows = sweep_rows()
    for r in rows:
        if r["numerics.backend"] == "sim:E8M7":
            r["model.preset"] = "nano"
    a = analyze(Frame.from_rows(rows), n_boot=100)
    assert set(a.conditions) == {"bf16@tiny", "sim:E8M3@tiny", "sim:E8M7@nano"}
    assert a.conditions["sim:E8M7@nano"].verdict.category == "inconclusive"  # no bf16 on nano
    ref_star = a.conditions["bf16@tiny"].lr_sensitivity.l_star
    assert a.conditions["sim:E8M3@tiny"].lr_sensitivity.l_star_ref == ref_star
    curves = boundary_curves(a)
    assert all(c.n <= 2 for c in curves.values())
    out = a.to_dict()
    assert json.dumps(out, allow_nan=False)
    assert a.settings["l0"] == {"tiny": 5.5, "nano": 5.5}
    assert analyze(Frame.from_rows(rows), n_boot=100, l0=6.0).settings["l0"] == {"tiny": 6.0, "nano": 6.0}


def test_print_analysis_shows_condition_labels_with_axes(tmp_path):
    """Labels like `bf16[qk_norm=True]` must reach the terminal intact (rich would eat them as markup)."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from robustprec.cli_display import print_analysis

    cond = {
        "verdict": {"category": "reference", "words": "bf16 is the reference [x]"},
        "eta_c": {"value": 0.01, "censored": None},
        "eta_stable": 0.003,
        "lr_sensitivity": {"S": 0.1},
    }
    labels = ["bf16[qk_norm=False,z_loss=0.0]", "bf16[qk_norm=True,z_loss=0.0001]"]
    data = {"sweep": "s", "trials": 2, "reference": "bf16", "formats": dict.fromkeys(labels, cond)}
    buf = io.StringIO()
    print_analysis(SimpleNamespace(data=data, out_dir=tmp_path, logged_to=None), Console(file=buf, width=200))
    out = buf.getvalue()
    for label in labels:
        assert out.count(label) == 2  # the verdict line and the table row
    assert "reference [x]" in out


def test_wilcoxon_only_pairs_lrs_where_the_reference_trains():
    """A format stuck at a mediocre loss everywhere must not be cleared because the reference diverged at the
    top LRs: the pairs there are left out (the divergence tests judge them)."""
    l0 = 5.5
    lrs_ok, lrs_div = [1e-3, 3e-3, 1e-2, 3e-2], [1e-1, 3e-1]
    ref = {(lr, s): 1.5 + 0.1 * i + 0.01 * s for i, lr in enumerate(lrs_ok) for s in range(3)}
    ref.update({(lr, s): l0 for lr in lrs_div for s in range(3)})
    stuck = {k: 2.44 + 0.001 * k[1] for k in ref}
    all_pairs = paired_wilcoxon(stuck, ref)
    assert (
        all_pairs["n_pairs"] == 18 and not all_pairs["says_otherwise"]
    )  # what the unrestricted test concluded
    out = paired_wilcoxon(stuck, ref, lrs=set(lrs_ok))
    d = np.array([stuck[k] - ref[k] for k in sorted(ref) if k[0] in lrs_ok])
    assert out["n_pairs"] == 12 == len(d)
    assert out["p"] == pytest.approx(stats.wilcoxon(d, alternative="greater", method="exact").pvalue)
    assert out["says_otherwise"]


@pytest.mark.parametrize("ref_mid", [False, True])
def test_divergence_phases_are_counted_and_a_warmup_only_boundary_is_called_out(ref_mid):
    """METHODS §3: when every divergence of both formats is in warm-up the verdict says the boundary is not the
    numerics'; one mid-training divergence of the reference removes the caveat."""
    rows = sweep_rows()
    for r in rows:
        if r.get("status") == "diverged":
            r["diverged_phase"] = "warmup"
            r["instability_events"] = 0
        elif r.get("status") == "converged":
            r["instability_events"] = 1 if r["numerics.backend"] == "sim:E8M7" else 0
    if ref_mid:
        next(r for r in rows if r.get("status") == "diverged" and r["numerics.backend"] == "bf16")[
            "diverged_phase"
        ] = "mid"
    out = analyze_frame(Frame.from_rows(rows), n_boot=100)
    div = {f: sum(1 for r in rows if r.get("numerics.backend") == f and r.get("status") == "diverged")
           for f in out}  # fmt: skip
    conv = sum(1 for r in rows if r.get("numerics.backend") == "sim:E8M7" and r.get("status") == "converged")
    for f, res in out.items():
        assert res["phases"]["warmup"] + res["phases"]["mid"] == div[f] and res["phases"]["unknown"] == 0
    assert out["sim:E8M7"]["phases"]["instability_events"] == conv
    assert out["bf16"]["phases"]["mid"] == int(ref_mid)
    caveat = "happened in warm-up" in out["sim:E8M7"]["verdict"]["words"]
    assert caveat is (not ref_mid)
