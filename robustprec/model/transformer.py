"""Decoder-only transformer with GPT-2 and Llama flavours, qk-norm and z-loss options, SDPA attention.

A pure model: it knows nothing about numerics (a backend wraps it from outside, see `numerics.backends`) or
monitoring (monitors attach forward hooks, e.g. on `CausalAttention` to see the queries and keys of every layer).

Module names are stable because numerics backends select GEMMs by glob on them:
`wte`, `wpe`, `blocks.{i}.attn.{qkv,proj}`, `blocks.{i}.mlp.{fc,proj}` (gpt2) or `{gate,up,down}` (llama),
`blocks.{i}.attn.core` (the attention kernel, no parameters), `norm_f`, `lm_head`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustprec.model.presets import ModelSpec


def _norm(spec: ModelSpec, dim: int) -> nn.Module:
    if spec.flavour == "gpt2":
        return nn.LayerNorm(dim, eps=spec.norm_eps)
    return nn.RMSNorm(dim, eps=spec.norm_eps)


def _rope_tables(spec: ModelSpec) -> tuple[Tensor, Tensor]:
    half = spec.head_dim // 2
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
    angles = torch.outer(torch.arange(spec.max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: (B, H, T, D); rotate pairs (first half, second half) of the head dimension.
    t = x.shape[-2]
    c, s = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


class CausalAttention(nn.Module):
    """softmax(q kᵀ / √d + causal mask) v through `scaled_dot_product_attention`: a module of its own so that a
    forward hook sees the queries and keys that form the attention logits."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class Attention(nn.Module):
    """Causal multi-head self-attention through `scaled_dot_product_attention`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        bias = spec.flavour == "gpt2"
        self.qkv = nn.Linear(spec.d_model, 3 * spec.d_model, bias=bias)
        self.proj = nn.Linear(spec.d_model, spec.d_model, bias=bias)
        self.q_norm = _norm(spec, spec.head_dim) if spec.qk_norm else None
        self.k_norm = _norm(spec, spec.head_dim) if spec.qk_norm else None
        self.core = CausalAttention()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        b, t, d = x.shape
        h, hd = self.spec.n_heads, self.spec.head_dim
        q, k, v = self.qkv(x).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = _apply_rope(q, *rope), _apply_rope(k, *rope)
        y = self.core(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """GELU MLP (gpt2) or SwiGLU (llama)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.swiglu = spec.flavour == "llama"
        if self.swiglu:
            self.gate = nn.Linear(spec.d_model, spec.d_ff, bias=False)
            self.up = nn.Linear(spec.d_model, spec.d_ff, bias=False)
            self.down = nn.Linear(spec.d_ff, spec.d_model, bias=False)
        else:
            self.fc = nn.Linear(spec.d_model, spec.d_ff)
            self.proj = nn.Linear(spec.d_ff, spec.d_model)

    def forward(self, x: Tensor) -> Tensor:
        if self.swiglu:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.norm1 = _norm(spec, spec.d_model)
        self.attn = Attention(spec)
        self.norm2 = _norm(spec, spec.d_model)
        self.mlp = MLP(spec)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Decoder-only language model. `forward` returns a dict with `loss` (CE + z-loss), `ce_loss`, and
    optionally `logits` (float32)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        assert spec.vocab_size is not None, "resolve the vocabulary before building"
        self.spec = spec
        self.wte = nn.Embedding(spec.vocab_size, spec.d_model)
        self.wpe = nn.Embedding(spec.max_seq_len, spec.d_model) if spec.flavour == "gpt2" else None
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layers))
        self.norm_f = _norm(spec, spec.d_model)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tied_embeddings:
            self.lm_head.weight = self.wte.weight
        if spec.flavour == "llama":
            cos, sin = _rope_tables(spec)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, init_std), residual output projections scaled by 1/sqrt(2L)."""
        std = self.spec.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                else:
                    nn.init.ones_(p)
            elif name.endswith(("attn.proj.weight", "mlp.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.spec.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, return_logits: bool = False
    ) -> dict[str, Any]:
        _, t = idx.shape
        if t > self.spec.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's max_seq_len {self.spec.max_seq_len}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t, device=idx.device))
        rope = (self.rope_cos, self.rope_sin) if self.spec.flavour == "llama" else None
        for block in self.blocks:
            x = block(x, rope)
        return self.head(x, targets, return_logits)

    def head(self, x: Tensor, targets: Tensor | None, return_logits: bool = False) -> dict[str, Any]:
        """Final norm, logits, loss: a method of its own so that `train.compile_scope: blocks` compiles it too (with
        it eager, a gpt2-124m bf16 step took 52.6 ms block by block against 35.3 ms as one graph on an H200)."""
        logits = self.lm_head(self.norm_f(x)).float()
        out: dict[str, Any] = {}
        if targets is not None:
            lse, token_ce = token_cross_entropy(logits, targets)
            ce = token_ce.mean()
            loss = ce
            if self.spec.z_loss > 0:
                loss = loss + self.spec.z_loss * lse.pow(2).mean()
            out["loss"], out["ce_loss"] = loss, ce.detach()
        if return_logits:
            out["logits"] = logits
        return out


def token_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(log-partition, cross-entropy) per position, flattened. Cross-entropy as log-partition minus the target
    logit: one logsumexp serves the loss and the z-loss, and torch.compile fuses it (F.cross_entropy ran as eager
    softmax kernels on the H100: ~16% of a gpt2-124m step)."""
    flat = logits.reshape(-1, logits.size(-1))
    lse = torch.logsumexp(flat, dim=-1)
    return lse, lse - flat.gather(1, targets.reshape(-1, 1)).squeeze(1)


def build_model(spec: ModelSpec, seed: int | None = None) -> Transformer:
    """Build a model; `seed` makes the initialisation independent of the global RNG state."""
    if seed is None:
        return Transformer(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(spec)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
