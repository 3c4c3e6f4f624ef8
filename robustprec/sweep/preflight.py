"""Checks run before anything trains (the `train` and `sweep` commands, `--dry-run` included): input that would
fail in every trial, or silently change a record, is refused here with one line naming what is wrong.

Imports of torch-backed packages (numerics) happen inside the checks, so `robustprec --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from robustprec.config import Config
from robustprec.errors import ConfigError, DataError, RobustprecError
from robustprec.tracking.mlflow_mirror import flatten
from robustprec.tracking.store import CONFIG_FILE

CHECKPOINT_DIR, LATEST = "checkpoints", "latest"  # the trainer's layout (robustprec/train/loop.py)


def check_backend(backend: str) -> None:
    """A `numerics.backend` the backend registry can build: a registered name or `sim:<format spec>`."""
    from robustprec.numerics.backends import _operand_formats, available_backends
    from robustprec.numerics.training_recipes import is_training_recipe, parse_training_recipe

    if backend.startswith("sim:"):
        spec = backend.removeprefix("sim:")
        try:
            parse_training_recipe(spec) if is_training_recipe(spec) else _operand_formats(spec)
        except ValueError as e:
            raise ConfigError(f"numerics.backend {backend!r}: {e}") from None
    elif backend not in available_backends():
        raise ConfigError(
            f"unknown numerics.backend {backend!r}; available: {', '.join(available_backends())}"
        )


def check_corpus_vocab(cfg: Config) -> None:
    """A pre-tokenized corpus must fit the model's vocabulary (a tokenizer's own ids always do)."""
    from robustprec.data.corpus import bin_max_token
    from robustprec.model.presets import PRESETS

    top = bin_max_token(cfg.data)
    byte_vocab = 256 if cfg.data.tokenizer == "byte" else None
    vocab = cfg.model.vocab_size or PRESETS[cfg.model.preset].vocab_size or byte_vocab
    if top is not None and vocab is not None and top >= vocab:
        raise DataError(
            f"corpus {cfg.data.path!r} holds token ids up to {top}, beyond the model's vocabulary of {vocab}; "
            f"set model.vocab_size to at least {top + 1} (or check data.bin_dtype)"
        )


def check_recipe_shapes(cfg: Config) -> None:
    """A sim backend builds (that checks `numerics.accumulate`), and a recipe backend's blocks divide every
    converted linear's dimensions and the tokens per micro-batch (built on the meta device: no memory, no time)."""
    import torch

    from robustprec.model.presets import resolve_spec
    from robustprec.model.transformer import build_model
    from robustprec.numerics.backends import make_backend

    spec = cfg.numerics.backend.removeprefix("sim:")
    backend = make_backend(cfg.numerics, torch.device("meta"))
    if getattr(backend, "recipe", None) is None:
        return
    with torch.device("meta"):
        model = build_model(resolve_spec(cfg.model, 256, cfg.train.seq_len))
    backend.convert(model, 0)
    tokens = cfg.train.micro_batch_size * cfg.train.seq_len
    multiple = backend.handle._state.recipe.token_multiple
    if tokens % multiple:
        raise ConfigError(
            f"numerics.backend sim:{spec}: the backward GEMMs' blocks run along the tokens of a micro-batch, "
            f"which must be a multiple of {multiple}; train.micro_batch_size x train.seq_len = {tokens}"
        )


def check_compile_options(cfg: Config) -> None:
    """`train.compile_options` need `train.compile` and must name Inductor options (torch._inductor.config)."""
    options = cfg.train.compile_options
    if not options:
        return
    if not cfg.train.compile:
        raise ConfigError("train.compile_options apply to a compiled model only; set train.compile: true")
    import torch
    import torch._inductor.config as inductor

    known = inductor.get_config_copy()
    for key in options:
        if key not in known:
            raise ConfigError(
                f"train.compile_options: {key!r} is not an option of torch {torch.__version__}'s Inductor "
                "(a name in torch._inductor.config, dotted for sub-configs such as triton.cudagraphs)"
            )


def check_configs(cfgs: Iterable[Config]) -> None:
    """Backends, corpus and compile options of every distinct trial config (each distinct value checked once)."""
    backends: set[str] = set()
    corpora: set[str] = set()
    options: set[str] = set()
    for cfg in cfgs:
        key = f"{cfg.train.compile}|{sorted(cfg.train.compile_options)}"
        if key not in options:
            check_compile_options(cfg)
            options.add(key)
        shapes = (
            f"{cfg.numerics.model_dump_json()}|{cfg.model.model_dump_json()}|{cfg.train.seq_len}|"
            f"{cfg.train.micro_batch_size}"
        )
        if cfg.numerics.backend not in backends:
            check_backend(cfg.numerics.backend)
            backends.add(cfg.numerics.backend)
        if cfg.numerics.backend.startswith("sim:") and shapes not in backends:
            check_recipe_shapes(cfg)
            backends.add(shapes)
        key = f"{cfg.data.model_dump_json()}|{cfg.model.model_dump_json()}"
        if key not in corpora:
            check_corpus_vocab(cfg)
            corpora.add(key)


def check_latest_checkpoint(run_dir: str | Path) -> None:
    """A `checkpoints/latest` tag must name a checkpoint folder that exists (else training would restart from
    step 0 and the curve be cut)."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    latest = ckpt / LATEST
    if not latest.exists():
        return
    tag = latest.read_text().strip()
    if not tag or not (ckpt / tag).is_dir():
        present = sorted(p.name for p in ckpt.iterdir() if p.is_dir()) or ["none"]
        raise RobustprecError(
            f"{str(latest)!r} names checkpoint {tag!r}, which is missing; checkpoints present: "
            f"{', '.join(present)} (fix the tag, or pass --overwrite to start over)"
        )


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config trees (as `key: old -> new`)."""
    a, b = flatten(old), flatten(new)
    return [
        f"{k}: {a.get(k, '-')} -> {b.get(k, '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def check_resume_config(run_dir: str | Path, cfg: Config) -> None:
    """Resuming must continue the same run: the config (after --set) must equal the run's `config.yaml`."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return
    try:
        old = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"{str(path)!r} is not valid YAML; cannot check what --resume continues") from None
    changed = config_changes(old if isinstance(old, dict) else {}, cfg.to_dict())
    if changed:
        raise ConfigError(
            f"--resume with a config that differs from {str(path)!r}: {'; '.join(changed)}; "
            "resume with the same config, or use --overwrite or another --out"
        )
