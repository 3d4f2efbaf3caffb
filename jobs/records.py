"""Records shared by the frontend and the job: cell, status and result files.

This is the only module of `jobs/` that `orchestrator/` imports. It has no
dependency beyond the standard library so that both sides can read it cheaply.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Bump when the meaning or layout of result.json changes. It is part of every
# cell id, so a new schema never reuses results recorded under an old one.
RESULT_SCHEMA_VERSION = 1

CELL_FILE = "cell.json"
STATUS_FILE = "status.json"
RESULT_FILE = "result.json"
EMISSIONS_FILE = "emissions.csv"
LOG_FILE = "job.log"
PHASE_FILE = "phase.json"
JOB_FILE = "job.json"  # the current attempt's job (launcher, job id, pid): written by the launcher side only
# Set by the guard for its child: the job writes `running` and its result.json, no final status; the guard writes
# it (done after its post-steps, or failed with the job's error or what ended it), so a final status is final.
GUARDED_ENV = "BENCHMARK_TRACKER_GUARDED"

STATES = ("pending", "submitted", "running", "done", "failed", "skipped")
# skipped: an adaptive repetition the precision target made unnecessary (reason says why).
FINAL_STATES = ("done", "failed", "skipped")
# Open: a job may still be working on the cell (or the sweep will start it).
OPEN_STATES = ("pending", "submitted", "running")
IN_FLIGHT_STATES = ("submitted", "running")
# What a job moves through (phase.json, for progress lines; never the cell's state).
PHASES = ("idle", "build", "warmup", "window", "post")

_UMASK = os.umask(0)
os.umask(_UMASK)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write(path: Path, write, fsync: bool = True) -> None:
    """Write through a temporary file in the same folder, then rename.

    `write(tmp_path)` produces the content (pandas, text, ...). A reader never
    sees a half-written file, and a crash mid-write leaves the previous
    version in place. `fsync=False` for bulk writes another durable record covers.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # disk full, folder gone: name the file the caller meant, not a temp name
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the team
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def atomic_write_text(path: Path, text: str, fsync: bool = True) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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


def read_json(path: Path) -> Any:
    """Parsed JSON, read without following links or blocking (a FIFO or a link loop is UnsafeFile, an OSError)."""
    return json.loads(read_bytes(path).decode("utf-8"))


def read_status(cell_dir: Path) -> dict:
    """The cell's status, or a pending one when none was written yet."""
    try:
        status = read_json(Path(cell_dir) / STATUS_FILE)
    except FileNotFoundError:
        return {"state": "pending", "attempts": 0}
    except UnsafeFile as exc:  # a link, a FIFO, a folder: a damaged record, never a hang
        raise ValueError(f"{Path(cell_dir) / STATUS_FILE}: {exc.strerror}") from None
    if not isinstance(status, dict) or status.get("state") not in STATES:
        raise ValueError(f"{Path(cell_dir) / STATUS_FILE}: not a valid status record")
    return status


def update_status(cell_dir: Path, state: str, **fields: Any) -> dict:
    """Move a cell to `state`, keeping earlier fields (attempts, job id...).

    Each transition stamps its own time (`submitted_at`, `running_at`,
    `done_at`/`failed_at`); a new submission starts a clean record and keeps
    the earlier attempts' outcomes in `history`.
    """
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    status = read_status(cell_dir)
    if state == "submitted":  # a new attempt: earlier outcomes go to history
        previous = {k: status[k] for k in ("state", "reason", "updated_at", "attempts") if k in status}
        history = status.get("history", []) + ([previous] if status.get("state") in FINAL_STATES else [])
        status = {"attempts": status.get("attempts", 0), "history": history}
    status.update(fields)
    status["state"] = state
    status["updated_at"] = now_iso()
    status.setdefault("host", socket.gethostname())
    status[f"{state}_at"] = status["updated_at"]
    if state != "failed" and "reason" not in fields:  # an earlier failure's reason; `skipped` keeps its own
        status.pop("reason", None)
    atomic_write_json(Path(cell_dir) / STATUS_FILE, status)
    return status


def write_phase(cell_dir: Path, phase: str) -> None:
    """Say where the job is (`idle`, `build`, `warmup`, `window`, `post`) in phase.json, atomically.

    Only for progress displays: it never touches status.json, whose writers are the lifecycle and the guard.
    """
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
    atomic_write_text(Path(cell_dir) / PHASE_FILE, json.dumps({"phase": phase, "at": now_iso()}) + "\n",
                      fsync=False)


def read_phase(cell_dir: Path) -> dict | None:
    """The job's last phase record ({phase, at}), or None when it wrote none (or it is being replaced)."""
    try:
        record = read_json(Path(cell_dir) / PHASE_FILE)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("phase") in PHASES else None


def describe_exit(returncode: int) -> str:
    """A process's end in words: `killed by SIGKILL`, `exited with code 1`."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a job log, for a status whose job died without a word."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""
