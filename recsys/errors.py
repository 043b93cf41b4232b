"""One exception family for every bad-input case.

Messages name the file, field or value at fault and say how to fix it, so a user
never has to read a traceback to know what to change.
"""


class RecsysError(Exception):
    """Base class of every error this package raises on purpose."""


class DataError(RecsysError, ValueError):
    """A dataset file is missing, malformed, or empty after filtering."""


class ConfigError(RecsysError, ValueError):
    """An unknown name (dataset, protocol, model) or an out-of-range parameter."""
