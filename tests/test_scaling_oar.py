"""A `nodes: N` cell under OAR (#15): N whole hosts in one oarsub, rank 0 under the guard on the job's first host,
one task per other host through oarsh; and the rule every scheduler's ranks follow: the first to fail stops
the others.

The test OAR server has one host, so the per-host launch runs here with a fake `oarsh` (the real one needs OAR's
cgroups job manager and several hosts): it does what oarsh/ssh do with their arguments (join them with spaces
and hand them to the remote shell), so the remote shell parses the quoting as a real one would. The workers
are real `python -m jobs.run` processes under real guards; their cell asks for a backend that does not exist,
so each fails in its first second (no framework start-up is paid for here: the real multi-worker runs are in
test_scaling_workers.py and test_scaling_slurm.py).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import workers
from jobs.records import CELL_FILE, atomic_write_json, read_json, read_status, update_status
from orchestrator.errors import UserError
from orchestrator.matrix import expand
from tests.test_grid5000 import launcher_for, oarsub_line, sweep_spec
from tests.test_scaling_workers import _leftovers

ROOT = Path(__file__).resolve().parent.parent
FAKE_OARSH = '#!/bin/sh\nhost="$1"; shift\necho "$host" >> "$OARSH_CALLS"\nexec env FAKE_HOST="$host" sh -c "$*"\n'


def scaled_spec(tmp_path, nodes: int, node_type: str = "grele", oar_section: str = ""):
    spec = sweep_spec(tmp_path, f"[{node_type}]", oar_section)
    text = spec.path.read_text().replace("  node_types:", f"  nodes: [{nodes}]\n  node_types:")
    spec.path.write_text(text)
    from orchestrator.spec import parse_sweep

    return parse_sweep(text, spec.path)


# --- what is asked of OAR -------------------------------------------------------------------------------------

def test_n_workers_ask_oar_for_n_whole_hosts_of_the_node_type(tmp_path):
    spec = scaled_spec(tmp_path, 2, oar_section="oar: {properties: {gpu_mem: 11264}}")
    [cell] = expand(spec).cells
    line = oarsub_line(launcher_for(spec), cell)
    assert '-l "host=2,walltime=' in line  # whole hosts: every node's wall/BMC meter measures its whole node
    assert "-p \"cluster='grele' AND gpu_mem=11264\"" in line and '-q "abaca"' in line


def test_more_hosts_than_the_cluster_has_are_refused_at_validation(tmp_path):
    with pytest.raises(UserError) as error:
        expand(scaled_spec(tmp_path, 14))  # grele has 13 nodes
    assert f"{tmp_path / 'sweep.yaml'}:" in str(error.value)
    assert "nodes: 14 asks OAR for 14 whole hosts, but node type grele has 13" in str(error.value)


def test_job_script_runs_the_oar_task_with_every_value_quoted(tmp_path):
    spec = scaled_spec(tmp_path, 2, oar_section="oar: {python: /opt/venv/bin/python}")
    [cell] = expand(spec).cells
    folder = Path("/home/u/it's $(touch PWNED) here")
    script = launcher_for(spec).job_script(cell, folder)
    [line] = [line for line in script.splitlines() if "jobs.workers" in line]
    argv = shlex.split(line.replace('"$OAR_NODEFILE"', "NODEFILE"))
    assert argv[:6] == ["/opt/venv/bin/python", "-m", "jobs.workers", "oar", str(folder), "NODEFILE"]
    assert argv[6:8] == ["--explain", "grid5000.oar_job"] and argv[8] == "--post"
    assert shlex.split(argv[9])[:3] == ["grid5000.kwollect", "annotate", str(folder)]
    assert argv[-4:] == [">>", "job.log", "2>&1", "&"]
    unscaled = launcher_for(sweep_spec(tmp_path)).job_script(expand(sweep_spec(tmp_path)).cells[0], folder)
    assert "jobs.workers" not in unscaled and "jobs.guard" in unscaled


# --- the per-host launch, run here --------------------------------------------------------------------------

def _cell(folder: Path, nodes: int) -> Path:
    folder.mkdir(parents=True)
    params = {"test": "srcnn", "phase": "training", "subtest": "s", "backend": "no-such-backend", "nodes": nodes,
              "devices_per_node": 1, "node_type": "oar-local", "iterations": 3}
    atomic_write_json(folder / CELL_FILE, {"id": folder.name, "campaign": "c", "params": params, "timeout_s": 60,
                                           "energy": {"idle_s": 0}})
    update_status(folder, "running")
    return folder


def _oar_env(tmp_path, nodefile_hosts: str, job: str = "4242") -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "oarsh").write_text(FAKE_OARSH)
    (bin_dir / "oarsh").chmod(0o755)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(nodefile_hosts)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OAR_NODEFILE=str(nodefile), OAR_JOB_ID=job,
                BENCHMARK_TRACKER_JOB_ID=job, OARSH_CALLS=str(tmp_path / "oarsh.calls"), PYTHONPATH=str(ROOT))


def test_rank_0_here_the_other_hosts_through_oarsh_one_failure_fails_the_cell(tmp_path):
    cell = _cell(tmp_path / "cell $(touch PWNED) 'x'", 3)
    env = _oar_env(tmp_path, "n1\nn1\nn2\nn3\nn3\n")  # OAR lists a host once per core
    line = f"{shlex.quote(sys.executable)} -m jobs.workers oar {shlex.quote(str(cell))} \"$OAR_NODEFILE\" " \
           "--explain grid5000.oar_job"
    done = subprocess.run(["sh", "-c", line], env=env, cwd=cell, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted((tmp_path / "oarsh.calls").read_text().split()) == ["n2", "n3"]
    assert read_json(cell / "workers" / "hosts.json") == ["n1", "n2", "n3"]
    for rank, host in ((1, "n2"), (2, "n3")):  # each remote rank ran in its own folder, with its own record
        record = read_json(cell / "workers" / str(rank) / CELL_FILE)["worker"]
        assert (record["index"], record["host"], record["launch"], record["job"]) == (rank, host, "tasks", "4242")
        status = read_status(cell / "workers" / str(rank))
        assert status["state"] == "failed" and status["job_id"] == "4242"
    status = read_status(cell)
    assert status["state"] == "failed" and status["job_id"] == "4242"
    assert "no-such-backend" in status["reason"] or "stopped: worker" in status["reason"]
    stop = read_json(cell / "workers" / workers.STOP_FILE)  # the first failure was announced to the other ranks
    assert stop["job"] == "4242" and f"worker {stop['worker']} on {stop['host']} failed" in stop["reason"]
    assert not any(p.name == "PWNED" for p in tmp_path.rglob("*"))
    assert not _leftovers(tmp_path)


def test_too_few_hosts_fail_the_cell_with_the_reason_before_any_launch(tmp_path):
    cell = _cell(tmp_path / "cell", 2)
    env = _oar_env(tmp_path, "n1\nn1\n")
    done = subprocess.run([sys.executable, "-m", "jobs.workers", "oar", str(cell), env["OAR_NODEFILE"]], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 96, done.stderr
    status = read_status(cell)
    assert status["state"] == "failed" and "OAR gave 1 host(s) (n1), the cell needs 2" in status["reason"]
    assert not (tmp_path / "oarsh.calls").exists()


# --- the rule for every scheduler: the first rank to fail stops the others ------------------------------------

# A worker blocked in a collective whose peer is gone: it ignores SIGTERM (TensorFlow's and gloo's waits never
# return to Python), as a real one does; only the guard's SIGKILL ends it. It says where it is and who it is.
STUCK_WORKER = """#!/bin/sh
trap '' TERM
printf '{"phase": "window", "at": "now"}' > phase.json
echo $$ > pid
exec sleep 300
"""


def _guard(folder: Path, python: Path, env: dict) -> subprocess.Popen:
    code = (f"import sys; from pathlib import Path; from jobs.guard import Guard; "
            f"sys.exit(Guard(Path({str(folder)!r}), 120, python={str(python)!r}).run())")
    return subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _ranks(tmp_path, stuck: int):
    """Rank 0 (the cell, told its peers by the task environment, as Slurm's task and OAR's rank 0 are) and rank 1
    (its worker folder with a scheduler worker record), under real guards; rank `stuck` ignores SIGTERM, the
    other stops on it (a worker between two collectives)."""
    cell = _cell(tmp_path / "cell", 2)
    records = workers.task_workers(2, ["hostA", "hostB"], 1, "77")
    rank1 = workers.prepare_worker(cell, read_json(cell / CELL_FILE), records[1])
    update_status(rank1, "running")
    pythons = []
    for rank in (0, 1):
        python = tmp_path / f"worker-{rank}"
        python.write_text(STUCK_WORKER if rank == stuck else STUCK_WORKER.replace("trap '' TERM\n", ""))
        python.chmod(0o755)
        pythons.append(python)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(workers.TASKS_ENV, None)
    guards = [_guard(cell, pythons[0], dict(env, **{workers.TASKS_ENV: json.dumps(records)})),
              _guard(rank1, pythons[1], env)]
    for folder in (cell, rank1):
        deadline = time.monotonic() + 30
        while not (folder / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return cell, rank1, guards


@pytest.mark.parametrize("dies, stopped, host", [(1, 0, "hostB"), (0, 1, "hostA")])  # rank 0 may be the one
def test_a_killed_rank_stops_the_other_and_both_say_which_rank_on_which_host(tmp_path, dies, stopped, host):
    cell, rank1, guards = _ranks(tmp_path, stuck=0)
    folders = [cell, rank1]
    try:
        os.kill(int((folders[dies] / "pid").read_text()), 9)
        codes = [g.wait(timeout=60) for g in guards]
    finally:
        for g in guards:
            g.kill()
    assert codes == [1, 1]
    dead = read_status(folders[dies])
    assert dead["state"] == "failed" and "SIGKILL" in dead["reason"]
    peer = read_status(folders[stopped])
    assert peer["state"] == "failed" and peer["stopped_by_worker"] == dies
    assert peer["reason"].startswith(f"stopped: worker {dies} on {host} failed mid-window: ")
    for folder in folders:  # neither worker outlives its guard (a zombie is not a live process)
        pid = int((folder / "pid").read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not _leftovers(tmp_path)


def test_an_earlier_jobs_announcement_stops_nobody(tmp_path):
    cell = _cell(tmp_path / "cell", 2)
    records = workers.task_workers(2, ["hostA", "hostB"], 1, "78")
    context = workers.peer_context(cell, read_json(cell / CELL_FILE), {workers.TASKS_ENV: json.dumps(records)})
    workers.request_stop({**context, "job": "77", "worker": 1}, "an old failure")
    assert workers.stop_requested(context) is None  # job 77's, not this job's (78)
    workers.request_stop({**context, "worker": 1}, "this job's")
    assert workers.stop_requested(context)["reason"] == "worker 1 on hostA failed: this job's"
    assert workers.stop_requested({**context, "worker": 1}) is None  # never a rank's own
