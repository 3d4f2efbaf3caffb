"""Job side of the Slurm launcher: what a submitit task runs on the compute node.

submitit unpickles `run_task` by reference, so this module is imported in the
job from the campaign's frozen copy of the code (PYTHONPATH, set by the job
script). It uses the standard library and jobs.records only.

One task = one cell. The task reads its submission record (which cells, in
array order), picks its cell from SLURM_ARRAY_TASK_ID, and runs
`python -m jobs.run <cell folder>` as a child process with the cell's own
log (job.log). The child writes running/done/failed; this wrapper survives it
and writes what the child could not: a kill (SIGKILL, out of memory) before
any result, a time limit or a cancel made precise from Slurm's own state, and
Slurm's energy counter for the job when the site has energy accounting.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import (FINAL_STATES, LOG_FILE, RESULT_FILE, atomic_write_json, describe_exit, log_tail,
                          read_json, read_status, update_status)


def _ignore_signals() -> None:
    # SIGTERM (scancel, time limit) is the child's to record; USR2 is submitit's early time-out warning,
    # whose default action would kill the child without a word.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _slurm(*args: str, timeout: float = 10) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def job_id_from_env() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def slurm_job_state() -> str:
    """How Slurm is ending this job: TIMEOUT, CANCELLED, ... or "" when it cannot say yet.

    While the job is being killed, slurmctld shows it as COMPLETING; the accounting record already
    has the real end state (CANCELLED by <uid>, TIMEOUT), so ask sacct first, then scontrol's reason.
    """
    job = os.environ.get("SLURM_JOB_ID", "")
    for _ in range(3):
        out = _slurm("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").split()
        state = out[0].rstrip("+") if out else ""
        if state and state not in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED"):
            return state
        fields = dict(f.split("=", 1) for f in _slurm("scontrol", "show", "job", "-o", job).split() if "=" in f)
        if fields.get("Reason") == "TimeLimit" or fields.get("JobState") == "TIMEOUT":
            return "TIMEOUT"
        if fields.get("JobState", "").startswith("CANCELLED"):
            return "CANCELLED"
        time.sleep(0.3)
    return ""


_EARLY_STATE: list = []


def _on_sigterm(signum, frame) -> None:
    """Ask Slurm why at once, while the child is still writing its failure (KillWait runs)."""
    if not _EARLY_STATE:
        _EARLY_STATE.append(slurm_job_state())


def step_energy_joules() -> float | None:
    """Slurm's energy counter for this job's step (sstat ConsumedEnergyRaw), when the site collects it."""
    step = f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '0')}"
    return parse_energy(_slurm("sstat", "-n", "-P", "-a", "-j", step, "-o", "ConsumedEnergyRaw"))


def parse_energy(text: str) -> float | None:
    values = []
    for line in text.splitlines():
        line = line.strip()
        try:
            values.append(float(line))
        except ValueError:
            continue
    total = sum(values)
    return total if values and total > 0 else None


def add_energy_source(cell_dir: Path, joules: float, scope: str) -> None:
    """One more labelled source in result.json; it never replaces the measured window's energy."""
    path = cell_dir / RESULT_FILE
    result = read_json(path)
    energy = result.setdefault("energy", {})
    energy.setdefault("other_sources", {})["slurm"] = {
        "joules": joules,
        "source": "slurm-consumed-energy",
        "scope": scope,
        "note": "Slurm's acct_gather_energy counter for the whole job (setup and model build included), "
                "not the measurement window",
    }
    atomic_write_json(path, result)


def task_worker(cell_dir: Path, tasks_per_node: int) -> tuple:
    """scale (#15): this task's place in a multi-task step (one task per worker of the cell).

    Returns (folder to run, extra environment). One task: the cell itself. Several: rank 0 runs the cell
    (its job merges the workers, told who they are by BENCHMARK_TRACKER_WORKERS); rank r > 0 runs its
    worker folder. Ranks, task count and hostnames from submitit's JobEnvironment; the coordinator is the
    allocation's first host.
    """
    import submitit

    from jobs.workers import TASKS_ENV, prepare_worker, task_workers

    job = submitit.JobEnvironment()
    if job.num_tasks <= 1:
        return cell_dir, {}
    workers = task_workers(job.num_tasks, job.hostnames, tasks_per_node, job_id_from_env())
    if job.global_rank == 0:
        import json

        return cell_dir, {TASKS_ENV: json.dumps(workers)}
    return prepare_worker(cell_dir, read_json(cell_dir / "cell.json"), workers[job.global_rank]), {}


def run_task(submission_file: str) -> int:
    """Entry point of one submitit task (one cell)."""
    _ignore_signals()
    signal.signal(signal.SIGTERM, _on_sigterm)  # the child records it; we stay to write what it cannot
    submission = read_json(Path(submission_file))
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
    cell_dir = Path(submission["cells_root"]) / submission["cells"][index]
    python = submission["python"]
    status = read_status(cell_dir)
    if status["state"] in FINAL_STATES or status.get("submission") != submission["token"]:
        print(f"[slurm] cell {cell_dir.name} is {status['state']} (submission {status.get('submission')}): "
              "not running it", file=sys.stderr)
        return 0  # cancelled before it started, or superseded by a later submission
    cell_dir, worker_env = task_worker(cell_dir, submission.get("ntasks_per_node") or 1)  # scale (#15)
    update_status(cell_dir, "running", job_id=job_id_from_env(), host=os.uname().nodename)
    env = dict(os.environ, **worker_env, PYTHONUNBUFFERED="1", BENCHMARK_TRACKER_JOB_ID=job_id_from_env(),
               PYTHONPATH=os.pathsep.join(filter(None, [submission["code"], os.environ.get("PYTHONPATH")])))
    with open(cell_dir / LOG_FILE, "ab") as log:
        log.write(f"[slurm] job {job_id_from_env()} on {os.uname().nodename}, submission "
                  f"{submission['token']} task {index}\n".encode())
        log.flush()
        child = subprocess.Popen([python, "-m", "jobs.run", str(cell_dir)], cwd=cell_dir, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_child_signals)
        while True:
            try:
                returncode = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
    status = read_status(cell_dir)
    terminated = status["state"] == "failed" and str(status.get("reason", "")).startswith("Terminated")
    if status["state"] not in FINAL_STATES or terminated:
        state = (_EARLY_STATE[0] if _EARLY_STATE and _EARLY_STATE[0] else "") or slurm_job_state()
        if state == "TIMEOUT":
            update_status(cell_dir, "failed", timed_out=True, exit_code=returncode, slurm_state=state,
                          reason=f"timeout: over its Slurm time limit of {submission.get('time_limit_min')} min; "
                                 "the job was stopped")
        elif state.startswith("CANCELLED"):
            update_status(cell_dir, "failed", cancelled=True, exit_code=returncode, slurm_state=state,
                          reason="cancelled (scancel) while running")
        elif status["state"] not in FINAL_STATES:
            update_status(cell_dir, "failed", exit_code=returncode, log_tail=log_tail(cell_dir / LOG_FILE),
                          reason=f"{describe_exit(returncode)} before writing a result",
                          slurm_job_id=job_id_from_env())
    elif status["state"] == "done" and submission.get("energy_accounting"):
        joules = step_energy_joules()
        if joules is not None:
            try:
                add_energy_source(cell_dir, joules, f"job {job_id_from_env()} step 0")
            except (OSError, ValueError) as exc:
                print(f"[slurm] could not add Slurm energy: {exc}", file=sys.stderr)
    return returncode


def _child_signals() -> None:
    # The child gets default SIGTERM handling back (jobs.run installs its own) and ignores USR2.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


if __name__ == "__main__":  # manual use: python -m orchestrator.launchers.slurm_job <submission file>
    sys.exit(run_task(sys.argv[1]))
