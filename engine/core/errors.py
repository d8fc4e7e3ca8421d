"""Errors that carry a message meant for the user (CLI prints it on one line, the app shows it)."""

from __future__ import annotations

import reprlib
from typing import Any

QUOTE_MAX = 200  # characters of a value that an error message quotes

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = _SHORT.maxdict = 8
_SHORT.maxstring = _SHORT.maxother = QUOTE_MAX


def quoted(value: Any, limit: int = QUOTE_MAX) -> str:
    """repr(value) for an error message, at most about `limit` characters with the value's size said when cut,
    so a huge value (a recipe's alias bomb, a pasted file) never makes a huge message."""
    text = _SHORT.repr(value)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    if isinstance(value, str | bytes) and len(value) > limit:
        text += f" ({len(value):,} characters)"
    elif isinstance(value, list | tuple | dict | set) and len(value) > _SHORT.maxlist:
        text += f" ({len(value):,} items)"
    return text


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
