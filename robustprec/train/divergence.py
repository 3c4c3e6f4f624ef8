"""Trial-outcome classification (METHODS §3): nonfinite, blowup, unrecovered spike, or converged; the phase of
a divergence (warm-up or mid-training) and the spikes that recovered (instability events).

An EMA (alpha) of the train loss is compared with l0, the loss at initialisation (the first step's loss), and
with its own running minimum. Thresholds are configurable and logged with every run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

EARLY_FRACTION = 0.05  # a divergence within the first 5% of steps counts as warm-up phase (METHODS §3)


@dataclass
class Outcome:
    status: str  # "converged" | "diverged"
    reason: str | None  # "nonfinite" | "blowup" | "spike" | None
    diverged_at: int | None
    spike_events: int  # recovered spikes (instability events)
    event_steps: list[int] = field(default_factory=list)  # where each recovered spike started
    event_heights: list[float] = field(default_factory=list)  # its peak EMA rise above the running minimum


def divergence_phase(diverged_at: int | None, warmup_steps: int, total_steps: int) -> str | None:
    """`warmup` at or before the end of warm-up (step `warmup_steps`, the first the blowup check sees) or within
    the first 5% of steps, `mid` later (METHODS §3)."""
    if diverged_at is None:
        return None
    early = diverged_at <= warmup_steps or diverged_at < EARLY_FRACTION * total_steps
    return "warmup" if early else "mid"


@dataclass
class DivergenceMonitor:
    """Feed it one (step, loss, grad_norm) per optimizer step; it says when a trial has diverged."""

    ema_alpha: float = 0.1
    spike_tol: float = 0.5
    warmup_steps: int = 0
    initial_loss: float | None = None
    ema: float | None = None
    running_min: float = math.inf
    spike_start: int | None = None
    spike_height: float = 0.0
    spike_events: int = 0
    event_steps: list[int] = field(default_factory=list)
    event_heights: list[float] = field(default_factory=list)
    reason: str | None = None
    diverged_at: int | None = None

    def update(self, step: int, loss: float, grad_norm: float | None = None) -> str | None:
        """Return the divergence reason if this step makes the trial diverged (nonfinite or blowup)."""
        if self.reason is not None:
            return self.reason
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            return self._diverge("nonfinite", step)
        if self.initial_loss is None:
            self.initial_loss = loss
        self.ema = loss if self.ema is None else self.ema_alpha * loss + (1 - self.ema_alpha) * self.ema
        if step >= self.warmup_steps and self.ema > self.initial_loss:
            return self._diverge("blowup", step)
        self._track_spike(step)
        self.running_min = min(self.running_min, self.ema)
        return None

    def _track_spike(self, step: int) -> None:
        assert self.ema is not None
        rise = self.ema - self.running_min
        if rise > self.spike_tol:
            if self.spike_start is None:
                self.spike_start, self.spike_height = step, rise
            self.spike_height = max(self.spike_height, rise)
        elif self.spike_start is not None:  # back within spike_tol of the minimum: a recovered spike
            self.spike_events += 1
            self.event_steps.append(self.spike_start)
            self.event_heights.append(self.spike_height)
            self.spike_start, self.spike_height = None, 0.0

    def _diverge(self, reason: str, step: int) -> str:
        self.reason, self.diverged_at = reason, step
        return reason

    def finish(self) -> Outcome:
        """Final classification; a spike still open at the end of training counts as divergence."""
        if self.reason is None and self.spike_start is not None:
            self._diverge("spike", self.spike_start)
        status = "converged" if self.reason is None else "diverged"
        return Outcome(
            status,
            self.reason,
            self.diverged_at,
            self.spike_events,
            list(self.event_steps),
            list(self.event_heights),
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def classify_curve(
    losses: list[float],
    grad_norms: list[float] | None = None,
    *,
    ema_alpha: float = 0.1,
    spike_tol: float = 0.5,
    warmup_steps: int = 0,
) -> Outcome:
    """Classify a whole loss curve (steps 0..n-1) as the trainer would, without early stopping."""
    mon = DivergenceMonitor(ema_alpha=ema_alpha, spike_tol=spike_tol, warmup_steps=warmup_steps)
    for i, loss in enumerate(losses):
        if mon.update(i, loss, None if grad_norms is None else grad_norms[i]):
            break
    return mon.finish()
