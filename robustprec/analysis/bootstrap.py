"""The one confidence-interval convention of the analysis (η_c, the η_c ratio and ΔS all use `interval`).

A bootstrap over seeds gives B replicates of a statistic θ. **(robustprec choice)**, documented in docs/methods.md:

1. Every replicate counts; none is dropped. A replicate is an interval [lo_b, hi_b]: a point where θ* is
   determined, a half-line where it is censored (e.g. no divergence in the resample: η_c* above the largest LR),
   the whole line (NaN) where it is undefined. A CI end takes each replicate's least favourable end.
2. Few-seed widening, here and nowhere else: each finite end v becomes θ̂ + c_G (v − θ̂), with
   c_G = sqrt(G/(G−1)) · t_{G−1}(1−α/2) / z(1−α/2) for G resampled seeds (the bootstrap's (G−1)/G variance
   deflation, and t instead of normal quantiles).
3. CI = [q_{α/2}(lo_b), q_{1−α/2}(hi_b)] (inverted-CDF quantiles), widened to contain θ̂; an infinite end is open.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["few_seed_factor", "interval"]


def few_seed_factor(groups: int, level: float = 0.95) -> float:
    """c_G = sqrt(G/(G−1)) · t_{G−1}(1−α/2) / z(1−α/2), the widening of the deviations from the point."""
    q = 1 - (1 - level) / 2
    return math.sqrt(groups / (groups - 1)) * float(stats.t.ppf(q, groups - 1) / stats.norm.ppf(q))


def interval(
    point: float,
    lo: np.ndarray,
    hi: np.ndarray | None = None,
    *,
    groups: int,
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    """The CI of `point` from replicate bounds `lo` and `hi` (default: `lo`, point replicates); None = open.

    NaN replicates are undefined (open on both sides); ±inf ends are open. Fewer than 2 seeds: no interval."""
    if groups < 2 or not math.isfinite(point):
        return None, None
    c = few_seed_factor(groups, level)
    lo = np.asarray(lo, dtype=np.float64)
    hi = lo if hi is None else np.asarray(hi, dtype=np.float64)
    if not len(lo):
        return None, None
    with np.errstate(invalid="ignore"):
        lo_w = np.where(np.isnan(lo), -np.inf, point + c * (lo - point))
        hi_w = np.where(np.isnan(hi), np.inf, point + c * (hi - point))
    alpha = 1 - level
    q_lo = min(float(np.quantile(lo_w, alpha / 2, method="inverted_cdf")), point)
    q_hi = max(float(np.quantile(hi_w, 1 - alpha / 2, method="inverted_cdf")), point)
    return (q_lo if math.isfinite(q_lo) else None, q_hi if math.isfinite(q_hi) else None)
