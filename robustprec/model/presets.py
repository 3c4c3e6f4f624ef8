"""Model size presets and their resolution into a full ModelSpec. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Flavour = Literal["gpt2", "llama"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model. `vocab_size=None` in a preset means: the tokenizer's."""

    flavour: Flavour
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    vocab_size: int | None = None
    max_seq_len: int = 1024
    qk_norm: bool = False
    z_loss: float = 0.0
    init_std: float = 0.02
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def tied_embeddings(self) -> bool:
        return self.flavour == "gpt2"


PRESETS: dict[str, ModelSpec] = {
    "tiny": ModelSpec("llama", d_model=64, n_layers=2, n_heads=4, d_ff=176),
    "tiny-gpt2": ModelSpec("gpt2", d_model=64, n_layers=2, n_heads=4, d_ff=256),
    "nano": ModelSpec("llama", d_model=128, n_layers=4, n_heads=4, d_ff=352),
    "llama-20m": ModelSpec("llama", d_model=512, n_layers=6, n_heads=8, d_ff=1408),
    "gpt2-124m": ModelSpec("gpt2", d_model=768, n_layers=12, n_heads=12, d_ff=3072, vocab_size=50304),
    "llama-120m": ModelSpec("llama", d_model=768, n_layers=12, n_heads=12, d_ff=2048, vocab_size=32000),
    "llama-350m": ModelSpec("llama", d_model=1024, n_layers=24, n_heads=16, d_ff=2816, vocab_size=32000),
    "llama-1b": ModelSpec("llama", d_model=2048, n_layers=16, n_heads=32, d_ff=8192, vocab_size=32000),
}


def resolve_spec(model_cfg: Any, tokenizer_vocab: int, seq_len: int) -> ModelSpec:
    """Combine a preset with the config's overrides, the tokenizer's vocabulary and the sequence length."""
    from robustprec.errors import ConfigError

    spec = PRESETS[model_cfg.preset]
    fields = (
        "flavour",
        "d_model",
        "n_layers",
        "n_heads",
        "d_ff",
        "vocab_size",
        "qk_norm",
        "z_loss",
        "init_std",
    )
    overrides = {f: getattr(model_cfg, f) for f in fields if getattr(model_cfg, f) is not None}
    spec = replace(spec, **overrides, max_seq_len=seq_len)
    if spec.vocab_size is None:
        spec = replace(spec, vocab_size=tokenizer_vocab)
    if spec.vocab_size < tokenizer_vocab:
        raise ConfigError(
            f"model.vocab_size ({spec.vocab_size}) is smaller than the tokenizer's vocabulary ({tokenizer_vocab})"
        )
    if spec.d_model % spec.n_heads:
        raise ConfigError(
            f"model.d_model ({spec.d_model}) must be divisible by model.n_heads ({spec.n_heads})"
        )
    if spec.flavour == "llama" and spec.head_dim % 2:
        raise ConfigError(f"RoPE needs an even head dimension, got {spec.head_dim}")
    return spec
