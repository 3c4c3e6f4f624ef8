"""Logit epsilon-sharpness (METHODS §4, after Keskar et al., applied to output logits as in Lee et al.).

The box is |delta_i| <= eps * (|z_i| + 1). Cross-entropy increases in every wrong-class logit and decreases in the
target logit, so its maximum over the box is attained at delta_i = +eps(|z_i|+1) for i != y and
delta_y = -eps(|z_y|+1), position by position: a closed form, no optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def worst_case_perturbation(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """The maximising corner of the box for each position."""
    radius = eps * (logits.abs() + 1.0)
    sign = torch.ones_like(logits)
    sign.scatter_(-1, targets.unsqueeze(-1), -1.0)
    return sign * radius


def sharpness_sums(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """[sum of CE, sum of worst-case CE, count] as a float64 tensor on the logits' device (no host sync), for
    accumulation over batches and reduction across workers."""
    z = logits.detach().double().reshape(-1, logits.shape[-1])
    y = targets.detach().reshape(-1).long()
    base = F.cross_entropy(z, y, reduction="sum")
    worst = F.cross_entropy(z + worst_case_perturbation(z, y, eps), y, reduction="sum")
    return torch.stack((base, worst, base.new_tensor(float(y.numel()))))


def sharpness_from_sums(base_sum: float, worst_sum: float, count: int) -> float:
    """phi_eps = 100 * (f(z+delta*) - f(z)) / (1 + f(z)) with f the mean cross-entropy."""
    f, f_worst = base_sum / count, worst_sum / count
    return 100.0 * (f_worst - f) / (1.0 + f)


def logit_sharpness(logits: Tensor, targets: Tensor, eps: float) -> float:
    """Logit eps-sharpness of logits `[..., V]` with integer targets `[...]` (METHODS §4)."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match")
    base, worst, count = sharpness_sums(logits, targets, eps).tolist()
    return sharpness_from_sums(base, worst, int(count))
