"""The trial table: one row per trial, with normalised, typed columns (numpy arrays; no pandas needed).

Built from `result_rows` dicts or a `trials.parquet`. Normalised columns:

| column | dtype | from |
|---|---|---|
| `format` | str | `numerics.backend` (or `format`, `backend`) |
| `lr` | float64 | `optim.lr` (or `lr`) |
| `seed` | int64 | `seed` (a one-seed sweep omits the axis: seed 0, as `expand_seeds(1) == [0]`) |
| `model` | str | `model.preset` (or `model`) |
| `status` | str | `status` (converged / diverged / error / pending / running) |
| `diverged` | bool | `status == "diverged"` |
| `final_eval_loss`, `diverged_at`, `initial_loss` | float64 (NaN = missing) | the trial summary |

Every other swept axis (a config key such as `numerics.rounding`) is kept under its own name and listed in
`Frame.axes`: together with `format` and `model` it defines a trial's *condition* (what `lr` and `seed` vary
within). Other row fields (`trial_id`, `reason`, `out_dir`, ...) are kept as object columns, never axes.

`attach_summaries` (summary.json) and `attach_curve_summaries` (curve.parquet) add per-trial columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robustprec.analysis.metrics import sharpness_summary
from robustprec.tracking.store import read_summary

__all__ = [
    "OUTCOME_STATUSES",
    "Frame",
    "attach_curve_summaries",
    "attach_summaries",
    "curve_summary",
    "load_frame",
]

OUTCOME_STATUSES = ("converged", "diverged")  # trials that are results (error/pending are not)
# normalised name -> accepted source names, first found wins
_SOURCES: dict[str, tuple[str, ...]] = {
    "format": ("numerics.backend", "format", "backend"),
    "lr": ("optim.lr", "lr"),
    "seed": ("seed",),
    "model": ("model.preset", "model"),
}
_FLOATS = ("final_eval_loss", "diverged_at", "initial_loss")
_FALLBACK: dict[str, Any] = {"format": "unknown", "lr": math.nan, "seed": 0, "model": "default"}
# row fields that describe a trial's result or bookkeeping, never a swept axis
_NOT_AXES = frozenset(
    {
        "trial_id",
        "status",
        "reason",
        "diverged_at",
        "diverged_phase",
        "instability_events",
        "final_eval_loss",
        "steps_completed",
        "restarts",
        "wall_time_s",
        "out_dir",
        "initial_loss",
        "params",
        "error",
        "diverged",
    }
)
_SOURCE_NAMES = frozenset(n for names in _SOURCES.values() for n in names)


def _nan_float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _infer_axes(names: list[str]) -> list[str]:
    if "trial_id" in names and "status" in names and names.index("trial_id") < names.index("status"):
        between = names[names.index("trial_id") + 1 : names.index("status")]
        return [n for n in between if n not in _SOURCE_NAMES and n not in _NOT_AXES]
    return [
        n
        for n in names
        if ("." in n or n in ("init_seed", "data_seed")) and n not in _SOURCE_NAMES and n not in _NOT_AXES
    ]


@dataclass
class Frame:
    """A typed trial table: `columns` maps a name to a numpy array of length `len(frame)`.

    `axes` lists the extra condition axes (swept keys other than format, model, lr and seed).
    """

    columns: dict[str, np.ndarray]
    axes: tuple[str, ...] = field(default=())

    # ----- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, Any]],
        defaults: Mapping[str, Any] | None = None,
        axes: Sequence[str] | None = None,
    ) -> Frame:
        """Build from row dicts (as `result_rows` returns). `defaults` fills `format`/`lr`/`seed`/`model` when a
        row lacks them (an axis that was not swept). `axes` names the extra condition axes; by default, the keys
        between `trial_id` and `status` (where `result_rows` puts the swept axes), else the dotted config keys
        and `init_seed`/`data_seed`."""
        rows = list(rows)
        defaults = {**_FALLBACK, **(defaults or {})}
        names: list[str] = []
        for r in rows:
            names.extend(k for k in r if k not in names)

        def pick(r: Mapping[str, Any], key: str) -> Any:
            for src in _SOURCES[key]:
                if r.get(src) is not None:
                    return r[src]
            return defaults[key]

        status = [str(r.get("status") or "pending") for r in rows]
        cols: dict[str, np.ndarray] = {
            "format": _object_array([str(pick(r, "format")) for r in rows]),
            "lr": np.array([_nan_float(pick(r, "lr")) for r in rows], dtype=np.float64),
            "seed": np.array([int(pick(r, "seed")) for r in rows], dtype=np.int64),
            "model": _object_array([str(pick(r, "model")) for r in rows]),
            "status": _object_array(status),
            "diverged": np.array([s == "diverged" for s in status], dtype=bool),
        }
        for name in _FLOATS:
            cols[name] = np.array([_nan_float(r.get(name)) for r in rows], dtype=np.float64)
        for name in names:
            if name not in cols and name not in _SOURCE_NAMES:
                cols[name] = _object_array([r.get(name) for r in rows])
        if axes is None:
            axes = _infer_axes(names)
        missing = [a for a in axes if a not in cols]
        if missing:
            raise ValueError(f"axes {missing} are not columns of the rows")
        return cls(cols, tuple(axes))

    @classmethod
    def from_parquet(
        cls, path: str | Path, defaults: Mapping[str, Any] | None = None, axes: Sequence[str] | None = None
    ) -> Frame:
        """Build from a `trials.parquet` (or a sweep directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "trials.parquet"
        return cls.from_rows(pq.read_table(path).to_pylist(), defaults, axes)

    # ----- access ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.columns["status"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def filter(self, mask: np.ndarray) -> Frame:
        """Rows where the boolean `mask` is true."""
        return Frame({k: v[mask] for k, v in self.columns.items()}, self.axes)

    def with_columns(self, **cols: Sequence[Any] | np.ndarray) -> Frame:
        """A copy with columns added or replaced (each of length `len(self)`)."""
        new = dict(self.columns)
        for k, v in cols.items():
            arr = v if isinstance(v, np.ndarray) else np.asarray(v)
            if arr.dtype.kind in "OUS":
                arr = _object_array(list(v))
            if len(arr) != len(self):
                raise ValueError(f"column {k!r} has {len(arr)} values for {len(self)} rows")
            new[k] = arr
        return Frame(new, self.axes)

    def outcomes(self) -> Frame:
        """Only the trials that are results (converged or diverged), with a finite lr."""
        status = self.columns["status"]
        mask = np.isin(status, OUTCOME_STATUSES) & np.isfinite(self.columns["lr"])
        return self.filter(mask)

    def condition_keys(self) -> list[str]:
        """Columns that define a condition: `format`, `model` and the extra axes."""
        return ["format", "model", *self.axes]

    def conditions(self) -> list[tuple[Any, ...]]:
        """Distinct condition tuples (in `condition_keys` order), in order of first appearance."""
        keys = self.condition_keys()
        seen: dict[tuple[Any, ...], None] = {}
        for row in zip(*(self.columns[k] for k in keys), strict=True):
            seen.setdefault(tuple(row), None)
        return list(seen)

    def condition_mask(self, cond: Sequence[Any]) -> np.ndarray:
        mask = np.ones(len(self), dtype=bool)
        for k, v in zip(self.condition_keys(), cond, strict=True):
            mask &= self.columns[k] == v
        return mask

    def to_rows(self) -> list[dict[str, Any]]:
        """Rows as dicts of plain Python values (NaN as None)."""
        names = self.names
        out = []
        for i in range(len(self)):
            row: dict[str, Any] = {}
            for n in names:
                v = self.columns[n][i]
                v = v.item() if isinstance(v, np.generic) else v
                row[n] = None if isinstance(v, float) and math.isnan(v) else v
            out.append(row)
        return out

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.to_rows())


def load_frame(source: str | Path | Iterable[Mapping[str, Any]], **kw: Any) -> Frame:
    """A Frame from a trials.parquet path, a sweep directory, or row dicts."""
    if isinstance(source, str | Path):
        return Frame.from_parquet(source, **kw)
    return Frame.from_rows(source, **kw)


# ------------------------------------------------------------------------------------------- summary.json


def attach_summaries(frame: Frame, fields: Sequence[str] = ("initial_loss", "params")) -> Frame:
    """Fill `fields` (numeric) from each trial's `out_dir/summary.json` where the frame lacks them."""
    if "out_dir" not in frame:
        return frame
    values = {f: frame[f].astype(np.float64) if f in frame else np.full(len(frame), np.nan) for f in fields}
    for i, out in enumerate(frame["out_dir"]):
        path = Path(str(out)) / "summary.json" if out else None
        if path is None or not path.exists():
            continue
        data = read_summary(path.parent)
        for f in fields:
            if math.isnan(values[f][i]) and isinstance(data.get(f), int | float):
                values[f][i] = float(data[f])
    return frame.with_columns(**values)


# ------------------------------------------------------------------------------------------ curve.parquet

CurveSummarizer = Callable[[dict[str, np.ndarray], float | None], dict[str, float | None]]
_CURVE_COLUMNS = ("step", "loss", "eval_loss", "sharpness")


def curve_summary(curve: dict[str, np.ndarray], diverged_at: float | None) -> dict[str, float | None]:
    """Default per-trial curve summary: the first finite loss (`loss_first`, a fallback for l0), the sharpness
    trajectory summary (`sharpness_summary`, `sharp_*`), and the max of each `*_overflow_frac` /
    `*_underflow_frac` telemetry column (`max_<name>`)."""
    step = curve.get("step", np.empty(0))
    loss = curve.get("loss", np.empty(0))
    finite = np.isfinite(loss)
    out: dict[str, float | None] = {"loss_first": float(loss[finite][0]) if finite.any() else None}
    if "sharpness" in curve:
        out.update(sharpness_summary(step, curve["sharpness"], diverged_at))
    for name, col in curve.items():
        if name.endswith(("_overflow_frac", "_underflow_frac")):
            ok = np.isfinite(col)
            out[f"max_{name}"] = float(col[ok].max()) if ok.any() else None
    return out


def _read_curve(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / "curve.parquet"
    if path.exists():
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        wanted = [
            n for n in names if n in _CURVE_COLUMNS or n.endswith(("_overflow_frac", "_underflow_frac"))
        ]
        table = pf.read(columns=wanted)
    else:
        from robustprec.tracking.store import read_curve

        table = read_curve(run_dir)
    return {n: table[n].to_numpy(zero_copy_only=False).astype(np.float64) for n in table.column_names}


def attach_curve_summaries(
    frame: Frame, summarize: CurveSummarizer = curve_summary, *, workers: int = 2, prefix: str = ""
) -> Frame:
    """Read each trial's curve (`out_dir/curve.parquet`, or its flushed parts) and add the columns that
    `summarize(curve, diverged_at)` returns (float64, NaN where missing). Reads in `workers` threads."""
    if "out_dir" not in frame:
        raise ValueError("the frame has no out_dir column: cannot find the trials' curves")
    dirs = frame["out_dir"]
    div_at = frame["diverged_at"]

    def one(i: int) -> dict[str, float | None]:
        d = dirs[i]
        if not d or not Path(str(d)).exists():
            return {}
        at = None if math.isnan(div_at[i]) else float(div_at[i])
        return summarize(_read_curve(Path(str(d))), at)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, range(len(frame))))
    names: list[str] = []
    for r in results:
        names.extend(k for k in r if k not in names)
    cols = {prefix + n: np.array([_nan_float(r.get(n)) for r in results], dtype=np.float64) for n in names}
    return frame.with_columns(**cols)
