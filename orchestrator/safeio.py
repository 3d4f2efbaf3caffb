"""Reading a campaign's files without trusting them: no links followed, never blocking, regular files only.

A campaign folder is shared, copied and sometimes damaged (a symlink loop, a
directory or a FIFO where a file should be). Every reader on the reporting
side opens files through `read_bytes`, so a damaged file is a named problem
(`UnsafeFile`, an OSError), never a hang or a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path

# One safe reader for both sides; it lives in the shared record module (jobs/ imports no orchestrator code).
from jobs.records import MAX_BYTES, UnsafeFile, read_bytes  # noqa: E402,F401


def read_text(path: Path) -> str:
    """UTF-8 text; a file that is not UTF-8 is a ValueError (UnicodeDecodeError)."""
    return read_bytes(path).decode("utf-8")


def read_json(path: Path):
    """Parsed JSON; ValueError for text that is not JSON, UnsafeFile for a file we must not read."""
    return json.loads(read_text(path))


def describe(exc: BaseException) -> str:
    """An error in a few words for a problem list: 'is a symbolic link (not followed)', 'not JSON: ...'."""
    if isinstance(exc, UnsafeFile):
        return exc.strerror or str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg}, line {exc.lineno})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
