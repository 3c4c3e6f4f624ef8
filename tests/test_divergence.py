import math

import pytest

from robustprec.train.divergence import DivergenceMonitor, classify_curve, divergence_phase


def test_healthy_curve_converges():
    losses = [5.5 - 3 * (1 - math.exp(-i / 20)) for i in range(200)]
    out = classify_curve(losses, warmup_steps=10)
    assert (out.status, out.reason, out.diverged_at, out.spike_events) == ("converged", None, None, 0)


def test_nonfinite_loss_or_grad_norm_diverges_at_that_step():
    out = classify_curve([5.0, 4.0, float("nan"), 3.0])
    assert (out.status, out.reason, out.diverged_at) == ("diverged", "nonfinite", 2)
    out = classify_curve([5.0, 4.0, 3.9], grad_norms=[1.0, float("inf"), 1.0])
    assert (out.reason, out.diverged_at) == ("nonfinite", 1)


def test_blowup_only_after_warmup():
    # loss exceeds l0 from step 3 on; EMA (alpha=0.1) crosses l0=5 at the step computed here by hand
    losses = [5.0, 4.0, 4.0] + [20.0] * 30
    ema, crossing = 5.0, None
    for i, x in enumerate(losses[1:], start=1):
        ema = 0.1 * x + 0.9 * ema
        if ema > 5.0 and crossing is None:
            crossing = i
    assert crossing is not None
    out = classify_curve(losses, warmup_steps=0)
    assert (out.reason, out.diverged_at) == ("blowup", crossing)
    late = classify_curve(losses, warmup_steps=crossing + 5)
    assert (late.reason, late.diverged_at) == ("blowup", crossing + 5)


def test_recovered_spike_is_an_event_not_a_divergence():
    losses = [5.0] + [3.0] * 60 + [4.5] * 15 + [3.0] * 80
    out = classify_curve(losses, warmup_steps=1000)  # no blowup check
    assert out.status == "converged" and out.spike_events == 1
    # the event starts where the EMA first rises more than spike_tol above its running minimum, and its height is
    # the EMA's largest rise over that minimum, both recomputed here independently
    ema, low, start, peak = None, math.inf, None, 0.0
    for i, x in enumerate(losses):
        ema = x if ema is None else 0.1 * x + 0.9 * ema
        if ema - low > 0.5:
            start = i if start is None else start
            peak = max(peak, ema - low)
        low = min(low, ema)
    assert out.event_steps == [start] and out.event_heights == [pytest.approx(peak)]


def test_two_recovered_spikes_are_two_events():
    losses = [5.0] + ([3.0] * 60 + [4.5] * 15) * 2 + [3.0] * 80
    out = classify_curve(losses, warmup_steps=1000)
    assert (
        out.status == "converged" and out.spike_events == 2 and out.event_steps[0] < 80 < out.event_steps[1]
    )


@pytest.mark.parametrize(
    ("at", "warmup", "total", "phase"),
    [(None, 10, 100, None), (0, 10, 100, "warmup"), (10, 10, 100, "warmup"), (11, 10, 100, "mid"),
     (10, 0, 400, "warmup"), (19, 0, 400, "warmup"), (20, 0, 400, "mid"), (399, 50, 400, "mid")],
)  # fmt: skip
def test_divergence_phase(at, warmup, total, phase):
    # warmup: at or before the end of warm-up (the blowup check first fires at step `warmup`) or within the first
    # 5% of steps
    assert divergence_phase(at, warmup, total) == phase


def test_unrecovered_spike_diverges_at_its_start():
    losses = [5.0] + [3.0] * 60 + [4.8] * 40
    mon = DivergenceMonitor(warmup_steps=1000)
    start = None
    for i, x in enumerate(losses):
        assert mon.update(i, x) is None  # a spike never stops training early
        if start is None and mon.spike_start is not None:
            start = i
    out = mon.finish()
    # the unrecovered spike is the divergence, not an instability event
    assert (out.status, out.reason, out.diverged_at, out.spike_events) == ("diverged", "spike", start, 0)


def test_state_roundtrip():
    a = DivergenceMonitor(warmup_steps=2)
    for i, x in enumerate([5.0, 4.0, 3.5]):
        a.update(i, x)
    b = DivergenceMonitor()
    b.load_state_dict(a.state_dict())
    for i, x in enumerate([3.4, 9.0, 9.0], start=3):
        assert a.update(i, x) == b.update(i, x)
    assert a.finish() == b.finish()
