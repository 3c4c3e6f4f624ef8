"""Stateful monitors as callbacks: divergence (METHODS §3), evaluation history, logit sharpness, attention-logit
and output-logit telemetry, numerics counters, and the early-warning signals of METHODS §4."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from robustprec.model.transformer import CausalAttention
from robustprec.train.callbacks import Callback, Row
from robustprec.train.divergence import DivergenceMonitor, divergence_phase
from robustprec.train.sharpness import sharpness_from_sums, sharpness_sums

if TYPE_CHECKING:
    from robustprec.train.run import Run


def telemetry_scheduled(run: Run, step: int) -> bool:
    """Every `telemetry_interval` steps and at the last step."""
    return (step + 1) % run.cfg.train.telemetry_interval == 0 or run.is_last(step)


def telemetry_due(run: Run, step: int) -> bool:
    """The scheduled steps and the step a run stops (a divergence)."""
    return telemetry_scheduled(run, step) or run.stop


class Divergence(Callback):
    """Feeds every step's (loss, grad_norm) to the `DivergenceMonitor`; a divergence stops the run (if
    `stop_early`). A step the fp16 loss scaler skipped is not evidence: its overflowed norm is not passed on."""

    name = "divergence"

    def __init__(self, run: Run) -> None:
        div, optim = run.cfg.train.divergence, run.cfg.optim
        warmup = optim.warmup_steps if div.warmup_steps is None else div.warmup_steps
        self.monitor = DivergenceMonitor(
            ema_alpha=div.ema_alpha, spike_tol=div.spike_tol, warmup_steps=warmup
        )
        self.stop_early = div.stop_early

    def on_step(self, run: Run, row: Row) -> None:
        grad_norm = None if row["skipped"] else row["grad_norm"]
        reason = self.monitor.update(row["step"], row["loss"], grad_norm)
        row["loss_ema"] = self.monitor.ema
        if reason is not None:
            run.diverged = reason
            run.stop = run.stop or self.stop_early

    def on_end(self, run: Run, summary: Row) -> None:
        m, out = self.monitor, self.monitor.finish()
        summary.update(
            status=out.status,
            reason=out.reason,
            diverged_at=out.diverged_at,
            diverged_phase=divergence_phase(out.diverged_at, m.warmup_steps, run.cfg.train.steps),
            instability_events=out.spike_events,
            instability_steps=out.event_steps,
            instability_heights=out.event_heights,
            initial_loss=m.initial_loss,
            divergence_thresholds={
                "ema_alpha": m.ema_alpha,
                "spike_tol": m.spike_tol,
                "warmup_steps": m.warmup_steps,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)


class EvalHistory(Callback):
    """Every (step, eval_loss); the final eval loss is the mean of the last three (METHODS §4)."""

    name = "evals"

    def __init__(self) -> None:
        self.evals: list[tuple[int, float]] = []

    def on_eval(self, run: Run, row: Row) -> None:
        self.evals.append((run.step, row["eval_loss"]))

    def on_end(self, run: Run, summary: Row) -> None:
        last3 = [v for _, v in self.evals[-3:]]
        summary["final_eval_loss"] = float(np.mean(last3)) if last3 else None

    def state_dict(self) -> dict[str, Any]:
        return {"evals": [list(e) for e in self.evals]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evals = [(int(s), float(v)) for s, v in state["evals"]]


class Sharpness(Callback):
    """Logit ε-sharpness (METHODS §4) over the first `sharpness.sequences` eval sequences, summed across ranks."""

    name = "sharpness"

    def __init__(self, run: Run) -> None:
        self.cfg = run.cfg.train.sharpness
        self.sums = torch.zeros(3, dtype=torch.float64, device=run.device)

    def on_eval_start(self, run: Run) -> None:
        self.sums.zero_()

    def on_eval_batch(self, run: Run, logits: Tensor, targets: Tensor, rows: Tensor, valid: Tensor) -> None:
        keep = valid & (rows < self.cfg.sequences)
        z, y = logits[keep], targets[keep]
        if not self.cfg.all_positions:
            z, y = z[:, -1:], y[:, -1:]
        self.sums += sharpness_sums(z, y, self.cfg.eps)

    def on_eval(self, run: Run, row: Row) -> None:
        base, worst, count = run.all_reduce(self.sums)
        if count:
            row["sharpness"] = sharpness_from_sums(base, worst, int(count))


class ActivationTelemetry(Callback):
    """Early-warning activations at eval time [WORTSMAN]: the max attention logit per layer (forward hooks on
    every `CausalAttention`, installed for the evaluation only), output-logit RMS and mean log-partition."""

    name = "activations"

    def __init__(self, run: Run) -> None:
        self.layers = [m for m in run.model.modules() if isinstance(m, CausalAttention)]
        # one 0-d tensor per layer, each hook's own: a hook that indexed by its layer number made dynamo recompile
        # every block compiled on its own (`compile_scope: blocks`) per layer, eager past 8 (CPU-measured)
        self.max_logit = [
            torch.tensor(-math.inf, dtype=torch.float64, device=run.device) for _ in self.layers
        ]
        self.sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # sum z², sum lse, positions
        self.handles: list[Any] = []

    @staticmethod
    def _hook(slot: Tensor) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            q, k = args[0].float(), args[1].float()
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            t = scores.shape[-1]
            causal = torch.ones(t, t, dtype=torch.bool, device=scores.device).tril()
            top = scores.masked_fill(~causal, -math.inf).amax().double()
            slot.copy_(torch.maximum(slot, top))

        return hook

    def on_eval_start(self, run: Run) -> None:
        for slot in self.max_logit:
            slot.fill_(-math.inf)
        self.sums.zero_()
        self.handles = [
            m.register_forward_hook(self._hook(s)) for m, s in zip(self.layers, self.max_logit, strict=True)
        ]

    def on_eval_batch(self, run: Run, logits: Tensor, targets: Tensor, rows: Tensor, valid: Tensor) -> None:
        z = logits[valid].double()
        self.sums += torch.stack(
            (z.pow(2).mean(-1).sum(), torch.logsumexp(z, -1).sum(), z.new_tensor(z.shape[0] * z.shape[1]))
        )

    def on_eval(self, run: Run, row: Row) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        layers = run.all_reduce(torch.stack(self.max_logit), op="max")
        sq, lse, n = run.all_reduce(self.sums)
        row["max_attn_logit"] = max(layers)
        row.update({f"max_attn_logit_{i}": v for i, v in enumerate(layers)})
        row["logit_rms"], row["log_partition"] = math.sqrt(sq / n), lse / n


class NumericsTelemetry(Callback):
    """The backend's counters (overflow/underflow fractions, fp16 loss scale), read once per telemetry interval.
    With ``numerics.counters: telemetry_steps`` only the scheduled steps count (a stop between them reads no
    fractions); with ``every_step`` a reading covers every training step since the last one."""

    name = "numerics"

    def on_start(self, run: Run) -> None:
        self._arm(run, run.start_step)

    def on_step(self, run: Run, row: Row) -> None:
        if telemetry_due(run, row["step"]):
            row.update(run.backend.pop_telemetry())

    def on_step_end(self, run: Run, row: Row) -> None:
        self._arm(run, row["step"] + 1)

    def _arm(self, run: Run, step: int) -> None:
        every = run.cfg.numerics.counters == "every_step"
        run.backend.count_numerics(every or telemetry_scheduled(run, step))


def _full_param(p: nn.Parameter) -> Tensor:
    """The fp32 master value of a parameter at any ZeRO stage (gathered under ZeRO-3: every rank must call)."""
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(p)
    return (p if full is None else full).detach().float()


def _full_grad(p: nn.Parameter) -> Tensor | None:
    from deepspeed.utils import safe_get_full_grad

    g = safe_get_full_grad(p)
    return None if g is None else g.detach().float()


class EarlyWarning(Callback):
    """Early-warning signals of [WORTSMAN] (METHODS §4), every telemetry interval: gradient RMS relative to
    Adam's ε (global, and the smallest over parameter tensors: where updates stop being gradient-driven), and the
    update/parameter norm ratio ‖Δθ‖/‖θ‖ (global, and the largest over weight matrices). Norms are computed with
    `torch._foreach_norm` and read with one host sync per reading."""

    name = "early_warning"

    def __init__(self, run: Run) -> None:
        self.eps = run.cfg.optim.eps
        self.before: list[Tensor] | None = None
        self.grad_rms: Tensor | None = None  # (global, smallest) gradient RMS, read with the update ratios
        self._constants: dict[tuple[Any, ...], Tensor] = {}

    def on_before_optimizer_step(self, run: Run) -> None:
        if not telemetry_due(run, run.step):
            return
        grads = [g for g in (_full_grad(p) for p in run.params) if g is not None]
        if grads:
            scale = run.backend.loss_scale() or 1.0
            sq = torch.stack(torch._foreach_norm(grads)).double().pow(2) / scale**2
            sizes = self._constant([g.numel() for g in grads], torch.float64, sq.device)
            self.grad_rms = torch.stack((sq.sum() / sizes.sum(), (sq / sizes).min())).sqrt()
        self.before = [_full_param(p).clone() for p in run.params]

    def on_step(self, run: Run, row: Row) -> None:
        if self.before is None:
            return
        after = [_full_param(p) for p in run.params]
        delta = torch.stack(torch._foreach_norm(torch._foreach_sub(after, self.before))).double()
        norm = torch.stack(torch._foreach_norm(self.before)).double()
        matrix = self._constant([b.dim() >= 2 for b in self.before], torch.bool, norm.device)
        ratio = torch.where(matrix & (norm > 0), delta / norm, 0.0)
        total = delta.pow(2).sum().sqrt() / norm.pow(2).sum().sqrt().clamp_min(1e-30)
        grad = self.grad_rms if self.grad_rms is not None else total.new_full((2,), math.nan)
        values = torch.cat((torch.stack((total, ratio.max())), grad)).tolist()  # the one host sync
        row.update(update_ratio=values[0], update_ratio_max=values[1])
        if self.grad_rms is not None:
            row.update(grad_rms_over_eps=values[2] / self.eps, grad_rms_over_eps_min=values[3] / self.eps)
        self.before, self.grad_rms = None, None

    def _constant(self, values: list[Any], dtype: torch.dtype, device: torch.device) -> Tensor:
        """`values` as a device tensor, made once (a host-to-device copy waits for the queued GPU work)."""
        key = (dtype, device, *values)
        if key not in self._constants:
            self._constants[key] = torch.tensor(values, dtype=dtype).to(device)
        return self._constants[key]
