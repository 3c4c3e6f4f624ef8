"""User-facing errors: the CLI prints these as one line and exits non-zero, never with a traceback."""


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
