"""Per-condition metrics of METHODS §4–5 on plain arrays (one entry per trial of one condition).

- divergence rate p(f, η) with a Wilson score interval (`divergence_by_lr`, `wilson_ci`);
- the final loss ℓ of a trial, where a diverged trial takes ℓ0 (`trial_losses`, `l0_by_model`);
- seed spread over converged seeds (`seed_spread`);
- LR sensitivity S against the format's own ℓ* and against the reference's (`lr_sensitivity`, `sensitivity`);
- η_stable, the largest grid LR where every seed converged (`eta_stable`);
- the logit-sharpness trajectory summary of one trial (`sharpness_summary`).

A trial with recovered spikes (instability events, METHODS §3) is converged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binomtest

if TYPE_CHECKING:
    from robustprec.analysis.frame import Frame

__all__ = [
    "DivergenceRate",
    "LRSensitivity",
    "SeedSpread",
    "divergence_by_lr",
    "eta_stable",
    "l0_by_model",
    "lr_key",
    "lr_sensitivity",
    "seed_spread",
    "sensitivity",
    "sharpness_summary",
    "trial_losses",
    "wilson_ci",
]


def lr_key(lr: float) -> str:
    """The JSON key of a learning rate: `repr(float(lr))`, so `float(key) == lr` exactly."""
    return repr(float(lr))


def _opt(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


# ------------------------------------------------------------------------------------------ divergence


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (no continuity correction) for k successes in n trials."""
    if n <= 0:
        raise ValueError("a Wilson interval needs n >= 1 trials")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class DivergenceRate:
    """p(f, η) = diverged / seeds, with its Wilson interval."""

    lr: float
    diverged: int
    seeds: int
    rate: float
    ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"diverged": self.diverged, "seeds": self.seeds, "rate": self.rate, "ci": list(self.ci)}


def divergence_by_lr(
    lr: np.ndarray, diverged: np.ndarray, level: float = 0.95
) -> dict[float, DivergenceRate]:
    """Divergence rate at each LR of the grid (ascending). Each trial is one seed's outcome."""
    lr, diverged = np.asarray(lr, dtype=np.float64), np.asarray(diverged, dtype=bool)
    out = {}
    for v in np.unique(lr):
        d = diverged[lr == v]
        k, n = int(d.sum()), len(d)
        out[float(v)] = DivergenceRate(float(v), k, n, k / n, wilson_ci(k, n, level))
    return out


def eta_stable(lr: np.ndarray, diverged: np.ndarray) -> float | None:
    """η_stable: the largest grid LR at which every seed converged (None if there is none).

    Taken literally from METHODS §5: a fully converged LR above a partly diverged one still counts.
    """
    lr, diverged = np.asarray(lr, dtype=np.float64), np.asarray(diverged, dtype=bool)
    stable = [float(v) for v in np.unique(lr) if not diverged[lr == v].any()]
    return max(stable) if stable else None


# ------------------------------------------------------------------------------------------------ losses


def l0_by_model(frame: Frame) -> dict[str, float]:
    """ℓ0 per model: the median over that model's trials of the loss at initialisation.

    **(robustprec choice)** ℓ0 is one constant per model (as [WORTSMAN]'s ℓ0), not per trial: the initial loss
    barely depends on seed or format, and a constant makes a pair of diverged trials tie exactly. Source:
    `initial_loss` (summary.json), else `loss_first` (the curve's first loss). NaN when neither is known.
    """
    out = {}
    for model in dict.fromkeys(frame["model"].tolist()):
        m = frame["model"] == model
        value = math.nan
        for col in ("initial_loss", "loss_first"):
            if col in frame:
                v = frame[col][m].astype(np.float64)
                v = v[np.isfinite(v)]
                if len(v):
                    value = float(np.median(v))
                    break
        out[str(model)] = value
    return out


def trial_losses(final_eval_loss: np.ndarray, diverged: np.ndarray, l0: float) -> np.ndarray:
    """ℓ(f, η, s): the final eval loss (mean of the last 3 evals, as the trainer records it); ℓ0 if diverged."""
    loss = np.asarray(final_eval_loss, dtype=np.float64).copy()
    loss[np.asarray(diverged, dtype=bool)] = l0
    return loss


@dataclass(frozen=True)
class SeedSpread:
    """Mean, sample std (ddof=1) and range (max − min) of ℓ over converged seeds."""

    n: int
    mean: float | None
    std: float | None
    range: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "range": self.range}


def seed_spread(losses: Sequence[float] | np.ndarray) -> SeedSpread:
    """Seed spread of the converged seeds' final losses (non-finite values are ignored)."""
    v = np.asarray(losses, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return SeedSpread(0, None, None, None)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else None
    return SeedSpread(len(v), float(v.mean()), std, float(v.max() - v.min()))


def sensitivity(mean_loss: np.ndarray, l0: float, l_star: float | None = None) -> np.ndarray:
    """S = mean over the grid (last axis) of [min(ℓ̄, ℓ0) − ℓ*]; ℓ* defaults to the min of ℓ̄ over the grid.

    Vectorised over leading axes (bootstrap replicates); NaN where any ℓ̄ is NaN.
    """
    m = np.asarray(mean_loss, dtype=np.float64)
    star = np.min(m, axis=-1) if l_star is None else np.float64(l_star)
    return np.mean(np.minimum(m, l0), axis=-1) - star


@dataclass
class LRSensitivity:
    """LR sensitivity of one condition [WORTSMAN]: S against its own ℓ* and against the reference's ℓ*."""

    S: float | None
    S_vs_ref: float | None
    l_star: float | None
    l_star_ref: float | None
    best_lr: float | None
    l0: float | None
    per_lr: dict[float, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "S": self.S,
            "S_vs_ref": self.S_vs_ref,
            "l_star": self.l_star,
            "l_star_ref": self.l_star_ref,
            "best_lr": self.best_lr,
            "l0": self.l0,
            "per_lr": {lr_key(k): v for k, v in self.per_lr.items()},
        }


def lr_sensitivity(
    lr: np.ndarray,
    final_eval_loss: np.ndarray,
    diverged: np.ndarray,
    l0: float,
    l_star_ref: float | None = None,
) -> LRSensitivity:
    """S(f) = mean_η [min(ℓ̄(f,η), ℓ0) − ℓ*(f)], ℓ̄ the seed mean of ℓ (diverged → ℓ0), ℓ* = min_η ℓ̄.

    `S_vs_ref` replaces ℓ*(f) by `l_star_ref`. The grid is every LR with at least one finite ℓ; a converged
    trial without a final loss is left out of its LR's mean. `per_lr` gives ℓ̄, min(ℓ̄, ℓ0) and the seed spread
    of the converged seeds. S is None when ℓ0 is unknown and needed (a diverged trial).
    """
    lr = np.asarray(lr, dtype=np.float64)
    diverged = np.asarray(diverged, dtype=bool)
    fin = np.asarray(final_eval_loss, dtype=np.float64)
    loss = trial_losses(fin, diverged, l0)
    grid = [float(v) for v in np.unique(lr)]
    per_lr: dict[float, dict[str, Any]] = {}
    means = []
    for v in grid:
        at = lr == v
        vals = loss[at]
        vals = vals[np.isfinite(vals) | diverged[at]]  # a diverged value is NaN only if ℓ0 is unknown
        mean = float(np.mean(vals)) if len(vals) else math.nan
        if len(vals):
            means.append((v, mean))
        per_lr[v] = {
            "mean_loss": _opt(mean),
            "clamped_loss": _opt(min(mean, l0)) if math.isfinite(l0) else None,
            "n": len(vals),
            "spread": seed_spread(fin[at & ~diverged]).to_dict(),
        }
    m = np.array([x for _, x in means])
    if not len(m) or not np.all(np.isfinite(m)) or not math.isfinite(l0):
        l_star = _opt(float(np.nanmin(m))) if len(m) and np.isfinite(m).any() else None
        return LRSensitivity(None, None, l_star, l_star_ref, None, _opt(l0), per_lr)
    best = int(np.argmin(m))
    s = float(sensitivity(m, l0))
    s_ref = float(sensitivity(m, l0, l_star_ref)) if l_star_ref is not None else None
    return LRSensitivity(s, s_ref, float(m[best]), l_star_ref, means[best][0], float(l0), per_lr)


# --------------------------------------------------------------------------------------------- sharpness


def sharpness_summary(
    step: np.ndarray,
    sharpness: np.ndarray,
    diverged_at: float | None = None,
    *,
    warn_factor: float = 2.0,
    baseline_evals: int = 3,
) -> dict[str, float | None]:
    """Summary of one trial's logit ε-sharpness trajectory φ_ε (METHODS §4, measured at every evaluation).

    **(robustprec choice)**, since METHODS names the trajectory but no summary of it. Over the evaluations with
    a finite φ (rows of the curve without one are skipped):
    `sharp_n`, `sharp_first`, `sharp_last`, `sharp_max`, `sharp_max_step`;
    `sharp_log_slope`: least-squares slope of ln φ per 1000 steps (evals with φ > 0; None below 2 of them);
    `sharp_warn_step`: the first eval after the first `baseline_evals` at which φ exceeds `warn_factor` times
    their median (the early warning); `sharp_lead`: `diverged_at − sharp_warn_step` for a diverged trial warned
    at or before it diverged (how many steps of warning the trajectory gave).
    """
    step = np.asarray(step, dtype=np.float64)
    phi = np.asarray(sharpness, dtype=np.float64)
    ok = np.isfinite(phi) & np.isfinite(step)
    step, phi = step[ok], phi[ok]
    out: dict[str, float | None] = dict.fromkeys(
        (
            "sharp_n",
            "sharp_first",
            "sharp_last",
            "sharp_max",
            "sharp_max_step",
            "sharp_log_slope",
            "sharp_warn_step",
            "sharp_lead",
        )
    )
    out["sharp_n"] = float(len(phi))
    if not len(phi):
        return out
    order = np.argsort(step, kind="stable")
    step, phi = step[order], phi[order]
    i_max = int(np.argmax(phi))
    out.update(
        sharp_first=float(phi[0]),
        sharp_last=float(phi[-1]),
        sharp_max=float(phi[i_max]),
        sharp_max_step=float(step[i_max]),
    )
    pos = phi > 0
    if pos.sum() >= 2 and np.ptp(step[pos]) > 0:
        out["sharp_log_slope"] = float(np.polyfit(step[pos] / 1000.0, np.log(phi[pos]), 1)[0])
    if len(phi) > baseline_evals >= 1:
        base = float(np.median(phi[:baseline_evals]))
        if base > 0:
            hits = np.nonzero(phi[baseline_evals:] > warn_factor * base)[0]
            if len(hits):
                warn = float(step[baseline_evals + hits[0]])
                out["sharp_warn_step"] = warn
                if diverged_at is not None and math.isfinite(diverged_at) and warn <= diverged_at:
                    out["sharp_lead"] = float(diverged_at - warn)
    return out
