"""Job side of the Slurm launcher: what a submitit task runs on the compute node.

submitit unpickles `run_task` by reference, so this module is imported in the
job from the campaign's frozen copy of the code (PYTHONPATH, set by the job
script). It uses the standard library and jobs.records only.

One task = one cell. The task reads its submission record (which cells, in
array order), picks its cell from SLURM_ARRAY_TASK_ID, and runs the guard
(`python -m jobs.guard <cell folder>`, the same guard as every launcher) with
the cell's own log (job.log). What is Slurm's own stays here and is handed to the
guard by name: `explain_signal` (a time limit or a scancel, from Slurm's state)
and the `energy` post-step (Slurm's energy counter, when the site collects it).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import FINAL_STATES, LOG_FILE, RESULT_FILE, atomic_write_json, read_json, read_status

MODULE = "orchestrator.launchers.slurm_job"  # named on the guard's command line, never imported by it


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


# --- per node (#15): a multi-host cell's Slurm energy goes to each host's record, or the total is incomplete ------

def expand_nodelist(text: str) -> list:
    """Slurm's compressed host list (`vm`, `n[1-3,7]`, `a1,b[01-02]`) as host names."""
    hosts, depth, part = [], 0, ""
    for ch in text.strip() + ",":
        if ch == "," and depth == 0:
            if part:
                match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
                if not match:
                    hosts.append(part)
                else:
                    head, ranges, tail = match.groups()
                    for item in ranges.split(","):
                        lo, _, hi = item.partition("-")
                        for n in range(int(lo), int(hi or lo) + 1):
                            hosts.append(f"{head}{str(n).zfill(len(lo))}{tail}")
            part = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        part += ch
    return hosts


def parse_step_readings(text: str) -> list:
    """[{step, hosts, joules}] from `sstat -n -P --noconvert -o JobID,Nodelist,ConsumedEnergyRaw[,...]`: 0 or empty
    is no reading (the site's acct_gather_energy/none answers 0: tests/data/slurm/energy/)."""
    readings = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0]:
            continue
        try:
            joules = float(fields[2])
        except ValueError:
            joules = None
        readings.append({"step": fields[0], "hosts": expand_nodelist(fields[1]),
                         "joules": joules if joules and joules > 0 else None})
    return readings


def add_node_energy(result: dict, readings: list, scope: str) -> dict:
    """A multi-host cell: a step on one host is that host's reading (energy.nodes[].other_sources.slurm); a step
    over several hosts is one sum Slurm does not split, so none of its hosts has a reading of its own. The cell's
    `other_sources.slurm` is the hosts' sum, or `incomplete` (no sum) when a host has none."""
    energy = result.setdefault("energy", {})
    nodes = energy.get("nodes") or []
    hosts = [n.get("host") for n in nodes] + list(energy.get("missing_hosts") or [])
    short = {str(h).split(".")[0]: h for h in hosts}
    own, notes = {}, []
    for reading in readings:
        names = [n.split(".")[0] for n in reading["hosts"]]
        if len(names) == 1 and names[0] in short and reading["joules"] is not None:
            own[short[names[0]]] = reading
        elif len(names) > 1 and reading["joules"] is not None:
            notes.append(f"step {reading['step']}: {reading['joules']:.1f} J over {', '.join(reading['hosts'])}, one "
                         "sum Slurm does not split per node: no host's own reading")
    for node in nodes:
        if node.get("host") in own:
            node.setdefault("other_sources", {})["slurm"] = {
                "joules": own[node["host"]]["joules"], "source": "slurm-consumed-energy",
                "scope": f"{scope} on {node['host']}", "step": own[node["host"]]["step"]}
    missing = [h for h in hosts if h not in own]
    total = None if missing else sum(r["joules"] for r in own.values())
    entry = {"joules": total, "source": "slurm-consumed-energy", "scope": scope,
             "total_kind": "incomplete" if missing else "measured", "missing_hosts": missing,
             "nodes": {h: (own[h]["joules"] if h in own else None) for h in hosts},
             "step_sums": [r for r in readings if len(r["hosts"]) > 1 and r["joules"] is not None],
             "note": "Slurm's acct_gather_energy counter per node for the whole job step (setup and model build "
                     "included), not the measurement window" + ("; " + "; ".join(notes) if notes else "")}
    energy.setdefault("other_sources", {})["slurm"] = entry
    return entry


def explain_signal(signum: int) -> dict | None:
    """The guard's explainer (`--explain orchestrator.launchers.slurm_job`): what Slurm meant by a signal.

    Asked at once, while the job is still being stopped (KillWait runs): later the job is gone from view.
    """
    limit = os.environ.get("BENCHMARK_TRACKER_TIME_LIMIT_MIN")
    limit = f" of {limit} min" if limit else ""
    if signum == signal.SIGUSR2:  # submitit's --signal=USR2@<delay>: the time limit is near
        return {"timed_out": True, "reason": f"timeout: near its Slurm time limit{limit} (Slurm's warning signal); "
                                             "the job was stopped"}
    state = slurm_job_state()
    if state == "TIMEOUT":
        return {"timed_out": True, "slurm_state": state,
                "reason": f"timeout: over its Slurm time limit{limit}; the job was stopped"}
    if state.startswith("CANCELLED"):
        return {"cancelled": True, "slurm_state": state, "reason": "cancelled (scancel) while running"}
    if state == "PREEMPTED":
        return {"slurm_state": state, "retryable": True, "reason": "preempted by Slurm while running"}
    return None


def energy_step(cell_dir: Path) -> int:
    """The guard's post-step (`--post "orchestrator.launchers.slurm_job energy <cell>"`): Slurm's energy counter
    for this job step, added to result.json as one more labelled source, before the guard writes `done`."""
    scope = f"job {job_id_from_env()} step {os.environ.get('SLURM_STEP_ID', '0')}"
    try:
        result = read_json(cell_dir / RESULT_FILE)
    except (OSError, ValueError):
        result = {}
    if (result.get("energy") or {}).get("nodes"):  # a multi-host cell (#15): per node, or incomplete
        step = f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '0')}"
        readings = parse_step_readings(_slurm("sstat", "-n", "-P", "--noconvert", "-a", "-j", step, "-o",
                                              "JobID,Nodelist,ConsumedEnergyRaw"))
        entry = add_node_energy(result, readings, scope)
        atomic_write_json(cell_dir / RESULT_FILE, result)
        print(f"[slurm] energy per node: {entry['nodes']} ({entry['total_kind']})", file=sys.stderr)
        return 0
    joules = step_energy_joules()
    if joules is None:
        print("[slurm] no energy counter for this step (sstat gave none)", file=sys.stderr)
        return 0
    try:
        add_energy_source(cell_dir, joules, scope)
    except (OSError, ValueError) as exc:
        print(f"[slurm] could not add Slurm energy: {exc}", file=sys.stderr)
        return 1
    return 0


def guard_command(python: str, cell_dir: Path, energy_accounting: bool) -> list:
    """The guard's command line for one cell on a Slurm node (the explainer and the energy step are ours)."""
    command = [python, "-m", "jobs.guard", str(cell_dir), "--explain", MODULE]
    if energy_accounting:
        command += ["--post", f"{MODULE} energy {shlex.quote(str(cell_dir))}"]
    return command


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
    """Entry point of one submitit task (one cell): pick the cell, hand it to the guard, wait for it.

    The guard (jobs.guard) owns the cell from here: the timeout, the signals Slurm sends (with their reason,
    through explain_signal), the energy post-step and the final status. This task writes nothing.
    """
    # Slurm signals every process of the step; the guard acts on them, this task only waits for the guard.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    submission = read_json(Path(submission_file))
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
    cell_dir = Path(submission["cells_root"]) / submission["cells"][index]
    status = read_status(cell_dir)
    if status["state"] in FINAL_STATES or status.get("submission") != submission["token"]:
        print(f"[slurm] cell {cell_dir.name} is {status['state']} (submission {status.get('submission')}): "
              "not running it", file=sys.stderr)
        return 0  # cancelled before it started, or superseded by a later submission
    cell_dir, worker_env = task_worker(cell_dir, submission.get("ntasks_per_node") or 1)  # scale (#15)
    env = dict(os.environ, **worker_env, PYTHONUNBUFFERED="1", BENCHMARK_TRACKER_JOB_ID=job_id_from_env(),
               BENCHMARK_TRACKER_TIME_LIMIT_MIN=str(submission.get("time_limit_min") or ""),
               PYTHONPATH=os.pathsep.join(filter(None, [submission["code"], os.environ.get("PYTHONPATH")])))
    with open(cell_dir / LOG_FILE, "ab") as log:
        log.write(f"[slurm] job {job_id_from_env()} on {os.uname().nodename}, submission "
                  f"{submission['token']} task {index}\n".encode())
        log.flush()
        guard = subprocess.Popen(guard_command(submission["python"], cell_dir, submission.get("energy_accounting")),
                                 cwd=cell_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=_default_signals)
    return guard.wait()


def _default_signals() -> None:
    # The guard installs its own handlers; it must not inherit this task's "ignore".
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def main(argv: list) -> int:
    if len(argv) == 2 and argv[0] == "energy":
        return energy_step(Path(argv[1]))
    if len(argv) == 1:  # manual use: python -m orchestrator.launchers.slurm_job <submission file>
        return run_task(argv[0])
    print("usage: python -m orchestrator.launchers.slurm_job energy <cell folder> | <submission file>",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
