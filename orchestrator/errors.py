"""Errors a user can fix. The CLI prints them without a traceback and exits 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a missing file, an invalid sweep, an unwritable folder, a held lock."""

    exit_code = 2

    def __init__(self, message: str, details: list | None = None):
        super().__init__(message)
        self.details = list(details or [])

    def __str__(self) -> str:
        lines = [self.args[0], *(f"  {d}" for d in self.details)]
        return "\n".join(lines)
