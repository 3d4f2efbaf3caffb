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

from jobs.records import LOG_FILE, describe_exit
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import JobState, Launcher
from orchestrator.nodes import ROOT, node_types

KILL_GRACE_S = 10.0


def _alive(target: int, kill=os.kill) -> bool:
    """Whether a process (or, with kill=os.killpg, a process group) still exists."""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs(pid, module: str, under: Path) -> bool:
    """Whether `pid` is `python -m <module> <a folder under `under`>` here: a reused pid is not our job."""
    if not isinstance(pid, int) or not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    prefix = str(under).encode() + b"/"
    return module.encode() in argv and any(a.startswith(prefix) for a in argv)


def stop_group(group: int, grace_s: float = KILL_GRACE_S, process: subprocess.Popen | None = None) -> None:
    """SIGTERM a job's process group (its guard leads it, and records why), SIGKILL it after the grace period.

    By group id: what is left of a job whose guard died (its measurement) goes too. `process`: the guard, when
    this process started it (reaped here, so that its zombie does not keep the group alive).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(group, os.killpg):  # the guard writes last: wait for it too
            if process is not None:
                process.poll()
            time.sleep(0.1)
        if not _alive(group, os.killpg):
            return


class LocalLauncher(Launcher):
    """Cells on this machine, one at a time (the core waits for each job: `blocking`)."""

    name = "local"
    blocking = True

    def __init__(self, spec, options=None, python: str = sys.executable):
        super().__init__(spec, options)
        self.timeout_s, self.python = spec.sweep.timeout_s, python
        self.cooldown_s = spec.sweep.cooldown_s
        self._processes = {}  # job id -> Popen, for the jobs this process started (their exit code is known)

    def check(self, cells: list) -> None:
        host = socket.gethostname()
        wrong = sorted({c.node_type for c in cells if not node_types()[c.node_type].matches_host(host)})
        if wrong:
            raise UserError(
                f"node type(s) {', '.join(wrong)} cannot run on this host ({host}) with the local launcher",
                ["a node type's cells run locally only on a host of that type "
                 f"(hostname matching {node_types()[wrong[0]].hostname_pattern!r});",
                 "use node type `local` to measure this machine, or a scheduler launcher for the cluster"])

    def submit(self, campaign, cells: list, progress) -> dict:
        """Start each cell's guard (`python -m jobs.guard <cell>`) in a session of its own; job id `pid@host`."""
        out = {}
        for cell in cells:
            folder = campaign.cell_dir(cell.id)
            env = dict(os.environ, PYTHONUNBUFFERED="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
            shared = self.allow_concurrent
            if shared:
                env["BENCHMARK_TRACKER_SHARED_NODE"] = "1"
            # Before the start, so the job's own "running" (with its pid) always comes after.
            lifecycle.mark_submitted(folder, attempts=campaign.status(cell.id).get("attempts", 0) + 1,
                                     launcher=self.name, host=socket.gethostname(),
                                     **({"shared_node": True} if shared else {}))
            with open(folder / LOG_FILE, "ab") as log:
                # A session of its own: Ctrl-C reaches the sweep, not the job, and a kill takes its whole group.
                process = subprocess.Popen([self.python, "-m", "jobs.guard", str(folder)], cwd=folder, env=env,
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
            job_id = f"{process.pid}@{socket.gethostname()}"
            self._processes[job_id] = process
            out[cell.id] = job_id
        return out

    def query(self, campaign, job_ids: list) -> dict:
        """Alive while the guard runs; a guard gone without a final status has its exit code said (when known)."""
        out = {}
        for job_id in job_ids:
            pid, _, host = str(job_id).partition("@")
            if host != socket.gethostname() or not pid.isdigit():
                out[job_id] = JobState(alive=True)  # another machine's job: not ours to judge
                continue
            process = self._processes.get(job_id)
            if process is not None:
                returncode = process.poll()
                if returncode is None:
                    out[job_id] = JobState(alive=True)
                else:
                    out[job_id] = JobState(alive=False, retryable=True, fields={"exit_code": returncode},
                                           reason=f"its guard {describe_exit(returncode)} before writing a final "
                                                  "status")
            elif _runs(int(pid), "jobs.guard", campaign.cells_dir):
                out[job_id] = JobState(alive=True)
            else:  # a job a killed sweep left: its end was not seen (the core's words say so)
                out[job_id] = JobState(alive=False, reason="its job is gone without a result (the sweep that ran "
                                                           "it was stopped)", fields={"interrupted": True})
        return out

    def cancel(self, campaign, job_ids: list) -> None:
        for job_id in job_ids:
            pid, _, host = str(job_id).partition("@")
            if host != socket.gethostname() or not pid.isdigit():
                continue
            process = self._processes.get(job_id)
            if process is not None or _runs(int(pid), "jobs.guard", campaign.cells_dir):
                stop_group(int(pid), process=process)  # the guard leads its own session: its pid is the group id
            if process is not None:
                try:
                    process.wait(timeout=KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass

    def recover(self, campaign, cells: list) -> dict:
        # Marked submitted, but its guard never recorded (the sweep died in between): nothing of it runs.
        return {cell.id: None for cell in cells}
