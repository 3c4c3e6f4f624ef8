"""Typed values passed between the planner, the trial launcher and the sweep runner (torch- and Ray-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from robustprec.config import Config, validate_config


@dataclass(frozen=True)
class TrialSpec:
    """One training run of one config.

    `config` is the full trial config as a plain dict (`Config.to_dict()`); `out_dir` is the record directory
    (`config.yaml`, `curve.parquet`, `summary.json`). `axes` holds the swept values that distinguish this trial
    (dotted key -> value), for tables and tracking. `env` is applied in every worker before training (used by
    tests for fault injection).
    """

    trial_id: str
    config: dict[str, Any]
    out_dir: str
    axes: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        return validate_config(self.config)

    @property
    def workers(self) -> int:
        return int(self.config.get("train", {}).get("workers", 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        return cls(**data)


@dataclass
class TrialResult:
    """What a finished trial returns: its final status (`converged`, `diverged`, `error`) and summary."""

    trial_id: str
    status: str
    out_dir: str
    summary: dict[str, Any]
    launcher: str
    restarts: int = 0
    wall_time_s: float = 0.0
    error: str | None = None
