"""Errors that carry a message meant for the user (CLI prints it on one line, the app shows it)."""


class UserError(Exception):
    """Bad input or a missing resource; the message names what is wrong and how to fix it."""


class DatasetError(UserError):
    """A dataset is missing, malformed or unusable."""


class CheckpointError(UserError):
    """A checkpoint or weights file cannot be loaded into the architecture."""


class ConfigError(UserError, ValueError):
    """A config field has a value outside what is allowed."""


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


class Cancelled(Exception):  # noqa: N818 - reads better at the raise site than CancelledError
    """Raised inside a job when its cancel token is set."""
