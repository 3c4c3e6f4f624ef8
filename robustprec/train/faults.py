"""Test-only fault injection: kill this process at a given step, once.

Set ROBUSTPREC_FAULT_AT_STEP=k and ROBUSTPREC_FAULT_MARKER=/path; the first process that reaches step k (and finds
no marker) creates the marker and exits hard with code 17, as a crashed worker would (or, with
ROBUSTPREC_FAULT_MODE=raise, raises `InjectedFault`, as a failing step in this process would). Optionally
ROBUSTPREC_FAULT_RANK=r restricts it to one rank, and ROBUSTPREC_FAULT_DELAY_S=t waits t seconds first (so that a
checkpoint reported just before has been registered by Ray Train's controller, which polls its workers).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class InjectedFault(RuntimeError):
    """The failure ROBUSTPREC_FAULT_MODE=raise injects."""


def maybe_fail(step: int, rank: int) -> None:
    at = os.environ.get("ROBUSTPREC_FAULT_AT_STEP")
    if at is None or int(at) != step:
        return
    if (want := os.environ.get("ROBUSTPREC_FAULT_RANK")) is not None and int(want) != rank:
        return
    marker = Path(os.environ.get("ROBUSTPREC_FAULT_MARKER", "robustprec-fault.marker"))
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    time.sleep(float(os.environ.get("ROBUSTPREC_FAULT_DELAY_S", "0")))
    if os.environ.get("ROBUSTPREC_FAULT_MODE") == "raise":
        raise InjectedFault(f"injected fault at step {step} on rank {rank}")
    os._exit(17)
