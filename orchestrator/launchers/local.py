"""Run cells on this machine, each in a fresh subprocess (`python -m jobs.guard`), one at a time.

One at a time on purpose: two measured cells on one machine corrupt each
other's energy (node-wide meters count both) and time (shared cores).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import (FINAL_STATES, IN_FLIGHT_STATES, JOB_FILE, LOG_FILE, atomic_write_json, describe_exit,
                          log_tail, now_iso, read_json, update_status)
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import Launcher
from orchestrator.nodes import ROOT, node_types

POLL_S = 0.5
KILL_GRACE_S = 10.0
BACKSTOP_S = 60.0  # past the cell's timeout, which its guard enforces: the launcher steps in only if the guard hangs


def _alive(target: int, kill=os.kill) -> bool:
    """Whether a process (or, with kill=os.killpg, a process group) still exists."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs(pid, module: str, cell_dir: Path) -> bool:
    """Whether `pid` is `python -m <module> <cell_dir>` here: a pid reused by another program is not our job."""
    if not isinstance(pid, int) or not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return module.encode() in argv and str(cell_dir).encode() in argv


def job_process(status: dict, cell_dir: Path) -> int | None:
    """A pid of this cell's job (its guard, else the measurement) when it still runs on this host, else None.

    A sweep killed under its cell leaves the job to its guard; the next sweep finds it here.
    """
    if status.get("host") not in (None, socket.gethostname()):
        return None
    try:
        job = read_json(cell_dir / JOB_FILE)
    except (OSError, ValueError):
        job = {}
    if job.get("host") == socket.gethostname() and _runs(job.get("guard_pid"), "jobs.guard", cell_dir):
        return job["guard_pid"]
    pid = status.get("pid")
    return pid if status.get("host") == socket.gethostname() and _runs(pid, "jobs.run", cell_dir) else None


def stop_group(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM a job's process group (it records why), SIGKILL it if it outlives the grace period."""
    try:
        group = os.getpgid(pid)  # the job's guard leads the group: stop both
    except ProcessLookupError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(group, os.killpg):  # the guard writes last: wait for it too
            time.sleep(0.1)
        if not _alive(group, os.killpg):
            return


class LocalLauncher(Launcher):
    name = "local"
    blocking = True

    def __init__(self, spec, options=None, python: str = sys.executable):
        super().__init__(spec, options)
        self.timeout_s, self.python = spec.sweep.timeout_s, python
        self.cooldown_s = spec.sweep.cooldown_s

    def check(self, cells: list) -> None:
        host = socket.gethostname()
        wrong = sorted({c.node_type for c in cells if not node_types()[c.node_type].matches_host(host)})
        if wrong:
            raise UserError(
                f"node type(s) {', '.join(wrong)} cannot run on this host ({host}) with the local launcher",
                ["a node type's cells run locally only on a host of that type "
                 f"(hostname matching {node_types()[wrong[0]].hostname_pattern!r});",
                 "use node type `local` to measure this machine, or a scheduler launcher for the cluster"])

    def launch(self, campaign, cells: list, progress) -> None:
        for index, cell in enumerate(cells):
            if lifecycle.cancel_requested(campaign):
                return  # `cancel` ran: no pending cell starts after it (it recorded them cancelled)
            if index and self.cooldown_s:  # let the node cool: leakage power rises with temperature
                time.sleep(self.cooldown_s)
            self.run_one(campaign, cell, progress)

    def refresh(self, campaign, cells: list) -> None:
        """Once a local job's process is gone (its guard writes a final status), an in-flight cell has failed."""
        if campaign.is_locked():
            return  # a live sweep is watching its own cells
        for cell in cells:
            status = campaign.status(cell.id)
            if status["state"] not in IN_FLIGHT_STATES or status.get("host") != socket.gethostname():
                continue  # not started, or another machine's job: not ours to judge
            if job_process(status, campaign.cell_dir(cell.id)) is None:
                update_status(campaign.cell_dir(cell.id), "failed", interrupted=True,
                              reason="its job is gone without a result (the sweep that ran it was stopped)")

    def cancel(self, campaign, cells: list) -> None:
        for cell in cells:
            pid = job_process(campaign.status(cell.id), campaign.cell_dir(cell.id))
            if pid is not None:
                stop_group(pid)
            lifecycle.mark_cancelled(campaign, cell.id)

    def _stop_orphan(self, campaign, cell, progress) -> None:
        """A sweep killed mid-cell (SIGKILL) left its job running alone: stop it, record that attempt."""
        folder = campaign.cell_dir(cell.id)
        status = campaign.status(cell.id)
        pid = job_process(status, folder)
        if pid is None:
            return
        progress.stream.write(f"cell {cell.label}: its job (pid {pid}) from a sweep that was killed still runs; "
                              "stopping it (never two measured jobs at once)\n")
        stop_group(pid)
        update_status(folder, "failed", interrupted=True, exit_code=None,
                      reason=f"its sweep was killed; the job left running (pid {pid}) was stopped by the next sweep")

    def run_one(self, campaign, cell, progress) -> dict:
        try:
            return self._run_one(campaign, cell, progress)
        except OSError as exc:  # disk full, campaign folder deleted: say which file, keep the state readable
            lifecycle.record_write_failure(campaign.cell_dir(cell.id), exc)
            progress.finish(cell.label, "failed", lifecycle.describe_os_error(exc))
            raise lifecycle.StorageError(f"the sweep stopped: {lifecycle.describe_os_error(exc)}") from None

    def _run_one(self, campaign, cell, progress) -> dict:
        folder = campaign.cell_dir(cell.id)
        self._stop_orphan(campaign, cell, progress)
        attempt = campaign.status(cell.id).get("attempts", 0) + 1
        campaign.set_aside_outputs(cell.id, attempt - 1)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        shared = self.allow_concurrent
        if shared:
            env["BENCHMARK_TRACKER_SHARED_NODE"] = "1"
        progress.start(cell.label, folder)
        # Before the start, so the job's own "running" (with its pid) always comes after.
        lifecycle.mark_submitted(folder, attempts=attempt, launcher=self.name, host=socket.gethostname(),
                                 **({"shared_node": True} if shared else {}))
        with open(folder / LOG_FILE, "ab") as log:
            # A session of its own: Ctrl-C reaches us, not the job, and a kill takes its whole group.
            # The guard runs the job, enforces its timeout and writes its final status, even if this sweep dies.
            process = subprocess.Popen([self.python, "-m", "jobs.guard", str(folder)], cwd=folder, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
            # This attempt's job record, by the launcher side only (the next sweep finds a guard left running).
            atomic_write_json(folder / JOB_FILE, {"launcher": self.name, "attempt": attempt, "guard_pid": process.pid,
                                                  "host": socket.gethostname(), "started_at": now_iso()})
            deadline = time.monotonic() + self.timeout_s + BACKSTOP_S  # only if the guard itself hangs
            try:
                while process.poll() is None:
                    if time.monotonic() > deadline:
                        self._stop(process)
                        status = update_status(folder, "failed", reason=f"timed out after {self.timeout_s:g} s "
                                               "(timeout_s in the sweep); the job was killed",
                                               exit_code=process.returncode, timed_out=True)
                        progress.finish(cell.label, "failed", status["reason"])
                        return status
                    progress.tick()
                    time.sleep(POLL_S)
            except KeyboardInterrupt as exc:
                self._stop(process)
                status = update_status(folder, "failed", reason=lifecycle.interrupt_reason(exc),
                                       interrupted=True, exit_code=process.returncode)
                progress.finish(cell.label, "failed", status["reason"])
                raise
        return self._settle(campaign, cell, process.returncode, progress)

    def _settle(self, campaign, cell, returncode: int, progress) -> dict:
        """Trust the job's own final status; when it wrote none, say what killed it."""
        folder = campaign.cell_dir(cell.id)
        status = campaign.status(cell.id)
        if status["state"] != "done" and lifecycle.cancel_requested(campaign):
            status = lifecycle.mark_cancelled(campaign, cell.id, exit_code=returncode)  # not SIGTERM's reason
        elif status["state"] == "done" and returncode != 0:
            status = update_status(folder, "failed",
                                   reason=f"the job wrote its result, then {describe_exit(returncode)}",
                                   exit_code=returncode)
        elif status["state"] not in FINAL_STATES:
            tail = log_tail(folder / LOG_FILE)
            status = update_status(folder, "failed", exit_code=returncode, log_tail=tail,
                                   reason=f"{describe_exit(returncode)} before writing a result")
        else:
            status = update_status(folder, status["state"], exit_code=returncode)
        progress.finish(cell.label, status["state"], status.get("reason"))
        return status

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        """SIGTERM the job's group (it records why), then SIGKILL it after a grace period."""
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
