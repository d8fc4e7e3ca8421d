"""What the store tells the user when it cannot do what was asked (each a UserError: one line in the CLI)."""

from engine.core.errors import UserError


class StoreError(UserError):
    """The run store cannot do what was asked (closed, read-only, missing or foreign file)."""


class StoreLockedError(StoreError):
    """Another process held the file for longer than the store waits (store/sharing.py)."""


class StoreVersionError(StoreError):
    """The file's schema is newer than this code (or, read-only, older and not yet migrated)."""


class StoreOutdatedError(StoreVersionError):
    """Read-only open of a file that needs a migration, which only a writer can apply."""


class RunNotFound(StoreError):  # noqa: N818 - reads as what happened
    """No run has that id (or the prefix is ambiguous)."""
