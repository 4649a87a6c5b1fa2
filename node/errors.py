"""Named errors raised inside the node; the CLI turns each into one line and an exit code."""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: printed as ``error: <message>``, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
