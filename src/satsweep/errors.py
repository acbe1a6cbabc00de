"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a bad override, a missing
dataset, an unknown run id). The CLI prints its message as one line and exits
with code 2; every other exception is a bug or an outage and exits with 1.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, reported as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: a notebook sees the CLI's one line."""
        return [f"satsweep: error: {self}"]


class MissingDataset(UserError):
    """A named dataset that is not on this machine; the CLI adds the commands that need none."""

    def __init__(self, message: str, data_name: str = "") -> None:  # "": copy() restores it
        super().__init__(message)
        self.data_name = data_name
