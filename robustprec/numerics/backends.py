"""Numerics backends: how a model computes. Each backend converts modules before `deepspeed.initialize`,
may wrap the forward in an autocast context, may add to the DeepSpeed config, and reports telemetry.

Registry: fp32, bf16 (autocast, fp32 master weights and optimizer state), and sim:<format> (GEMM operands quantized
to a simulated ExMy format in forward and backward). fp16, fp8 and te are planned behind the same interface.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustprec.errors import ConfigError


class Backend:
    """fp32: no conversion, no autocast."""

    name = "fp32"

    def __init__(self, numerics_cfg: Any, device: torch.device) -> None:
        self.cfg, self.device = numerics_cfg, device

    def prepare_model(self, model: nn.Module, generator: torch.Generator | None = None) -> None:
        """Convert modules in place, before the engine is built."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def deepspeed_config(self) -> dict[str, Any]:
        return {}

    def pop_telemetry(self) -> dict[str, float]:
        """Telemetry accumulated since the last call (e.g. overflow/underflow fractions)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


class BF16Backend(Backend):
    """bf16 autocast around the forward pass; parameters, gradients and optimizer state stay fp32."""

    name = "bf16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


class SimBackend(Backend):
    """Simulated ExMy format applied to GEMM operands of the selected `nn.Linear` modules (METHODS §2)."""

    def __init__(self, numerics_cfg: Any, device: torch.device) -> None:
        super().__init__(numerics_cfg, device)
        from robustprec.numerics.formats import parse_format

        spec = numerics_cfg.backend.removeprefix("sim:")
        try:
            self.format = parse_format(spec)
        except ValueError as e:
            raise ConfigError(f"numerics.backend: {e}") from None
        self.name = f"sim:{self.format.spec}"
        self.handle: Any = None

    def prepare_model(self, model: nn.Module, generator: torch.Generator | None = None) -> None:
        from robustprec.numerics.simulated import apply_simulated

        try:
            self.handle = apply_simulated(
                model,
                self.format,
                operands=tuple(self.cfg.operands),
                include=tuple(self.cfg.include),
                exclude=tuple(self.cfg.exclude),
                generator=generator,
            )
        except ValueError as e:
            raise ConfigError(f"numerics: {e}") from None

    def pop_telemetry(self) -> dict[str, float]:
        return self.handle.pop_stats() if self.handle is not None else {}

    def describe(self) -> dict[str, Any]:
        fmt = self.format
        return {
            "backend": self.name,
            "exp_bits": fmt.exp_bits,
            "man_bits": fmt.man_bits,
            "operands": list(self.cfg.operands),
            "converted_modules": len(self.handle.modules) if self.handle is not None else 0,
        }


_REGISTRY: dict[str, Callable[[Any, torch.device], Backend]] = {"fp32": Backend, "bf16": BF16Backend}
PLANNED = ("fp16", "fp8", "te")


def available_backends() -> list[str]:
    return [*_REGISTRY, "sim:<format>"]


def make_backend(numerics_cfg: Any, device: torch.device) -> Backend:
    """Instantiate the configured backend for a device."""
    name = numerics_cfg.backend
    if name.startswith("sim:"):
        return SimBackend(numerics_cfg, device)
    if name in _REGISTRY:
        return _REGISTRY[name](numerics_cfg, device)
    if name in PLANNED:
        raise ConfigError(
            f"numerics.backend {name!r} is not available in this version; available: {', '.join(available_backends())}"
        )
    raise ConfigError(f"unknown numerics.backend {name!r}; available: {', '.join(available_backends())}")
