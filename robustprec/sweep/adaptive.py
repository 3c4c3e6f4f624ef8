"""Adaptive η_c search as a sweep (issue 16): its conditions, the trials it adds, its budget, its live state.

Pure (no Ray, no torch). In `sweep.lr_search.mode: adaptive` every *condition* (a point of the grid without
`optim.lr` and `seed`: format x model x other axes) gets an `EtaCSearch`. The search's coarse stage is the
`sweep.lrs` x `sweep.seeds` grid when one is given (planned trials, as in grid mode: a sweep can do both), else
`coarse_points` log-spaced LRs over [lo, hi]. The trials it proposes become ordinary TrialSpecs, appended to the
plan (and `plan.json`) as they are proposed: records, the MLflow mirror and `robustprec analyze` see trials.

`plan.search` (JSON) = {"settings": SearchSettings fields, "conditions": [{id, label, axes, config, estimate,
grid, seeds}], "trials": [ids the search added]}.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustprec.config import Config, validate_config
from robustprec.errors import ConfigError
from robustprec.sweep.lr_search import EtaCSearch, SearchSettings
from robustprec.sweep.spec import TrialSpec

if TYPE_CHECKING:
    from robustprec.analysis.boundary import EtaC
    from robustprec.sweep.plan import SweepPlan, TrialEstimate

LR, SEED = "optim.lr", "seed"
SEARCH_FILE = "search.json"


def search_settings(cfg: Config, grid_lrs: list[float]) -> SearchSettings:
    """`sweep.lr_search` as SearchSettings; lo and hi default to the ends of the `sweep.lrs` grid."""
    ls = cfg.sweep.lr_search
    lo = ls.lo if ls.lo is not None else (min(grid_lrs) if grid_lrs else None)
    hi = ls.hi if ls.hi is not None else (max(grid_lrs) if grid_lrs else None)
    if lo is None or hi is None:
        raise ConfigError(
            "sweep.lr_search: adaptive mode needs lo and hi (e.g. --set sweep.lr_search.lo=1e-3 "
            "--set sweep.lr_search.hi=1), or a sweep.lrs grid whose ends it takes"
        )
    try:
        return SearchSettings(
            lo=lo,
            hi=hi,
            seeds_per_point=ls.seeds_per_point,
            max_trials=ls.max_trials,
            target_ci_ratio=ls.target_ci_ratio,
            coarse_points=ls.coarse_points if not grid_lrs else max(2, len(grid_lrs)),
        )
    except ValueError as e:
        raise ConfigError(f"sweep.{e}") from None


def _template_config(cfg: Config) -> Config:
    """The sweep without its LR and seed axes (one seed, grid mode, exclusions naming LR or seed dropped): its
    trials are the conditions."""
    sweep = cfg.sweep.model_copy(
        update={
            "lrs": [],
            "seeds": 1,
            "exclude": [r for r in cfg.sweep.exclude if LR not in r and SEED not in r],
            "lr_search": cfg.sweep.lr_search.model_copy(update={"mode": "grid"}),
        }
    )
    return cfg.model_copy(update={"sweep": sweep})


def _cond_key(axes: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in axes.items() if k not in (LR, SEED)}, sort_keys=True, default=str)


def attach_search(plan: SweepPlan, cfg: Config) -> None:
    """Turn a planned grid into an adaptive sweep: conditions from the grid without LR and seed, the grid trials
    (if `sweep.lrs` is given) as each condition's coarse stage. Raises ConfigError for bad settings."""
    from robustprec.sweep.plan import plan_sweep

    grid_lrs = [float(v) for v in plan.axes.get(LR, [])]
    if not grid_lrs:
        plan.trials, plan.estimates = [], {}
    templates = plan_sweep(
        _template_config(cfg),
        name=plan.name,
        root=str(Path(plan.root).parent) if "://" not in plan.root else plan.root.rsplit("/", 1)[0],
        mfu=plan.mfu,
        peak_flops=plan.peak_flops,
    )
    named = bool(templates.axes)  # a condition has an id only when some axis besides LR and seed is swept
    conditions = []
    for t in templates.trials:
        grid = [s for s in plan.trials if _cond_key(s.axes) == _cond_key(t.axes)]
        label = t.trial_id if named else plan.name
        if len(grid) > cfg.sweep.lr_search.max_trials:
            raise ConfigError(
                f"sweep.lr_search.max_trials ({cfg.sweep.lr_search.max_trials}) is below the {len(grid)} grid "
                f"trials of condition {label!r}"
            )
        conditions.append(
            {
                "id": t.trial_id if named else "",
                "label": label,
                "axes": dict(t.axes),
                "config": dict(t.config),
                "estimate": asdict(templates.estimates[t.trial_id]),
                "grid": [s.trial_id for s in grid],
                "seeds": sorted({int(s.config[SEED]) for s in grid}),
            }
        )
    settings = search_settings(cfg, grid_lrs)
    plan.search = {"settings": asdict(settings), "conditions": conditions, "trials": []}
    plan.axes = {**templates.axes, LR: grid_lrs, SEED: list(plan.axes.get(SEED, [])) if grid_lrs else []}
    plan.notes.extend(n for n in templates.notes if n not in plan.notes)


def settings_of(plan: SweepPlan) -> SearchSettings:
    names = {f.name for f in fields(SearchSettings)}
    return SearchSettings(**{k: v for k, v in plan.search["settings"].items() if k in names})


def new_search(plan: SweepPlan, cond: dict[str, Any]) -> EtaCSearch:
    """A condition's search; its grid trials (if any) stand for the coarse bracket."""
    search = EtaCSearch(settings_of(plan))
    if cond["grid"]:
        search.start_after(len(cond["grid"]), cond["seeds"])
    return search


def _lr_label(lr: float, digits: int) -> str:
    return "lr" + f"{lr:.{digits}e}".replace("e+", "e")


def search_trial(plan: SweepPlan, cond: dict[str, Any], lr: float, seed: int) -> TrialSpec:
    """The TrialSpec of a proposed (lr, seed) of a condition: the condition's config with that LR and seed, an id
    `<condition>-lr<lr>-s<seed>` (more digits where two LRs would share it), axes incl. LR and seed. A point
    proposed before (the plan holds it) is that trial."""
    from robustprec.sweep.plan import _make_id, _with, trial_dir

    taken = {t.trial_id.lower(): t for t in plan.trials}
    for digits in range(1, 17):
        tid = _make_id([cond["id"], _lr_label(lr, digits), f"s{seed}"])
        same = taken.get(tid.lower())
        if same is None:
            break
        point = same.config[SEED] == int(seed) and same.config["optim"]["lr"] == float(lr)
        if point and all(same.axes.get(k) == v for k, v in cond["axes"].items()):
            return same  # proposed before (a resumed search): the same trial
    data = _with(_with(cond["config"], LR, float(lr)), SEED, int(seed))
    data["name"] = tid
    dumped = validate_config(data).to_dict()
    return TrialSpec(
        trial_id=tid,
        config=dumped,
        out_dir=trial_dir(plan.root, tid),
        axes={**cond["axes"], LR: float(lr), SEED: int(seed)},
    )


def budget(plan: SweepPlan) -> dict[str, Any]:
    """Upper bound of an adaptive sweep: max trials per condition x conditions (grid trials included)."""
    from robustprec.sweep.plan import TrialEstimate

    s = settings_of(plan)
    conds = plan.search["conditions"]
    trials = flops = 0
    hours = 0.0
    for c in conds:
        est = TrialEstimate.from_dict(c["estimate"])
        trials += s.max_trials
        flops += s.max_trials * est.flops
        hours += s.max_trials * est.gpu_hours
    return {"conditions": len(conds), "max_trials": s.max_trials, "trials": trials, "flops": flops,
            "gpu_hours": hours}  # fmt: skip


def condition_estimate(cond: dict[str, Any]) -> TrialEstimate:
    from robustprec.sweep.plan import TrialEstimate

    return TrialEstimate.from_dict(cond["estimate"])


class LiveSearch:
    """The driver's view of a running adaptive sweep: adds the searcher's trials to the plan (and `plan.json`),
    holds each condition's current η_c for the status line and `search.json`. One per sweep, found by the
    searcher through `live(root)` (Tune pickles the searcher; this stays in the driver)."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.state: dict[str, dict[str, Any]] = {
            c["label"]: {"value": None, "ci": [None, None], "censored": None, "trials": 0, "done": False}
            for c in plan.search["conditions"]
        }

    def add(self, spec: TrialSpec, estimate: TrialEstimate) -> None:
        with self.lock:
            if spec.trial_id in self.plan.estimates:
                return
            self.plan.estimates[spec.trial_id] = estimate
            self.plan.trials.append(spec)
            self.plan.search["trials"].append(spec.trial_id)
            self.plan.write()

    def publish(self, label: str, est: EtaC, trials: int, done: bool) -> None:
        with self.lock:
            self.state[label] = {**est.to_dict(), "trials": trials, "done": done}
            _write_json(Path(self.plan.root) / SEARCH_FILE, self.state)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: dict(v) for k, v in self.state.items()}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


_LIVE: dict[str, LiveSearch] = {}


def register(plan: SweepPlan) -> LiveSearch:
    _LIVE[plan.root] = LiveSearch(plan)
    return _LIVE[plan.root]


def unregister(plan: SweepPlan) -> None:
    _LIVE.pop(plan.root, None)


def running(root: str) -> LiveSearch | None:
    """The live search of the sweep at `root` in this process, if one runs."""
    return _LIVE.get(root)


def live(root: str) -> LiveSearch:
    try:
        return _LIVE[root]
    except KeyError:
        raise RuntimeError(f"no adaptive sweep is running for {root!r} in this process") from None
