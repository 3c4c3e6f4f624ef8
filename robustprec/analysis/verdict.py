"""Verdict of one format against the reference (METHODS §5): four pieces of evidence, and the rule that a format is
*as robust as the reference* only if none of them says otherwise.

1. Fisher's exact test on divergence counts at each η where the reference converged in every seed
   (`fisher_by_lr`). **(robustprec choice)** one-sided (`alternative="greater"`: the format diverges more), and a
   Holm correction over the tested η (the rule "any η says otherwise" is a family of tests).
2. Wilcoxon signed-rank test on the paired final losses ℓ(f,η,s) − ℓ(ref,η,s) over the (η, seed) pairs both ran
   (`paired_wilcoxon`; a diverged trial takes ℓ0). One-sided, greater. **(robustprec choice)** only at the η where
   the reference converged in every seed, as for Fisher: where the reference diverged, the divergence tests speak,
   and pairs there would credit a format that does not learn (a loss stuck below ℓ0, as unscaled E4M3 on the H100
   study) for "beating" the diverged reference, enough to hide that it lost at every η that trains.
3. η_c(f)/η_c(ref) with a CI from the two bootstrap distributions (`eta_c_ratio`); it says otherwise when the
   CI's upper end is below 1, whether an η_c is censored or not (a censored replicate counts as the half-line
   it is known to lie in, so a censored reference no longer decides from the point ratio alone).
4. ΔS = S(f) − S(ref), both against their own ℓ*, on the shared LRs and seeds, with a paired bootstrap over seeds
   (`delta_s`); it says otherwise when the CI lower end exceeds `tol` (default 0).

Categories: `reference` (the reference itself), `less_robust` (some evidence says otherwise), `as_robust` (none
does, and at least one could be evaluated), `inconclusive` (none could be evaluated).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from robustprec.analysis.bootstrap import interval
from robustprec.analysis.boundary import EtaC, replicate_bounds
from robustprec.analysis.metrics import DivergenceRate, sensitivity

__all__ = [
    "CATEGORIES",
    "Verdict",
    "delta_s",
    "eta_c_ratio",
    "fisher_by_lr",
    "holm",
    "judge",
    "paired_wilcoxon",
    "reference_stable_lrs",
]

CATEGORIES = ("reference", "as_robust", "less_robust", "inconclusive")


def holm(p: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as `p`)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def reference_stable_lrs(ref: Mapping[float, DivergenceRate]) -> set[float]:
    """The η where the reference ran and converged in every seed: where Fisher and the paired-loss test look."""
    return {lr for lr, r in ref.items() if r.seeds and not r.diverged}


def fisher_by_lr(
    fmt: Mapping[float, DivergenceRate],
    ref: Mapping[float, DivergenceRate],
    *,
    alpha: float = 0.05,
    alternative: str = "greater",
    correction: str = "holm",
) -> dict[str, Any]:
    """Fisher's exact test of [[div_f, conv_f], [div_ref, conv_ref]] at each shared η where the reference
    converged in every seed. `correction`: "holm" or "none"."""
    tests: list[dict[str, Any]] = []
    for lr in sorted(set(fmt) & reference_stable_lrs(ref)):
        f, r = fmt[lr], ref[lr]
        if not f.seeds:
            continue
        table = [[f.diverged, f.seeds - f.diverged], [r.diverged, r.seeds - r.diverged]]
        res = stats.fisher_exact(table, alternative=alternative)
        tests.append({"lr": lr, "table": table, "odds_ratio": float(res.statistic), "p": float(res.pvalue)})
    if correction not in ("holm", "none"):
        raise ValueError(f"correction must be holm or none, got {correction!r}")
    adj = holm([t["p"] for t in tests]) if correction == "holm" else [t["p"] for t in tests]
    for t, a in zip(tests, adj, strict=True):
        t["p_adj"] = a
        t["says_otherwise"] = a < alpha
    return {
        "tests": tests,
        "alternative": alternative,
        "correction": correction,
        "testable": bool(tests),
        "says_otherwise": any(t["says_otherwise"] for t in tests),
    }


def paired_wilcoxon(
    fmt: Mapping[Any, float],
    ref: Mapping[Any, float],
    *,
    alpha: float = 0.05,
    alternative: str = "greater",
    lrs: set[float] | None = None,
) -> dict[str, Any]:
    """Wilcoxon signed-rank test on d = ℓ_f − ℓ_ref over the keys (η, seed) both have (finite values only),
    restricted to η in `lrs` when given. Zero differences (e.g. both at ℓ0) are dropped, Wilcoxon's own
    treatment of zeros."""
    keys = sorted(
        k
        for k in set(fmt) & set(ref)
        if math.isfinite(fmt[k]) and math.isfinite(ref[k]) and (lrs is None or k[0] in lrs)
    )
    d = np.array([fmt[k] - ref[k] for k in keys], dtype=np.float64)
    out: dict[str, Any] = {
        "n_pairs": len(d),
        "n_nonzero": int(np.count_nonzero(d)),
        "mean_diff": float(np.mean(d)) if len(d) else None,
        "median_diff": float(np.median(d)) if len(d) else None,
        "statistic": None,
        "p": None,
        "alternative": alternative,
        "testable": False,
        "says_otherwise": False,
    }
    if out["n_nonzero"] == 0:
        return out
    # zeros dropped first (identical to zero_method="wilcox"), so that scipy's "auto" picks the exact null
    # distribution rather than a slow permutation test (n <= 13) or the normal approximation (n <= 50)
    res = stats.wilcoxon(d[d != 0], alternative=alternative)
    out.update(statistic=float(res.statistic), p=float(res.pvalue), testable=True)
    out["says_otherwise"] = out["p"] < alpha
    return out


def _bounds(e: EtaC, n: int) -> tuple[np.ndarray, np.ndarray]:
    assert e.lr_min is not None and e.lr_max is not None, "an η_c with a value was fitted on a grid"
    return replicate_bounds(e.boot[:n], math.log(e.lr_min), math.log(e.lr_max))


def _ratio_ci(fmt: EtaC, ref: EtaC, point: float, level: float) -> tuple[float | None, float | None]:
    """CI of ln η_c(f) − ln η_c(ref) from the two bootstraps, replicate by replicate (censored replicates as
    half-lines, `boundary.replicate_bounds`), by the one convention of `bootstrap.interval`."""
    n = min(len(fmt.boot), len(ref.boot))
    (f_lo, f_hi), (r_lo, r_hi) = _bounds(fmt, n), _bounds(ref, n)
    lo, hi = interval(point, f_lo - r_hi, f_hi - r_lo, groups=min(fmt.groups, ref.groups), level=level)
    return (None if lo is None else math.exp(lo)), (None if hi is None else math.exp(hi))


def eta_c_ratio(fmt: EtaC, ref: EtaC, *, level: float = 0.95) -> dict[str, Any]:
    """η_c(f)/η_c(ref): value, CI and censoring ("above": the ratio is above value; "below": below it). It says
    otherwise when the whole CI lies below 1, censored or not. Undetermined (value None) when the censoring
    directions conflict or an η_c is missing."""
    out: dict[str, Any] = {"value": None, "ci": [None, None], "censored": None, "testable": False}
    out["says_otherwise"] = False
    if fmt.value is None or ref.value is None:
        return out
    flip = {"above": "below", "below": "above", None: None}
    dirs = {d for d in (fmt.censored, flip[ref.censored]) if d}
    if len(dirs) > 1:
        return out
    ratio = fmt.value / ref.value
    lo, hi = _ratio_ci(fmt, ref, math.log(ratio), level)
    out.update(
        value=ratio, ci=[lo, hi], censored=next(iter(dirs), None), testable=lo is not None or hi is not None
    )
    out["says_otherwise"] = hi is not None and hi < 1
    return out


def _matrix(table: Mapping[tuple[float, int], float], lrs: list[float], seeds: list[Any]) -> np.ndarray:
    m = np.full((len(seeds), len(lrs)), np.nan)
    for i, s in enumerate(seeds):
        for j, lr in enumerate(lrs):
            m[i, j] = table.get((lr, s), np.nan)
    return m


def delta_s(
    fmt: Mapping[tuple[float, int], float],
    ref: Mapping[tuple[float, int], float],
    l0: float,
    *,
    level: float = 0.95,
    n_boot: int = 1000,
    tol: float = 0.0,
    rng: np.random.Generator | int | None = 0,
) -> dict[str, Any]:
    """ΔS = S(f) − S(ref) over the shared LRs and seeds (tables map (η, seed) → ℓ, diverged → ℓ0), with a paired
    bootstrap over seeds, made an interval by `bootstrap.interval` (the analysis' one CI convention)."""
    lrs = sorted({k[0] for k in fmt} & {k[0] for k in ref})
    seeds = sorted({k[1] for k in fmt} & {k[1] for k in ref}, key=str)
    out: dict[str, Any] = {
        "value": None,
        "ci": [None, None],
        "tol": tol,
        "lrs": len(lrs),
        "seeds": len(seeds),
    }
    out.update(testable=False, says_otherwise=False)
    if not lrs or not seeds or not math.isfinite(l0):
        return out
    mf, mr = _matrix(fmt, lrs, seeds), _matrix(ref, lrs, seeds)
    with warnings.catch_warnings():  # an LR a resample has no value at gives a NaN S: undefined, open
        warnings.simplefilter("ignore", RuntimeWarning)
        point = float(sensitivity(np.nanmean(mf, 0), l0) - sensitivity(np.nanmean(mr, 0), l0))
        if not math.isfinite(point):
            return out
        out["value"] = point
        g = len(seeds)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        idx = rng.integers(0, g, size=(n_boot, g))
        boot = sensitivity(np.nanmean(mf[idx], 1), l0) - sensitivity(np.nanmean(mr[idx], 1), l0)
    lo, hi = interval(point, boot, groups=g, level=level)
    out.update(ci=[lo, hi], testable=lo is not None or hi is not None)
    out["says_otherwise"] = lo is not None and lo > tol
    return out


@dataclass
class Verdict:
    """A format's verdict against the reference, in a category and in words, with its evidence."""

    format: str
    reference: str
    category: str
    words: str
    evidence: dict[str, Any] = field(default_factory=dict)
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "words": self.words,
            "reference": self.reference,
            "alpha": self.alpha,
            "evidence": self.evidence,
        }


def _g(v: float | None) -> str:
    return "?" if v is None else f"{v:.3g}"


def _ci(ci: list[float | None]) -> str:
    lo, hi = ci
    return f"[{'-inf' if lo is None else f'{lo:.3g}'}, {'inf' if hi is None else f'{hi:.3g}'}]"


def judge(
    fmt: str, reference: str, evidence: Mapping[str, Mapping[str, Any]], alpha: float = 0.05
) -> Verdict:
    """Category and words from the four pieces of evidence (keys fisher, wilcoxon, eta_c_ratio, delta_S)."""
    ev = dict(evidence)
    reasons, checked = [], []
    fi = ev.get("fisher", {})
    if fi.get("testable"):
        bad = [t for t in fi["tests"] if t["says_otherwise"]]
        checked.append(f"Fisher at {len(fi['tests'])} LR(s)")
        for t in bad:
            (d_f, c_f), (d_r, c_r) = t["table"]
            reasons.append(
                f"diverges more often at lr={t['lr']:.3g} ({d_f}/{d_f + c_f} vs {d_r}/{d_r + c_r}, "
                f"Fisher p_adj={t['p_adj']:.3g})"
            )
    wi = ev.get("wilcoxon", {})
    if wi.get("testable"):
        checked.append(f"Wilcoxon p={wi['p']:.3g} over {wi['n_pairs']} pairs")
        if wi["says_otherwise"]:
            reasons.append(
                f"higher final loss on paired seeds (mean diff {_g(wi['mean_diff'])}, "
                f"Wilcoxon p={wi['p']:.3g}, n={wi['n_pairs']})"
            )
    ra = ev.get("eta_c_ratio", {})
    if ra.get("testable"):
        bound = {"above": "> ", "below": "< "}.get(ra["censored"], "")
        shown = f"{bound}{_g(ra['value'])} {_ci(ra['ci'])}"
        checked.append(f"eta_c ratio {shown}")
        if ra["says_otherwise"]:
            reasons.append(f"lower critical LR (eta_c ratio {shown})")
    ds = ev.get("delta_S", {})
    if ds.get("testable"):
        checked.append(f"dS {_g(ds['value'])} {_ci(ds['ci'])}")
        if ds["says_otherwise"]:
            reasons.append(f"more LR-sensitive (dS {_g(ds['value'])} {_ci(ds['ci'])})")
    if reasons:
        cat, words = "less_robust", f"{fmt} is less robust than {reference}: " + "; ".join(reasons)
    elif checked:
        cat = "as_robust"
        words = f"{fmt} is as robust as {reference}: no test says otherwise (" + "; ".join(checked) + ")"
    else:
        cat, words = "inconclusive", f"{fmt} vs {reference}: inconclusive, no comparison could be made"
    return Verdict(fmt, reference, cat, words, ev, alpha)
