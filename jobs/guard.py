"""The guard on the node: `python -m jobs.guard <cell folder> [--explain MODULE] [--post "MODULE ARG..."]...`

Every launcher runs a cell through it: the local launcher directly, Slurm's task
(orchestrator/launchers/slurm_job.py) and OAR's job script on the node. It starts
the measurement (`python -m jobs.run <cell folder>`) as its child and outlives it,
so that every cell ends with a final status whatever happens to the job or to the
process that launched it:

- it enforces the cell's own timeout (cell.json `timeout_s`), even when the sweep
  that started it was killed (schedulers' limits carry a margin above it, so the
  guard, not the scheduler, stops an overlong cell and says so);
- SIGTERM, SIGHUP, SIGINT and pre-emption warnings (SIGUSR1/SIGUSR2: Slurm's
  `--signal` before a time limit, OAR's checkpoint signal) stop the child once
  (SIGTERM, then SIGKILL after a grace period), and the reason is kept. `--explain
  MODULE` names a module whose `explain_signal(signum) -> dict | None` says what the
  scheduler meant by it (Slurm: timeout or scancel, from sacct), asked at once;
- after a successful measurement, each `--post` step runs as `python -m MODULE
  ARG...` (Slurm's energy counter, Kwollect's wall power), bounded; a post-step that
  fails is logged, it never turns a measurement into a failure;
- then it writes the final status, *last*: the child writes `running` and its result
  (done, or failed with its error) but no final status (GUARDED_ENV), so no reader
  sees a cell final before its guard is, and nothing of a done cell changes after.
- one rank of a scheduler's multi-task cell (Slurm's srun tasks, OAR's per-host tasks):
  the policy is jobs/workers.py's, applied here for every scheduler. A rank that fails
  (rank 0 included) announces it (`request_stop`); every rank's guard watches for another
  rank's announcement and stops its worker at once (SIGTERM, SIGKILL after the workers'
  grace: a worker stuck in a collective never returns to Python), recording which rank
  on which host failed. No rank waits in a collective until the job's time limit. A host that
  dies whole writes no announcement: the guard beats for its rank while it runs and watches its peers'
  beats (jobs.workers.Heartbeat); a peer silent for the heartbeat timeout is announced lost the same
  way, and the status says which (`stopped_by_worker`, `stop_cause`: failed or no heartbeat).

Standard library, jobs.records and jobs.workers only: jobs/ never imports orchestrator/
(post-steps and explainers are named on the command line, by the launcher that knows them).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs import workers
from jobs.records import (CELL_FILE, FINAL_STATES, GUARDED_ENV, LOG_FILE, RESULT_FILE, describe_exit, log_tail,
                          read_json, read_status, update_status)

KILL_GRACE_S = 10.0
POLL_S = 0.2
POST_TIMEOUT_S = 180.0  # one post-step (Kwollect waits up to a minute for its data)
REASONS = {signal.SIGTERM: "terminated by SIGTERM (cancelled, or stopped by its launcher)",
           signal.SIGHUP: "terminated by SIGHUP (the session that started it ended)",
           signal.SIGINT: "interrupted by SIGINT",
           signal.SIGUSR1: "pre-empted: the scheduler warned of its end (SIGUSR1)",
           signal.SIGUSR2: "pre-empted: the scheduler warned of its end (SIGUSR2)"}


def _child_signals() -> None:
    # Slurm's warning goes to every process of the step: only the guard acts on it (the default action of
    # SIGUSR* would kill the measurement without a word); a hang-up is the guard's to pass on, too.
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _job() -> dict:
    return {"job_id": os.environ["BENCHMARK_TRACKER_JOB_ID"]} if os.environ.get("BENCHMARK_TRACKER_JOB_ID") else {}


class Guard:
    def __init__(self, cell_dir: Path, timeout_s: float | None, python: str = sys.executable,
                 explain: str | None = None, post: list | None = None):
        self.cell_dir, self.timeout_s, self.python = cell_dir, timeout_s, python
        self.explain, self.post = explain, list(post or [])
        self.child = None
        self.signalled = None   # the first signal received, whose reason the final status keeps
        self.signalled_at = None
        self.explained = None   # what the scheduler meant by it (fields of the failed status)
        self.peers = None       # this rank's place in a multi-task cell (jobs.workers.peer_context), else None
        self.peer_stop = None   # another rank's failure, or its loss, which stopped this one
        self.heartbeat = None   # this rank's beat and its watch on its peers' (multi-task cells)

    def _on_signal(self, signum, frame) -> None:
        if self.signalled is not None:
            return
        self.signalled, self.signalled_at = signum, time.monotonic()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # the child records its failure on the way out
        if self.explain:  # at once: the scheduler knows why now (later the job is gone from its view)
            try:
                self.explained = importlib.import_module(self.explain).explain_signal(signum)
            except Exception as exc:  # noqa: BLE001 - a broken explainer must not cost the final status
                print(f"[guard] {self.explain}.explain_signal failed: {exc}", file=sys.stderr, flush=True)

    def run(self) -> int:
        status = read_status(self.cell_dir)
        if status["state"] in FINAL_STATES:  # cancelled (or superseded) before it could start
            print(f"[guard] cell {self.cell_dir.name} is already {status['state']}: not running it",
                  file=sys.stderr, flush=True)
            return 0
        for sig in REASONS:
            signal.signal(sig, self._on_signal)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{GUARDED_ENV: "1"})
        self.peers = workers.peer_context(self.cell_dir, read_json(self.cell_dir / CELL_FILE), env)
        if self.peers:
            try:
                self.heartbeat = workers.Heartbeat(self.peers, workers.heartbeat_timeout(env))
            except ValueError as exc:  # a bad setting fails the cell before anything runs, and stops the others
                update_status(self.cell_dir, "failed", reason=str(exc), **_job())
                workers.request_stop(self.peers, str(exc))
                return 1
        try:
            return self._run(env)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.close()

    def _run(self, env: dict) -> int:
        with open(self.cell_dir / LOG_FILE, "ab") as log:
            self.child = subprocess.Popen([self.python, "-m", "jobs.run", str(self.cell_dir)], cwd=self.cell_dir,
                                          env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          preexec_fn=_child_signals)
        if self.heartbeat is not None:
            self.heartbeat.start()  # after the fork: preexec_fn is not safe once a thread runs
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        timed_out, stopping_since = False, None
        while self.child.poll() is None:
            now = time.monotonic()
            if deadline is not None and now > deadline and not timed_out and self.signalled is None:
                timed_out, stopping_since = True, now
                self.child.send_signal(signal.SIGTERM)
            if self.signalled is not None and stopping_since is None:
                stopping_since = self.signalled_at
            if self.peers and stopping_since is None and self.peer_stop is None:
                self.peer_stop = workers.stop_requested(self.peers) or self.heartbeat.lost()
                if self.peer_stop:
                    print(f"[guard] stopping: {self.peer_stop['reason']}", file=sys.stderr, flush=True)
                    stopping_since = now - KILL_GRACE_S + workers.STOP_GRACE_S  # its peers are gone: short grace
                    self.child.send_signal(signal.SIGTERM)
            if stopping_since is not None and now - stopping_since > KILL_GRACE_S:
                self.child.kill()  # it would not stop: SIGKILL, and the guard still writes why
            time.sleep(POLL_S)
        code = self._final(self.child.returncode, timed_out)
        final = read_status(self.cell_dir)
        if self.peers and final["state"] == "failed" and self.peer_stop is None:
            # the other ranks stop now
            workers.request_stop(self.peers, final.get("reason") or "no reason given", self.cell_dir)
        return code

    def _result(self) -> dict:
        """What the child wrote in result.json (its outcome: done, or failed with its error), or {}."""
        try:
            result = read_json(self.cell_dir / RESULT_FILE)
        except (OSError, ValueError):
            return {}
        return result if isinstance(result, dict) else {}

    def _post_steps(self) -> None:
        with open(self.cell_dir / LOG_FILE, "ab") as log:
            for step in self.post:
                args = [self.python, "-m", *shlex.split(step)]
                log.write(f"[guard] post-step: {shlex.join(args[2:])}\n".encode())
                log.flush()
                try:
                    done = subprocess.run(args, cwd=self.cell_dir, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, timeout=POST_TIMEOUT_S)
                    if done.returncode:
                        log.write(f"[guard] post-step {args[2]} {describe_exit(done.returncode)}\n".encode())
                except subprocess.TimeoutExpired:
                    log.write(f"[guard] post-step {args[2]} gave no answer in {POST_TIMEOUT_S:g} s\n".encode())
                except OSError as exc:
                    log.write(f"[guard] post-step {args[2]} could not run: {exc}\n".encode())
                log.flush()

    def _final(self, returncode: int, timed_out: bool) -> int:
        """The final status, written last; the child's own outcome when nothing overrules it."""
        status = read_status(self.cell_dir)
        job = _job()
        result = self._result()
        measured = result.get("status") == "done"
        error = result.get("error") if result.get("status") == "failed" else None
        if isinstance(error, dict) and error.get("type"):  # the job's own failure, in its words
            job.update(reason=f"{error['type']}: {error.get('message', '')}")
        if result.get("finished_at"):
            job["finished_at"] = result["finished_at"]
        own = job.pop("reason", None)
        if timed_out:
            update_status(self.cell_dir, "failed", timed_out=True, exit_code=returncode, **job,
                          reason=f"timed out after {self.timeout_s:g} s (timeout_s in the sweep); the job was killed")
        elif self.peer_stop is not None and not (measured and returncode == 0):
            update_status(self.cell_dir, "failed", exit_code=returncode, stopped_by_worker=self.peer_stop.get("worker"),
                          stop_cause=self.peer_stop.get("cause", "failed"), **job,
                          reason=f"stopped: {self.peer_stop['reason']}")
        elif self.signalled is not None and not (measured and returncode == 0):
            fields = {"reason": REASONS[self.signalled], **(self.explained or {})}
            update_status(self.cell_dir, "failed", exit_code=returncode, signal=signal.Signals(self.signalled).name,
                          **job, **fields)
        elif measured and returncode == 0:
            if self.peers:  # rank 0 counts this rank finished from here (run_rank0): a post-step of this rank may
                # wait for rank 0's (Slurm's energy, read by rank 0 while every task is live)
                update_status(self.cell_dir, "running", measured=True, **job)
            self._post_steps()
            update_status(self.cell_dir, "done", exit_code=0, **job)
        elif measured or status["state"] == "done":
            update_status(self.cell_dir, "failed", exit_code=returncode, **job,
                          reason=f"the job wrote its result, then {describe_exit(returncode)}")
        elif own or status["state"] == "failed":  # the job's own reason
            update_status(self.cell_dir, "failed", exit_code=returncode, **job, **({"reason": own} if own else {}))
        else:
            # Killed by a signal nobody here sent (the OOM killer, an operator, a dying node): not the cell's own
            # error, so `max_retries` may run it again; an exit with a code is the cell's and is not retried.
            retry = {"retryable": True} if returncode < 0 else {}
            update_status(self.cell_dir, "failed", exit_code=returncode, log_tail=log_tail(self.cell_dir / LOG_FILE),
                          reason=f"{describe_exit(returncode)} before writing a result", **job, **retry)
        return 0 if read_status(self.cell_dir)["state"] == "done" else 1


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("cell", help="the cell folder (cell.json, status.json)")
    parser.add_argument("--explain", help="module whose explain_signal(signum) says what a scheduler signal meant")
    parser.add_argument("--post", action="append", default=[],
                        help='a post-step after a successful measurement: "MODULE ARG..." (python -m)')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cell_dir = Path(args.cell).resolve()
    timeout_s = read_json(cell_dir / CELL_FILE).get("timeout_s")
    return Guard(cell_dir, timeout_s, explain=args.explain, post=args.post).run()


if __name__ == "__main__":
    sys.exit(main())
