"""Run every METHODS metric on a trial Frame: one `ConditionResult` per condition (format × model × extra axes),
each compared with the reference format of the same model and axes.

`analyze_frame(frame)` is the JSON form written to analysis.json: per condition label exactly the keys
`divergence`, `lr_sensitivity`, `eta_c`, `eta_stable`, `verdict`. A label is the format, plus `@model` when the
frame has several models, plus `[axis=value,...]` for extra axes that take several values.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustprec.analysis.boundary import BoundaryFit, EtaC, bits_curves, fit_eta_c, size_curve
from robustprec.analysis.frame import Frame
from robustprec.analysis.metrics import (
    DivergenceRate,
    LRSensitivity,
    divergence_by_lr,
    eta_stable,
    l0_by_model,
    lr_key,
    lr_sensitivity,
    trial_losses,
)
from robustprec.analysis.verdict import (
    Verdict,
    delta_s,
    eta_c_ratio,
    fisher_by_lr,
    judge,
    paired_wilcoxon,
    reference_stable_lrs,
)
from robustprec.errors import RecordError

__all__ = ["RESULT_KEYS", "Analysis", "ConditionResult", "analyze", "analyze_frame", "boundary_curves"]

RESULT_KEYS = ("divergence", "lr_sensitivity", "eta_c", "eta_stable", "verdict")


@dataclass
class ConditionResult:
    """Everything computed for one condition."""

    label: str
    format: str
    model: str
    axes: dict[str, Any]
    divergence: dict[float, DivergenceRate]
    lr_sensitivity: LRSensitivity
    eta_c: EtaC
    eta_stable: float | None
    verdict: Verdict
    losses: dict[tuple[float, Any], float] = field(default_factory=dict, repr=False)
    phases: dict[str, int] = field(default_factory=dict)  # divergences by phase, and instability events

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "divergence": {lr_key(k): v.to_dict() for k, v in self.divergence.items()},
                "lr_sensitivity": self.lr_sensitivity.to_dict(),
                "eta_c": self.eta_c.to_dict(),
                "eta_stable": self.eta_stable,
                "verdict": self.verdict.to_dict(),
                "phases": self.phases,
            }
        )


@dataclass
class Analysis:
    """All conditions of a frame, keyed by label, and the settings used."""

    conditions: dict[str, ConditionResult]
    reference: str
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {label: r.to_dict() for label, r in self.conditions.items()}


def _jsonable(v: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, tuples as lists, NaN/inf as None, keys as strings."""
    if isinstance(v, dict):
        return {(lr_key(k) if isinstance(k, float) else str(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _labels(frame: Frame, conds: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], str]:
    keys = frame.condition_keys()
    varying = [i for i in range(1, len(keys)) if len({c[i] for c in conds}) > 1]
    out = {}
    for c in conds:
        label = str(c[0])
        if 1 in varying:
            label += f"@{c[1]}"
        extra = [f"{keys[i]}={c[i]}" for i in varying if i >= 2]
        out[c] = label + (f"[{','.join(extra)}]" if extra else "")
    return out


def overview_series(analysis: Analysis) -> dict[str, list[dict[str, Any]]]:
    """η_c points of every ExMy condition (simulated formats and native ones with an ExMy alias, bf16 = E8M7),
    grouped by exponent width plus the condition's label suffix (`@model`, `[axis=...]`), each sorted by mantissa
    bits: {series: [{x, value, ci, censored, label, native}]}. Non-ExMy backends (fp8 via torchao, te) are left
    out; native formats cast every op, not only GEMM operands, so they are marked (`native`) and not fitted."""
    from robustprec.numerics.formats import parse_format

    series: dict[str, list[dict[str, Any]]] = {}
    for r in analysis.conditions.values():
        try:
            fmt = parse_format(r.format.removeprefix("sim:"))
        except ValueError:
            continue
        if r.eta_c.value is None:
            continue
        point = {
            "x": fmt.man_bits,
            **r.eta_c.to_dict(),
            "label": r.format,
            "native": not r.format.startswith("sim:"),
        }
        series.setdefault(f"E{fmt.exp_bits}{r.label.removeprefix(r.format)}", []).append(point)
    return {k: sorted(v, key=lambda p: p["x"]) for k, v in sorted(series.items())}


def check_frame(frame: Frame, reference: str) -> None:
    """Refuse what would give a wrong analysis: a reference that is not a format of the sweep, or two trials of
    one condition with the same (lr, seed) (one would silently replace the other)."""
    formats = sorted({str(f) for f in frame["format"]})
    if reference not in formats:
        raise RecordError(
            f"reference {reference!r} is not a format of this sweep; formats: {', '.join(formats) or 'none'}"
        )
    ids = frame["trial_id"] if "trial_id" in frame else np.arange(len(frame))
    labels = _labels(frame, frame.conditions())
    seen: dict[tuple[Any, ...], Any] = {}
    keys = frame.condition_keys()
    for i in range(len(frame)):
        cond = tuple(frame[k][i] for k in keys)
        key = (*cond, float(frame["lr"][i]), frame["seed"][i].item())
        if key in seen:
            raise RecordError(
                f"{labels[cond]}: trials {seen[key]!r} and {ids[i]!r} both have lr={key[-2]:g}, seed={key[-1]}; "
                "a condition holds one trial per (lr, seed): remove the duplicate run"
            )
        seen[key] = ids[i]


def outcome_phases(frame: Frame) -> dict[str, int]:
    """Divergences by phase (METHODS §3: `warmup`, `mid`; `unknown` for records without a phase) and the
    recovered spikes (instability events) of one condition's trials."""
    n = len(frame)
    phase = frame["diverged_phase"] if "diverged_phase" in frame else np.full(n, None, dtype=object)
    events = frame["instability_events"] if "instability_events" in frame else np.zeros(n)
    div = frame["diverged"]
    out = {p: int(sum(1 for d, q in zip(div, phase, strict=True) if d and q == p)) for p in ("warmup", "mid")}
    out["unknown"] = int(div.sum()) - out["warmup"] - out["mid"]
    out["instability_events"] = int(np.nansum(np.asarray(events, dtype=np.float64)))
    return out


def warmup_caveat(fmt: str, reference: str, own: dict[str, int], ref: dict[str, int]) -> str | None:
    """METHODS §3: a boundary every format shares because all diverge in warm-up says nothing about numerics."""
    if own.get("mid", 0) or ref.get("mid", 0) or not (own.get("warmup", 0) and ref.get("warmup", 0)):
        return None
    return (
        f" Caveat: every divergence of {fmt} and {reference} happened in warm-up (the LR is too large for the "
        "optimizer whatever the numerics), so their shared boundary says nothing about the formats."
    )


def condition_labels(frame: Frame) -> dict[tuple[Any, ...], str]:
    """The label of each condition tuple (`Frame.condition_keys` order) of the outcome trials, as `analyze` keys
    its results: the format, `@model` if several, `[axis=value,...]` for extra axes that vary."""
    fr = frame.outcomes()
    return _labels(fr, fr.conditions())


def _condition_base(sub: Frame, model_l0: float, label: str, st: Mapping[str, Any]) -> dict[str, Any]:
    """What one condition's trials give on their own: divergence rates, η_c, η_stable, phases, losses per trial."""
    lr, div, fin, sd = sub["lr"], sub["diverged"], sub["final_eval_loss"], sub["seed"]
    rng = np.random.default_rng([st["seed"], zlib.crc32(label.encode())])
    loss = trial_losses(fin, div, model_l0)
    return {
        "lr": lr,
        "div": div,
        "fin": fin,
        "l0": model_l0,
        "divergence": divergence_by_lr(lr, div, st["level"]),
        "eta_c": fit_eta_c(lr, div, sd, l2=st["l2"], n_boot=st["n_boot"], level=st["level"], rng=rng),
        "eta_stable": eta_stable(lr, div),
        "phases": outcome_phases(sub),
        "losses": {(float(a), b.item()): float(x) for a, b, x in zip(lr, sd, loss, strict=True)},
        "rng": rng,
    }


def _verdict(
    fmt: str, reference: str, b: dict[str, Any], ref: dict[str, Any] | None, st: Mapping[str, Any]
) -> Verdict:
    """A condition's verdict against the reference condition of the same model and axes (`ref`, if any)."""
    alpha = st["alpha"]
    if fmt == reference:
        return Verdict(fmt, reference, "reference", f"{fmt} is the reference", {}, alpha)
    if ref is None:
        words = f"{fmt} vs {reference}: inconclusive, no {reference} trials with the same model and axes"
        return Verdict(fmt, reference, "inconclusive", words, {}, alpha)
    test = {"alpha": alpha, "alternative": st["alternative"]}
    evidence = {
        "fisher": fisher_by_lr(b["divergence"], ref["divergence"], correction=st["correction"], **test),
        "wilcoxon": paired_wilcoxon(
            b["losses"], ref["losses"], lrs=reference_stable_lrs(ref["divergence"]), **test
        ),
        "eta_c_ratio": eta_c_ratio(b["eta_c"], ref["eta_c"], level=st["level"]),
        "delta_S": delta_s(
            b["losses"], ref["losses"], b["l0"], level=st["level"], n_boot=st["n_boot"],
            tol=st["delta_s_tol"], rng=b["rng"],
        ),
    }  # fmt: skip
    verdict = judge(fmt, reference, evidence, alpha)
    verdict.words += warmup_caveat(fmt, reference, b["phases"], ref["phases"]) or ""
    return verdict


def analyze(
    frame: Frame,
    reference: str = "bf16",
    *,
    l0: float | Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
    l2: float = 0.01,
    alternative: str = "greater",
    correction: str = "holm",
    delta_s_tol: float = 0.0,
) -> Analysis:
    """Analyse the outcome trials of `frame` (see module doc). `l0` overrides ℓ0 (one value, or per model);
    by default it is `metrics.l0_by_model`. Bootstraps use generators seeded from `seed` and the condition."""
    fr = frame.outcomes()
    check_frame(fr, reference)
    l0_map = l0_by_model(fr)
    if isinstance(l0, Mapping):
        l0_map.update({str(k): float(v) for k, v in l0.items()})
    elif l0 is not None:
        l0_map = dict.fromkeys(l0_map, float(l0))
    conds = fr.conditions()
    labels = _labels(fr, conds)
    keys = fr.condition_keys()
    settings = {
        "reference": reference,
        "l0": l0_map,
        "n_boot": n_boot,
        "seed": seed,
        "level": level,
        "alpha": alpha,
        "l2": l2,
        "alternative": alternative,
        "correction": correction,
        "delta_s_tol": delta_s_tol,
    }

    base = {
        c: _condition_base(
            fr.filter(fr.condition_mask(c)), l0_map.get(str(c[1]), math.nan), labels[c], settings
        )
        for c in conds
    }
    own = {c: lr_sensitivity(b["lr"], b["fin"], b["div"], b["l0"]) for c, b in base.items()}

    results: dict[str, ConditionResult] = {}
    for c, b in base.items():
        ref_c = (reference, *c[1:])
        ref = base.get(ref_c)
        l_star_ref = own[ref_c].l_star if ref_c in own else None
        sens = lr_sensitivity(b["lr"], b["fin"], b["div"], b["l0"], l_star_ref)
        verdict = _verdict(str(c[0]), reference, b, ref, settings)
        results[labels[c]] = ConditionResult(
            labels[c],
            str(c[0]),
            str(c[1]),
            dict(zip(keys[2:], c[2:], strict=True)),
            b["divergence"],
            sens,
            b["eta_c"],
            b["eta_stable"],
            verdict,
            b["losses"],
            b["phases"],
        )
    return Analysis(results, reference, settings)


def analyze_frame(frame: Frame, reference: str = "bf16", **kw: Any) -> dict[str, dict[str, Any]]:
    """JSON-serialisable analysis: {label: {divergence, lr_sensitivity, eta_c, eta_stable, verdict}}.

    `divergence` maps each LR (`repr(lr)`) to {diverged, seeds, rate, ci}; `eta_c` is {value, ci, censored}
    (censored: None, "above" or "below": η_c lies above / below `value`, the tested LR that bounds it).
    Keyword options as `analyze`."""
    return analyze(frame, reference, **kw).to_dict()


def boundary_curves(
    analysis: Analysis, params: Mapping[str, float] | None = None, *, include_native: bool = False
) -> dict[str, BoundaryFit]:
    """Boundary curves of an analysis: ln η_c vs mantissa bits and vs exponent bits per model (and extra axes),
    and vs ln(parameters) per format when `params` (model → parameter count) covers several models.
    Keys: `man_bits <model> <group>`, `exp_bits <model> <group>`, `model_size <format>` (+ axes)."""
    out: dict[str, BoundaryFit] = {}
    by_model: dict[tuple[str, str], dict[str, EtaC]] = {}
    by_format: dict[tuple[str, str], dict[str, EtaC]] = {}
    for r in analysis.conditions.values():
        ax = ",".join(f"{k}={v}" for k, v in r.axes.items())
        by_model.setdefault((r.model, ax), {})[r.format] = r.eta_c
        by_format.setdefault((r.format, ax), {})[r.model] = r.eta_c
    level = analysis.settings["level"]
    for (model, ax), etas in by_model.items():
        for along in ("man_bits", "exp_bits"):
            for group, fit in bits_curves(etas, along, include_native=include_native, level=level).items():
                out[" ".join(p for p in (along, model, group, ax) if p)] = fit
    if params:
        for (fmt, ax), etas in by_format.items():
            if len(etas) > 1:
                out[" ".join(p for p in ("model_size", fmt, ax) if p)] = size_curve(etas, params, level=level)
    return out
