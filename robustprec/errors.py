"""User-facing errors: the CLI prints these as one line and exits non-zero, never with a traceback."""


class RobustprecError(Exception):
    """Base class of errors caused by input the user can fix."""


class ConfigError(RobustprecError):
    """Invalid configuration key or value."""


class DataError(RobustprecError):
    """Missing, empty or malformed corpus."""
