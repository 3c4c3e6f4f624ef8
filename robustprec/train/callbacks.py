"""The trainer's callback protocol (after OLMo-core's stateful callbacks).

The loop calls, in order: `on_start` once (after a resume restored every callback's `load_state_dict`); per optimizer
step `on_before_optimizer_step` (gradients of the last micro-batch are ready), `on_step` (the step's row: monitors
add their columns and may ask the run to stop), at evaluation steps `on_eval_start`, `on_eval_batch` per eval
forward and `on_eval` (the eval metrics row), then `on_step_end` with the finished row (writers, checkpoints,
reporting); `on_end` once with the summary, which callbacks extend. A checkpoint holds `{name: state_dict()}` of
every callback, so whatever a callback knows survives a resume.

Every rank runs every callback with the same arguments; a callback that talks across ranks (an all-reduce, a
ZeRO-3 gather) must do so on every rank, never behind a rank-dependent branch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from robustprec.train.run import Run

Row = dict[str, Any]


class Callback:
    """Base callback: every hook is a no-op; `name` keys its state in a checkpoint."""

    name = "callback"

    def on_start(self, run: Run) -> None: ...

    def on_before_optimizer_step(self, run: Run) -> None: ...

    def on_step(self, run: Run, row: Row) -> None: ...

    def on_eval_start(self, run: Run) -> None: ...

    def on_eval_batch(self, run: Run, logits: Tensor, targets: Tensor, rows: Tensor, valid: Tensor) -> None:
        """`rows`: the global eval-set index of each sequence; `valid`: False for padding rows."""

    def on_eval(self, run: Run, row: Row) -> None: ...

    def on_step_end(self, run: Run, row: Row) -> None: ...

    def on_end(self, run: Run, summary: Row) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Callbacks:
    """An ordered list of callbacks called as one."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        names = [cb.name for cb in callbacks]
        if len(set(names)) != len(names):
            raise ValueError(f"callback names must be unique: {names}")
        self.items = list(callbacks)

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.items)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.items:
            getattr(cb, hook)(*args)

    def state_dict(self) -> dict[str, Any]:
        return {cb.name: cb.state_dict() for cb in self.items}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cb in self.items:
            if cb.name in state:
                cb.load_state_dict(state[cb.name])
