"""Training FLOPs per token: the matmul work of forward + backward (3x forward), as `flop_counter` counts it."""

from __future__ import annotations

from robustprec.model.presets import ModelSpec


def matmul_params(spec: ModelSpec) -> int:
    """Weights that take part in a GEMM per token: block linears and the output head (embeddings excluded)."""
    assert spec.vocab_size is not None
    d, f = spec.d_model, spec.d_ff
    attn = 3 * d * d + d * d
    mlp = 3 * d * f if spec.flavour == "llama" else 2 * d * f
    return spec.n_layers * (attn + mlp) + d * spec.vocab_size


def forward_flops_per_token(spec: ModelSpec, seq_len: int) -> int:
    """Forward FLOPs per token: 2 per weight, plus attention scores and values (2*T*d each, per layer)."""
    return 2 * matmul_params(spec) + spec.n_layers * 4 * seq_len * spec.d_model


def training_flops_per_token(spec: ModelSpec, seq_len: int) -> int:
    """Forward + backward FLOPs per token (backward = 2x forward). Attention counted without causal savings,
    as in PaLM's MFU definition and torch's flop counter."""
    return 3 * forward_flops_per_token(spec, seq_len)


PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "H800": 989.4e12, "A100": 312e12, "L40S": 362e12}


def detect_peak_flops(device_name: str) -> float | None:
    """Dense BF16 peak of a known accelerator, or None (MFU is then not reported)."""
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return peak
    return None
