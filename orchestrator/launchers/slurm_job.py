"""Job side of the Slurm launcher: what a submitit task runs on the compute node.

submitit unpickles `run_task` by reference, so this module is imported in the
job from the campaign's frozen copy of the code (PYTHONPATH, set by the job
script). It uses the standard library, jobs.records and jobs.workers (a multi-task
cell's ranks), and submitit in the task.

One task = one cell. The task reads its submission record (which cells, in
array order), picks its cell from SLURM_ARRAY_TASK_ID, and runs the guard
(`python -m jobs.guard <cell folder>`, the same guard as every launcher) with
the cell's own log (job.log). What is Slurm's own stays here and is handed to the
guard by name: `explain_signal` (a time limit or a scancel, from Slurm's state)
and the `energy` post-step (Slurm's energy counter, when the site collects it; per node for a multi-host cell).

A multi-task cell's energy is rank 0's to read, while every task of the step is still live: sstat shows only
live tasks, and a node whose tasks have ended is gone from every figure of the step. So the post-step of rank
r > 0 records nothing and holds its task until rank 0 says it has read (workers/slurm-energy-read.json, this
job's), and rank 0, which merges once each rank is `measured` (jobs/workers.py run_rank0), reads then.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import (CELL_FILE, FINAL_STATES, LOG_FILE, RESULT_FILE, atomic_write_json, now_iso, read_json,
                          read_status)
from jobs.workers import (TASKS_ENV, WORKERS_DIR, peer_context, prepare_worker, stop_requested, task_workers,
                          this_jobs_record)

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


# --- per node (#15): a multi-host cell's Slurm energy per host where Slurm identifies it; a total or `incomplete` --

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


# What sstat is asked for a multi-host cell's step, in this order (tests/data/slurm/energy/ has the format).
# --noconvert matters: without it sstat writes a TRES energy that is a multiple of 512 J in units (5120 -> "5K").
STEP_FIELDS = ("JobID", "Nodelist", "ConsumedEnergyRaw", "TRESUsageInTot", "NTasks", "TRESUsageInMax",
               "TRESUsageInMaxNode", "TRESUsageInMin", "TRESUsageInMinNode")


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _tres_energy(text) -> str | None:
    """The `energy` entry of a TRES usage field (`cpu=00:00:01,energy=1234,...` or `cpu=n1,energy=n2,...`)."""
    for item in (text or "").split(","):
        name, _, value = item.partition("=")
        if name == "energy" and value:
            return value
    return None


def parse_step_readings(text: str) -> list:
    """[{step, hosts, joules, tasks, tres_total, max, min}] from `sstat -n -P --noconvert -o <STEP_FIELDS>` (a
    shorter line gives what it has). `joules` (ConsumedEnergyRaw) 0 or empty is no reading (the site's
    acct_gather_energy/none answers 0: tests/data/slurm/energy/); `max`/`min`: {host, joules} of the step's
    highest and lowest energy reading, with the node Slurm names for each."""
    readings = []
    for line in text.splitlines():
        row = dict(zip(STEP_FIELDS, line.strip().split("|")))
        if len(row) < 3 or not row["JobID"]:
            continue
        joules, tasks = _number(row["ConsumedEnergyRaw"]), _number(row.get("NTasks"))
        reading = {"step": row["JobID"], "hosts": expand_nodelist(row["Nodelist"]),
                   "joules": joules if joules and joules > 0 else None,
                   "tasks": int(tasks) if tasks is not None else None,
                   "tres_total": _number(_tres_energy(row.get("TRESUsageInTot")))}
        for end in ("Max", "Min"):
            value = _number(_tres_energy(row.get(f"TRESUsageIn{end}")))
            host = _tres_energy(row.get(f"TRESUsageIn{end}Node"))
            reading[end.lower()] = {"host": host, "joules": value} if value is not None and host else None
        readings.append(reading)
    return readings


def _split_step(reading: dict, short: dict, tasks_expected: int | None) -> dict:
    """What one step over several hosts says about a cell's hosts (`short`: Slurm node name -> cell host).

    Slurm's semantics (its source, the same in 22.05.8 and 26.11: src/plugins/jobacct_gather/common/common_jag.c,
    jobacct_gather.c's aggregate, src/sstat/): each node's slurmstepd reads its energy counter once per poll,
    on one task of the node (`energy_counted`); its other tasks carry no energy value, which every aggregate
    skips. So the step's total (ConsumedEnergyRaw, = TRESUsageInTot's energy) is one reading per node that still
    has a task, and TRESUsageInMax/MaxNode, Min/MinNode are the highest and lowest node's reading with the node's
    name. A task that has ended is gone from sstat (NTasks counts the live ones; recorded in
    tests/data/slurm/energy/), and its node's energy with it when it was the node's last task. sstat names a
    node by its index in the step, looked up in the sorted list of the hosts that answered: right when every host
    answered (and the site lists its nodes in name order, as usual), shifted when one did not.

    Returns {own: {cell host: (joules, via)}, residual: {hosts, joules, note} | None, total: joules | None (a
    complete sum over exactly the cell's hosts), notes}. The max is its host's own reading whenever Slurm names a
    host of the step (a counter only grows: no older value of a node exceeds its latest); the min, the residual
    and the total only when the numbers close as one reading per node; nothing is guessed beyond that.
    """
    step, total = reading["step"], reading["joules"]
    names = [h.split(".")[0] for h in reading["hosts"]]
    top, low = reading.get("max"), reading.get("min")
    out = {"own": {}, "residual": None, "total": None, "notes": []}
    absent, foreign = [h for s, h in short.items() if s not in names], [n for n in names if n not in short]
    if absent:  # neither the sum nor the node names (shifted) can be the cell's
        out["notes"].append(f"step {step} covers {', '.join(reading['hosts'])}, not the cell's {', '.join(absent)} "
                            "(its tasks had ended, or its slurmstepd did not answer): Slurm's sum leaves it out, and "
                            "its max/min node names are not reliable")
        return out
    if foreign:
        out["notes"].append(f"step {step} covers {', '.join(foreign)}, not the cell's: its sum is no total")
    if top is None or low is None:
        out["notes"].append(f"step {step}: sstat gave no per-node energy (TRESUsageInMax/Min): no host's own reading")
        return out
    high, small = top["host"].split(".")[0], low["host"].split(".")[0]
    if high in short and high in names and top["joules"] > 0:
        out["own"][short[high]] = (top["joules"], "TRESUsageInMaxNode")
    others = [n for n in names if n not in (high, small)]
    rest = total - top["joules"] - low["joules"]
    reasons = []
    if reading["tres_total"] is not None and reading["tres_total"] != total:
        reasons.append(f"TRESUsageInTot's {reading['tres_total']:.1f} J is not ConsumedEnergyRaw's {total:.1f} J")
    if high == small or small not in names:
        reasons.append(f"max and min are not two hosts of the step ({top['host']}, {low['host']})")
    elif low["joules"] <= 0:
        reasons.append(f"{low['host']}'s min reads 0 J: no reading of its own, or a task of it that carried the "
                       "counter before its first reading (Slurm cannot tell)")
    elif not others and rest != 0:
        reasons.append(f"max + min = {top['joules'] + low['joules']:.1f} J, not the step's {total:.1f} J")
    elif others and not len(others) * low["joules"] <= rest <= len(others) * top["joules"]:
        reasons.append(f"the other hosts' {rest:.1f} J is not {len(others)} readings between min and max")
    if reasons:
        out["notes"].append(f"step {step}: {total:.1f} J over {', '.join(reading['hosts'])}, but "
                            f"{'; '.join(reasons)}: only the max host's own reading is kept, and the step's sum "
                            "is no total")
        return out
    if small in short:
        out["own"][short[small]] = (low["joules"], "TRESUsageInMinNode")
    if foreign:
        return out
    if others and reading["tasks"] != tasks_expected:
        # A host whose tasks had all ended is in no figure of the step: the rest is not the others' sum.
        out["notes"].append(f"step {step}: sstat counted {reading['tasks']} live tasks, the cell has "
                            f"{tasks_expected}: {', '.join(others)} may have none left, so the step's {total:.1f} J "
                            "is no total")
        return out
    if others:
        hosts = [short[n] for n in others]
        out["residual"] = {"hosts": hosts, "joules": rest,
                           "note": f"sum of hosts {', '.join(hosts)} not split by Slurm: {rest:.1f} J"}
    out["total"] = total
    return out


def add_node_energy(result: dict, readings: list, scope: str) -> dict:
    """A multi-host cell's Slurm energy (#15), from the sstat readings of its step.

    A step on one host is that host's reading. A step over several hosts (_split_step) gives the max and min
    host their own readings where Slurm's numbers identify them exactly; a host it does not identify gets
    `null`, and such hosts' sum is the labelled `residual`. The cell's `other_sources.slurm` is the step's total
    when the step covers exactly the cell's hosts and its numbers close as one reading per node (scope: the
    whole step, setup included, not the window), else the hosts' own readings' sum when every host has one,
    else `incomplete` with no sum: a host absent from the step's node list, a 0 or absent total, numbers that
    do not close."""
    energy = result.setdefault("energy", {})
    nodes = energy.get("nodes") or []
    hosts = [n.get("host") for n in nodes] + list(energy.get("missing_hosts") or [])
    short = {str(h).split(".")[0]: h for h in hosts}
    tasks_expected = len((result.get("window") or {}).get("workers") or []) or None
    own, notes, residual, step_total = {}, [], None, None
    for reading in readings:
        names = [n.split(".")[0] for n in reading["hosts"]]
        if len(names) == 1 and names[0] in short and reading["joules"] is not None:
            own[short[names[0]]] = {"joules": reading["joules"], "step": reading["step"], "via": "ConsumedEnergyRaw"}
        elif len(names) > 1 and reading["joules"] is not None:
            split = _split_step(reading, short, tasks_expected)
            notes += split["notes"]
            own.update({h: {"joules": j, "step": reading["step"], "via": via} for h, (j, via) in split["own"].items()})
            if split["total"] is not None:
                step_total, residual = split["total"], split["residual"]
        elif len(names) > 1:
            notes.append(f"step {reading['step']}: Slurm's sum over {', '.join(reading['hosts'])} is 0 or absent: "
                         "no reading")
    for node in nodes:
        if node.get("host") in own:
            node.setdefault("other_sources", {})["slurm"] = {
                **own[node["host"]], "source": "slurm-consumed-energy", "scope": f"{scope} on {node['host']}"}
    if step_total is not None:
        total, missing = step_total, []
    else:
        missing = [h for h in hosts if h not in own]
        total = None if missing else sum(r["joules"] for r in own.values())
    entry = {"joules": total, "source": "slurm-consumed-energy", "scope": scope,
             "total_kind": "incomplete" if total is None else "measured", "missing_hosts": missing,
             "nodes": {h: (own[h]["joules"] if h in own else None) for h in hosts}, "residual": residual,
             "step_sums": [r for r in readings if len(r["hosts"]) > 1 and r["joules"] is not None],
             "note": "Slurm's acct_gather_energy counter per node for the whole job step (setup and model build "
                     "included), not the measurement window" + ("; " + residual["note"] if residual else "")
                     + ("; " + "; ".join(notes) if notes else "")}
    live = [r["tasks"] for r in readings if r.get("tasks") is not None]
    # How many of the cell's tasks sstat saw live (NTasks): fewer, and the ended ones' nodes may be in no figure.
    entry["live_tasks"] = {"sstat": sum(live) if live else None, "workers": tasks_expected}
    if live and tasks_expected and sum(live) != tasks_expected:
        entry["note"] += (f"; sstat saw {sum(live)} live task(s) of the cell's {tasks_expected}: a host whose tasks "
                          "had ended is in no figure of the step")
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


# --- a multi-task cell: rank 0 reads the step's energy while every rank holds its task live ---------------------

ENERGY_READ_FILE = "slurm-energy-read.json"  # <cell>/workers/: {job, ...}; only this job's counts
HOLD_S = 120.0     # a rank waits this long at most for rank 0's word: well under the guard's POST_TIMEOUT_S
RELEASE_S = 30.0   # rank 0 waits this long at most for the released ranks' final statuses
HOLD_POLL_S = 0.5


def _rank(cell_dir: Path) -> dict | None:
    """This post-step's rank of a multi-task cell (jobs.workers.peer_context: {cell, job, worker, host, hosts}), else
    None."""
    try:
        cell = read_json(cell_dir / CELL_FILE)
    except (OSError, ValueError):
        return None
    return peer_context(cell_dir, cell if isinstance(cell, dict) else {})


def _marker(rank: dict) -> Path:
    return Path(rank["cell"]) / WORKERS_DIR / ENERGY_READ_FILE


def hold_for_rank0(rank: dict) -> int:
    """Rank r > 0: record nothing (the step's energy is rank 0's to read, for every node) and keep this task live
    until rank 0 has read it, another rank failed (stop.json), or HOLD_S."""
    print(f"[slurm] worker {rank['worker']}: holding this task live until rank 0 has read the step's energy "
          f"({ENERGY_READ_FILE}); this rank records none of its own", file=sys.stderr, flush=True)
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline:
        if this_jobs_record(_marker(rank), rank) is not None:  # not yet, or an earlier job's
            print(f"[slurm] worker {rank['worker']}: released, rank 0 has read the step's energy", file=sys.stderr)
            return 0
        stop = stop_requested(rank)
        if stop:
            print(f"[slurm] worker {rank['worker']}: released, {stop['reason']}", file=sys.stderr)
            return 0
        time.sleep(HOLD_POLL_S)
    print(f"[slurm] worker {rank['worker']}: released after {HOLD_S:g} s without word from rank 0", file=sys.stderr)
    return 0


def _release(rank: dict) -> None:
    """Rank 0, whatever its reading gave: tell the holding ranks, then wait (bounded) for their final statuses, so
    that nothing of the cell changes once its guard writes `done`."""
    atomic_write_json(_marker(rank), {"job": rank["job"], "host": rank["host"], "read_at": now_iso()})
    print(f"[slurm] rank 0: the step's energy is read, the other ranks are released ({ENERGY_READ_FILE})",
          file=sys.stderr, flush=True)
    folders = [Path(rank["cell"]) / WORKERS_DIR / str(i) for i in range(1, len(rank["hosts"]))]  # one per rank
    deadline = time.monotonic() + RELEASE_S
    while any(read_status(f)["state"] not in FINAL_STATES for f in folders) and time.monotonic() < deadline:
        time.sleep(HOLD_POLL_S / 5)


def energy_step(cell_dir: Path) -> int:
    """The guard's post-step (`--post "orchestrator.launchers.slurm_job energy <cell>"`): Slurm's energy counter
    for this job step, added to result.json as one more labelled source, before the guard writes `done`.

    A multi-task cell: rank r > 0 records nothing and holds its task (hold_for_rank0); rank 0 reads the step per
    node (add_node_energy) while every task is live, then releases them, on every path (_release)."""
    rank = _rank(cell_dir)
    if rank and rank["worker"] != 0:
        return hold_for_rank0(rank)
    try:
        return _read_energy(cell_dir)
    finally:
        if rank:
            _release(rank)


def _read_energy(cell_dir: Path) -> int:
    scope = f"job {job_id_from_env()} step {os.environ.get('SLURM_STEP_ID', '0')}"
    try:
        result = read_json(cell_dir / RESULT_FILE)
    except (OSError, ValueError):
        result = {}
    if (result.get("energy") or {}).get("nodes"):  # a multi-host cell (#15): per node, or incomplete
        step = f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '0')}"
        readings = parse_step_readings(_slurm("sstat", "-n", "-P", "--noconvert", "-a", "-j", step, "-o",
                                              ",".join(STEP_FIELDS)))
        entry = add_node_energy(result, readings, scope)
        atomic_write_json(cell_dir / RESULT_FILE, result)
        print(f"[slurm] energy per node: {entry['nodes']} ({entry['total_kind']}); sstat saw "
              f"{entry['live_tasks']['sstat']} live task(s) of {entry['live_tasks']['workers']}", file=sys.stderr)
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

    job = submitit.JobEnvironment()
    if job.num_tasks <= 1:
        return cell_dir, {}
    workers = task_workers(job.num_tasks, job.hostnames, tasks_per_node, job_id_from_env())
    if job.global_rank == 0:
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
