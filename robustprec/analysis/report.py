"""`robustprec analyze`: load a sweep from MLflow, compute METHODS §4–§5, draw the plots, write `analysis.json`,
`report.md` and a standalone `report.html` (images inline), and log them back to the sweep's parent run."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustprec.analysis import plots
from robustprec.analysis.analyze import Analysis, analyze, boundary_curves, condition_labels, overview_series
from robustprec.analysis.frame import OUTCOME_STATUSES, Frame, attach_curve_summaries, attach_summaries
from robustprec.analysis.load import LoadedSweep, load_sweep
from robustprec.analysis.metrics import l0_by_model
from robustprec.errors import InfrastructureError, RecordError

ANALYSIS_FILE, REPORT_MD, REPORT_HTML = "analysis.json", "report.md", "report.html"


@dataclass
class AnalysisResult:
    """What `run_analysis` produced: the JSON document, the report files and the images."""

    data: dict[str, Any]
    out_dir: Path
    files: list[Path]
    logged_to: str | None
    artifact_path: str | None = None


def _num(v: Any, fmt: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, fmt) if isinstance(v, int | float) else str(v)


def _eta_text(eta: dict[str, Any]) -> str:
    value, ci, censored = eta.get("value"), eta.get("ci") or [None, None], eta.get("censored")
    if censored == "above":
        return f"> {_num(value)} (censored: above the largest LR tested)"
    if censored == "below":
        return f"< {_num(value)} (censored: below the smallest LR tested)"
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"


def analyze_sweep(loaded: LoadedSweep, reference: str = "bf16") -> tuple[Analysis, dict[str, Any], Frame]:
    """Metrics, boundary fits and verdicts of a loaded sweep (the JSON document and the typed analysis)."""
    frame = Frame.from_rows(loaded.rows)
    frame = attach_curve_summaries(attach_summaries(frame))
    analysis = analyze(frame, reference)
    params: dict[str, float] = {}
    if "params" in frame:
        for model, p in zip(frame["model"], frame["params"], strict=True):
            if isinstance(p, int | float) and math.isfinite(p):
                params[str(model)] = float(p)
    curves = boundary_curves(analysis, params)
    data = {
        "sweep": loaded.name,
        "parent_run_id": loaded.parent_run_id,
        "tracking_uri": loaded.tracking_uri,
        "reference": reference,
        "trials": len(loaded.rows),
        "formats": analysis.to_dict(),
        "boundary": {k: fit.to_dict() for k, fit in curves.items()},
    }
    return analysis, data, frame


def plot_rows(frame: Frame) -> list[dict[str, Any]]:
    """Outcome rows for the plots, `format` replaced by the condition label (so a qk-norm arm or a second model
    is its own line, keyed like the analysis results)."""
    labels = condition_labels(frame)
    keys = frame.condition_keys()
    rows = [r for r in frame.to_rows() if r["status"] in OUTCOME_STATUSES]
    return [{**r, "format": labels[tuple(r[k] for k in keys)]} for r in rows]


def _plots(frame: Frame, analysis: Analysis, data: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    rows = plot_rows(frame)
    known = [v for v in l0_by_model(frame).values() if math.isfinite(v)]  # the ℓ0 the metrics use
    l0 = float(np.median(known)) if known else None
    made: list[tuple[str, Path | None]] = [
        ("Divergence rate per format and learning rate", plots.divergence_heatmap(rows, data["formats"], out / "divergence.png")),
        ("Final loss against learning rate", plots.loss_vs_lr(rows, l0, out / "loss_vs_lr.png")),
        ("Stability boundary: η_c against mantissa bits, per exponent width", plots.boundary_overview(overview_series(analysis), out / "boundary.png")),
        ("Loss curves per cell", plots.loss_curves(rows, out / "curves.png")),
        ("Sharpness and numerics telemetry", plots.telemetry(rows, out / "telemetry.png")),
    ]  # fmt: skip
    for key, fit in data["boundary"].items():
        points = []
        for x, eta, label in zip(fit["x"], fit["eta_c"], fit["labels"], strict=True):
            ci = ((data["formats"].get(label) or {}).get("eta_c") or {}).get("ci")
            points.append({"x": x, "value": eta, "ci": ci, "censored": None, "label": label})
        curve = None
        if fit.get("slope") is not None and fit.get("intercept") is not None and fit["x"]:
            lo, hi = min(fit["x"]), max(fit["x"])
            xs = [lo + (hi - lo) * i / 50 for i in range(51)]
            curve = {
                "curve": [(x, math.exp(fit["intercept"] + fit["slope"] * x)) for x in xs],
                "label": "fit",
            }
        safe = re.sub(r"[^A-Za-z0-9_=.-]+", "_", key)
        made.append(
            (
                f"Stability boundary: {key}",
                plots.boundary(points, curve, fit["x_name"], out / f"boundary_{safe}.png"),
            )
        )
    return [(title, p) for title, p in made if p is not None]


def render_markdown(data: dict[str, Any], images: list[tuple[str, Path]]) -> str:
    """The report: verdict lines first (in words, with their evidence), then tables and plots."""
    lines = [f"# robustprec analysis: sweep {data['sweep']}", ""]
    lines.append(
        f"Reference format: **{data['reference']}**; {data['trials']} trials; parent run `{data['parent_run_id']}`."
    )
    lines.append("")
    lines.append("## Verdicts")
    lines.append("")
    for label, r in data["formats"].items():
        lines.append(f"- **{label}**: {r['verdict']['words']}")
    lines += ["", "## Stability per format", ""]
    lines.append(
        "| format | verdict | η_c (95% CI) | η_stable | S | S vs reference | diverged: warm-up / mid | instability events |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for label, r in data["formats"].items():
        s, ph = r["lr_sensitivity"], r.get("phases") or {}
        lines.append(
            f"| {label} | {r['verdict']['category']} | {_eta_text(r['eta_c'])} | {_num(r['eta_stable'])} | "
            f"{_num(s.get('S'), '.4f')} | {_num(s.get('S_vs_ref'), '.4f')} | {ph.get('warmup', 0)} / "
            f"{ph.get('mid', 0)} | {ph.get('instability_events', 0)} |"
        )
    lrs = sorted({float(lr) for r in data["formats"].values() for lr in r["divergence"]})
    lines += ["", "## Divergences per learning rate (diverged/seeds)", ""]
    lines.append("| format | " + " | ".join(f"{lr:.2g}" for lr in lrs) + " |")
    lines.append("|---|" + "---|" * len(lrs))
    for label, r in data["formats"].items():
        by = {float(k): v for k, v in r["divergence"].items()}
        cells = [f"{by[lr]['diverged']}/{by[lr]['seeds']}" if lr in by else "" for lr in lrs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if data["boundary"]:
        lines += ["", "## Boundary fits (ln η_c = a + b·x)", ""]
        lines.append("| curve | points | slope b (95% CI) | trend | left out |")
        lines.append("|---|---|---|---|---|")
        for key, fit in data["boundary"].items():
            ci = fit.get("slope_ci") or [None, None]
            lines.append(
                f"| {key} | {fit['n'] if 'n' in fit else len(fit['x'])} | {_num(fit.get('slope'))} "
                f"[{_num(ci[0])}, {_num(ci[1])}] | {fit.get('monotone') or '–'} | "
                f"{', '.join(fit.get('excluded', {})) or '–'} |"
            )
    lines += ["", "## Plots", ""]
    for title, path in images:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    lines += ["Definitions: docs/methods.md (METHODS §4–§5).", ""]
    return "\n".join(lines)


def render_html(markdown: str, out: Path) -> str:
    """A standalone HTML page from the report's markdown subset (headings, lists, tables, images inline)."""

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body: list[str] = []
    table: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *rest = table
            body.append(
                "<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rest)
                + "</table>"
            )  # fmt: skip
            table = []
        if m := re.match(r"!\[(.*)\]\((.+)\)", line):
            data = base64.b64encode((out / m.group(2)).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
        "img{max-width:100%}code{background:#f4f4f4}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>robustprec analysis</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


NOTE_REFERENCE_TAG = "robustprec.note_reference"  # the reference of the analysis the run description shows


def artifact_dir(reference: str) -> str:
    """Where an analysis is logged on the parent run: one folder per reference, never shared."""
    return "analysis/" + re.sub(r"[^A-Za-z0-9_=.-]+", "_", reference)


def _check_out_dir(out: Path, reference: str) -> None:
    """A report folder already holding the analysis for another reference is not overwritten."""
    path = out / ANALYSIS_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get("reference")
    except (json.JSONDecodeError, AttributeError):
        previous = None
    if previous != reference:
        raise RecordError(
            f"{str(out)!r} holds the analysis for reference {previous!r}; pass another --out for {reference!r}"
        )


def log_analysis(run_id: str, tracking_uri: str, reference: str, files: list[Path], markdown: str) -> str:
    """Attach the report to the parent run under `artifact_dir(reference)`. The run description shows the first
    reference's report and is only ever replaced by a report for that same reference."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    where = artifact_dir(reference)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path=where)
    tags = [RunTag(f"robustprec.{where.replace('/', '.')}", where)]
    if client.get_run(run_id).data.tags.get(NOTE_REFERENCE_TAG, reference) == reference:
        note = markdown if len(markdown) < 5000 else markdown[:5000] + "\n\n(truncated: see report.md)"
        tags += [RunTag("mlflow.note.content", note), RunTag(NOTE_REFERENCE_TAG, reference)]
    client.log_batch(run_id, tags=tags)
    return where


def run_analysis(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    reference: str = "bf16",
    out_dir: str | Path | None = None,
    log_back: bool = True,
) -> AnalysisResult:
    """Analyze the sweep whose MLflow parent run is `run_id`; write the report into `out_dir`
    (default `analysis/<run_id>/<reference>`) and, with `log_back`, attach it to the parent run.
    A tracking-server error is an `InfrastructureError` (one line)."""
    from mlflow.exceptions import MlflowException

    try:
        return _run_analysis(run_id, tracking_uri, reference, out_dir, log_back)
    except MlflowException as e:
        raise InfrastructureError(
            f"MLflow failed: {str(e).splitlines()[0]}; run `robustprec analyze` again"
        ) from None


def _run_analysis(
    run_id: str, tracking_uri: str | None, reference: str, out_dir: str | Path | None, log_back: bool
) -> AnalysisResult:
    loaded = load_sweep(run_id, tracking_uri)
    analysis, data, frame = analyze_sweep(loaded, reference)
    out = Path(out_dir) if out_dir else Path("analysis") / run_id / artifact_dir(reference).split("/")[1]
    _check_out_dir(out, reference)
    out.mkdir(parents=True, exist_ok=True)
    images = _plots(frame, analysis, data, out)
    (out / ANALYSIS_FILE).write_text(json.dumps(data, indent=1, default=str) + "\n")
    markdown = render_markdown(data, images)
    (out / REPORT_MD).write_text(markdown)
    (out / REPORT_HTML).write_text(render_html(markdown, out))
    files = [out / ANALYSIS_FILE, out / REPORT_MD, out / REPORT_HTML, *(p for _, p in images)]
    where = log_analysis(run_id, loaded.tracking_uri, reference, files, markdown) if log_back else None
    return AnalysisResult(data, out, files, run_id if log_back else None, where)
