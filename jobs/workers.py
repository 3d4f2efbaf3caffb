"""Multi-worker cells: one cell, N worker processes, one result.

A cell with `nodes: N > 1` is N *workers*: data-parallel processes joined by the framework's
collectives (TensorFlow MultiWorkerMirroredStrategy over TF_CONFIG, JAX `jax.distributed`).
Where they run is the launcher's business; how they run is this module's:

- **loopback** (the local launcher, one multi-GPU workstation, the tests): the cell's job
  (`python -m jobs.run <cell>`, under its guard) becomes the workers' *coordinator*: it spawns
  the N workers itself, each `python -m jobs.run <cell>/workers/<i>` with its worker record
  (rank, addresses on 127.0.0.1, coordinator address) in its own cell.json. They stay in the
  job's process group (the guard's and the launcher's kill reach them all) and die with it
  (PR_SET_PDEATHSIG), so none outlives the cell. The first worker to fail fails the whole cell
  with its reason (which worker, which signal or error, in which phase); the others are stopped.
- **scheduler tasks** (Slurm: one srun step, one task per worker; OAR: one task per host of the job,
  the others started through oarsh): each task runs its worker under its own guard, and the task of
  rank 0 merges the results once all have written one. Ranks on other hosts cannot be killed from
  here, so a failure is announced in the cell folder (`workers/stop.json`, this job's): the guard of
  every rank watches it and stops its worker (`peer_context`, `request_stop`, `stop_requested`). The
  first rank to fail, rank 0 included, fails the whole cell with its rank and host; none is left
  waiting in a collective until the job's time limit. A host that dies whole announces nothing: each
  rank's guard beats (a counter in `workers/heartbeat-<rank>.json`) and a rank silent for
  $BENCHMARK_TRACKER_HEARTBEAT_TIMEOUT_S (60 s) is announced lost in stop.json by the rank watching it
  (`Heartbeat`).

Energy: a host's meters count the whole host, so only the **first worker of each host** meters it
(and measures its idle baseline); the host's other workers run unmetered. The cell's energy is one
reading per host, never one host twice: on the loopback launch, `nodes: 2` is two workers on one
host and one host reading. A host whose reading is missing makes the total `incomplete` (no sum).

The window opens and closes on a barrier across all workers; each worker's window start/end is
kept, with the skew between workers. Imports nothing from orchestrator/.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobs.records import (CELL_FILE, GUARDED_ENV, LOG_FILE, RESULT_FILE, atomic_write_json, atomic_write_text, log_tail,
                          read_json, read_phase, read_status, write_phase)

WORKER_KEY = "worker"
WORKERS_DIR = "workers"
STOP_GRACE_S = 3.0  # a worker left in a collective whose peer died never returns to Python: kill it
POLL_S = 0.2
# Keys of a worker's result.json that belong to the worker's record, not to the cell's measurement.
_RECORD_KEYS = ("schema_version", "cell_id", "campaign", "params", "started_at", "status", "error", "finished_at",
                "job_wall_s", "shared_node")


class WorkerFailed(RuntimeError):
    """One worker of a multi-worker cell failed: the whole cell fails with this reason."""

    def __init__(self, reason: str, index: int | None = None):
        super().__init__(reason)
        self.index = index  # the worker that failed


def spawns_workers(cell: dict) -> bool:
    """Whether this job is a multi-worker cell's coordinator (it has no worker record of its own)."""
    return int(cell["params"].get("nodes", 1)) > 1 and WORKER_KEY not in cell


def meters_here(cell: dict) -> bool:
    """Whether this process meters its host: every unscaled or one-worker cell, else each host's first worker."""
    return (cell.get(WORKER_KEY) or {}).get("meters", True)


def unmetered(cell: dict):
    """The meters of a worker that shares its host with the host's metering worker: none, and it says so."""
    from jobs.meters import MeterSet

    worker = cell[WORKER_KEY]
    return MeterSet([], [f"worker {worker['index']} runs unmetered: {worker.get('host')} is metered once, by its "
                         "first worker"])


def _free_ports(count: int) -> list:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def loopback_workers(count: int) -> list:
    """Worker records for `count` workers on this host, on free loopback ports; worker 0 meters the host."""
    ports = _free_ports(count + 1)
    addresses = [f"127.0.0.1:{port}" for port in ports[:count]]
    host = socket.gethostname()
    return [{"index": i, "count": count, "addresses": addresses, "coordinator": f"127.0.0.1:{ports[count]}",
             "host": host, "local_rank": i, "meters": i == 0, "launch": "loopback"} for i in range(count)]


def worker_cell(cell: dict, worker: dict, campaign_dir: Path) -> dict:
    """A worker's own cell.json: the cell, its worker record, and (unmetered) no idle baseline of its own."""
    energy = dict(cell["energy"])
    if not worker["meters"]:
        energy["idle_s"] = 0  # the host's metering worker measures it, while this one waits on the barrier
    return {**cell, "energy": energy, WORKER_KEY: worker, "campaign_dir": str(campaign_dir)}


def _die_with_parent() -> None:
    """In the worker, before exec: SIGKILL when the coordinator dies, whatever killed it (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the coordinator's own finally still stops its workers


def _stop(processes: list) -> None:
    """SIGTERM every worker still running (each records why), SIGKILL after a grace period."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    _wait_or_kill(processes, STOP_GRACE_S)


def _wait_or_kill(processes: list, grace_s: float) -> None:
    """Wait for every process, together, at most grace_s; SIGKILL (and reap) those still running then."""
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _settle_stopped(folders: list, exc: BaseException) -> None:
    """A worker killed, or stopped in a collective (SIGKILLed after the grace), writes no status: say why it
    ended (the failed worker its own failure, the others that the cell's job stopped them)."""
    from jobs.records import FINAL_STATES, update_status

    why = f"{type(exc).__name__}: {exc}"
    for index, folder in enumerate(folders):
        if read_status(folder)["state"] not in FINAL_STATES:
            own = isinstance(exc, WorkerFailed) and exc.index == index
            update_status(folder, "failed", reason=str(exc) if own else f"stopped by its cell's job: {why}")


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _where(folder: Path) -> str:
    phase = (read_phase(folder) or {}).get("phase", "start-up")
    return f"during its {phase}" if phase != "window" else "mid-window"


def _failure(index: int, folder: Path, process, host: str | None = None) -> str:
    reason = read_status(folder).get("reason")
    on = f" on {host}" if host else ""
    text = f"worker {index} (pid {process.pid}){on} {_how_it_ended(process.returncode)} {_where(folder)}"
    if reason:
        text += f": {reason}"
    elif process.returncode > 0:
        text += f"; its log ends: {log_tail(folder / LOG_FILE, 5)}"
    return text + "; the whole cell fails (its other workers were stopped)"


TASKS_ENV = "BENCHMARK_TRACKER_WORKERS"  # the workers of a scheduler's multi-task step, for its rank 0


def run_workers(cell: dict, cell_dir: Path) -> dict:
    """A multi-worker cell's job: rank 0 of a scheduler's tasks (their records in TASKS_ENV), else loopback."""
    tasks = os.environ.get(TASKS_ENV)
    if tasks:
        return run_rank0(cell, Path(cell_dir), json.loads(tasks))
    return run_loopback(cell, cell_dir)


def task_workers(count: int, hostnames: list, tasks_per_node: int, job_id: str) -> list:
    """Worker records of a scheduler step: task i on hostnames[i // tasks_per_node] (block distribution, Slurm's
    default); the first task of each host meters it; ports derived from the job id, the same in every task."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    base = 20000 + (int(digits) * 7) % 30000
    hosts = [hostnames[i // tasks_per_node] for i in range(count)]
    addresses = [f"{host}:{base + i}" for i, host in enumerate(hosts)]
    return [{"index": i, "count": count, "addresses": addresses, "coordinator": f"{hosts[0]}:{base + count}",
             "host": hosts[i], "local_rank": i % tasks_per_node, "meters": i % tasks_per_node == 0,
             "launch": "tasks", "job": str(job_id)} for i in range(count)]


def prepare_worker(cell_dir: Path, cell: dict, worker: dict) -> Path:
    """Write a worker's folder (its cell.json; no earlier attempt's result) and return it."""
    folder = Path(cell_dir) / WORKERS_DIR / str(worker["index"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_FILE, "status.json", "phase.json"):  # an earlier attempt's, never read as this one's
        (folder / stale).unlink(missing_ok=True)
    atomic_write_json(folder / CELL_FILE, worker_cell(cell, worker, Path(cell_dir).parent.parent))
    return folder


def _spawn(python: str, folder: Path, env: dict):
    # A worker has no guard of its own (this job's guard owns the cell): it writes its own final status.
    env = {k: v for k, v in env.items() if k != GUARDED_ENV}
    with open(folder / LOG_FILE, "ab") as log:
        # Same process group as this job: a kill of the group (guard, launcher, scancel) takes them all.
        return subprocess.Popen([python, "-m", "jobs.run", str(folder)], cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def run_rank0(cell: dict, cell_dir: Path, workers: list, python: str = sys.executable,
              poll_s: float = 0.5) -> dict:
    """Rank 0 of a multi-task step: run worker 0 here, wait for every task's worker (their folders, this job's
    statuses: done, or measured by its guard), merge. The first failed worker fails the cell with its reason."""
    env = {k: v for k, v in os.environ.items() if k not in (TASKS_ENV, "TF_CONFIG")}
    folders = [Path(cell_dir) / WORKERS_DIR / str(w["index"]) for w in workers]
    process = _spawn(python, prepare_worker(cell_dir, cell, workers[0]), env)
    shown = None
    try:
        while True:
            phase = (read_phase(folders[0]) or {}).get("phase")
            if phase and phase != shown:  # the cell's progress (and where a failure happened) is worker 0's
                write_phase(cell_dir, phase)
                shown = phase
            if process.poll() is not None and process.returncode != 0:
                raise WorkerFailed(_failure(0, folders[0], process, workers[0].get("host")), 0)
            states = []
            for worker, folder in zip(workers[1:], folders[1:]):
                status = read_status(folder)
                if status.get("job_id", "").split("_")[0].split(".")[0] != worker["job"].split("_")[0]:
                    states.append("waiting")  # not started yet in this job (an older attempt's status)
                    continue
                if status["state"] == "failed":
                    raise WorkerFailed(f"worker {worker['index']} on {worker['host']} failed {_where(folder)}: "
                                       f"{status.get('reason')}; the whole cell fails", worker["index"])
                # Finished: done, or measured (its result written) while its guard runs its post-steps, which may
                # wait for this rank's (Slurm's energy: read by rank 0 while every task is live).
                measured = status["state"] == "running" and status.get("measured") and (folder / RESULT_FILE).exists()
                states.append("done" if measured else status["state"])
            if process.returncode == 0 and all(state == "done" for state in states):
                break
            time.sleep(poll_s)
    except BaseException as exc:
        _stop([process])
        _settle_stopped(folders[:1], exc)
        raise
    finally:
        _stop([process])
    return merge(workers, [read_json(folder / RESULT_FILE) for folder in folders])


def run_loopback(cell: dict, cell_dir: Path, python: str = sys.executable) -> dict:
    """The coordinator of a loopback multi-worker cell: spawn, watch, merge; the first failure fails all."""
    cell_dir = Path(cell_dir)
    workers = loopback_workers(int(cell["params"]["nodes"]))
    folders, processes = [], []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    try:
        for worker in workers:
            folder = prepare_worker(cell_dir, cell, worker)
            processes.append(_spawn(python, folder, env))
            folders.append(folder)
        print(f"[job] {len(workers)} loopback workers: pids {', '.join(str(p.pid) for p in processes)}", flush=True)
        shown = None
        while any(p.poll() is None for p in processes):
            for index, (folder, process) in enumerate(zip(folders, processes)):
                if process.poll() is not None and process.returncode != 0:
                    raise WorkerFailed(_failure(index, folder, process), index)
            phase = (read_phase(folders[0]) or {}).get("phase")
            if phase and phase != shown:  # the cell's progress is its first worker's
                write_phase(cell_dir, phase)
                shown = phase
            time.sleep(POLL_S)
        for index, (folder, process) in enumerate(zip(folders, processes)):
            if process.returncode != 0:
                raise WorkerFailed(_failure(index, folder, process), index)
    except BaseException as exc:
        _stop(processes)
        _settle_stopped(folders, exc)
        raise
    finally:
        _stop(processes)
    return merge(workers, [read_json(folder / RESULT_FILE) for folder in folders])


# --- one result from the workers' ------------------------------------------------------------------------------

def _host_energy(worker: dict, result: dict) -> dict:
    energy = result.get("energy") or {}
    window = result.get("window") or {}
    return {"host": worker.get("host") or (result.get("host") or {}).get("hostname"), "worker": worker["index"],
            "domains": energy.get("domains") or {}, "total_joules": energy.get("total_joules"),
            "total_kind": energy.get("total_kind"), "idle": energy.get("idle"),
            "total_net_joules": energy.get("total_net_joules"), "low_confidence": energy.get("low_confidence", []),
            "notes": energy.get("notes", []), "window_start_unix": window.get("start_unix"),
            "window_end_unix": window.get("end_unix"), "meter_duration_s": energy.get("meter_duration_s"),
            "valid": energy.get("valid"), "invalid_reasons": energy.get("invalid_reasons") or [],
            "uncertainty": energy.get("uncertainty")}


def merge_energy(hosts: list, samples: int, co2: dict | None, expected_hosts: list) -> dict:
    """The cell's energy from one reading per host: per-domain sums with their sources, or `incomplete`."""
    seen = {h["host"] for h in hosts if h["domains"]}
    missing = [h for h in expected_hosts if h not in seen]
    domains = {}
    for host in hosts:
        for name, d in host["domains"].items():
            into = domains.setdefault(name, {"joules": 0.0, "sources": set(), "measured": True, "via": set()})
            into["joules"] += d["joules"]
            into["sources"].add(d["source"])
            into["via"].add(d.get("via"))
            into["measured"] = into["measured"] and bool(d.get("measured"))
    domains = {name: {"joules": d["joules"], "source": ";".join(sorted(d["sources"])), "measured": d["measured"],
                      "via": ";".join(sorted(filter(None, d["via"])))} for name, d in sorted(domains.items())}
    notes = [f"{h['host']}: {note}" for h in hosts for note in h["notes"]]
    low = [f"{h['host']}: {note}" for h in hosts for note in h["low_confidence"]]
    if missing:
        notes.append(f"incomplete: no energy reading from host(s) {', '.join(missing)}; the cell has no total "
                     "(a partial sum would understate it)")
        total = per_sample = net = net_per_sample = None
        kind = "incomplete"
    else:
        total = sum(h["total_joules"] for h in hosts)
        per_sample = total / samples if samples else None
        kinds = {h["total_kind"] for h in hosts}
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        nets = [h["total_net_joules"] for h in hosts]
        net = sum(nets) if all(n is not None for n in nets) else None
        net_per_sample = net / samples if net is not None and samples else None
    if co2 is not None:
        grams = None if total is None else total / 3.6e6 * co2["pue"] * co2["carbon_intensity_g_per_kwh"]
        co2 = {**co2, "grams": grams}
    systematic = [(h.get("uncertainty") or {}).get("systematic_rel") for h in hosts]
    uncertainty = ({"systematic_rel": max(systematic), "by_host": {h["host"]: h.get("uncertainty") for h in hosts}}
                   if systematic and all(isinstance(v, (int, float)) for v in systematic) else None)
    return {"domains": domains, "total_joules": total,
            # Valid only when every host's trace passed its gate (a host's own reasons keep its name).
            "valid": all(h.get("valid") is not False for h in hosts),
            "invalid_reasons": [f"{h['host']}: {r}" for h in hosts for r in h.get("invalid_reasons", [])],
            "uncertainty": uncertainty, "total_kind": kind, "joules_per_sample": per_sample,
            "total_net_joules": net, "net_joules_per_sample": net_per_sample, "complete": not missing,
            "missing_hosts": missing, "nodes": hosts, "low_confidence": low, "notes": notes, "co2": co2,
            "idle": None, "alternatives": {}}


def merge(workers: list, results: list) -> dict:
    """The cell's measured part from every worker's record and result.json (all done)."""
    first = results[0]
    merged = {k: v for k, v in first.items() if k not in _RECORD_KEYS}
    windows = [r["window"] for r in results]
    starts, ends = [w["start_unix"] for w in windows], [w["end_unix"] for w in windows]
    # Every worker ran the same collective steps; the cell's window is the slowest worker's.
    duration = max(w["duration_s"] for w in windows)
    samples = first["window"]["samples"]  # the global batch's samples: every worker counts them all
    merged["window"] = {**first["window"], "duration_s": duration, "start_unix": min(starts), "end_unix": max(ends),
                        "throughput_samples_per_s": samples / duration, "start_skew_s": max(starts) - min(starts),
                        "end_skew_s": max(ends) - min(ends),
                        "workers": [{"worker": w["index"], "host": w.get("host"), "start_unix": s, "end_unix": e,
                                     "duration_s": win["duration_s"]}
                                    for w, s, e, win in zip(workers, starts, ends, windows)]}
    metering = {}
    for worker, result in zip(workers, results):  # one reading per host: its first metering worker's
        if worker.get("meters", True) and worker.get("host") not in metering:
            metering[worker.get("host")] = _host_energy(worker, result)
    hosts = sorted({w.get("host") for w in workers}, key=str)
    merged["energy"] = merge_energy(list(metering.values()), samples, (first.get("energy") or {}).get("co2"), hosts)
    merged["parallel"] = {**(first.get("parallel") or {}), "worker_index": None, "hosts": len(hosts),
                          "launch": workers[0].get("launch")}
    return merged



# --- a failed rank stops the others (scheduler tasks: ranks on other hosts, one shared cell folder) -------------

STOP_FILE = "stop.json"  # <cell>/workers/stop.json: {job, worker, host, reason, by, cause}; only this job's counts


def peer_context(cell_dir: Path, cell: dict, env: dict | None = None) -> dict | None:
    """This rank's place in a scheduler's multi-task cell, for its guard: {cell, job, worker, host, hosts (every
    rank's)}; None for a single-task cell or a loopback worker (the loopback coordinator owns its workers'
    processes)."""
    env = os.environ if env is None else env
    worker = cell.get(WORKER_KEY)
    if worker and worker.get("launch") == "tasks":
        return {"cell": str(Path(cell_dir).parent.parent), "job": str(worker.get("job")),
                "worker": worker["index"], "host": worker.get("host"),
                "hosts": [address.rsplit(":", 1)[0] for address in worker["addresses"]]}
    if env.get(TASKS_ENV):
        records = json.loads(env[TASKS_ENV])
        return {"cell": str(cell_dir), "job": str(records[0].get("job")), "worker": 0, "host": records[0].get("host"),
                "hosts": [record.get("host") for record in records]}
    return None


def _stop_path(context: dict) -> Path:
    return Path(context["cell"]) / WORKERS_DIR / STOP_FILE


def this_jobs_record(path: Path, context: dict) -> dict | None:
    """The record at path if it is this job's (an earlier job's, in the same cell folder, never counts)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and str(record.get("job")) == context["job"] else None


def stop_requested(context: dict) -> dict | None:
    """Another rank of this job failed, or was declared lost: the announcement ({worker, host, reason, cause}),
    else None. Never the announcement this rank made itself; a rank declared lost by another does stop on it (a
    host cut off and then back must not go on alone)."""
    stop = this_jobs_record(_stop_path(context), context)
    if stop is None or stop.get("by", stop.get("worker")) == context["worker"]:
        return None
    return stop


def _announce(context: dict, record: dict) -> dict:
    """Write this job's stop announcement unless one stands already (the first stands); return the one that stands."""
    path = _stop_path(context)
    standing = this_jobs_record(path, context)
    if standing is not None:
        return standing
    record = {"job": context["job"], "by": context["worker"], **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record


def request_stop(context: dict, reason: str, folder: Path | None = None) -> dict:
    """Announce this rank's failure (its reason; the phase its folder was in) to every other rank of the job.
    The first announcement stands."""
    return _announce(context, {"worker": context["worker"], "host": context["host"], "cause": "failed",
                               "reason": f"worker {context['worker']} on {context['host']} failed"
                                         f"{' ' + _where(folder) if folder else ''}: {reason}"})


# A host that dies whole (power, kernel panic, network cut) leaves no process to announce anything: each rank's
# guard beats in the cell folder (workers/heartbeat-<rank>.json: {job, worker, host, beat: a counter}) and the
# ranks watch each other's beats. Staleness is judged by the watcher's own monotonic clock (how long since it saw
# the counter change), never by mtimes or timestamps: hosts' clocks and NFS attribute caches differ.
HEARTBEAT_ENV = "BENCHMARK_TRACKER_HEARTBEAT_TIMEOUT_S"  # forwarded to every rank (Slurm exports it, OAR's oarsh too)
HEARTBEAT_TIMEOUT_S = 60.0
MIN_HEARTBEAT_TIMEOUT_S = 1.0  # below, a busy shared filesystem's latency alone would declare live ranks lost


def heartbeat_timeout(env: dict | None = None) -> float:
    """How long a rank's beat may stay unchanged before it is declared lost ($BENCHMARK_TRACKER_HEARTBEAT_TIMEOUT_S,
    else 60 s); ValueError, naming the setting, for anything but a number of seconds >= 1."""
    text = (os.environ if env is None else env).get(HEARTBEAT_ENV)
    if text is None or not text.strip():
        return HEARTBEAT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= MIN_HEARTBEAT_TIMEOUT_S or value == float("inf"):
        raise ValueError(f"{HEARTBEAT_ENV}={text!r} is not a number of seconds >= {MIN_HEARTBEAT_TIMEOUT_S:g} "
                         f"(how long a rank's heartbeat may stay silent; default {HEARTBEAT_TIMEOUT_S:g})")
    return value


def _beat_path(context: dict, worker: int) -> Path:
    return Path(context["cell"]) / WORKERS_DIR / f"heartbeat-{worker}.json"


class Heartbeat:
    """One rank's heartbeat (a thread, for the guard's whole life: its post-steps too, which rank 0 waits for) and
    its watch on the others.

    Star, not all-to-all: rank 0 watches every rank, the others watch rank 0 only. That is sufficient: a lost rank
    k > 0 is seen by rank 0, a lost rank 0 by every other rank, and any announcement stops them all (stop.json);
    it costs O(N) small reads per interval on the shared filesystem instead of O(N^2). Only rank 0 and another
    rank lost together would go unseen, until the guards' timeout, which still ends the cell."""

    def __init__(self, context: dict, timeout_s: float):
        self.context, self.timeout_s = context, timeout_s
        self.interval_s = min(5.0, timeout_s / 4)  # one small file write; several beats per timeout
        # A rank's guard starts after its task's Python (and, on OAR, its oarsh connection): it gets twice the
        # timeout to send its first beat.
        self.grace_s = 2 * timeout_s
        count = len(context["hosts"])
        watched = range(1, count) if context["worker"] == 0 else [0]
        self.started = time.monotonic()
        self.seen = {index: (None, self.started) for index in watched}  # last beat seen, when it last changed
        self.checked = None
        self.count = 0
        self._done = None
        self._thread = None

    def beat(self, ended: bool = False) -> None:
        self.count += 1
        path = _beat_path(self.context, self.context["worker"])
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"job": self.context["job"], "worker": self.context["worker"], "host": self.context["host"],
                  "beat": self.count}
        # No fsync: a beat is news for seconds, not a record to survive a crash, and an fsync on a busy (or NFS)
        # disk can stall longer than the timeout; close and rename already make it visible to the other hosts.
        atomic_write_text(path, json.dumps({**record, "ended": True} if ended else record) + "\n", fsync=False)

    def start(self) -> None:
        import threading

        self._done = threading.Event()

        def loop():
            while True:
                try:
                    self.beat()
                except OSError as exc:  # the others will declare this rank lost: say why here
                    print(f"[guard] heartbeat not written: {exc}", file=sys.stderr, flush=True)
                if self._done.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """The last beat says this rank's guard ended (its outcome is in its status, a failure in stop.json):
        nobody waits for its beat any more."""
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self._thread = None
            try:
                self.beat(ended=True)
            except OSError as exc:
                print(f"[guard] last heartbeat not written: {exc}", file=sys.stderr, flush=True)

    def lost(self) -> dict | None:
        """A watched rank silent too long: announce it lost (stop.json, unless another announcement stands) and
        return the announcement that stands; else None. Reads the beats once per beat interval."""
        now = time.monotonic()
        if self.checked is not None and now - self.checked < self.interval_s:
            return None
        self.checked = now
        for index, (last, since) in list(self.seen.items()):
            record = this_jobs_record(_beat_path(self.context, index), self.context)
            if record is not None and record.get("ended"):
                del self.seen[index]  # its guard ended: its status says how
                continue
            beat = None if record is None else record.get("beat")
            if beat is not None and beat != last:  # an unreadable beat is no news: it never resets the clock
                self.seen[index] = (beat, now)
                continue
            host = (record or {}).get("host") or self.context["hosts"][index]
            if last is None and now - since > self.grace_s:
                why = f"no heartbeat in its first {self.grace_s:g} s (its task did not start, or its host is down " \
                      "or unreachable)"
            elif last is not None and now - since > self.timeout_s:
                why = f"no heartbeat for {self.timeout_s:g} s (host down or unreachable)"
            else:
                continue
            return _announce(self.context, {"worker": index, "host": host, "cause": "no heartbeat",
                                            "reason": f"worker {index} on host {host}: {why}"})
        return None


# --- OAR: one task per host, rank 0 on the job's first host, the others through oarsh ------------------------

def job_hosts(nodefile: Path, here: str | None = None) -> list:
    """The job's hosts from $OAR_NODEFILE (one line per core: deduplicated, in order), this host first."""
    hosts = list(dict.fromkeys(line.strip() for line in Path(nodefile).read_text().splitlines() if line.strip()))
    short = (here or socket.gethostname()).split(".")[0]
    mine = [h for h in hosts if h.split(".")[0] == short]
    return mine[:1] + [h for h in hosts if h not in mine[:1]]


def remote_command(cell_dir: Path, rank: int, hosts_file: Path, explain: str | None, env: dict) -> str:
    """The command line oarsh hands to the remote shell (quoted once more there): cd, environment, the task."""
    import shlex

    keep = {k: env[k] for k in ("PYTHONPATH", "PYTHONUNBUFFERED", "BENCHMARK_TRACKER_JOB_ID", "OAR_JOB_ID",
                                HEARTBEAT_ENV) if env.get(k)}  # the same heartbeat timeout on every rank
    argv = [sys.executable, "-m", "jobs.workers", "task", str(cell_dir), str(rank), str(hosts_file)]
    argv += [explain] if explain else []
    return (f"cd {shlex.quote(str(cell_dir))} && exec env {' '.join(shlex.quote(f'{k}={v}') for k, v in keep.items())} "
            f"{shlex.join(argv)}")


def _guard_argv(folder: Path, explain: str | None, post: list = ()) -> list:
    argv = [sys.executable, "-m", "jobs.guard", str(folder)]
    argv += ["--explain", explain] if explain else []
    for step in post:
        argv += ["--post", step]
    return argv


def run_oar(cell_dir: Path, nodefile: Path, explain: str | None, post: list, env: dict | None = None,
            remote_shell: str = "oarsh") -> int:
    """Rank 0 of an OAR cell (the job script's task, on the job's first host): start one task per other host
    through OAR's remote shell, run this host's under the guard (the cell's own guard: timeout, signals,
    post-steps, final status), pass OAR's signals on to it, and leave no remote shell behind."""
    from jobs.records import update_status

    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    env.pop(GUARDED_ENV, None)
    cell = read_json(cell_dir / CELL_FILE)
    count = int(cell["params"].get("nodes", 1))
    hosts = job_hosts(nodefile)
    if len(hosts) != count:
        update_status(cell_dir, "failed", job_id=env.get("BENCHMARK_TRACKER_JOB_ID", ""),
                      reason=f"OAR gave {len(hosts)} host(s) ({', '.join(hosts) or 'none'}), the cell needs {count} "
                             f"(nodes: {count}); nothing was started")
        return 96
    guard, pending = None, []

    def forward(signum, frame):  # OAR's signals (oardel, the walltime's checkpoint) are the guard's to act on
        if guard is None:
            pending.append(signum)
        elif guard.poll() is None:
            guard.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    job = env.get("OAR_JOB_ID", "0")
    workers = task_workers(count, hosts, 1, job)
    hosts_file = cell_dir / WORKERS_DIR / "hosts.json"
    remotes = []
    if count > 1:
        hosts_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(hosts_file, hosts)
        env[TASKS_ENV] = json.dumps(workers)
        with open(cell_dir / LOG_FILE, "ab") as log:
            for worker in workers[1:]:
                command = remote_command(cell_dir, worker["index"], hosts_file, explain, env)
                log.write(f"[oar] worker {worker['index']} on {worker['host']}: {remote_shell} {worker['host']}\n"
                          .encode())
                log.flush()
                remotes.append(subprocess.Popen([remote_shell, worker["host"], command], stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    guard = subprocess.Popen(_guard_argv(cell_dir, explain, post), cwd=cell_dir, env=env, stdin=subprocess.DEVNULL)
    for signum in pending:  # arrived while the remote tasks were starting
        guard.send_signal(signum)
    code = guard.wait()
    # The remote ranks stop on their own once the cell is final (a failure is announced in stop.json); a remote
    # shell still open after their grace is closed, so that nothing of this job outlives it here.
    _wait_or_kill(remotes, 2 * STOP_GRACE_S + 10)
    return code


def run_task(cell_dir: Path, rank: int, hosts_file: Path, explain: str | None) -> int:
    """Rank r > 0 of an OAR cell, on its host (started through oarsh): its worker folder, then its guard."""
    from jobs.records import update_status

    hosts = read_json(hosts_file)
    cell = read_json(cell_dir / CELL_FILE)
    job = os.environ.get("OAR_JOB_ID", "0")
    workers = task_workers(int(cell["params"]["nodes"]), hosts, 1, job)
    folder = prepare_worker(cell_dir, cell, workers[rank])
    update_status(folder, "running", job_id=job, host=socket.gethostname())  # rank 0 waits for this job's
    env = {k: v for k, v in os.environ.items() if k not in (GUARDED_ENV, TASKS_ENV, "TF_CONFIG")}
    os.chdir(folder)
    os.execve(sys.executable, _guard_argv(folder, explain), env)  # the guard is this task from here on


def main(argv: list | None = None) -> int:
    """`python -m jobs.workers oar <cell folder> <nodefile> [--explain M] [--post STEP]...` (rank 0, the job script)
    `python -m jobs.workers task <cell folder> <rank> <hosts file> [explain module]` (rank r, through oarsh)"""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 3 and argv[0] == "oar":
        import argparse

        parser = argparse.ArgumentParser(prog="python -m jobs.workers oar")
        parser.add_argument("cell")
        parser.add_argument("nodefile")
        parser.add_argument("--explain")
        parser.add_argument("--post", action="append", default=[])
        args = parser.parse_args(argv[1:])
        return run_oar(Path(args.cell).resolve(), Path(args.nodefile), args.explain, args.post)
    if len(argv) in (4, 5) and argv[0] == "task" and argv[2].isdigit() and int(argv[2]) > 0:
        return run_task(Path(argv[1]).resolve(), int(argv[2]), Path(argv[3]), argv[4] if len(argv) == 5 else None)
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
