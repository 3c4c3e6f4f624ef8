"""Sweep planner: expand a config's `sweep` axes into validated TrialSpecs with compute estimates.

Pure: no Ray, no torch. `plan_sweep(cfg)` is what `--dry-run` prints and what the runner stores as `plan.json`.

Axis order (outermost first, also the order of the parts of a trial id): `model.preset`, `numerics.backend`,
`optim.lr`, `seed`, then `sweep.axes` in the order given. A trial id is built from the axes that are swept,
e.g. `tiny-bf16-lr3e-03-s0` or `tiny-sim_E4M3-lr1e-02-s2-qk_norm=true`. `sweep.exclude` removes grid points
(e.g. an extra axis run for two formats only).

In `sweep.lr_search.mode: adaptive` the plan also holds `search` (settings and conditions, `sweep/adaptive.py`):
its trials are the `sweep.lrs` grid if one is given (else none), and the η_c searcher appends the trials it
proposes while the sweep runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from robustprec.config import Config, validate_config
from robustprec.errors import ConfigError
from robustprec.model.flops import PEAK_BF16_FLOPS, training_flops_per_token
from robustprec.model.presets import PRESETS, ModelSpec, resolve_spec
from robustprec.sweep.spec import TrialSpec

__all__ = [
    "DEFAULT_MFU",
    "DEFAULT_PEAK_FLOPS",
    "SweepPlan",
    "TrialEstimate",
    "config_fingerprint",
    "expand_lrs",
    "expand_seeds",
    "parameter_count",
    "plan_sweep",
]

DEFAULT_MFU = 0.35
DEFAULT_PEAK_FLOPS = PEAK_BF16_FLOPS["H100"]  # dense BF16, FLOP/s
BYTE_VOCAB = 256
ASSUMED_VOCAB = 50257  # GPT-2's, when the tokenizer's vocabulary is unknown to a torch-free planner
MAX_ID_LEN = 100
PLAN_VERSION = 1

SEED, LR, BACKEND, PRESET = "seed", "optim.lr", "numerics.backend", "model.preset"
_NAMED = {SEED: "sweep.seeds", LR: "sweep.lrs", BACKEND: "sweep.formats", PRESET: "sweep.models"}
_SPACE_RE = re.compile(r"\s*(logspace|linspace)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._=-]+")
_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]*")
_LRS_FORMS = (
    "a list of floats, 'logspace(lo, hi, n)' or 'linspace(lo, hi, n)', e.g. 'logspace(1e-4, 1e-2, 5)'"
)


# --------------------------------------------------------------------------------------------------- axes


def expand_seeds(seeds: int | list[int]) -> list[int]:
    """`n` -> `[0, ..., n-1]`; an explicit list is kept (non-empty, no duplicates)."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"sweep.seeds must be at least 1 (got {seeds!r})")
        return list(range(seeds))
    values = list(seeds)
    if not values:
        raise ConfigError("sweep.seeds is an empty list; give a count or at least one seed")
    _check_unique("sweep.seeds", values)
    return values


def expand_lrs(lrs: list[float] | str) -> list[float]:
    """A list of learning rates, or `logspace(lo, hi, n)` / `linspace(lo, hi, n)` (endpoints included)."""
    if not isinstance(lrs, str):
        values = [float(v) for v in lrs]
        _check_unique("sweep.lrs", values)
        return values
    m = _SPACE_RE.fullmatch(lrs)
    if m is None:
        raise ConfigError(f"sweep.lrs {lrs!r} is not understood; expected {_LRS_FORMS}")
    kind, lo_s, hi_s, n_s = m.groups()
    try:
        lo, hi, n = float(lo_s), float(hi_s), int(n_s)
    except ValueError:
        raise ConfigError(
            f"sweep.lrs {lrs!r}: lo and hi must be numbers and n an integer; expected {_LRS_FORMS}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or n < 1:
        raise ConfigError(f"sweep.lrs {lrs!r}: lo and hi must be finite and n >= 1")
    if kind == "logspace" and (lo <= 0 or hi <= 0):
        raise ConfigError(f"sweep.lrs {lrs!r}: logspace needs lo > 0 and hi > 0")
    if n == 1:
        values = [lo]
    elif kind == "logspace":
        a, step = math.log10(lo), (math.log10(hi) - math.log10(lo)) / (n - 1)
        values = [lo, *(10 ** (a + i * step) for i in range(1, n - 1)), hi]
    else:
        step = (hi - lo) / (n - 1)
        values = [lo, *(lo + i * step for i in range(1, n - 1)), hi]
    _check_unique(f"sweep.lrs {lrs!r}", values)
    return values


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _check_unique(what: str, values: list[Any]) -> None:
    seen: dict[str, Any] = {}
    for v in values:
        key = _canon(v)
        if key in seen:
            raise ConfigError(f"{what} holds the value {v!r} twice (trials would be identical)")
        seen[key] = v


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def _with(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `key` set, copying only the sections on the key's path."""
    parts = key.split(".")
    out = dict(data)
    node = out
    for part in parts[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _check_axis_key(key: str, base: dict[str, Any]) -> None:
    """A `sweep.axes` key must be an existing config key, and not one with its own axis."""
    if key in _NAMED:
        raise ConfigError(f"sweep.axes: {key!r} has its own axis; use {_NAMED[key]} instead")
    if key == "name" or key.split(".")[0] == "sweep":
        raise ConfigError(
            f"sweep.axes: {key!r} cannot be swept (the name is the trial id; sweep is the grid)"
        )
    node: Any = base
    path: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(path) or "the top level"
            valid = ", ".join(node) if isinstance(node, dict) else f"none ({where} is a value, not a section)"
            raise ConfigError(f"sweep.axes: unknown config key {key!r}; valid keys at {where}: {valid}")
        node = node[part]
        path.append(part)


def _raw_axes(cfg: Config) -> tuple[list[tuple[str, list[Any]]], list[str]]:
    """(key, raw values) of every axis in order, and the keys shown (swept or explicitly given)."""
    sw = cfg.sweep
    base = cfg.to_dict()
    axes: list[tuple[str, list[Any]]] = []
    shown: list[str] = []
    if sw.models:
        _check_unique("sweep.models", sw.models)
        axes.append((PRESET, list(sw.models)))
        shown.append(PRESET)
    if sw.formats:
        _check_unique("sweep.formats", sw.formats)
        axes.append((BACKEND, list(sw.formats)))
        shown.append(BACKEND)
    lrs = expand_lrs(sw.lrs) if (isinstance(sw.lrs, str) or sw.lrs) else []
    if lrs:
        axes.append((LR, lrs))
        shown.append(LR)
    seeds = expand_seeds(sw.seeds)
    axes.append((SEED, seeds))
    if len(seeds) > 1 or isinstance(sw.seeds, list):
        shown.append(SEED)
    keys = list(sw.axes)
    for key in keys:
        _check_axis_key(key, base)
        for other in keys:
            if other != key and other.startswith(key + "."):
                raise ConfigError(f"sweep.axes: {key!r} and {other!r} overlap; sweep one or the other")
        values = sw.axes[key]
        if not values:
            raise ConfigError(f"sweep.axes: {key!r} has no values; give at least one or remove the axis")
        _check_unique(f"sweep.axes[{key!r}]", values)
        axes.append((key, list(values)))
        shown.append(key)
    return axes, shown


def _replaced_settings(cfg: Config, axes: list[tuple[str, list[Any]]]) -> list[str]:
    """Notes for settings given explicitly (file or override) that a named sweep axis replaces in every trial:
    ``--set model.preset=X`` with a config that sweeps `sweep.models` trains the swept models, never X."""
    given = {PRESET: (cfg.model, "preset"), BACKEND: (cfg.numerics, "backend"), LR: (cfg.optim, "lr")}
    notes = []
    for key, values in axes:
        if key in given:
            section, field_name = given[key]
            value = getattr(section, field_name)
            if field_name in section.model_fields_set and not any(_same_value(v, value) for v in values):
                shown = ", ".join(_brief(v) for v in values)
                notes.append(
                    f"{key}={_brief(value)} is replaced by {_NAMED[key]}=[{shown}] in every trial; "
                    f"put it in {_NAMED[key]} to train it"
                )
    return notes


def _bytecode_notes(cfg: Config) -> list[str]:
    """A note for packed GPU trials when this process writes no bytecode: trial processes started from it inherit
    the setting, and each fresh one compiles its imports from source."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or not 0 < cfg.sweep.resources.get("GPU", 1.0) < 1:
        return []
    return [
        "PYTHONDONTWRITEBYTECODE is set: every fresh trial process compiles torch's, DeepSpeed's and Ray's modules "
        "from source (an H200 machine: 16.9 s to import them, 5.4 s from cached bytecode); unset it, with "
        "PYTHONPYCACHEPREFIX=<a writable folder> where site-packages is read-only, so packed trials start faster"
    ]


def _brief(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same_value(axis_value: Any, wanted: Any) -> bool:
    """An exclude value names an axis value: equal JSON, equal stripped strings, or numbers within 0.1%
    (so `3e-3` names the `0.0031622...` of a logspace)."""
    if _canon(axis_value) == _canon(wanted):
        return True
    if isinstance(axis_value, str) and isinstance(wanted, str):
        return axis_value.strip() == wanted.strip()
    numeric = (int, float)
    if isinstance(axis_value, numeric) and isinstance(wanted, numeric):
        if isinstance(axis_value, bool) or isinstance(wanted, bool):
            return False
        return math.isclose(float(axis_value), float(wanted), rel_tol=1e-3)
    return False


def _exclusions(
    rules: list[dict[str, Any]], axes: list[tuple[str, list[Any]]]
) -> tuple[list[dict[int, set[int]]], list[str]]:
    """`sweep.exclude` as {axis position: excluded value indices} per rule, and notes for values that are not in
    the grid (ignored, so a `--set sweep.formats=...` override keeps the config usable). A key that is not a
    swept axis is an error: a typo must not silently exclude nothing."""
    keys = [k for k, _ in axes]
    out: list[dict[int, set[int]]] = []
    notes: list[str] = []
    for n, rule in enumerate(rules):
        if not rule:
            raise ConfigError(f"sweep.exclude[{n}] is empty; it would exclude every trial")
        entry: dict[int, set[int]] = {}
        for key, wanted in rule.items():
            if key not in keys:
                raise ConfigError(
                    f"sweep.exclude[{n}]: {key!r} is not an axis of this sweep; axes: {', '.join(keys)}"
                )
            a = keys.index(key)
            values = axes[a][1]
            hits: set[int] = set()
            for w in wanted if isinstance(wanted, list) else [wanted]:
                match = {i for i, v in enumerate(values) if _same_value(v, w)}
                if not match:
                    notes.append(
                        f"sweep.exclude[{n}]: {w!r} is not a value of {key} "
                        f"({', '.join(map(str, values))}); ignored"
                    )
                hits |= match
            entry[a] = hits
        out.append(entry)
    return out, notes


# --------------------------------------------------------------------------------------------------- trial ids


def _safe(text: str) -> str:
    return _UNSAFE_RE.sub("_", text).strip("_")


def _value_label(v: Any, exact: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return _safe((repr(v) if exact else f"{v:g}").replace("e+", "e"))
    if isinstance(v, list | tuple):
        return _safe(",".join(_value_label(x, exact) for x in v)) or "empty"
    if isinstance(v, dict):
        return _safe(_canon(v)) or "empty"
    return _safe(str(v))


def _lr_labels(values: list[float]) -> list[str]:
    """`3e-03`: the fewest significant digits that keep distinct learning rates apart."""
    for digits in range(17):
        labels = [f"{v:.{digits}e}".replace("e+", "e") for v in values]
        if len(set(labels)) == len(values):
            return labels
    return [repr(v) for v in values]  # pragma: no cover (17 digits separate any two floats)


def _short_keys(keys: list[str]) -> dict[str, str]:
    """The last component of each dotted key, lengthened where two keys would share it."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            short = ".".join(parts[-n:])
            if sum(1 for k in keys if k.split(".")[-n:] == parts[-n:]) == 1:
                break
        out[key] = _safe(short)
    return out


def _axis_labels(key: str, values: list[Any], short: dict[str, str]) -> list[str]:
    if key == LR:
        labels = ["lr" + lab for lab in _lr_labels(values)]
    elif key == SEED:
        labels = [f"s{v}" for v in values]
    elif key in (PRESET, BACKEND):
        labels = [_safe(str(v)) for v in values]
    else:
        labels = [_value_label(v) for v in values]
        if len({lab.lower() for lab in labels}) < len(labels):
            labels = [_value_label(v, exact=True) for v in values]
        labels = [f"{short[key]}={lab}" for lab in labels]
    seen: dict[str, Any] = {}
    for v, lab in zip(values, labels, strict=True):
        if lab.lower() in seen:
            raise ConfigError(
                f"sweep axis {key!r}: values {seen[lab.lower()]!r} and {v!r} give the same trial-id part "
                f"{lab!r}; make them differ in more than case or punctuation"
            )
        seen[lab.lower()] = v
    return labels


def _make_id(parts: list[str]) -> str:
    tid = "-".join(p for p in parts if p)
    if tid[:1] in (".", "-", "="):
        tid = "t" + tid
    if len(tid) > MAX_ID_LEN:
        digest = hashlib.sha1(tid.encode()).hexdigest()[:8]
        tid = f"{tid[: MAX_ID_LEN - 9].rstrip('-.')}-{digest}"
    return tid


# --------------------------------------------------------------------------------------------------- estimates


def parameter_count(spec: ModelSpec) -> int:
    """Distinct parameters of `robustprec.model.transformer.Transformer(spec)` (tied embeddings once)."""
    assert spec.vocab_size is not None, "resolve the vocabulary first"
    d, f, v, hd = spec.d_model, spec.d_ff, spec.vocab_size, spec.head_dim
    gpt2 = spec.flavour == "gpt2"
    norm = (lambda n: 2 * n) if gpt2 else (lambda n: n)  # LayerNorm: weight + bias; RMSNorm: weight
    attn = 4 * d * d + (4 * d if gpt2 else 0) + (2 * norm(hd) if spec.qk_norm else 0)
    mlp = (2 * d * f + f + d) if gpt2 else 3 * d * f
    block = 2 * norm(d) + attn + mlp
    embed = v * d + (spec.max_seq_len * d if gpt2 else 0)
    head = 0 if spec.tied_embeddings else d * v
    return embed + spec.n_layers * block + norm(d) + head


@dataclass(frozen=True)
class TrialEstimate:
    """Compute of one trial if it runs all its steps (diverged trials stop early, so this is an upper bound)."""

    params: int
    flops_per_token: int
    tokens: int
    flops: int
    gpu_hours: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialEstimate:
        return cls(**data)


def _tokenizer_vocab(cfg: Config) -> tuple[int, bool]:
    """The tokenizer's vocabulary as far as a torch-free planner knows it, and whether it was assumed."""
    if cfg.data.tokenizer == "byte":
        return BYTE_VOCAB, False
    vocab = cfg.model.vocab_size or PRESETS[cfg.model.preset].vocab_size
    return (vocab, False) if vocab else (ASSUMED_VOCAB, True)


def _estimate(cfg: Config, vocab: int, mfu: float, peak_flops: float) -> TrialEstimate:
    t = cfg.train
    spec = resolve_spec(cfg.model, vocab, t.seq_len)
    per_token = training_flops_per_token(spec, t.seq_len)
    tokens = t.steps * t.global_batch_size * t.seq_len
    flops = per_token * tokens
    return TrialEstimate(parameter_count(spec), per_token, tokens, flops, flops / (mfu * peak_flops) / 3600)


# --------------------------------------------------------------------------------------------------- plan


def config_fingerprint(config: dict[str, Any]) -> str:
    """Stable hash of a trial config without its `sweep` section (which describes the grid, not the trial)."""
    body = {k: v for k, v in config.items() if k != "sweep"}
    return hashlib.sha256(_canon(body).encode()).hexdigest()[:16]


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else str(Path(root, *parts))


def trial_dir(root: str, trial_id: str) -> str:
    """Where a sweep rooted at `root` keeps the records of trial `trial_id`."""
    return _join(root, "trials", trial_id)


@dataclass
class SweepPlan:
    """The trials of a sweep, in grid order, with their compute estimates.

    `root` is the sweep directory (`<root>/<name>`); trial records go to `<root>/trials/<trial_id>`. `axes` maps
    each swept (or explicitly given) dotted key to its values. `estimates` is keyed by trial id.
    """

    name: str
    root: str
    trials: list[TrialSpec]
    axes: dict[str, list[Any]]
    estimates: dict[str, TrialEstimate]
    mfu: float = DEFAULT_MFU
    peak_flops: float = DEFAULT_PEAK_FLOPS
    base_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    search: dict[str, Any] | None = None  # adaptive mode: settings, conditions, trials added (sweep.adaptive)

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]

    @property
    def total_flops(self) -> int:
        return sum(e.flops for e in self.estimates.values())

    @property
    def total_gpu_hours(self) -> float:
        return sum(e.gpu_hours for e in self.estimates.values())

    @property
    def fingerprint(self) -> str:
        """Hash of the trial ids and configs (`sweep` sections excluded): equal plans run the same trials. In
        adaptive mode: the planned trials, the search settings and the conditions (not the trials it added)."""
        added = set(self.search["trials"]) if self.search else set()
        body: list[Any] = [
            [t.trial_id, config_fingerprint(t.config)] for t in self.trials if t.trial_id not in added
        ]
        if self.search:
            conds = [[c["id"], config_fingerprint(c["config"])] for c in self.search["conditions"]]
            body = [body, self.search["settings"], conds]
        return hashlib.sha256(_canon(body).encode()).hexdigest()[:16]

    def adopt(self, previous: SweepPlan) -> None:
        """Take the trials an adaptive search added to `previous` (the same plan, resumed)."""
        if not (self.search and previous.search):
            return
        have = set(self.trial_ids)
        for t in previous.trials:
            if t.trial_id in previous.search["trials"] and t.trial_id not in have:
                self.trials.append(t)
                self.estimates[t.trial_id] = previous.estimates[t.trial_id]
                self.search["trials"].append(t.trial_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "name": self.name,
            "root": self.root,
            "fingerprint": self.fingerprint,
            "axes": self.axes,
            "mfu": self.mfu,
            "peak_flops": self.peak_flops,
            "totals": {"trials": len(self), "flops": self.total_flops, "gpu_hours": self.total_gpu_hours},
            "notes": self.notes,
            "base_config": self.base_config,
            "search": self.search,
            "trials": [  # TrialSpec's fields without asdict's deep copy
                {
                    **{f.name: getattr(t, f.name) for f in fields(t)},
                    "estimate": asdict(self.estimates[t.trial_id]),
                }
                for t in self.trials
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPlan:
        if data.get("version") != PLAN_VERSION:
            raise ConfigError(
                f"sweep plan version {data.get('version')!r} is not supported (want {PLAN_VERSION})"
            )
        trials, estimates = [], {}
        for item in data["trials"]:
            item = dict(item)
            est = item.pop("estimate")
            spec = TrialSpec.from_dict(item)
            trials.append(spec)
            estimates[spec.trial_id] = TrialEstimate.from_dict(est)
        return cls(
            name=data["name"],
            root=data["root"],
            trials=trials,
            axes=data["axes"],
            estimates=estimates,
            mfu=data["mfu"],
            peak_flops=data["peak_flops"],
            base_config=data.get("base_config", {}),
            notes=data.get("notes", []),
            search=data.get("search"),
        )

    def write(self, path: str | Path | None = None) -> Path:
        """Write JSON atomically to `path` (default `<root>/plan.json`, local paths only); returns the path."""
        p = Path(path) if path is not None else Path(self.root) / "plan.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict()) + "\n")
        os.replace(tmp, p)
        return p

    @classmethod
    def read(cls, path: str | Path) -> SweepPlan:
        """Read a plan written by `write` (a file, or a sweep directory holding `plan.json`)."""
        p = Path(path)
        if p.is_dir():
            p = p / "plan.json"
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"sweep plan {str(p)!r} not found") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"sweep plan {str(p)!r} is malformed: {e}") from None


def _blame(base: dict[str, Any], axes: list[tuple[str, list[Any]]], combo: tuple[Any, ...]) -> str | None:
    """The first single axis value that is invalid on its own, as a readable line."""
    for (key, _), value in zip(axes, combo, strict=True):
        try:
            validate_config(_with(base, key, value))
        except ConfigError as e:
            return f"{_NAMED.get(key, f'sweep.axes[{key!r}]')}: invalid value {value!r}: {e}"
    return None


def _claim_id(seen: dict[str, str], tid: str) -> str:
    """Register a trial id; ids differing only in case would collide on case-insensitive file systems."""
    if tid.lower() in seen:
        raise ConfigError(
            f"sweep: two trials get the id {tid!r} (also {seen[tid.lower()]!r}); make the axis values differ more"
        )
    seen[tid.lower()] = tid
    return tid


def _cached_estimate(
    cache: dict[str, TrialEstimate], cfg: Config, tid: str, vocab: int, mfu: float, peak_flops: float
) -> TrialEstimate:
    """The FLOP/GPU-hour estimate of a trial, computed once per distinct model, train settings and vocabulary."""
    key = f"{cfg.model.model_dump_json()}|{cfg.train.model_dump_json()}|{vocab}"
    if key not in cache:
        try:
            cache[key] = _estimate(cfg, vocab, mfu, peak_flops)
        except ConfigError as e:
            raise ConfigError(f"sweep: trial {tid!r}: {e}") from None
    return cache[key]


Point = tuple[tuple[int, ...], Config, dict[str, Any]]  # (index per axis, validated config, its dict)


def _grid_points(
    base: dict[str, Any], axes: list[tuple[str, list[Any]]], rules: list[dict[int, set[int]]]
) -> tuple[list[Point], list[list[Any]]]:
    """Validate every grid point not excluded; also the normalised values of each axis (" bf16" -> "bf16",
    1 -> 1.0). Raises ConfigError for an invalid point, an empty grid or an axis value excluded everywhere."""
    points: list[Point] = []
    normal: list[dict[int, Any]] = [{} for _ in axes]
    for idx in itertools.product(*(range(len(values)) for _, values in axes)):
        if any(all(idx[a] in hits for a, hits in rule.items()) for rule in rules):
            continue
        combo = tuple(values[i] for (_, values), i in zip(axes, idx, strict=True))
        data = base
        for (key, _), value in zip(axes, combo, strict=True):
            data = _with(data, key, value)
        try:
            trial_cfg = validate_config(data)
        except ConfigError as e:
            where = ", ".join(f"{k}={v!r}" for (k, _), v in zip(axes, combo, strict=True))
            raise ConfigError(_blame(base, axes, combo) or f"sweep: invalid trial ({where}): {e}") from None
        dumped = trial_cfg.to_dict()
        for a, ((key, _), i) in enumerate(zip(axes, idx, strict=True)):
            normal[a].setdefault(i, _get(dumped, key))
        points.append((idx, trial_cfg, dumped))
    if not points:
        raise ConfigError("sweep.exclude leaves no trial to run")
    for a, (key, vals) in enumerate(axes):
        gone = [v for i, v in enumerate(vals) if i not in normal[a]]
        if gone:
            raise ConfigError(
                f"sweep.exclude removes every trial with {key}={gone[0]!r}; drop that value from its axis instead"
            )
    return points, [[normal[a][i] for i in range(len(vals))] for a, (_, vals) in enumerate(axes)]


def _check_plan_args(name: str, mfu: float, peak_flops: float) -> None:
    if not _SAFE_NAME_RE.fullmatch(name) or len(name) > MAX_ID_LEN:
        raise ConfigError(f"sweep name {name!r} must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 . _ = -")
    if not 0 < mfu <= 1:
        raise ConfigError(f"assumed MFU must be in (0, 1] (got {mfu!r})")
    if not (peak_flops > 0 and math.isfinite(peak_flops)):
        raise ConfigError(f"peak FLOP/s must be positive (got {peak_flops!r})")


def plan_sweep(
    cfg: Config,
    *,
    name: str | None = None,
    root: str | Path = "sweeps",
    mfu: float = DEFAULT_MFU,
    peak_flops: float = DEFAULT_PEAK_FLOPS,
) -> SweepPlan:
    """Expand `cfg.sweep` into one validated trial per grid point, with FLOP and GPU-hour estimates.

    Raises ConfigError (one line, naming the axis and value) for any invalid axis, value or combination.
    """
    name = name or cfg.name or "sweep"
    _check_plan_args(name, mfu, peak_flops)
    root_s = str(root)
    sweep_dir = _join(root_s if "://" in root_s else str(Path(root_s).expanduser().resolve()), name)

    base = cfg.to_dict()
    axes, shown = _raw_axes(cfg)
    rules, notes = _exclusions(cfg.sweep.exclude, axes)
    notes += _replaced_settings(cfg, axes) + _bytecode_notes(cfg)

    points, values_n = _grid_points(base, axes, rules)
    for (key, _), vals in zip(axes, values_n, strict=True):
        _check_unique(_NAMED.get(key, f"sweep.axes[{key!r}]"), vals)
    short = _short_keys([k for k, _ in axes if k not in _NAMED])
    labels = {
        key: _axis_labels(key, vals, short)
        for (key, _), vals in zip(axes, values_n, strict=True)
        if key in shown
    }
    id_keys = shown or [SEED]  # a single-trial sweep is still named by its seed
    if SEED not in labels:
        labels[SEED] = _axis_labels(SEED, values_n[[k for k, _ in axes].index(SEED)], short)
    pos = {key: a for a, (key, _) in enumerate(axes)}

    trials: list[TrialSpec] = []
    estimates: dict[str, TrialEstimate] = {}
    seen: dict[str, str] = {}
    assumed: set[str] = set()
    cache: dict[str, TrialEstimate] = {}
    for idx, trial_cfg, dumped in points:
        tid = _claim_id(seen, _make_id([labels[k][idx[pos[k]]] for k in id_keys]))
        dumped["name"] = tid
        vocab, guessed = _tokenizer_vocab(trial_cfg)
        if guessed:
            assumed.add(trial_cfg.model.preset)
        estimates[tid] = _cached_estimate(cache, trial_cfg, tid, vocab, mfu, peak_flops)
        trials.append(
            TrialSpec(
                trial_id=tid,
                config=dumped,
                out_dir=trial_dir(sweep_dir, tid),
                axes={k: values_n[pos[k]][idx[pos[k]]] for k in shown},
            )
        )
    if assumed:
        notes.append(
            f"data.tokenizer is not 'byte' and presets {', '.join(sorted(assumed))} set no vocab_size: "
            f"estimates assume a {ASSUMED_VOCAB}-token vocabulary (set model.vocab_size to make them exact)"
        )
    plan = SweepPlan(
        name=name,
        root=sweep_dir,
        trials=trials,
        axes={k: values_n[pos[k]] for k in shown},
        estimates=estimates,
        mfu=mfu,
        peak_flops=peak_flops,
        base_config=base,
        notes=notes,
    )
    if cfg.sweep.lr_search.mode == "adaptive":
        from robustprec.sweep.adaptive import attach_search

        attach_search(plan, cfg)
    return plan
