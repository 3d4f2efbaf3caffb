"""Job entry point: `python -m jobs.run <cell folder>`.

Reads cell.json, marks the cell running, runs it, and writes result.json
before the final status, so a status of done always has its result. Any
error, SIGTERM included (scancel, timeouts), is recorded as failed with its
reason; only SIGKILL escapes, and the guard records that one. Under its guard
(jobs/guard.py), the job writes `running` and its result; the final status is the
guard's, written last.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

# Before TensorFlow is imported anywhere: keep the job log readable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from jobs.records import (CELL_FILE, GUARDED_ENV, RESULT_FILE, RESULT_SCHEMA_VERSION, atomic_write_json,  # noqa: E402
                          now_iso, read_json, update_status)


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that the failure is recorded on the way out."""


def _on_sigterm(signum, frame):
    # Once: Slurm sends SIGTERM again (srun forwards its own), which must not cut the recording short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated by SIGTERM (cancelled, or over its time limit)")


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m jobs.run <cell folder>", file=sys.stderr)
        return 2
    cell_dir = Path(argv[0]).resolve()
    cell = read_json(cell_dir / CELL_FILE)
    signal.signal(signal.SIGTERM, _on_sigterm)

    started = now_iso()
    clock = time.perf_counter()
    # The scheduler's job id (set by the launcher's job script): a cell whose submitter was killed before it
    # recorded the job still says which job runs it, so the rerun adopts that job instead of adding one.
    job = {"job_id": os.environ["BENCHMARK_TRACKER_JOB_ID"]} if os.environ.get("BENCHMARK_TRACKER_JOB_ID") else {}
    update_status(cell_dir, "running", pid=os.getpid(), host=socket.gethostname(), started_at=started, **job)
    print(f"[job] cell {cell['id']} ({cell['params']['test']} {cell['params']['phase']} "
          f"{cell['params']['subtest']}) on {socket.gethostname()}, pid {os.getpid()}", flush=True)
    record = {"schema_version": RESULT_SCHEMA_VERSION, "cell_id": cell["id"], "campaign": cell["campaign"],
              "params": cell["params"], "started_at": started}
    if os.environ.get("BENCHMARK_TRACKER_SHARED_NODE"):  # --allow-concurrent: another campaign may share the node
        record["shared_node"] = True
    try:
        from jobs.runner import run_cell

        record.update(run_cell(cell, cell_dir))
        record.update(status="done", error=None, finished_at=now_iso(),
                      job_wall_s=time.perf_counter() - clock)
        atomic_write_json(cell_dir / RESULT_FILE, record)
        if not os.environ.get(GUARDED_ENV):  # under its guard, `done` is the guard's, after its post-steps
            update_status(cell_dir, "done", finished_at=record["finished_at"])
        window = record["window"]
        total = record["energy"]["total_joules"]  # None when incomplete (a host without a reading): no sum
        print(f"[job] done: {window['iterations']} iterations in {window['duration_s']:.2f} s, "
              f"{window['throughput_samples_per_s']:.2f} samples/s, "
              f"{'no total' if total is None else f'{total:.1f} J'} ({record['energy']['total_kind']})", flush=True)
        energy = record.get("energy") or {}
        for note in [*energy.get("notes", []), *energy.get("low_confidence", [])]:  # why a number is weak, here too
            print(f"[job] note: {note}", flush=True)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must be written down
        reason = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        record.update(status="failed", finished_at=now_iso(), job_wall_s=time.perf_counter() - clock,
                      error={"type": type(exc).__name__, "message": str(exc),
                             "traceback": traceback.format_exc()})
        atomic_write_json(cell_dir / RESULT_FILE, record)
        if not os.environ.get(GUARDED_ENV):  # under its guard, the final status is the guard's (with this reason)
            update_status(cell_dir, "failed", reason=reason, finished_at=record["finished_at"])
        return 1


if __name__ == "__main__":
    sys.exit(main())
