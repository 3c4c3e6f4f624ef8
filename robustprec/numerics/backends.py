"""Numerics backends: how a model computes. Each backend converts modules before `deepspeed.initialize`, wraps
the model in a `NumericsModule` that enters its autocast (and any extra context) around the forward, may add to
the DeepSpeed config, reports telemetry, and holds the state a checkpoint needs (the stochastic-rounding stream).
The model itself stays pure: it never sees a dtype policy.

Registry: fp32; bf16 (autocast, fp32 master weights and optimizer state); fp16 (DeepSpeed fp16 with dynamic loss
scaling, CUDA only); fp8 (torchao float8 training, bf16 autocast elsewhere; emulated on CPU); te (Transformer Engine,
only if importable); sim:<format> (GEMM operands quantized to a simulated ExMy format in forward and backward).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robustprec.errors import ConfigError

if TYPE_CHECKING:
    from robustprec.config import NumericsConfig


class NumericsModule(nn.Module):
    """The backend's thin wrapper around a pure model: enters torch.autocast to `autocast_dtype` (and the
    backend's extra context, if any) around the model's forward. It sits inside the DeepSpeed engine, which
    resets an outer autocast around its own forward. A plain dtype and `torch.autocast` written in `forward`:
    torch.compile traces them into the graph (a context factory graph-broke on CUDA: gpt2-124m ran 1.5x slower)."""

    def __init__(
        self,
        model: nn.Module,
        autocast_dtype: torch.dtype | None,
        context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.autocast_dtype, self.context = model, autocast_dtype, context

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        device = args[0].device.type if args else "cpu"
        dtype = self.autocast_dtype or torch.bfloat16
        with torch.autocast(device, dtype=dtype, enabled=self.autocast_dtype is not None):
            if self.context is None:
                return self.model(*args, **kwargs)
            with self.context():
                return self.model(*args, **kwargs)


class Backend:
    """fp32: no conversion, no autocast."""

    name = "fp32"
    autocast_dtype: torch.dtype | None = None  # NumericsModule enters torch.autocast to this dtype

    def __init__(self, numerics_cfg: NumericsConfig, device: torch.device) -> None:
        self.cfg, self.device = numerics_cfg, device

    def wrap(self, model: nn.Module, seed: int = 0) -> NumericsModule:
        """Convert modules in place (before the engine is built) and wrap the model in the module that applies
        this backend's autocast and context. `seed` seeds the backend's own randomness (stochastic rounding)."""
        self.convert(model, seed)
        extra = self.autocast if type(self).autocast is not Backend.autocast else None
        return NumericsModule(model, self.autocast_dtype, extra)

    def convert(self, model: nn.Module, seed: int) -> None:
        """Swap modules for this backend's versions; nothing for plain precisions."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Extra context entered around the forward inside `autocast_dtype`'s autocast (only backends that need
        more than autocast override it, e.g. Transformer Engine's fp8_autocast)."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Forwards inside the block are evaluation: they draw no training randomness and add no telemetry."""
        yield

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold for an exact resume (e.g. the stochastic-rounding stream)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s state."""

    engine_clips = False  # True where DeepSpeed's optimizer wrapper must clip (it alone can unscale first)

    def deepspeed_config(self) -> dict[str, Any]:
        return {}

    def attach(self, engine: Any) -> None:
        """Called once the DeepSpeed engine exists (e.g. to read its loss scale)."""

    def pop_telemetry(self) -> dict[str, float]:
        """Telemetry accumulated since the last call (e.g. overflow/underflow fractions)."""
        return {}

    def count_numerics(self, on: bool) -> None:
        """Whether the next training steps add to the numerics counters (the trainer arms them per step)."""

    def loss_scale(self) -> float | None:
        """The factor gradients are multiplied by (fp16 dynamic loss scaling); None without one."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


class BF16Backend(Backend):
    """bf16 autocast around the forward pass; parameters, gradients and optimizer state stay fp32."""

    name = "bf16"
    autocast_dtype = torch.bfloat16


class SimBackend(Backend):
    """Simulated numerics on the GEMM operands of the selected `nn.Linear` modules (METHODS §2): an ExMy format
    (``sim:E4M3``, per operand with ``act=``/``weight=``/``grad=``) or a training recipe (``sim:mxfp8``,
    ``sim:nvfp4``, ``sim:fp8_tensorwise``, ... see `robustprec.numerics.training_recipes`)."""

    def __init__(self, numerics_cfg: NumericsConfig, device: torch.device) -> None:
        super().__init__(numerics_cfg, device)
        from robustprec.numerics.accumulate import parse_accumulator
        from robustprec.numerics.training_recipes import is_training_recipe, parse_training_recipe

        spec = numerics_cfg.backend.removeprefix("sim:")
        self.recipe: Any = None
        try:
            if is_training_recipe(spec):
                self.recipe = parse_training_recipe(spec)
                if numerics_cfg.wgrad == "high":
                    self.recipe = self.recipe.with_high_wgrad()
            else:
                self.formats = _operand_formats(spec)
        except ValueError as e:
            raise ConfigError(f"numerics.backend: {e}") from None
        if self.recipe is not None:
            self.name = f"sim:{self.recipe.name}"
        else:
            self.format = self.formats["base"]
            self.name = f"sim:{self.format.spec}" if len(self.formats) == 1 else f"sim:{spec.strip()}"
        try:
            self.accumulator = parse_accumulator(numerics_cfg.accumulate) if numerics_cfg.accumulate else None
        except ValueError as e:
            raise ConfigError(f"numerics.accumulate: {e}") from None
        auto = "bf16" if self.recipe is not None else "fp32"
        self.base = auto if numerics_cfg.base == "auto" else numerics_cfg.base
        self.autocast_dtype = torch.bfloat16 if self.base == "bf16" else None
        self.handle: Any = None

    def _exclude(self, model: nn.Module) -> tuple[str, ...]:
        """numerics.exclude plus the blocks of numerics.high_precision_layers."""
        hp = self.cfg.high_precision_layers
        return (*self.cfg.exclude, *_block_globs(model, hp.first, hp.last))

    def convert(self, model: nn.Module, seed: int) -> None:
        from robustprec.numerics.recipe_linear import apply_recipe
        from robustprec.numerics.simulated import apply_simulated

        common = {"include": tuple(self.cfg.include), "exclude": self._exclude(model), "seed": seed,
                  "device": self.device, "gemm_output": self.cfg.gemm_output,
                  "accumulate": self.accumulator}  # fmt: skip
        try:
            if self.recipe is not None:
                self.handle = apply_recipe(model, self.recipe, base=self.base, **common)
                return
            per_op = {k: f for k, f in self.formats.items() if k != "base"}
            fmt = {k: per_op.get(k, self.format) for k in ("act", "weight", "grad")}
            hp = None if self.cfg.wgrad == "quantized" else _DTYPES[self.base]
            self.handle = apply_simulated(
                model, fmt, operands=tuple(self.cfg.operands), wgrad_hp=hp, **common
            )
        except ValueError as e:
            raise ConfigError(f"numerics: {e}") from None

    def pop_telemetry(self) -> dict[str, float]:
        return self.handle.pop_stats() if self.handle is not None else {}

    def count_numerics(self, on: bool) -> None:
        if self.handle is not None:
            self.handle.stats_enabled = on  # a compiled model keeps one graph for each setting

    def evaluation(self) -> contextlib.AbstractContextManager[None]:
        return self.handle.evaluation()

    def state_dict(self) -> dict[str, Any]:
        return self.handle.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.handle.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name}
        if self.recipe is not None:
            out["recipe"] = self.recipe.name
        else:
            out.update(exp_bits=self.format.exp_bits, man_bits=self.format.man_bits,
                       operands=list(self.cfg.operands))  # fmt: skip
        hp = self.cfg.high_precision_layers
        out.update(base=self.base, wgrad=self.cfg.wgrad, high_precision_layers=[hp.first, hp.last],
                   accumulate=self.cfg.accumulate,
                   converted_modules=len(self.handle.modules) if self.handle is not None else 0)  # fmt: skip
        if self.handle is not None:
            out["carriers"] = self.handle.carriers
        return out


_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _operand_formats(spec: str) -> dict[str, Any]:
    """An ExMy spec with optional per-operand formats: {"base": fmt, operand: fmt, ...}."""
    from robustprec.numerics.formats import parse_format
    from robustprec.numerics.training_recipes import split_operand_formats

    base, per = split_operand_formats(spec)
    return {"base": parse_format(base), **{k: parse_format(v) for k, v in per.items()}}


def _block_globs(model: nn.Module, first: int, last: int) -> list[str]:
    """Globs of the first `first` and last `last` transformer blocks (the model's largest nn.ModuleList)."""
    if not first and not last:
        return []
    lists = [(len(m), n) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and n]
    if not lists:
        raise ConfigError("numerics.high_precision_layers: the model has no list of transformer blocks")
    n, name = max(lists)
    if first + last >= n:
        raise ConfigError(
            f"numerics.high_precision_layers: first={first} + last={last} leaves none of the {n} blocks simulated"
        )
    return [f"{name}.{i}.*" for i in (*range(first), *range(n - last, n))]


def _selected(numerics_cfg: NumericsConfig, fqn: str) -> bool:
    return any(fnmatch.fnmatchcase(fqn, g) for g in numerics_cfg.include) and not any(
        fnmatch.fnmatchcase(fqn, g) for g in numerics_cfg.exclude
    )


class FP16Backend(Backend):
    """DeepSpeed fp16: the module runs in fp16, fp32 master weights, dynamic loss scaling. DeepSpeed's fp16
    optimizer unscales before it measures and clips (at every ZeRO stage); steps whose gradients overflow are
    skipped by the loss scaler, counted in `skipped_steps`, and the scale is logged."""

    name = "fp16"
    engine_clips = True

    def __init__(self, numerics_cfg: NumericsConfig, device: torch.device) -> None:
        super().__init__(numerics_cfg, device)
        if device.type != "cuda":
            raise ConfigError(
                "numerics.backend 'fp16' needs a CUDA device (DeepSpeed has no fp16 on CPU); "
                "simulate fp16 GEMMs on CPU with numerics.backend=sim:fp16"
            )
        self.engine: Any = None

    def deepspeed_config(self) -> dict[str, Any]:
        power = self.cfg.fp16_initial_scale_power
        return {"fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": power, "loss_scale_window": 1000,
                         "hysteresis": 2, "min_loss_scale": 1}}  # fmt: skip

    def attach(self, engine: Any) -> None:
        self.engine = engine

    def loss_scale(self) -> float | None:
        # ZeRO optimizers expose `cur_scale`, DeepSpeed's stage-0 fp16 optimizers `loss_scale`
        opt = getattr(self.engine, "optimizer", None)
        scale = getattr(opt, "cur_scale", None) or getattr(opt, "loss_scale", None)
        return float(scale) if scale is not None else None

    def pop_telemetry(self) -> dict[str, float]:
        scale = self.loss_scale()
        return {"loss_scale": scale} if scale is not None else {}


class FP8Backend(Backend):
    """torchao float8 training (recipes tensorwise, rowwise, rowwise_with_gw_hp) on the selected linears, bf16
    autocast for the rest. Needs SM89+ on CUDA; on CPU torchao's emulation runs the same numerics slowly."""

    name = "fp8"

    def __init__(self, numerics_cfg: NumericsConfig, device: torch.device) -> None:
        super().__init__(numerics_cfg, device)
        if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
            raise ConfigError(
                f"numerics.backend 'fp8' needs an SM89+ GPU (Ada/Hopper or newer); this GPU is SM{cap}"
            )
        self.emulate = device.type != "cuda"
        self.converted: list[str] = []

    def _eligible(self, module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or not _selected(self.cfg, fqn):
            return False
        if module.in_features % 16 or module.out_features % 16:  # float8 GEMM shape constraint
            return False
        # torchao's own speed filter: small GEMMs run slower in float8 than in bf16
        return not (self.cfg.fp8_skip_small and (module.out_features <= 2048 or module.in_features <= 1024))

    def convert(self, model: nn.Module, seed: int) -> None:
        try:
            from torchao.float8 import Float8LinearConfig, convert_to_float8_training
        except ImportError:
            raise ConfigError("numerics.backend 'fp8' needs torchao: pip install 'robustprec[fp8]'") from None
        config = dataclasses.replace(
            Float8LinearConfig.from_recipe_name(self.cfg.fp8_recipe), emulate=self.emulate
        )
        self.converted = [n for n, m in model.named_modules() if self._eligible(m, n)]
        if not self.converted:
            raise ConfigError("numerics: fp8 selected no linear layer (check numerics.include/exclude, fp8_skip_small, "
                              "and that in/out features are multiples of 16)")  # fmt: skip
        convert_to_float8_training(model, config=config, module_filter_fn=lambda m, n: self._eligible(m, n))

    autocast_dtype = torch.bfloat16

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "fp8_recipe": self.cfg.fp8_recipe, "emulate": self.emulate,
                "converted_modules": len(self.converted)}  # fmt: skip


class TEBackend(Backend):
    """NVIDIA Transformer Engine: selected linears become `te.Linear` under `fp8_autocast` (delayed scaling)."""

    name = "te"

    def __init__(self, numerics_cfg: NumericsConfig, device: torch.device) -> None:
        super().__init__(numerics_cfg, device)
        try:
            import transformer_engine.pytorch as te  # noqa: F401
        except ImportError:
            raise ConfigError(
                "numerics.backend 'te' needs Transformer Engine on a CUDA machine: pip install 'robustprec[te]'"
            ) from None
        if device.type != "cuda":
            raise ConfigError("numerics.backend 'te' needs a CUDA device")
        self.converted: list[str] = []

    def convert(self, model: nn.Module, seed: int) -> None:
        import transformer_engine.pytorch as te

        for fqn, module in list(model.named_modules()):
            if not (isinstance(module, nn.Linear) and _selected(self.cfg, fqn)):
                continue
            if module.in_features % 16 or module.out_features % 16:
                continue
            new = te.Linear(
                module.in_features,
                module.out_features,
                bias=module.bias is not None,
                params_dtype=torch.float32,
            )
            with torch.no_grad():
                new.weight.copy_(module.weight)
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            parent, _, child = fqn.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
            self.converted.append(fqn)
        if not self.converted:
            raise ConfigError("numerics: te selected no linear layer")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        import transformer_engine.pytorch as te
        from transformer_engine.common.recipe import DelayedScaling

        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        stack.enter_context(te.fp8_autocast(enabled=True, fp8_recipe=DelayedScaling()))
        return stack


_REGISTRY: dict[str, Callable[[NumericsConfig, torch.device], Backend]] = {
    "fp32": Backend, "bf16": BF16Backend, "fp16": FP16Backend, "fp8": FP8Backend, "te": TEBackend,
}  # fmt: skip


def available_backends() -> list[str]:
    return [*_REGISTRY, "sim:<format>", "sim:<recipe>"]


def make_backend(numerics_cfg: NumericsConfig, device: torch.device) -> Backend:
    """Instantiate the configured backend for a device."""
    name = numerics_cfg.backend
    if name.startswith("sim:"):
        return SimBackend(numerics_cfg, device)
    if name in _REGISTRY:
        return _REGISTRY[name](numerics_cfg, device)
    raise ConfigError(f"unknown numerics.backend {name!r}; available: {', '.join(available_backends())}")
