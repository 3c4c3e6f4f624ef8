"""Plots of a sweep (matplotlib, Agg, PNG): divergence heatmap with η_c, final loss vs LR with seed bands, loss
curves per cell, sharpness / overflow telemetry, and η_c against format bits with the fitted curve.

Inputs are the trial rows (`format`, `lr`, `seed`, `status`, `final_eval_loss`, `out_dir`) and the per-format
analysis dict that `analyze_frame` returns; every function returns the path it wrote, or None when there is
nothing to draw.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 120


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _formats(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(r["format"]) for r in rows))


def _lrs(rows: Sequence[dict[str, Any]]) -> list[float]:
    return sorted({float(r["lr"]) for r in rows})


def _eta_c(info: dict[str, Any] | None) -> float | None:
    """A fitted η_c; None when censored (then `value` is only the bounding LR, not an estimate)."""
    eta = (info or {}).get("eta_c") or {}
    if eta.get("censored"):
        return None
    value = eta.get("value")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def divergence_heatmap(rows: Sequence[dict[str, Any]], analysis: dict[str, Any], path: Path) -> Path | None:
    """Divergence rate per (format, LR) cell, annotated k/n, with each format's η_c as a marker."""
    formats, lrs = _formats(rows), _lrs(rows)
    if not formats or not lrs:
        return None
    plt = _plt()
    rate = np.full((len(formats), len(lrs)), np.nan)
    text: dict[tuple[int, int], str] = {}
    for i, f in enumerate(formats):
        for j, lr in enumerate(lrs):
            cell = [r for r in rows if r["format"] == f and float(r["lr"]) == lr and r["status"] != "error"]
            if cell:
                k = sum(r["status"] == "diverged" for r in cell)
                rate[i, j] = k / len(cell)
                text[i, j] = f"{k}/{len(cell)}"
    fig, ax = plt.subplots(figsize=(1.1 * len(lrs) + 3, 0.55 * len(formats) + 1.8))
    im = ax.imshow(rate, cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    for (i, j), t in text.items():
        ax.text(j, i, t, ha="center", va="center", fontsize=8, color="black")
    log_lrs = np.log10(lrs)
    for i, f in enumerate(formats):
        eta = _eta_c(analysis.get(f))
        censored = ((analysis.get(f) or {}).get("eta_c") or {}).get("censored")
        if eta is not None and len(lrs) > 1:
            x = float(np.interp(math.log10(eta), log_lrs, np.arange(len(lrs))))
            ax.plot([x, x], [i - 0.45, i + 0.45], color="black", lw=2)
        elif censored in ("above", "below"):  # η_c outside the tested range: an arrow at that edge
            x, mark = (len(lrs) - 0.5, ">") if censored == "above" else (-0.5, "<")
            ax.text(x, i, mark, ha="center", va="center", fontsize=14, fontweight="bold")
    ax.set_xticks(range(len(lrs)), [f"{lr:.2g}" for lr in lrs], rotation=45, ha="right")
    ax.set_yticks(range(len(formats)), formats)
    ax.set_xlabel("peak learning rate")
    ax.set_title(
        "divergence rate (diverged/seeds)\nbar = fitted η_c, > / < = censored beyond the grid", fontsize=9
    )
    fig.colorbar(im, ax=ax, fraction=0.04, label="divergence rate")
    return _save(fig, path)


def loss_vs_lr(rows: Sequence[dict[str, Any]], l0: float | None, path: Path) -> Path | None:
    """Final eval loss against LR per format: seed mean with a min–max band; a diverged trial counts as ℓ0."""
    formats = _formats(rows)
    if not formats:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f in formats:
        by_lr: dict[float, list[float]] = defaultdict(list)
        for r in rows:
            if r["format"] != f or r["status"] == "error":
                continue
            loss = r.get("final_eval_loss")
            if r["status"] == "diverged" or loss is None or not math.isfinite(float(loss)):
                loss = l0
            if loss is not None:
                by_lr[float(r["lr"])].append(float(loss))
        if not by_lr:
            continue
        xs = sorted(by_lr)
        mean = [float(np.mean(by_lr[x])) for x in xs]
        (line,) = ax.plot(xs, mean, marker="o", label=f)
        ax.fill_between(
            xs, [min(by_lr[x]) for x in xs], [max(by_lr[x]) for x in xs], alpha=0.2, color=line.get_color()
        )
    if l0 is not None:
        ax.axhline(l0, color="grey", ls=":", lw=1, label="ℓ0 (diverged)")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final eval loss")
    ax.set_title("final loss vs learning rate (band: seed min–max)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _curve(run_dir: str, columns: Sequence[str]) -> dict[str, np.ndarray] | None:
    from robustprec.tracking.store import read_curve

    table = read_curve(run_dir)
    if table.num_rows == 0:
        return None
    names = [c for c in ("step", *columns) if c in table.column_names]
    return {c: np.array(table.column(c).to_pylist(), dtype=float) for c in names}


def _cell_curves(
    rows: Sequence[dict[str, Any]], f: str, lr: float
) -> list[tuple[Any, str, dict[str, np.ndarray]]]:
    """(seed, status, curve) of every trial of one (condition, LR) cell that has a loss curve."""
    out = []
    for r in rows:
        if r["format"] == f and float(r["lr"]) == lr and r.get("out_dir"):
            c = _curve(r["out_dir"], ["loss"])
            if c is not None and "loss" in c:
                out.append((r["seed"], r["status"], c))
    return out


def loss_curves(rows: Sequence[dict[str, Any]], path: Path, max_lrs: int = 8) -> Path | None:
    """Train-loss curves per (condition, LR) cell, one line per seed (diverged seeds dashed). One row per condition
    with its label as a title above the row (readable at any length), one column per LR (named in each cell); all
    cells share both axes; the figure grows with the grid. The y range ends a little above the initial loss."""
    formats, lrs = _formats(rows), _lrs(rows)
    if not formats:
        return None
    if len(lrs) > max_lrs:
        lrs = [lrs[round(i)] for i in np.linspace(0, len(lrs) - 1, max_lrs)]
    plt = _plt()
    cell_w, cell_h, gap, head, foot = 1.9, 1.1, 0.42, 0.55, 0.45  # inches
    width, height = cell_w * len(lrs) + 0.8, (cell_h + gap) * len(formats) + head + foot
    fig, axes = plt.subplots(
        len(formats), len(lrs), figsize=(width, height), sharex=True, sharey=True, squeeze=False,
        gridspec_kw={"hspace": gap / cell_h, "wspace": 0.06},
    )  # fmt: skip
    fig.subplots_adjust(
        left=0.6 / width, right=1 - 0.15 / width, top=1 - (head + gap) / height, bottom=foot / height
    )
    cmap = plt.get_cmap("viridis")
    seeds = sorted({r["seed"] for r in rows}, key=str)
    firsts, lows = [], []
    for i, f in enumerate(formats):
        axes[i][0].annotate(f, (0, 1), xycoords="axes fraction", xytext=(0, 5), textcoords="offset points",
                            fontsize=9, fontweight="bold", ha="left", va="bottom")  # fmt: skip
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            for seed, status, c in _cell_curves(rows, f, lr):
                finite = c["loss"][np.isfinite(c["loss"])]
                firsts += finite[:1].tolist()
                lows += [float(finite.min())] if len(finite) else []
                color = cmap(seeds.index(seed) / max(len(seeds) - 1, 1))
                ax.plot(c["step"], c["loss"], color=color, lw=0.8, ls="--" if status == "diverged" else "-")
            ax.text(0.97, 0.93, f"lr {lr:.2g}", transform=ax.transAxes, ha="right", va="top", fontsize=7)
            ax.tick_params(labelsize=6)
    if firsts:
        axes[0][0].set_ylim(min(lows) - 0.05 * abs(min(lows)), 1.15 * float(np.median(firsts)))
    fig.suptitle("train loss per cell: one row per condition, one column per peak LR; colour: seed, dashed: diverged",
                 y=1 - 0.15 / height, va="top", fontsize=10)  # fmt: skip
    fig.supxlabel("step", y=0.05 / height, va="bottom", fontsize=8)
    fig.supylabel("train loss", x=0.05 / width, ha="left", fontsize=8)
    return _save(fig, path, tight=False)


def telemetry(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Sharpness and (for simulated formats) overflow/underflow fractions against step, seed-averaged at each
    format's largest LR where a seed converged."""
    formats = _formats(rows)
    plt = _plt()
    fig, (ax_s, ax_o) = plt.subplots(1, 2, figsize=(11, 4))
    drew = False
    for f in formats:
        ok = [r for r in rows if r["format"] == f and r["status"] == "converged"]
        if not ok:
            continue
        lr = max(float(r["lr"]) for r in ok)
        cell = [r for r in rows if r["format"] == f and float(r["lr"]) == lr and r.get("out_dir")]
        curves = [
            c
            for r in cell
            if (c := _curve(r["out_dir"], ["sharpness", "act_overflow_frac", "grad_underflow_frac"]))
        ]
        if not curves:
            continue
        c = curves[0]
        if "sharpness" in c:
            mask = np.isfinite(c["sharpness"])
            (line,) = ax_s.plot(c["step"][mask], c["sharpness"][mask], marker=".", label=f"{f} (lr {lr:.0e})")
            drew = True
            for key, ls in (("act_overflow_frac", "-"), ("grad_underflow_frac", ":")):
                if key in c:
                    steps, values = _smooth(c["step"], c[key])
                    label = f"{f} {key.split('_')[0]} {key.split('_')[1]}"
                    ax_o.plot(steps, values, ls=ls, color=line.get_color(), label=label)
    if not drew:
        plt.close(fig)
        return None
    ax_s.set_xlabel("step")
    ax_s.set_ylabel("logit ε-sharpness φ")
    ax_s.set_title("sharpness (first seed)")
    ax_s.legend(fontsize=7)
    ax_o.set_xlabel("step")
    ax_o.set_ylabel("fraction of quantized elements")
    ax_o.set_title("sim formats (moving avg): act overflow —, grad underflow ··")
    if ax_o.lines:
        ax_o.set_yscale("symlog", linthresh=1e-6)
        ax_o.legend(fontsize=6)
    return _save(fig, path)


def _smooth(steps: np.ndarray, values: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Moving average down to about `points` points (per-step telemetry is noisy); NaNs dropped first."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    window = max(1, len(values) // points)
    if window == 1:
        return steps, values
    kernel = np.ones(window) / window
    return steps[window - 1 :: window], np.convolve(values, kernel, mode="valid")[::window]


def boundary(
    points: Sequence[dict[str, Any]], fit: dict[str, Any] | None, xlabel: str, path: Path
) -> Path | None:
    """η_c (with CI; censored as open markers) against bits, with the fitted curve when there is one.

    `points`: dicts with `x`, `value`, `ci` (pair or None), `censored` (None/"above"/"below"), `label`."""
    pts = [p for p in points if p.get("value") is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in pts:
        x, y = float(p["x"]), float(p["value"])
        ci = p.get("ci")
        censored = p.get("censored")
        if ci and all(v is not None for v in ci) and not censored:
            ax.errorbar([x], [y], yerr=[[y - ci[0]], [ci[1] - y]], fmt="o", color="C0", capsize=3)
        else:
            marker = "^" if censored == "above" else "v" if censored == "below" else "o"
            ax.plot([x], [y], marker=marker, mfc="none", color="C0", ms=8)
        ax.annotate(str(p.get("label", "")), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if fit and fit.get("curve"):
        xs = [c[0] for c in fit["curve"]]
        ys = [c[1] for c in fit["curve"]]
        ax.plot(xs, ys, color="C1", label=fit.get("label", "fit"))
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("critical LR η_c")
    ax.set_title(f"stability boundary: η_c vs {xlabel} (▲ censored above, ▼ below)")
    return _save(fig, path)


def boundary_overview(series: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """One figure for the whole ladder: η_c (bootstrap CI bars; ▲/▼ censored) against mantissa bits, one line per
    exponent width (and condition), so exponent cuts and mantissa cuts read off the same axes. `series` as
    `analyze.overview_series` makes it; native formats (`native`) are drawn as squares."""
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, pts) in enumerate(series.items()):
        color = f"C{i % 10}"
        xs = [float(p["x"]) for p in pts]
        ys = [float(p["value"]) for p in pts]
        ax.plot(xs, ys, color=color, alpha=0.6, label=name)
        for p, x, y in zip(pts, xs, ys, strict=True):
            ci, censored = p.get("ci"), p.get("censored")
            shape = "s" if p.get("native") else "o"
            if ci and all(v is not None and math.isfinite(v) for v in ci) and not censored:
                ax.errorbar([x], [y], yerr=[[y - ci[0]], [ci[1] - y]], fmt=shape, color=color, capsize=3)
            else:
                marker = "^" if censored == "above" else "v" if censored == "below" else shape
                ax.plot([x], [y], marker=marker, mfc="none", color=color, ms=9)
            name = p["label"] + (" (native)" if p.get("native") else "")
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("mantissa bits")
    ax.set_ylabel("critical LR η_c (P(diverge) = 0.5)")
    ax.set_title(
        "stability boundary per exponent width (bars: 95% CI; ▲ > grid, ▼ < grid; ■ native cast)", fontsize=9
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
