"""Test-only fault injection: kill this process at a given step, once.

Set ROBUSTPREC_FAULT_AT_STEP=k and ROBUSTPREC_FAULT_MARKER=/path; the first process that reaches step k (and finds
no marker) creates the marker and exits hard with code 17, as a crashed worker would. Optionally
ROBUSTPREC_FAULT_RANK=r restricts it to one rank.
"""

from __future__ import annotations

import os
from pathlib import Path


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
    os._exit(17)
