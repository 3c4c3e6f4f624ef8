"""Deterministic batch streams: the global batch of step s depends only on (corpus, seq_len, batch, data_seed, s),
never on the number of workers; each rank takes a contiguous slice of it."""

from __future__ import annotations

import numpy as np

from robustprec.errors import DataError


def split_tokens(tokens: np.ndarray, eval_fraction: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/eval split: the last `eval_fraction` of the token stream is held out."""
    n = int(tokens.shape[0])
    cut = int(n * (1.0 - eval_fraction))
    train, held = tokens[:cut], tokens[cut:]
    need = seq_len + 1
    if train.shape[0] < need or held.shape[0] < need:
        raise DataError(
            f"corpus of {n} tokens is too small for seq_len {seq_len}: the train split has {train.shape[0]} and the "
            f"eval split {held.shape[0]} tokens, each needs at least {need} (lower train.seq_len or add data)"
        )
    return train, held


class BatchStream:
    """Non-overlapping windows of `seq_len + 1` tokens, visited in a fresh seeded permutation each epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, global_batch: int, seed: int) -> None:
        self.tokens, self.seq_len, self.global_batch, self.seed = tokens, seq_len, global_batch, seed
        self.n_windows = (int(tokens.shape[0]) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(f"not enough tokens ({tokens.shape[0]}) for one sequence of {seq_len}")
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return self._perm

    def sequences(self, first: int, count: int) -> np.ndarray:
        """Sequences `first .. first+count-1` of the infinite epoch stream, as int64 (count, seq_len+1)."""
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        for i in range(count):
            k = first + i
            start = int(self._permutation(k // self.n_windows)[k % self.n_windows]) * self.seq_len
            out[i] = self.tokens[start : start + self.seq_len + 1]
        return out

    def global_batch_at(self, step: int) -> np.ndarray:
        return self.sequences(step * self.global_batch, self.global_batch)

    def micro_batches(self, step: int, rank: int, world: int, micro: int) -> list[np.ndarray]:
        """This rank's micro-batches of step `step`: rank r owns rows [r*G/W, (r+1)*G/W) of the global batch."""
        per_rank = self.global_batch // world
        if per_rank * world != self.global_batch or per_rank % micro:
            raise DataError(
                f"global batch {self.global_batch} cannot be split over {world} workers in micro-batches of {micro}"
            )
        rows = self.sequences(step * self.global_batch + rank * per_rank, per_rank)
        return [rows[i : i + micro] for i in range(0, per_rank, micro)]


def eval_sequences(tokens: np.ndarray, seq_len: int, count: int) -> np.ndarray:
    """The fixed evaluation set: the first `count` non-overlapping windows of the held-out split (fewer if short)."""
    n = min(count, (int(tokens.shape[0]) - 1) // seq_len)
    if n < 1:
        raise DataError(f"eval split ({tokens.shape[0]} tokens) holds no sequence of {seq_len}")
    out = np.empty((n, seq_len + 1), dtype=np.int64)
    for i in range(n):
        out[i] = tokens[i * seq_len : i * seq_len + seq_len + 1]
    return out
