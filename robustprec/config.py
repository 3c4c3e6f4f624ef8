"""Typed, validated configuration tree (pydantic v2), YAML loading and dotted CLI overrides.

Must not import torch or ray: `robustprec --help` and `--dry-run` paths stay instant.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustprec.errors import ConfigError

BACKENDS = ("fp32", "bf16", "fp16", "fp8", "te")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Model architecture: a preset, optionally with individual fields overridden."""

    preset: str = "tiny"
    flavour: Literal["gpt2", "llama"] | None = None
    d_model: int | None = Field(default=None, gt=0)
    n_layers: int | None = Field(default=None, gt=0)
    n_heads: int | None = Field(default=None, gt=0)
    d_ff: int | None = Field(default=None, gt=0)
    vocab_size: int | None = Field(default=None, gt=0)
    qk_norm: bool | None = None
    z_loss: float | None = Field(default=None, ge=0)
    init_std: float | None = Field(default=None, gt=0)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from robustprec.model.presets import PRESETS

        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; valid presets: {', '.join(PRESETS)}")
        return v


class DataConfig(_Strict):
    """Corpus and tokenizer. An empty `path` selects the embedded default corpus."""

    path: str = ""
    format: Literal["auto", "text", "parquet", "bin"] = "auto"
    text_column: str = "text"
    tokenizer: str = "byte"
    bin_dtype: Literal["uint16", "uint32"] = "uint16"
    eval_fraction: float = Field(default=0.05, gt=0, lt=0.5)
    embedded_max_bytes: int = Field(default=4_000_000, gt=0)
    cache_dir: str = ""


class HighPrecisionLayers(_Strict):
    """Transformer blocks kept out of the simulation (in the base precision), counted from each end."""

    first: int = Field(default=0, ge=0)
    last: int = Field(default=0, ge=0)


class NumericsConfig(_Strict):
    """Numerics backend (fp32, bf16, fp16, fp8, te, or sim:<format spec>) and what it applies to."""

    backend: str = "fp32"
    fp8_recipe: Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"] = "tensorwise"
    fp8_skip_small: bool = Field(
        default=False, description="skip linears too small to gain speed (torchao's filter)"
    )
    operands: list[Literal["act", "weight", "grad"]] = Field(
        default_factory=lambda: ["act", "weight", "grad"]
    )
    fp16_initial_scale_power: int = Field(
        default=16, ge=0, le=64, description="fp16: the dynamic loss scale starts at 2**power"
    )
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=lambda: ["*wte*", "*wpe*", "*embed*", "*lm_head*"])
    gemm_output: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="sim backends: GEMM outputs kept float32, or rounded to bf16 as bf16 training does",
    )
    base: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description=(
            "sim backends: precision of everything the simulation does not quantize (excluded linears such as "
            "lm_head, attention, norms): fp32, or bf16 autocast as real low-precision training runs it; "
            "auto: fp32 for ExMy formats (METHODS §2), bf16 for training recipes (sim:mxfp8, sim:nvfp4, ...) as "
            "torchao/TE/Megatron run them; other backends have their own precision and ignore it"
        ),
    )
    high_precision_layers: HighPrecisionLayers = Field(
        default_factory=HighPrecisionLayers,
        description="sim backends: the first/last N transformer blocks stay unconverted (Megatron's option)",
    )
    counters: Literal["telemetry_steps", "every_step"] = Field(
        default="telemetry_steps",
        description=(
            "sim backends: count overflow/underflow on the steps whose telemetry is read (every "
            "train.telemetry_interval steps and the last; counting on every step made a llama-20m step 23.7 instead "
            "of 16.0 ms on an H200) or on every step (each reading then covers all steps since the last)"
        ),
    )
    wgrad: Literal["quantized", "high"] = Field(
        default="quantized",
        description="sim backends: high keeps the grad-weight GEMM in the base precision (unquantized)",
    )
    accumulate: str | None = Field(
        default=None,
        description=(
            "sim backends: a limited-precision accumulator for the GEMMs of quantized operands, "
            "<format>:chunk=N[,step=S] (E8M13:chunk=128: Hopper FP8's ~14-bit accumulator promoted to float32 "
            "every 128 elements of K, as DeepSeek-V3); unset: float32 accumulation (docs/recipes.md); other backends "
            "ignore it"
        ),
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        v = v.strip()
        if v in BACKENDS or v.startswith("sim:"):
            return v
        raise ValueError(
            f"unknown backend {v!r}; valid backends: {', '.join(BACKENDS)}, sim:<format> (e.g. sim:E4M3)"
        )


class OptimConfig(_Strict):
    """AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`."""

    lr: float = Field(default=1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float = Field(default=1.0, ge=0)


class DivergenceConfig(_Strict):
    """Thresholds of the trial-outcome classification (METHODS §3)."""

    ema_alpha: float = Field(default=0.1, gt=0, le=1)
    spike_tol: float = Field(default=0.5, gt=0)
    warmup_steps: int | None = Field(default=None, ge=0, description="defaults to optim.warmup_steps")
    stop_early: bool = True


class SharpnessConfig(_Strict):
    """Logit epsilon-sharpness (METHODS §4)."""

    enabled: bool = True
    eps: float = Field(default=1e-3, gt=0)
    sequences: int = Field(default=256, gt=0)
    all_positions: bool = False


class TrainConfig(_Strict):
    """Steps, batch geometry, evaluation, checkpointing and engine settings."""

    steps: int = Field(default=200, gt=0)
    micro_batch_size: int = Field(default=8, gt=0)
    global_batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=128, gt=1)
    eval_interval: int = Field(default=50, gt=0)
    eval_sequences: int = Field(default=256, gt=0)
    telemetry_interval: int = Field(
        default=10,
        gt=0,
        description="steps between readings of numerics counters and early-warning monitors (and the last step)",
    )
    checkpoint_interval: int = Field(default=0, ge=0, description="0 disables checkpoints")
    keep_checkpoints: int = Field(default=1, gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    compile_scope: Literal["model", "blocks"] = Field(
        default="model",
        description=(
            "with train.compile: one graph for the whole model, or one per transformer block (the blocks share "
            "one compiled graph) and one for the head (final norm, logits, loss): compile time no longer grows "
            "with depth (54 -> 13.5 s for a 6-layer sim:E4M3 model on CPU; sim:mxfp8 at gpt2-124m on an H200: "
            "25 s, over 190 s as one graph); fusion stops at block boundaries"
        ),
    )
    compile_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "with train.compile: Inductor options (torch.compile(options=...); keys of torch._inductor.config, "
            "dotted for sub-configs), for the model and the compiled-gradient probe alike, e.g. "
            "{realize_opcount_threshold: 1000}"
        ),
    )
    peak_flops: float | None = Field(
        default=None, gt=0, description="per device, for MFU; auto-detected on H100/H200"
    )
    threads: int | None = Field(default=None, gt=0)
    workers: int = Field(default=1, gt=0, description="Ray Train workers (data-parallel ranks) per trial")
    launcher: Literal["auto", "direct", "ray"] = Field(
        default="auto",
        description="one-worker trials: 'direct' runs the loop in the calling process, 'ray' always uses Ray Train",
    )
    max_failures: int = Field(default=2, ge=0, description="worker-group restarts from the last checkpoint")
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    sharpness: SharpnessConfig = Field(default_factory=SharpnessConfig)

    @model_validator(mode="after")
    def _geometry(self) -> TrainConfig:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of micro_batch_size ({self.micro_batch_size})"
            )
        return self


class LRSearchConfig(_Strict):
    """How a sweep places learning rates: `grid` (the `sweep.lrs` x `sweep.seeds` grid, default) or `adaptive`
    (per condition, an η_c search over [lo, hi]: a coarse bracket, or the `sweep.lrs` grid when given, then points
    where η_c's interval shrinks most, with fresh seeds, until the CI ratio upper/lower <= `target_ci_ratio` or
    `max_trials` trials of the condition ran; `robustprec.sweep.lr_search`)."""

    mode: Literal["grid", "adaptive"] = "grid"
    lo: float | None = Field(
        default=None, gt=0, description="adaptive: lowest LR (default: the grid's lowest)"
    )
    hi: float | None = Field(
        default=None, gt=0, description="adaptive: highest LR (default: the grid's highest)"
    )
    seeds_per_point: int = Field(default=2, ge=1, description="adaptive: fresh seeds per LR proposed")
    max_trials: int = Field(
        default=24, ge=1, description="adaptive: trials per condition at most (grid included)"
    )
    target_ci_ratio: float = Field(
        default=1.5, gt=1, description="adaptive: stop when CI upper/lower <= this"
    )
    coarse_points: int = Field(
        default=4, ge=2, description="adaptive without sweep.lrs: LRs of the coarse bracket"
    )


class SweepConfig(_Strict):
    """Axes of a sweep; expanded into trials by the sweep planner."""

    seeds: int | list[int] = 3
    lrs: list[float] | str = Field(default_factory=list)
    formats: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    axes: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="further axes: dotted config key -> values, e.g. model.qk_norm: [true, false]",
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        description="grid points to leave out: each entry maps swept keys (numerics.backend, optim.lr, seed, "
        "model.preset or a sweep.axes key) to a value or a list of values; a trial matching every key of "
        "an entry is not run, e.g. {model.qk_norm: true, numerics.backend: [fp8]}",
    )
    resources: dict[str, float] = Field(default_factory=lambda: {"CPU": 1.0})
    max_concurrent: int | None = Field(default=None, gt=0)
    lr_search: LRSearchConfig = Field(default_factory=LRSearchConfig)


class TrackingConfig(_Strict):
    """Where records and MLflow runs go."""

    uri: str = ""
    experiment: str = "robustprec"
    enabled: bool = True


class Config(_Strict):
    """The whole configuration of a trial (and, with `sweep`, of a sweep)."""

    name: str = ""
    seed: int = 0
    init_seed: int | None = None
    data_seed: int | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    numerics: NumericsConfig = Field(default_factory=NumericsConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _fp16_needs_zero(self) -> Config:
        # Measured on an H200 (DeepSpeed 0.19.8, torch AdamW client optimizer): at ZeRO-0 DeepSpeed's unfused fp16
        # optimizer neither skipped nor counted overflowed steps (loss scale 2^40: no step skipped, loss flat); its
        # ZeRO optimizer does both correctly.
        if self.numerics.backend == "fp16" and self.train.zero_stage == 0:
            raise ValueError(
                "numerics.backend fp16 needs train.zero_stage 1, 2 or 3 (DeepSpeed's ZeRO optimizer does the loss "
                "scaling; its stage-0 fp16 path does not skip overflowed steps)"
            )
        return self

    @property
    def effective_init_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _describe(error: dict[str, Any], root: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        parent = _model_at(root, error["loc"][:-1])
        valid = ", ".join(parent.model_fields) if parent else "?"
        return f"unknown key {loc!r}; valid keys here: {valid}"
    msg = error["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg} (got {error.get('input')!r})" if loc else msg


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return model


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a plain dict into a Config, raising ConfigError with one readable line per problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError("; ".join(_describe(err, Config) for err in e.errors())) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value` (value parsed as YAML, so numbers, lists and booleans work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with dotted overrides applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or defaults when `path` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        data = loaded
    return resolve_paths(validate_config(apply_overrides(data, overrides or [])))


def _absolute(value: str, base: Path) -> str:
    if not value or "://" in value or Path(value).expanduser().is_absolute():
        return str(Path(value).expanduser()) if value and "://" not in value else value
    return str((base / value).resolve())


def resolve_paths(cfg: Config, base: str | Path | None = None) -> Config:
    """Make relative file paths (`data.path`, `data.cache_dir`, a `tokenizer.json` path) absolute against `base`
    (default: the working directory), so trials running elsewhere (Ray actors, workers) read the same files."""
    root = Path(base) if base is not None else Path.cwd()
    data = cfg.data.model_copy(
        update={
            "path": _absolute(cfg.data.path, root),
            "cache_dir": _absolute(cfg.data.cache_dir, root),
            "tokenizer": _absolute(cfg.data.tokenizer, root)
            if cfg.data.tokenizer.endswith(".json")
            else cfg.data.tokenizer,
        }
    )
    return cfg.model_copy(update={"data": data})
