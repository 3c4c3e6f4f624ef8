"""Evaluation on the fixed held-out set, under any worker count and ZeRO stage.

Under ZeRO-3 every forward is a collective, so every rank must run the same number of eval forwards: the eval set
is split into equal contiguous shards of whole micro-batches, the last ones padded with copies of real rows that
are masked out of every sum (`valid`). Padding rows repeat real rows, so maxima over a batch are unchanged too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from robustprec.model.transformer import token_cross_entropy
from robustprec.train.callbacks import Callbacks, Row

if TYPE_CHECKING:
    from robustprec.train.run import Run


@dataclass(frozen=True)
class EvalShard:
    """This rank's eval rows (`seq_len + 1` tokens each), their global indices, and which are real."""

    rows: np.ndarray
    index: np.ndarray
    valid: np.ndarray
    total: int  # real rows in the whole eval set


def shard_eval_set(rows: np.ndarray, rank: int, world: int, micro: int) -> EvalShard:
    """Rank `rank`'s equal share of `rows`: ceil(n / world) rows rounded up to whole micro-batches."""
    n = len(rows)
    per_rank = math.ceil(math.ceil(n / world) / micro) * micro
    index = np.arange(rank * per_rank, (rank + 1) * per_rank)
    valid = index < n
    index = np.where(valid, index, index % n)
    return EvalShard(rows=rows[index], index=index, valid=valid, total=n)


def to_batch(rows: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """Token rows (seq_len + 1 wide) on `device` as (inputs, next-token targets)."""
    t = torch.from_numpy(rows).to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def evaluate(run: Run, callbacks: Callbacks) -> Row:
    """Mean eval cross-entropy over the real rows of every rank; callbacks see each batch and add metrics."""
    shard, mb, device = run.eval_shard, run.cfg.train.micro_batch_size, run.device
    run.engine.eval()
    callbacks.call("on_eval_start", run)
    ce_sum = torch.zeros((), dtype=torch.float64, device=device)
    positions = 0
    with torch.no_grad(), run.backend.evaluation():
        for i in range(0, len(shard.rows), mb):
            x, y = to_batch(shard.rows[i : i + mb], device)
            logits = run.engine(x, return_logits=True)["logits"]
            valid = torch.from_numpy(shard.valid[i : i + mb]).to(device)
            ce_sum += (token_cross_entropy(logits, y)[1].view(y.shape).double().sum(1) * valid).sum()
            positions += int(shard.valid[i : i + mb].sum()) * y.shape[1]
            index = torch.from_numpy(shard.index[i : i + mb]).to(device)
            callbacks.call("on_eval_batch", run, logits, y, index, valid)
    run.engine.train()
    total, count = run.all_reduce([float(ce_sum), float(positions)])
    row: Row = {"eval_loss": total / count}
    callbacks.call("on_eval", run, row)
    return row
