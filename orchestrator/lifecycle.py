"""The life of a campaign's cells, owned by the core: queueing, run control, exit codes, the host lock.

Launchers start jobs and say what their scheduler knows; this module holds the
rules that must not differ between them:

- a cell chosen to run again goes back to `pending` (its earlier outcome to its
  history, its outputs set aside) before anything else, so `status` and `wait`
  never count an earlier attempt's result as the current one;
- `cancel` leaves a request in the campaign that a running sweep obeys (no
  pending cell starts after it; the running one is recorded cancelled), and two
  cancels at once are serialised;
- SIGTERM and SIGHUP to `sweep` end it like Ctrl-C: the running cell is stopped
  and recorded interrupted, the campaign stays consistent, exit 128 + signal;
- the exit code of sweep, status and wait is the campaign's: 1 when any of its
  cells is failed, also the ones this run skipped;
- one measurement at a time per host: a second campaign waits for the host lock
  (or refuses with --no-wait); --allow-concurrent runs anyway and marks its cells.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from jobs.records import (FINAL_STATES, OPEN_STATES, STATUS_FILE, atomic_write_json, atomic_write_text, now_iso,
                          read_status, update_status)
from orchestrator.errors import UserError

CANCEL_FILE = "cancel.json"        # in the campaign: a cancel request a running sweep obeys
CANCEL_LOCK = ".cancel.lock"
CANCELLED_REASON = "cancelled by the user"
HOST_LOCK_ENV = "BENCHMARK_TRACKER_HOST_LOCK"  # where the per-host measurement lock lives (tests move it)
HOST_LOCK_POLL_S = 2.0


# --- exit codes ---------------------------------------------------------------------------------

def campaign_exit_code(campaign, cells: list) -> int:
    """0 when no cell of the campaign is failed, 1 otherwise (also failed cells this run skipped)."""
    return 1 if any(campaign.status(c.id)["state"] == "failed" for c in cells) else 0


# --- storage that fails under a running sweep (disk full, folder deleted) -------------------------------

class StorageError(UserError):
    """A campaign file could not be written: the sweep stops (every next cell would fail the same way)."""

    exit_code = 1


def describe_os_error(exc: OSError) -> str:
    path = exc.filename or "a campaign file"
    if exc.errno == errno.ENOENT:
        return f"{path} is gone (was the campaign folder deleted or moved while the sweep ran?)"
    return f"cannot write {path}: {exc.strerror or exc}"


def record_write_failure(cell_dir: Path, exc: OSError) -> None:
    """Mark the cell failed, naming the path, however little room is left; keep the last state if even that fails.

    The atomic write needs a new file; with a full disk, overwriting the status in place (its blocks are
    already allocated) still fits a short record.
    """
    path = Path(cell_dir) / STATUS_FILE
    reason = f"the sweep could not record this cell: {describe_os_error(exc)}"
    try:
        update_status(cell_dir, "failed", reason=reason, interrupted=True)
        return
    except OSError:
        pass
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    short = json.dumps({"state": "failed", "reason": reason, "interrupted": True,
                        "attempts": previous.get("attempts", 0), "history": previous.get("history", [])[-3:],
                        "updated_at": now_iso()}).encode()
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return
    try:
        if len(short) <= os.fstat(fd).st_size + 4096 - os.fstat(fd).st_size % 4096:
            os.write(fd, short)
            os.ftruncate(fd, len(short))
    except OSError:
        pass
    finally:
        os.close(fd)


# --- submitted: written here only --------------------------------------------------------------------

def mark_submitted(cell_dir: Path, **fields) -> dict:
    """A new attempt is handed to its launcher (before the job can start, so its own `running` comes after)."""
    return update_status(cell_dir, "submitted", **fields)


def write_submitted(cell_dir: Path, previous: dict, now: str, **fields) -> None:
    """mark_submitted for many cells at once (Slurm arrays): the same record, fewer syscalls.

    Atomic (temp file + rename) but not fsync-ed one by one: the submission record, written and
    fsync-ed before sbatch, is what a crash recovery relies on; 1,000 fsyncs would cost more than sbatch.
    """
    history = previous.get("history", [])
    if previous.get("state") in FINAL_STATES:
        history = history + [{k: previous[k] for k in ("state", "reason", "updated_at", "attempts") if k in previous}]
    status = {"attempts": previous.get("attempts", 0), "history": history, **fields, "state": "submitted",
              "updated_at": now, "submitted_at": now}
    status.setdefault("host", socket.gethostname())
    atomic_write_text(Path(cell_dir) / STATUS_FILE, json.dumps(status, indent=2, sort_keys=True, default=str) + "\n",
                      fsync=False)


def record_job_id(cell_dir: Path, job_id) -> None:
    """Add the scheduler's job id to a `submitted` status without touching its state (the job may have started)."""
    status = read_status(cell_dir)
    if status.get("state") == "submitted" and "job_id" not in status:
        status["job_id"] = job_id
        atomic_write_json(Path(cell_dir) / STATUS_FILE, status)


# --- a new attempt starts clean ------------------------------------------------------------------

def queue(campaign, cell_ids) -> int:
    """Put final cells chosen to run again back to `pending` (their outcome to history, outputs aside).

    Before any job starts: from here on, `status` and `wait` see the attempt to come, not the last one.
    """
    count = 0
    for cell_id in cell_ids:
        folder = campaign.cell_dir(cell_id)
        status = campaign.status(cell_id)
        if status["state"] not in FINAL_STATES:
            continue
        campaign.set_aside_outputs(cell_id, status.get("attempts", 0))
        previous = {k: status[k] for k in ("state", "reason", "updated_at", "attempts") if k in status}
        atomic_write_json(folder / STATUS_FILE, {
            "state": "pending", "attempts": status.get("attempts", 0),
            "history": status.get("history", []) + [previous], "updated_at": now_iso(), "pending_at": now_iso(),
            "host": socket.gethostname()})
        count += 1
    return count


def resumable(status: dict) -> bool:
    """A failure that is not the cell's: an interruption or a cancel. A plain rerun runs it again."""
    return bool(status.get("interrupted") or status.get("cancelled"))


# --- cancel ---------------------------------------------------------------------------------------

@contextmanager
def cancel_lock(campaign):
    """Two `cancel` at once: the second waits for the first, then finds nothing left to cancel."""
    campaign.root.mkdir(parents=True, exist_ok=True)
    with open(campaign.root / CANCEL_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def request_cancel(campaign) -> None:
    atomic_write_json(campaign.root / CANCEL_FILE, {"at": now_iso(), "unix": time.time(), "pid": os.getpid(),
                                                    "host": socket.gethostname()})


def cancel_requested(campaign) -> bool:
    return (campaign.root / CANCEL_FILE).exists()


def clear_cancel(campaign) -> None:
    """A new sweep starts: an earlier cancel request is spent."""
    (campaign.root / CANCEL_FILE).unlink(missing_ok=True)


def mark_cancelled(campaign, cell_id: str, **fields) -> dict:
    return update_status(campaign.cell_dir(cell_id), "failed", reason=CANCELLED_REASON, cancelled=True, **fields)


# --- signals to the sweep ----------------------------------------------------------------------------

class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP reached the sweep: stop like Ctrl-C, with that signal's name and exit code."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def reason(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted by the user (Ctrl-C)"
        return f"interrupted: the sweep received {signal.Signals(self.signum).name}"


def interrupt_reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, Interrupted) else "interrupted by the user (Ctrl-C)"


def interrupt_exit_code(exc: BaseException | None) -> int:
    return exc.exit_code if isinstance(exc, Interrupted) else 130


@contextmanager
def signals_interrupt():
    """SIGTERM and SIGHUP raise Interrupted (as Ctrl-C raises KeyboardInterrupt); restored afterwards."""
    def handler(signum, frame):
        # Once: a second signal while the running cell is being stopped must not cut the bookkeeping short.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- one measurement per host ------------------------------------------------------------------------

def host_lock_path() -> Path:
    configured = os.environ.get(HOST_LOCK_ENV)
    if configured:
        return Path(configured)
    # One per host, not per user: two users' measurements corrupt each other just the same.
    return Path(tempfile.gettempdir()) / "benchmark-tracker-measuring.lock"


@contextmanager
def host_lock(campaign, wait: bool = True, stream=None):
    """Hold this host's measurement lock while cells run here; two measured cells corrupt each other.

    Waits (saying who holds it) unless `wait` is False, then refuses with the holder's name.
    """
    stream = stream or sys.stderr
    path = host_lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(path, "a+")
        if path.stat().st_uid == os.getuid():
            os.chmod(path, 0o666)  # other users' sweeps must be able to take it too
    except PermissionError:  # another user's lock file: flock works on a read-only handle (no holder line)
        handle = open(path, "r")
    said = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if not wait:
                handle.close()
                raise UserError(f"this host is measuring another campaign: {holder}",
                                ["two measured cells on one machine corrupt each other's energy and time;",
                                 "wait for it (run without --no-wait), or --allow-concurrent for unmetered "
                                 "debugging (its cells are marked shared-node)"]) from None
            if not said:
                stream.write(f"waiting for this host's measurement lock ({path}), held by {holder}\n")
                stream.flush()
                said = True
            time.sleep(HOST_LOCK_POLL_S)
    writable = handle.writable()
    if writable:
        handle.seek(0)
        handle.truncate()
        handle.write(f"campaign {campaign.root}, pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n")
        handle.flush()
    try:
        yield
    finally:
        if writable:
            handle.seek(0)
            handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def open_cells(campaign, cells: list, seen: dict | None = None) -> list:
    out = []
    for cell in cells:
        status = campaign.status(cell.id)
        if seen is not None:
            seen[cell.id] = status
        if status["state"] in OPEN_STATES:
            out.append(cell)
    return out

