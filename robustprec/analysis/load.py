"""Load a sweep's trials back from MLflow: the parent run's children and their record artifacts (Parquet curve,
summary), downloaded once into a local cache and read with pyarrow (no per-metric REST calls)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustprec.errors import RobustprecError
from robustprec.tracking.mlflow_mirror import SUMMARY_KEYS, TRIAL_TAG, default_tracking_uri
from robustprec.tracking.store import read_summary

RECORD = "record"


@dataclass
class LoadedSweep:
    """A parent run and one row per child trial (axes, status, summary fields, local record directory)."""

    parent_run_id: str
    tracking_uri: str
    name: str
    rows: list[dict[str, Any]]
    cache_dir: Path


def _cache_root() -> Path:
    from robustprec.data.corpus import default_cache_dir

    return default_cache_dir() / "mlflow"


def load_sweep(
    run_id: str, tracking_uri: str | None = None, cache_dir: str | Path | None = None
) -> LoadedSweep:
    """Every child of the parent run `run_id`, with its record downloaded (cached by child run id)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one bar per child floods the terminal
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        parent = client.get_run(run_id)
    except MlflowException as e:
        raise RobustprecError(f"no MLflow run {run_id!r} in {uri}: {str(e).splitlines()[0]}") from None
    if "mlflow.parentRunId" in parent.data.tags:
        raise RobustprecError(f"run {run_id!r} is a trial (child run); pass its sweep's parent run id")
    children = []
    token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            max_results=1000,
            page_token=token,
        )
        children.extend(page)
        token = page.token
        if not token:
            break
    if not children:
        raise RobustprecError(f"run {run_id!r} has no trial runs (is the sweep mirrored? `robustprec sync`)")
    cache = Path(cache_dir) if cache_dir else _cache_root() / run_id

    def fetch(child: Any) -> dict[str, Any]:
        rid = child.info.run_id
        local = cache / rid
        if not (local / RECORD / "summary.json").exists():
            local.mkdir(parents=True, exist_ok=True)
            client.download_artifacts(rid, RECORD, str(local))
        run_dir = local / RECORD
        summary = read_summary(run_dir)
        axes = {
            k.removeprefix("axis."): _parse(v) for k, v in child.data.params.items() if k.startswith("axis.")
        }
        row: dict[str, Any] = {
            "trial_id": child.data.tags.get(TRIAL_TAG, child.info.run_name),
            **axes,
            "status": summary.get("status"),
            "reason": summary.get("reason"),
            "diverged_phase": summary.get("diverged_phase"),
            "instability_events": summary.get("instability_events"),
        }
        row.update({k: summary.get(k) for k in SUMMARY_KEYS})
        row.setdefault("optim.lr", summary.get("lr"))
        row.setdefault("seed", summary.get("seed"))
        row.setdefault("numerics.backend", (summary.get("config") or {}).get("numerics", {}).get("backend"))
        row.setdefault("model.preset", summary.get("model"))
        row["out_dir"] = str(run_dir)
        return row

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(fetch, children))
    rows.sort(key=lambda r: str(r["trial_id"]))
    name = parent.data.tags.get("robustprec.sweep", parent.info.run_name or run_id)
    return LoadedSweep(run_id, uri, name, rows, cache)


def _parse(value: str) -> Any:
    """An axis value as the mirror wrote it (`str(v)`): numbers, booleans, None, else the string."""
    special = {"True": True, "False": False, "None": None}
    if value in special:
        return special[value]
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
