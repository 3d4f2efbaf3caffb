"""The guard on the node: `python -m jobs.guard <cell folder>`.

It starts the measurement (`python -m jobs.run <cell folder>`) as its child and
outlives it, so that every cell ends with a final status whatever happens to
the job or to the process that launched it:

- it enforces the cell's own timeout (cell.json `timeout_s`), even when the
  sweep that started it was killed;
- SIGTERM, SIGHUP, SIGINT and pre-emption warnings (SIGUSR2, sent by Slurm
  before a time limit) are passed to the child once, and the reason is kept;
- when the child ends, the guard writes the final status *last*: the child's
  own (done, failed with its error) when it wrote one, else what ended it.

Used by the local launcher. Standard library and jobs.records only.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import (CELL_FILE, FINAL_STATES, LOG_FILE, describe_exit, log_tail, read_json, read_status,
                          update_status)

KILL_GRACE_S = 10.0
POLL_S = 0.2
REASONS = {signal.SIGTERM: "terminated by SIGTERM (cancelled, or stopped by its launcher)",
           signal.SIGHUP: "terminated by SIGHUP (the session that started it ended)",
           signal.SIGINT: "interrupted by SIGINT",
           signal.SIGUSR2: "pre-empted: the scheduler warned of its end (SIGUSR2)"}


class Guard:
    def __init__(self, cell_dir: Path, timeout_s: float | None, python: str = sys.executable):
        self.cell_dir, self.timeout_s, self.python = cell_dir, timeout_s, python
        self.child = None
        self.signalled = None  # the first signal received, whose reason the final status keeps

    def _on_signal(self, signum, frame) -> None:
        if self.signalled is None:
            self.signalled = signum
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(signal.SIGTERM)  # the child records its failure on the way out

    def run(self) -> int:
        for sig in REASONS:
            signal.signal(sig, self._on_signal)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.cell_dir / LOG_FILE, "ab") as log:
            self.child = subprocess.Popen([self.python, "-m", "jobs.run", str(self.cell_dir)], cwd=self.cell_dir,
                                          env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        timed_out = False
        while self.child.poll() is None:
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                self._stop()
            time.sleep(POLL_S)
        return self._final(self.child.returncode, timed_out)

    def _stop(self) -> None:
        self.child.send_signal(signal.SIGTERM)
        try:
            self.child.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def _final(self, returncode: int, timed_out: bool) -> int:
        """The final status, written last; the child's own when it wrote one and nothing overrules it."""
        status = read_status(self.cell_dir)
        if timed_out:
            update_status(self.cell_dir, "failed", timed_out=True, exit_code=returncode,
                          reason=f"timed out after {self.timeout_s:g} s (timeout_s in the sweep); the job was killed")
        elif self.signalled is not None and status["state"] != "done":
            update_status(self.cell_dir, "failed", exit_code=returncode, signal=signal.Signals(self.signalled).name,
                          reason=REASONS[self.signalled])
        elif status["state"] == "done" and returncode != 0:
            update_status(self.cell_dir, "failed", exit_code=returncode,
                          reason=f"the job wrote its result, then {describe_exit(returncode)}")
        elif status["state"] not in FINAL_STATES:
            update_status(self.cell_dir, "failed", exit_code=returncode, log_tail=log_tail(self.cell_dir / LOG_FILE),
                          reason=f"{describe_exit(returncode)} before writing a result")
        else:
            update_status(self.cell_dir, status["state"], exit_code=returncode)
        return 0 if read_status(self.cell_dir)["state"] == "done" else 1


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobs.guard <cell folder>", file=sys.stderr)
        return 2
    cell_dir = Path(argv[0]).resolve()
    timeout_s = read_json(cell_dir / CELL_FILE).get("timeout_s")
    return Guard(cell_dir, timeout_s).run()


if __name__ == "__main__":
    sys.exit(main())
