"""User-facing errors: each prints as one line naming the bad key or file and the fix."""


class UserError(Exception):
    """An error caused by the configuration or the files on disk, not by a bug; main prints it as one line."""


class ConfigError(UserError, ValueError):
    """A config value or combination is invalid."""


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint or run dir is missing or in a state that forbids the requested mode."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights were requested but cannot be downloaded or found in the cache."""
