"""The record store: a run directory holds `config.yaml`, `summary.json` and `curve.parquet`.

While a run is going, curve rows are flushed as numbered Parquet parts under `curve.parts/` (so a crash loses at
most the rows since the last flush, and a resume can drop rows past its checkpoint); `close()` merges them into
`curve.parquet`. `read_curve` reads either form.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

INT_COLUMNS = ("step", "tokens", "skipped_steps")
CURVE_FILE, PARTS_DIR, SUMMARY_FILE, CONFIG_FILE = (
    "curve.parquet",
    "curve.parts",
    "summary.json",
    "config.yaml",
)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    cols = {}
    for name in names:
        typ = pa.int64() if name in INT_COLUMNS else pa.float64()
        cols[name] = pa.array([row.get(name) for row in rows], type=typ)
    return pa.table(cols)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return (
        pa.concat_tables(tables, promote_options="default")
        if tables
        else pa.table({"step": pa.array([], pa.int64())})
    )


class CurveWriter:
    """Append per-step rows; `flush()` writes a Parquet part; `close()` consolidates into `curve.parquet`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.parts = self.run_dir / PARTS_DIR
        self.parts.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._next = 1 + max(
            (int(p.stem.split("-")[1]) for p in self.parts.glob("part-*.parquet")), default=0
        )

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        if not self._rows:
            return
        path = self.parts / f"part-{self._next:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(_table(self._rows), tmp)
        os.replace(tmp, path)
        self._next += 1
        self._rows = []

    def reset(self, snapshot: str | Path) -> None:
        """Replace everything recorded so far by the rows of a Parquet snapshot (a checkpoint's curve)."""
        self._rows = []
        for part in self.parts.glob("part-*.parquet"):
            part.unlink()
        self._next = 1
        path = self.parts / f"part-{self._next:06d}.parquet"
        pq.write_table(pq.read_table(snapshot), path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        self._next += 1

    def truncate_after(self, step: int) -> None:
        """Drop every recorded row with `step > step` (used when resuming from a checkpoint)."""
        self._rows = [r for r in self._rows if r["step"] <= step]
        for part in sorted(self.parts.glob("part-*.parquet")):
            table = pq.read_table(part)
            kept = table.filter(pc.less_equal(table["step"], step))
            if kept.num_rows == 0:
                part.unlink()
            elif kept.num_rows < table.num_rows:
                pq.write_table(kept, part.with_suffix(".tmp"))
                os.replace(part.with_suffix(".tmp"), part)

    def close(self) -> pa.Table:
        """Flush and merge all parts into `curve.parquet` (sorted by step); returns the table."""
        self.flush()
        table = read_parts(self.run_dir)
        tmp = self.run_dir / (CURVE_FILE + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.run_dir / CURVE_FILE)
        for part in self.parts.glob("part-*.parquet"):
            part.unlink()
        self.parts.rmdir()
        return table


def read_parts(run_dir: str | Path) -> pa.Table:
    parts = sorted((Path(run_dir) / PARTS_DIR).glob("part-*.parquet"))
    table = _concat([pq.read_table(p) for p in parts])
    return table.sort_by("step") if table.num_rows else table


def read_curve(run_dir: str | Path) -> pa.Table:
    """The curve of a finished run (`curve.parquet`) or of one in progress (its flushed parts)."""
    run_dir = Path(run_dir)
    if (run_dir / CURVE_FILE).exists():
        return pq.read_table(run_dir / CURVE_FILE)
    return read_parts(run_dir)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Atomic JSON write."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Atomic text write."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """A run's `summary.json`; a damaged one is a `RecordError` naming the file (never a raw traceback)."""
    from robustprec.errors import RecordError

    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        data = f"not valid JSON ({e})"
    if not isinstance(data, dict):
        why = data if isinstance(data, str) else "not a JSON object"
        raise RecordError(
            f"{str(path)!r} is {why}; restore the file, or delete the trial's folder to re-run it"
        )
    return data
