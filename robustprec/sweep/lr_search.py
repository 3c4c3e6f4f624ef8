"""Adaptive search for the critical learning rate η_c of one condition (issue 16), as pure logic.

A coarse bracket first (`coarse_points` log-spaced LRs over [lo, hi]), then rounds of points placed where they
shrink η_c's interval most: the current estimate and the two ends of its CI (in log LR; an open CI end falls back
to the nearest all-converged / all-diverged LR tested), each with `seeds_per_point` fresh seeds. It stops when the
CI ratio (upper / lower) is at most `target_ci_ratio`, when η_c is censored at an end of [lo, hi] (the range does
not bracket it: widening is the user's call), or when `max_trials` are spent. The estimate it steers by is the
analysis package's own fit (`analysis.boundary.fit_eta_c`), so the search and the report agree.

No Ray here: a Tune `Searcher` drives one `EtaCSearch` per condition; this module is what the simulation tests
exercise against a known logistic boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustprec.analysis.boundary import EtaC, fit_eta_c


@dataclass(frozen=True)
class SearchSettings:
    """`sweep.lr_search` in adaptive mode."""

    lo: float
    hi: float
    seeds_per_point: int = 2
    max_trials: int = 24
    target_ci_ratio: float = 1.5
    coarse_points: int = 4
    n_boot: int = 400

    def __post_init__(self) -> None:
        if not 0 < self.lo < self.hi:
            raise ValueError(f"lr_search needs 0 < lo < hi; got lo={self.lo}, hi={self.hi}")
        if self.coarse_points < 2 or self.seeds_per_point < 1 or self.target_ci_ratio <= 1:
            raise ValueError(
                "lr_search needs coarse_points >= 2, seeds_per_point >= 1 and target_ci_ratio > 1"
            )
        if self.max_trials < self.coarse_points * self.seeds_per_point:
            raise ValueError(
                f"lr_search.max_trials ({self.max_trials}) is below the coarse bracket's "
                f"{self.coarse_points} points x {self.seeds_per_point} seeds"
            )


@dataclass
class EtaCSearch:
    """The search state of one condition: trials proposed, outcomes seen, the current η_c."""

    settings: SearchSettings
    outcomes: list[tuple[float, int, bool]] = field(default_factory=list)  # (lr, seed, diverged)
    proposed: int = 0
    next_seed: int = 0
    lost: int = 0  # proposed trials that ended without an outcome (errors): not waited for

    def start_after(self, trials: int, seeds: list[int]) -> None:
        """Take `trials` already planned (a grid over `seeds`) as the coarse stage, in place of the bracket."""
        self.proposed = trials
        self.next_seed = max(seeds, default=-1) + 1

    def _waiting(self) -> bool:
        return self.proposed > len(self.outcomes) + self.lost

    def _batch(self, lrs: list[float]) -> list[tuple[float, int]]:
        room = self.settings.max_trials - self.proposed
        points = [(lr, self.next_seed + s) for s in range(self.settings.seeds_per_point) for lr in lrs][:room]
        self.next_seed += self.settings.seeds_per_point
        self.proposed += len(points)
        return points

    def propose(self) -> list[tuple[float, int]]:
        """The next batch of (lr, seed) to run, once every earlier batch has reported; [] when done."""
        if self._waiting() or self.done():
            return []
        s = self.settings
        if self.proposed == 0:
            return self._batch(np.geomspace(s.lo, s.hi, s.coarse_points).tolist())
        return self._batch(self._targets())

    def record(self, lr: float, seed: int, diverged: bool) -> None:
        self.outcomes.append((float(lr), int(seed), bool(diverged)))

    def lose(self) -> None:
        """A proposed trial ended without an outcome (an error): the search goes on without it."""
        self.lost += 1

    def estimate(self) -> EtaC:
        """The fit on every outcome so far, in a fixed order (so a resumed search proposes what it would have)."""
        ordered = sorted(self.outcomes)
        lr, seed, div = zip(*ordered, strict=True) if ordered else ((), (), ())
        return fit_eta_c(np.array(lr), np.array(div), np.array(seed), n_boot=self.settings.n_boot)

    def ci_ratio(self, est: EtaC | None = None) -> float:
        est = est or self.estimate()
        lo, hi = est.ci
        return hi / lo if lo and hi else math.inf

    def done(self) -> bool:
        if self.proposed >= self.settings.max_trials:
            return True
        if not self.outcomes or self._waiting():
            return False
        est = self.estimate()
        return est.censored is not None or self.ci_ratio(est) <= self.settings.target_ci_ratio

    def _targets(self) -> list[float]:
        """Points inside η_c's interval cut to the bracket of pure LRs (largest all-converged, smallest
        all-diverged), where an outcome moves its ends: two or three, equally spaced in log LR."""
        est, s = self.estimate(), self.settings
        below, above = self._pure_end(diverged=False), self._pure_end(diverged=True)
        lo, hi = est.ci
        lo = max(v for v in (lo, below, s.lo) if v is not None)
        hi = min(v for v in (hi, above, s.hi) if v is not None)
        if hi <= lo:  # the CI lies outside the bracket of pure LRs: search the bracket
            lo, hi = below or s.lo, above or s.hi
        n = min(3, max(2, math.ceil(math.log(hi / lo) / math.log(s.target_ci_ratio))))
        points = np.exp(np.linspace(math.log(lo), math.log(hi), n + 2)[1:-1])
        return sorted({float(np.clip(v, s.lo, s.hi)) for v in points})

    def _pure_end(self, diverged: bool) -> float | None:
        """Largest LR where every seed converged (or smallest where every seed diverged)."""
        by_lr: dict[float, list[bool]] = {}
        for lr, _, d in self.outcomes:
            by_lr.setdefault(lr, []).append(d)
        pure = [lr for lr, ds in by_lr.items() if all(ds) == diverged and any(ds) == diverged]
        if not pure:
            return None
        return min(pure) if diverged else max(pure)

    def state_dict(self) -> dict[str, Any]:
        return {
            "outcomes": [list(o) for o in self.outcomes],
            "proposed": self.proposed,
            "next_seed": self.next_seed,
            "lost": self.lost,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.outcomes = [(float(a), int(b), bool(c)) for a, b, c in state["outcomes"]]
        self.proposed, self.next_seed = int(state["proposed"]), int(state["next_seed"])
        self.lost = int(state.get("lost", 0))
