"""Reading a campaign's files without trusting them: no links followed, never blocking, regular files only.

A campaign folder is shared, copied and sometimes damaged (a symlink loop, a
directory or a FIFO where a file should be). Every reader on the reporting
side opens files through `read_bytes`, so a damaged file is a named problem
(`UnsafeFile`, an OSError), never a hang or a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

MAX_BYTES = 256 * 1024 * 1024  # a result table of 10^6 rows fits; a runaway file does not fill memory


class UnsafeFile(OSError):
    """The path exists but is not a plain regular file we may read."""


def read_bytes(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes; FileNotFoundError when absent, UnsafeFile for links, FIFOs, folders, devices."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(errno.ELOOP, "is a symbolic link (not followed)", str(path)) from None
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO on some systems
            raise UnsafeFile(exc.errno, "is not a regular file", str(path)) from None
        raise UnsafeFile(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "not a regular file")
            raise UnsafeFile(errno.EINVAL, f"is {kind}" if kind.startswith("a ") else f"is {kind}", str(path))
        if info.st_size > max_bytes:
            raise UnsafeFile(errno.EFBIG, f"is larger than {max_bytes} bytes", str(path))
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
