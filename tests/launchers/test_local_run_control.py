"""Run control of local sweeps, with the real CLI, real job subprocesses and real tiny TensorFlow cells.

Each case is an observation of issue #10 that failed before the lifecycle was owned by the core:
SIGTERM/SIGHUP to a sweep, a guard that died, one measurement per host. Cancel during a sweep (two cancels at
once), the rerun that stops a killed sweep's orphan, and a killed sweep's job that keeps its timeout through its
guard are contract cases (tests/launchers/test_contract.py, kind `local`, beside every other launcher).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, tiny_sweep, wait_for
from tests.conftest import cell_statuses as statuses
from tests.conftest import process_alive as alive


def running(campaign: Path):
    """(cell id, job pid) of the cell whose job runs, or None."""
    for cell_id, status in statuses(campaign).items():
        if status.get("state") == "running" and status.get("pid"):
            return cell_id, status["pid"]
    return None


@pytest.fixture
def host_lock(tmp_path, monkeypatch):
    """Each test its own host lock: other helpers' tests on this machine must not make ours wait."""
    path = tmp_path / "host.lock"
    monkeypatch.setenv("BENCHMARK_TRACKER_HOST_LOCK", str(path))
    return path


def start_cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_or_sighup_to_sweep_ends_it_like_ctrl_c(sweep_file, tmp_path, host_lock, sig, code):
    sweep = sweep_file(tiny_sweep("signalled", iterations=400))
    out = tmp_path / "results"
    campaign = out / "signalled"
    cli = start_cli("sweep", sweep, "--output", out)
    cell_id, pid = wait_for(lambda: running(campaign), what="a running cell")
    cli.send_signal(sig)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == code, err
    assert "rerun the same command to resume" in err
    [status] = statuses(campaign).values()  # the second cell never started
    assert status["state"] == "failed" and status["interrupted"] is True
    assert status["reason"] == f"interrupted: the sweep received {sig.name}"
    wait_for(lambda: not alive(pid), timeout=15, what="the job to end with its sweep")  # no orphan
    assert not (campaign / ".lock").read_text() and not host_lock.read_text()  # both locks released


def test_one_measurement_per_host(sweep_file, tmp_path, host_lock):
    out = tmp_path / "results"
    first = start_cli("sweep", sweep_file(tiny_sweep("first", phases="[inference]", iterations=1000)),
                      "--output", out)
    wait_for(lambda: running(out / "first"), what="the first campaign's cell")
    second = sweep_file(tiny_sweep("second", phases="[inference]"), "second.yaml")

    refused = run_cli("sweep", second, "--output", out, "--no-wait", timeout=120)
    assert refused.returncode == 2
    assert "this host is measuring another campaign" in refused.stderr and str(out / "first") in refused.stderr
    assert not statuses(out / "second")  # nothing ran

    waiting = start_cli("sweep", second, "--output", out)
    line = waiting.stderr.readline()
    while line and "waiting for this host's measurement lock" not in line:
        line = waiting.stderr.readline()
    assert f"held by campaign {out / 'first'}" in line
    assert not statuses(out / "second")  # still waiting: nothing started beside the first campaign
    waiting.send_signal(signal.SIGTERM)
    waiting.communicate(timeout=60)
    assert waiting.returncode == 143

    concurrent = run_cli("sweep", second, "--output", out, "--allow-concurrent", timeout=300)
    assert concurrent.returncode == 0, concurrent.stderr
    [status] = statuses(out / "second").values()
    assert status["state"] == "done" and status["shared_node"] is True
    [result] = (out / "second").glob("cells/*/result.json")
    assert json.loads(result.read_text())["shared_node"] is True
    run_cli("cancel", out / "first")
    first.communicate(timeout=60)


def test_a_local_job_whose_guard_died_is_retried_as_the_next_attempt(sweep_file, tmp_path, host_lock):
    sweep = sweep_file(tiny_sweep("retried", phases="[inference]", iterations=5) + "max_retries: 1\n")
    out = tmp_path / "results"
    campaign = out / "retried"
    cli = start_cli("sweep", sweep, "--output", out)
    cell_id, pid = wait_for(lambda: running(campaign), what="a running cell")
    guard = int(json.loads((campaign / "cells" / cell_id / "job.json").read_text())["job_id"].split("@")[0])
    os.kill(guard, signal.SIGKILL)  # the guard itself dies (an OOM killer's pick): no final status from it
    _, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    assert "retrying (its guard killed by SIGKILL before writing a final status), attempt 2 of 2" in err
    status = statuses(campaign)[cell_id]
    assert status["state"] == "done" and status["attempts"] == 2
    assert status["history"][-1]["reason"] == "its guard killed by SIGKILL before writing a final status"
    assert not alive(pid)  # the first attempt's measurement went with its guard
    folder = campaign / "cells" / cell_id
    assert json.loads((folder / "attempts" / "1" / "job.json").read_text())["job_id"] == f"{guard}@{os.uname()[1]}"
