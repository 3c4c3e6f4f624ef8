"""DeepSpeed engine setup for one worker: process group, device, optimizer, ZeRO config."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
from torch import nn

from robustprec.config import Config
from robustprec.numerics.backends import Backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def select_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present (the local rank's GPU), else CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from robustprec.errors import ConfigError

            raise ConfigError("train.device is 'cuda' but no CUDA device is visible")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the existing process group (Ray Train, torchrun) or create a one-process one. Returns (rank, world)."""
    import torch.distributed as dist

    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not dist.is_initialized():
        if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
            os.environ.update(
                RANK="0",
                LOCAL_RANK="0",
                WORLD_SIZE="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(_free_port()),
            )
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return dist.get_rank(), dist.get_world_size()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (dim >= 2), not norms or biases."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def engine_clips(cfg: Config, backend: Backend) -> bool:
    """Whether DeepSpeed clips (and reports the global norm): ZeRO 1-3, and fp16 at every stage (its optimizer
    wrapper alone can unscale the loss-scaled gradients first). Otherwise the trainer clips: DeepSpeed's stage-0
    clipping with a client optimizer does not expose the norm."""
    return cfg.train.zero_stage > 0 or backend.engine_clips


def deepspeed_config(cfg: Config, world: int, backend: Backend) -> dict[str, Any]:
    """DeepSpeed config for the trial, with the backend's additions (e.g. fp16 loss scaling)."""
    t = cfg.train
    gas = t.global_batch_size // (t.micro_batch_size * world)
    ds: dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.optim.grad_clip if engine_clips(cfg, backend) else 0.0,
        "zero_optimization": {"stage": t.zero_stage},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    ds.update(backend.deepspeed_config())
    return ds


def build_engine(model: nn.Module, cfg: Config, world: int, device: torch.device, backend: Backend) -> Any:
    """Wrap the model in a DeepSpeed engine with torch AdamW as client optimizer (no JIT-built Adam)."""
    import deepspeed

    from robustprec.errors import ConfigError

    t = cfg.train
    if t.global_batch_size % (t.micro_batch_size * world):
        raise ConfigError(
            f"train.global_batch_size ({t.global_batch_size}) must be a multiple of micro_batch_size x workers "
            f"({t.micro_batch_size} x {world})"
        )
    model.to(device)
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps, fused=device.type == "cuda"
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(cfg, world, backend)
    )
    if world == 1 and t.zero_stage == 0:
        # one rank: DeepSpeed's all-reduce would flatten every gradient, "reduce" it and copy it back (measured on
        # an H200: 148 copies per step at gpt2-124m, host time the GPU waits for)
        engine.enable_backward_allreduce = False
    return engine
