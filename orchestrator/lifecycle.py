"""The life of a campaign's cells, owned by the core: the same rules for every launcher.

Launchers are adapters (submit, query, cancel: orchestrator/launchers); the guard
on the node (jobs/guard.py) writes every final status a job can still write. This
module holds the rules that must not differ between launchers, and is the only
frontend writer of status.json (`submitted`, scheduler-caused failures, cancels):

- launch: a blocking launcher's cells one at a time (the wait, the backstop, the
  interrupt), the others submitted; one job record per attempt (cells/<id>/job.json);
- refresh: the job's own status first, then one batched query; a job gone is
  judged once its cell has been silent GRACE_S (one grace rule); an unanswered
  query judges nothing, and SCHEDULER_DOWN_LIMIT_S of them stop `wait` (one
  scheduler-down rule; a submission no scheduler answers stops the campaign's
  submissions: SchedulerUnreachable); a failure that is not the cell's is retried
  as its next attempt, up to max_retries (counted attempts);
- a cell chosen to run again goes back to `pending` (its earlier outcome to its
  history, its outputs set aside) before anything else, so `status` and `wait`
  never count an earlier attempt's result as the current one;
- `cancel` leaves a request in the campaign that a running sweep obeys (no
  pending cell starts after it), stops the open cells' jobs, lets their guards'
  last words come first, then records them `cancelled by the user`; two cancels
  at once are serialised;
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

from jobs.records import (FINAL_STATES, IN_FLIGHT_STATES, JOB_FILE, OPEN_STATES, STATUS_FILE, atomic_write_json,
                          atomic_write_text, now_iso, read_json, read_status, update_status)
from orchestrator.errors import UserError
from orchestrator.launchers import QueryFailed, Refused, SubmissionStopped

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


def mark_skipped(campaign, cell_id: str, reason: str) -> dict:
    """An adaptive repetition the precision target made unnecessary."""
    return update_status(campaign.cell_dir(cell_id), "skipped", reason=reason)


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


def open_cells(campaign, cells: list, seen: dict | None = None, launcher=None) -> list:
    """Cells still to follow: open ones and, given the launcher, failed ones its `max_retries` will run again."""
    out = []
    for cell in cells:
        status = campaign.status(cell.id)
        if seen is not None:
            seen[cell.id] = status
        if status["state"] in OPEN_STATES or (launcher is not None and _retry_due(status, launcher)):
            out.append(cell)
    return out



# --- job records: one per attempt, written here only ---------------------------------------------------

def record_job(campaign, cell_id: str, launcher, job_id, **extra) -> dict:
    """cells/<id>/job.json: the current attempt's job (launcher, attempt, job id); earlier ones go to attempts/."""
    status = campaign.status(cell_id)
    record = {"launcher": launcher.name, "attempt": status.get("attempts", 0), "job_id": str(job_id),
              "host": socket.gethostname(), "recorded_at": now_iso(), **extra}
    # Not fsync-ed one by one (a 1,000-cell array): the submission itself is durable where a crash needs it
    # (Slurm's record; else the scheduler's job name, which `recover` finds). status.json is not touched: the
    # job may be writing its own `running` right now.
    atomic_write_text(campaign.cell_dir(cell_id) / JOB_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n",
                      fsync=False)
    return record


def current_job(campaign, cell_id: str, status: dict | None = None) -> dict | None:
    """The job record of the cell's current attempt, or None (not recorded yet, or an earlier attempt's)."""
    status = status or campaign.status(cell_id)
    try:
        record = read_json(campaign.cell_dir(cell_id) / JOB_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("job_id") is None:
        return None
    return record if record.get("attempt") == status.get("attempts", 0) else None


# --- launching: the core decides the order, the launcher only submits -----------------------------------

def launch(campaign, launcher, cells: list, progress) -> int:
    """Run (blocking launchers: one cell at a time, here) or submit the cells; the number that reached a job."""
    if not cells:
        return 0
    if launcher.blocking:
        return run_serially(campaign, launcher, cells, progress)
    for cell in cells:  # a new attempt never overwrites an earlier one's outputs
        campaign.set_aside_outputs(cell.id, campaign.status(cell.id).get("attempts", 0))
    try:
        answers = launcher.submit(campaign, cells, progress)
    except SubmissionStopped as exc:
        _record_submissions(campaign, launcher, exc.submitted, progress)
        for cell_id, refused in exc.refused.items():
            update_status(campaign.cell_dir(cell_id), "failed", reason=refused.reason, **refused.fields)
        raise
    return _record_submissions(campaign, launcher, answers, progress)


def _record_submissions(campaign, launcher, answers: dict, progress) -> int:
    labels = {}
    count = 0
    for cell_id, answer in answers.items():
        if isinstance(answer, Refused):
            status = update_status(campaign.cell_dir(cell_id), "failed", reason=answer.reason, **answer.fields)
            if progress is not None:
                progress.finish(labels.get(cell_id, cell_id), "failed", status["reason"], timed=False)
            continue
        record_job(campaign, cell_id, launcher, answer)
        count += 1
    return count


def run_serially(campaign, launcher, cells: list, progress) -> int:
    """A blocking launcher's cells, one at a time: no pending cell starts after a `cancel`."""
    count = 0
    for index, cell in enumerate(cells):
        if cancel_requested(campaign):
            break  # `cancel` ran: it recorded these cells cancelled
        if index and launcher.spec.sweep.cooldown_s:  # let the node cool: leakage power rises with temperature
            time.sleep(launcher.spec.sweep.cooldown_s)
        try:
            _run_with_retries(campaign, launcher, cell, progress)
        except OSError as exc:  # disk full, campaign folder deleted: say which file, keep the state readable
            record_write_failure(campaign.cell_dir(cell.id), exc)
            progress.finish(cell.label, "failed", describe_os_error(exc))
            raise StorageError(f"the sweep stopped: {describe_os_error(exc)}") from None
        count += 1
    return count


def _run_with_retries(campaign, launcher, cell, progress) -> dict:
    _stop_orphan(campaign, launcher, cell, progress)
    while True:
        status = _run_attempt(campaign, launcher, cell, progress)
        if not (status.get("retryable") and status.get("attempts", 1) <= launcher.max_retries) \
                or cancel_requested(campaign):
            return status
        progress.stream.write(f"cell {cell.label}: retrying ({status['reason']}), attempt "
                              f"{status['attempts'] + 1} of {launcher.max_retries + 1}\n")


def _stop_orphan(campaign, launcher, cell, progress) -> None:
    """A sweep killed mid-cell (SIGKILL) left its job running alone: stop it, record that attempt."""
    status = campaign.status(cell.id)
    if status["state"] not in IN_FLIGHT_STATES:
        return
    job = current_job(campaign, cell.id, status)
    if job is None:
        return
    try:
        alive = launcher.query(campaign, [job["job_id"]]).get(job["job_id"])
    except QueryFailed:
        alive = None
    if alive is not None and alive.alive:
        progress.stream.write(f"cell {cell.label}: its job ({job['job_id']}) from a sweep that was killed still "
                              "runs; stopping it (never two measured jobs at once)\n")
        launcher.cancel(campaign, [job["job_id"]])
        update_status(campaign.cell_dir(cell.id), "failed", interrupted=True, exit_code=None,
                      reason=f"its sweep was killed; the job left running ({job['job_id']}) was stopped by the "
                             "next sweep")
    elif campaign.status(cell.id)["state"] in IN_FLIGHT_STATES:
        update_status(campaign.cell_dir(cell.id), "failed", interrupted=True,
                      reason="its job is gone without a result (the sweep that ran it was stopped)")


BACKSTOP_S = 60.0  # past the cell's timeout, which its guard enforces: the core steps in only if the guard hangs
POLL_S = 0.5


def _run_attempt(campaign, launcher, cell, progress) -> dict:
    folder = campaign.cell_dir(cell.id)
    campaign.set_aside_outputs(cell.id, campaign.status(cell.id).get("attempts", 0))
    progress.start(cell.label, folder)
    job_id = launcher.submit(campaign, [cell], progress)[cell.id]
    record_job(campaign, cell.id, launcher, job_id)
    timeout_s = launcher.spec.sweep.timeout_s
    deadline = time.monotonic() + timeout_s + BACKSTOP_S  # only if the guard itself hangs
    try:
        while True:
            state = launcher.query(campaign, [job_id]).get(job_id)
            if state is None or not state.alive:
                break
            if time.monotonic() > deadline:
                launcher.cancel(campaign, [job_id])
                status = update_status(folder, "failed", reason=f"timed out after {timeout_s:g} s "
                                       "(timeout_s in the sweep); the job was killed", timed_out=True)
                progress.finish(cell.label, "failed", status["reason"])
                return status
            progress.tick()
            time.sleep(POLL_S)
    except KeyboardInterrupt as exc:
        launcher.cancel(campaign, [job_id])
        status = update_status(folder, "failed", reason=interrupt_reason(exc), interrupted=True)
        progress.finish(cell.label, "failed", status["reason"])
        raise
    status = campaign.status(cell.id)
    if status["state"] != "done" and cancel_requested(campaign):
        status = mark_cancelled(campaign, cell.id)  # not SIGTERM's reason
    elif status["state"] not in FINAL_STATES:  # the guard itself died: the scheduler's word (here, the exit)
        launcher.cancel(campaign, [job_id])  # whatever of its job is left (the measurement) goes too
        status = _fail_from_scheduler(campaign, cell.id, job_id, state, launcher)
    progress.finish(cell.label, status["state"], status.get("reason"))
    return status


# --- refresh: the job's own status first, then one batched query ----------------------------------------

GRACE_S = 10.0  # a job the scheduler no longer runs is judged once its cell has been silent this long
SCHEDULER_DOWN_LIMIT_S = 600.0  # queries unanswered this long: `wait` gives up (the jobs cannot be followed)
CANCEL_WAIT_S = 30.0  # after a cancel, the jobs' last words (their guards') come before "cancelled by the user"


def _fail_from_scheduler(campaign, cell_id: str, job_id: str, state, launcher) -> dict:
    """A job gone without a final status: failed with the scheduler's reason (written here, nowhere else)."""
    if state is None:
        reason, retryable, fields = (f"its job {job_id} left {launcher.name} without a final status, and "
                                     f"{launcher.name} has no record of how it ended"), True, {}
    else:
        reason = state.reason or f"its job {job_id} ended without a final status"
        retryable, fields = state.retryable, state.fields
    return update_status(campaign.cell_dir(cell_id), "failed", reason=reason, job_id=job_id,
                         **({"retryable": True} if retryable else {}), **fields)


def refresh(campaign, launcher, cells: list, retry: bool = True, holding_lock: bool = False) -> None:
    """Judge the in-flight cells whose job is gone: the job's own status first, then one batched query.

    `holding_lock`: the caller is the sweep that holds the campaign (its own submissions are not in progress).
    """
    locked = not holding_lock and campaign.is_locked()
    if launcher.blocking and locked:
        return  # the live sweep that runs them watches its own cells
    watched, unrecorded = {}, []
    for cell in cells:
        status = campaign.status(cell.id)
        if status["state"] not in IN_FLIGHT_STATES or status.get("launcher") not in (None, launcher.name):
            continue
        job = current_job(campaign, cell.id, status)
        if job is not None:
            watched[cell.id] = (status, job["job_id"])
        elif status["state"] == "running" and status.get("job_id") and not locked:
            # Its job runs and said which it is, but the sweep that submitted it died before recording it: that
            # job is the attempt (adopted), whatever the scheduler's listing says; never a second job beside it.
            record_job(campaign, cell.id, launcher, status["job_id"], adopted=True)
            watched[cell.id] = (status, str(status["job_id"]))
        else:
            unrecorded.append(cell)
    if unrecorded and not locked:  # with the lock held elsewhere, a sweep is submitting them right now
        for cell_id, job_id in launcher.recover(campaign, unrecorded).items():
            status = campaign.status(cell_id)
            if status["state"] not in IN_FLIGHT_STATES:
                continue
            if job_id is None and status["state"] == "running":  # its job ran, then went without a word or an id
                update_status(campaign.cell_dir(cell_id), "failed", interrupted=True,
                              reason=f"its job is gone without a final status, and the sweep that submitted it "
                                     f"was stopped before recording its {launcher.name} job id")
            elif job_id is None:
                update_status(campaign.cell_dir(cell_id), "failed", interrupted=True,
                              reason=f"its submission was interrupted before it reached {launcher.name}")
            else:
                record_job(campaign, cell_id, launcher, job_id, adopted=True)
                watched[cell_id] = (campaign.status(cell_id), str(job_id))
    # Cells whose guard recorded a failure that was not their own (killed from outside): retried like a lost job.
    again = [cell.id for cell in cells if retry and _retry_due(campaign.status(cell.id), launcher)]
    if not watched:
        if again:
            _retry(campaign, launcher, [c for c in cells if c.id in again], holding_lock)
        return
    try:
        states = launcher.query(campaign, sorted({job_id for _, job_id in watched.values()}))
    except QueryFailed as exc:
        _scheduler_down(launcher, exc)
        return
    launcher.unanswered_since = None
    now = time.time()
    for cell_id, (before, job_id) in watched.items():
        state = states.get(job_id)
        if state is not None and state.alive:
            continue
        status = campaign.status(cell_id)  # again: the job may have written its final status meanwhile
        if status["state"] not in IN_FLIGHT_STATES or status.get("attempts") != before.get("attempts"):
            continue
        last = max(iso_epoch(status.get("updated_at")), (state.ended_at or 0) if state else 0)
        if now - last < GRACE_S:
            continue  # its last word may still be on its way (a guard finishing, a shared file system)
        failed = _fail_from_scheduler(campaign, cell_id, job_id, state, launcher)
        if retry and failed.get("retryable") and failed.get("attempts", 1) <= launcher.max_retries:
            again.append(cell_id)
    if again:
        _retry(campaign, launcher, [c for c in cells if c.id in again], holding_lock)


def _retry_due(status: dict, launcher) -> bool:
    return (status["state"] == "failed" and bool(status.get("retryable")) and not status.get("retry_pending")
            and status.get("launcher") == launcher.name and status.get("attempts", 1) <= launcher.max_retries)


def _scheduler_down(launcher, exc: Exception) -> None:
    now = time.monotonic()
    launcher.unanswered_since = launcher.unanswered_since or now
    if now - launcher.unanswered_since > SCHEDULER_DOWN_LIMIT_S:
        raise UserError(f"{launcher.name} has not answered for {now - launcher.unanswered_since:.0f} s: {exc}",
                        ["the campaign's jobs cannot be followed; retry later"])
    print(f"warning: {exc}; cell states not refreshed", file=sys.stderr)


def _retry(campaign, launcher, cells: list, holding_lock: bool) -> None:
    """Retries (the schedulers' own requeue is off): same cell id, next attempt, under the campaign lock."""
    for cell in cells:  # a sweep rerun resumes these whatever happens below
        update_status(campaign.cell_dir(cell.id), "failed", interrupted=True, retry_pending=True)
    if holding_lock or launcher.blocking or campaign.is_locked():
        return  # a sweep holds the campaign (maybe this very process): it submits them itself
    from orchestrator.progress import Progress

    try:
        with campaign.lock():
            queue(campaign, [c.id for c in cells])
            launch(campaign, launcher, cells, Progress(len(cells), sys.stderr))
    except UserError as exc:
        print(f"warning: could not retry {len(cells)} cell(s): {exc}", file=sys.stderr)


def iso_epoch(iso: str | None) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


# --- cancel: one rule for every launcher ---------------------------------------------------------------

def cancel(campaign, launcher, cells: list) -> int:
    """A running sweep starts no more cells; open ones are stopped and recorded `cancelled by the user`."""
    with cancel_lock(campaign):  # a second `cancel` at once waits, then finds nothing open
        request_cancel(campaign)
        pending = open_cells(campaign, cells)
        jobs = {}
        for cell in pending:
            status = campaign.status(cell.id)
            job = current_job(campaign, cell.id, status) if status["state"] in IN_FLIGHT_STATES else None
            if job is not None:
                jobs[cell.id] = job["job_id"]
        if jobs:
            ids = sorted(set(jobs.values()))
            launcher.cancel(campaign, ids)
            deadline = time.monotonic() + CANCEL_WAIT_S
            while ids and time.monotonic() < deadline:  # let the jobs go, so their guards' last words come first
                try:
                    states = launcher.query(campaign, ids)
                except QueryFailed:
                    break
                ids = [j for j in ids if (states.get(j) is not None and states[j].alive)]
                if ids:
                    time.sleep(0.5)
        for cell in pending:
            if campaign.status(cell.id)["state"] != "done":
                mark_cancelled(campaign, cell.id, **({"job_id": jobs[cell.id]} if cell.id in jobs else {}))
    return len(pending)
