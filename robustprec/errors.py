"""User-facing errors: the CLI prints these as one line and exits non-zero, never with a traceback."""

from __future__ import annotations

from collections.abc import Iterator

# where wrappers keep what they wrap: Ray Train's worker failures and error lists, dynamo's BackendCompilerFailed
_WRAPPED = ("worker_failures", "errors", "inner_exception")


class RobustprecError(Exception):
    """Base class of errors caused by input the user can fix."""


class ConfigError(RobustprecError):
    """Invalid configuration key or value."""


class DataError(RobustprecError):
    """Missing, empty or malformed corpus."""


class RecordError(RobustprecError):
    """A record (summary.json, trial table) that is damaged or ambiguous."""


class InfrastructureError(Exception):
    """A failure of the machinery (a worker or process died), not of the input: retried from the last checkpoint
    up to `train.max_failures` times in total, then reported (the CLI prints one line and exits 1)."""


def exception_chain(e: BaseException) -> Iterator[BaseException]:
    """`e` and every exception it was raised from or wraps (causes, contexts, `_WRAPPED` attributes), each once."""
    seen: set[int] = set()
    stack: list[BaseException] = [e]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        stack.extend(x for x in (cur.__cause__, cur.__context__) if x is not None)
        for attr in _WRAPPED:
            val = getattr(cur, attr, None)
            if isinstance(val, BaseException):
                stack.append(val)
            elif isinstance(val, dict):
                stack.extend(v for v in val.values() if isinstance(v, BaseException))
            elif isinstance(val, list | tuple):
                stack.extend(v for v in val if isinstance(v, BaseException))
