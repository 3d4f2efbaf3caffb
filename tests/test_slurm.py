"""The Slurm launcher against a real one-node Slurm cluster (tests/clusters/slurm-up.sh).

These tests need the cluster and FAIL, never skip, when it is not up: run
`bash tests/clusters/slurm-up.sh` (as root) first. Jobs are real cells (tiny
MobileNet-V2, a few eager iterations): the 2-core test machine runs two at a
time, so each test submits as few as it can and overlaps what it can.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, tiny_sweep, wait_for
from tests.conftest import cell_statuses as statuses

pytestmark = pytest.mark.cluster  # live cluster: selected by `make test`, not by a plain pytest

CATALOG = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"
UP = "bash tests/clusters/slurm-up.sh"
LAB = Path(os.environ.get("BT_SLURM_LAB", "/var/lib/benchmark-tracker/slurm-lab"))


def env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), BENCHMARK_TRACKER_NODE_TYPES=str(CATALOG), **extra)


def bt(*args, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env(**extra), cwd=ROOT)


def bt_start(*args, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sh(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def slurm_sweep(name: str, node_type: str = "slurm-local", phases: str = "[inference]", iterations: int = 2,
                timeout: float = 300, slurm: str = "", repetitions: int = 1) -> str:
    text = tiny_sweep(name, phases=phases, iterations=iterations, timeout=timeout, node_type=node_type,
                      launcher="slurm", repetitions=repetitions)
    if "array_parallelism" not in slurm:
        slurm += "\narray_parallelism: 2"
    return text + "slurm:\n" + "".join(f"  {line}\n" for line in slurm.splitlines() if line)


def job_ids(campaign: Path) -> dict:
    """cell id -> Slurm job id, through the submission records."""
    from orchestrator.launchers.slurm import SLURM_DIR

    records = {}
    for path in (campaign / SLURM_DIR / "submissions").glob("*.json"):
        record = json.loads(path.read_text())
        records[record["token"]] = record
    out = {}
    for cell_id, status in statuses(campaign).items():
        record = records.get(status.get("submission"))
        if record and record.get("job_id"):
            index = status.get("array_index")
            out[cell_id] = f"{record['job_id']}_{index}" if index is not None else record["job_id"]
    return out


def follow_wait(campaign: Path, timeout: float = 240) -> int:
    done = bt("wait", campaign, "--poll", "1", "--timeout", timeout, timeout=timeout + 60)
    return done.returncode


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """The test cluster must be up; this fails (does not skip) with how to start it."""
    problems = []
    ping = sh("scontrol", "ping") if _which("scontrol") else None
    if ping is None:
        problems.append("scontrol is not installed")
    elif "UP" not in ping.stdout:
        problems.append(f"slurmctld does not answer: {(ping.stdout + ping.stderr).strip()}")
    else:
        if sh("sacct", "-n", "-X").returncode != 0:
            problems.append("sacct fails (slurmdbd down?)")
        state = sh("sinfo", "-h", "-o", "%T").stdout.split()
        if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in state):
            problems.append(f"no usable node (sinfo: {state})")
    if problems:
        pytest.fail(f"the Slurm test cluster is not up ({'; '.join(problems)}): run `{UP}` as root first",
                    pytrace=False)
    yield


def _which(name: str) -> bool:
    from shutil import which

    return which(name) is not None


@pytest.fixture(scope="module")
def overrun(tmp_path_factory):
    """A cell far longer than its limit, submitted early by the end-to-end test so that it overlaps with other
    tests: `overrun` over a Slurm time limit of 1 min set below its timeout_s (Slurm's warning signal stops it).
    The guard's own timeout_s under Slurm is the contract suite's timeout case (kind slurm-live)."""
    folder = tmp_path_factory.mktemp("overrun")
    campaigns = {}
    for name, timeout, slurm in (("overrun", 600, "time_limit_min: 1"),):
        sweep = folder / f"{name}.yaml"
        sweep.write_text(slurm_sweep(name, timeout=timeout, slurm=slurm).replace("iterations: 2", "duration_s: 600"))
        done = bt("sweep", sweep, "--output", folder / "results")
        assert done.returncode == 0, done.stderr
        campaigns[name] = folder / "results" / name
    return campaigns


# --- bad input: nothing submitted -------------------------------------------------------

def test_unknown_partition_or_constraint_shows_slurms_error_and_submits_nothing(sweep_file, tmp_path):
    out = tmp_path / "results"
    before = set(sh("squeue", "-h", "-o", "%i").stdout.split())
    for key, value, words in (("partition", "nosuchpartition", "invalid partition"),
                              ("constraint", "nosuchfeature", "invalid feature")):
        sweep = sweep_file(slurm_sweep(f"bad-{key}", slurm=f"{key}: {value}"), f"{key}.yaml")
        done = bt("sweep", sweep, "--output", out)
        assert done.returncode == 2, done.stderr
        assert "Slurm refuses the resources of node type slurm-local" in done.stderr
        assert words in done.stderr.lower() and "nothing was submitted" in done.stderr
        assert not (out / f"bad-{key}").exists()
    assert set(sh("squeue", "-h", "-o", "%i").stdout.split()) <= before


def test_shell_metacharacters_never_reach_a_shell(sweep_file, tmp_path):
    canary = tmp_path / "PWNED"
    for key, value in (("partition", f"debug; touch {canary}"), ("account", f"$(touch {canary})"),
                       ("constraint", f"bttest`touch {canary}`"), ("qos", "a\\nb")):
        sweep = sweep_file(slurm_sweep("meta", slurm=f'{key}: "{value}"'))
        done = bt("sweep", sweep, "--output", tmp_path / "results")
        assert done.returncode == 2
        assert f"slurm.{key}" in done.stderr and (
            "must match pattern" in done.stderr or "control character" in done.stderr), done.stderr
    assert not canary.exists()


def test_interpreter_missing_on_the_node_is_said_clearly(sweep_file, tmp_path):
    # An interpreter that exists at submit time and is gone when the (held) job starts: as on a node
    # without the project's environment. The job script checks before anything else.
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    sweep = sweep_file(slurm_sweep("nopython", slurm=f"python: {python}\nhold: true"))
    out = tmp_path / "results"
    done = bt("sweep", sweep, "--output", out)
    assert done.returncode == 0, done.stderr
    campaign = out / "nopython"
    (job,) = job_ids(campaign).values()
    python.unlink()
    assert sh("scontrol", "release", job).returncode == 0
    assert follow_wait(campaign, timeout=60) == 1
    (status,) = statuses(campaign).values()
    assert status["reason"].startswith(f"the interpreter {python} does not exist on this compute node"), status


# --- end to end: a small sweep as a throttled array, to a collect table --------------------

def test_sweep_through_slurm_as_a_throttled_array_to_a_table(sweep_file, tmp_path, overrun):
    sweep = sweep_file(slurm_sweep("e2e", phases="[inference, training]", slurm="array_parallelism: 1"))
    out = tmp_path / "res $(touch PWNED) 'x'"  # paths with shell syntax must work, quoted everywhere
    clock = time.monotonic()
    first = bt("sweep", sweep, "--output", out)
    assert first.returncode == 0, first.stderr
    assert time.monotonic() - clock < 30  # submits and returns
    assert "(array, 1 at a time)" in first.stderr
    campaign = out / "e2e"
    ids = job_ids(campaign)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids.values()}) == 1  # one array
    array = next(iter(ids.values())).split("_")[0]
    script = next((campaign / "slurm" / "jobs").glob(f"{array}_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --no-requeue" in script

    # The throttle holds: never two tasks of the array running at once.
    most = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        lines = sh("squeue", "-h", "-r", "-j", array, "-o", "%T").stdout.split()
        most = max(most, lines.count("RUNNING"))
        if not lines:
            break
        time.sleep(0.5)
    assert most == 1
    assert follow_wait(campaign) == 0
    status = bt("status", campaign)
    assert status.returncode == 0 and "slurm-local: 2 done" in status.stdout, status.stdout + status.stderr

    collect = bt("collect", campaign)
    assert collect.returncode == 0, collect.stderr
    table = pd.read_csv(campaign / "results.csv")
    assert len(table) == 2 and set(table["state"]) == {"done"} and (table["throughput_samples_per_s"] > 0).all()
    for cell in campaign.glob("cells/*"):
        log = (cell / "job.log").read_text()
        assert "[slurm] job" in log and "[job] done" in log  # one log per cell
    assert not (out / "PWNED").exists() and not (ROOT / "PWNED").exists()
    # The jobs ran the code frozen at submit time.
    code = next((campaign / "slurm" / "code").iterdir())
    assert (code / "jobs" / "run.py").read_text() == (ROOT / "jobs" / "run.py").read_text()

    again = bt("sweep", sweep, "--output", out)
    assert again.returncode == 0 and "2 done and 0 failed cells skipped" in again.stderr


# --- failures: raise, SIGKILL, scancel (overlapped) ---------------------------------------------

# --- the orchestrator killed mid-submission ---------------------------------------------------

# --- time limit ------------------------------------------------------------------------------

def test_slurms_time_limit_stops_a_cell_with_its_reason(overrun):
    assert follow_wait(overrun["overrun"]) == 1
    (status,) = statuses(overrun["overrun"]).values()
    assert status["reason"].startswith("timeout: near its Slurm time limit of 1 min"), status
    assert status.get("timed_out") and status["signal"] == "SIGUSR2"


# --- node failure ---------------------------------------------------------------------------

def _children(pid: int) -> list:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            out += [child, *_children(child)]
    return out


def test_node_failure_is_detected_and_retried_under_the_same_id(sweep_file, tmp_path):
    sweep = sweep_file(slurm_sweep("nodefail", slurm="max_retries: 1"))
    out = tmp_path / "results"
    assert bt("sweep", sweep, "--output", out).returncode == 0
    campaign = out / "nodefail"
    wait_for(lambda: any(s["state"] == "running" for s in statuses(campaign).values()), 180, what="cell running")
    # A node crash: slurmd and every slurmstepd with their jobs' processes, all at once (pids this test saw).
    slurmd = int((LAB / "run" / "slurmd.pid").read_text())
    assert Path(f"/proc/{slurmd}/comm").read_text().strip() == "slurmd"
    stepds = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/comm") if _read(p) == "slurmstepd"]
    victims = [slurmd, *stepds, *(c for s in stepds for c in _children(s))]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    follower = bt_start("wait", campaign, "--poll", "1", "--timeout", "400")
    try:
        clock = time.monotonic()

        def retried():
            (status,) = statuses(campaign).values()
            return status if status["attempts"] == 2 and status["state"] != "failed" else None

        status = wait_for(retried, 120, every=0.5, what="node failure seen and the cell resubmitted")
        assert time.monotonic() - clock < 90  # SlurmdTimeout 20 s + Slurm's checks + one poll
        failure = status["history"][-1]
        assert failure["state"] == "failed" and failure["reason"].startswith("node failure"), failure
    finally:
        up = sh("bash", str(ROOT / "tests" / "clusters" / "slurm-up.sh"), timeout=120)
        assert up.returncode == 0, up.stderr
    try:
        follower.wait(timeout=240)
    finally:
        follower.kill()
    assert follower.returncode == 0, follower.stderr.read()
    (status,) = statuses(campaign).values()
    assert status["state"] == "done" and status["attempts"] == 2  # same cell id, second attempt


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
