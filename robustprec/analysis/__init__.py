"""Analysis of sweep records: the trial table, METHODS metrics, boundary fits and verdicts (no MLflow, no plots).

- `frame`: `Frame` (typed trial table from `result_rows` or trials.parquet), curve/summary attachment;
- `metrics`: divergence rate (Wilson CI), ℓ and ℓ0, seed spread, LR sensitivity, η_stable, sharpness summary;
- `boundary`: η_c (regularised logistic fit, bootstrap CI, censoring), boundary curves vs bits / model size;
- `verdict`: Fisher, Wilcoxon, η_c ratio, ΔS against the reference, and the verdict;
- `analyze`: `analyze_frame(frame, reference="bf16")`, the JSON written to analysis.json.
"""

from robustprec.analysis.analyze import Analysis, ConditionResult, analyze, analyze_frame, boundary_curves
from robustprec.analysis.boundary import BoundaryFit, EtaC, fit_boundary, fit_eta_c
from robustprec.analysis.frame import Frame, attach_curve_summaries, attach_summaries, load_frame
from robustprec.analysis.verdict import Verdict

__all__ = [
    "Analysis",
    "BoundaryFit",
    "ConditionResult",
    "EtaC",
    "Frame",
    "Verdict",
    "analyze",
    "analyze_frame",
    "attach_curve_summaries",
    "attach_summaries",
    "boundary_curves",
    "fit_boundary",
    "fit_eta_c",
    "load_frame",
]
