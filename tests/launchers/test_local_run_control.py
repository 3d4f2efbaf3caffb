"""Run control of local sweeps, with the real CLI, real job subprocesses and real tiny TensorFlow cells.

Each case is an observation of issue #10 that failed before the lifecycle was owned by the core:
cancel during a sweep, SIGTERM/SIGHUP to it, a sweep killed mid-cell, one measurement per host.
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


def test_cancel_stops_the_sweep_pending_cells_never_start_and_two_cancels_agree(sweep_file, tmp_path, host_lock):
    sweep = sweep_file(tiny_sweep("cancel", iterations=400))  # two cells; the first lasts long enough
    out = tmp_path / "results"
    campaign = out / "cancel"
    cli = start_cli("sweep", sweep, "--output", out)
    first, pid = wait_for(lambda: running(campaign), what="a running cell")
    cancels = [start_cli("cancel", campaign) for _ in range(2)]  # two at once
    answers = [c.communicate(timeout=60) for c in cancels]
    assert [c.returncode for c in cancels] == [0, 0], answers
    counts = sorted(int(a[0].split()[1]) for a in answers)
    assert counts == [0, 2], answers  # the second waited for the first, then found nothing open
    _, err = cli.communicate(timeout=120)
    assert cli.returncode == 1, err  # its cells failed (cancelled)
    assert "cancelled; rerun the same command to resume" in err
    final = statuses(campaign)
    assert len(final) == 2
    for cell_id, status in final.items():
        assert status["state"] == "failed" and status["reason"] == "cancelled by the user", status
        assert status["cancelled"] is True
    other = next(c for c in final if c != first)
    assert "running_at" not in final[other] and "submitted_at" not in final[other]  # never started
    assert not (campaign / "cells" / other / "job.log").exists()
    wait_for(lambda: not alive(pid), timeout=15, what="the cancelled job to end")
    assert run_cli("status", campaign).returncode == 1  # the campaign has failed cells


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


def test_rerun_after_sweep_was_killed_stops_the_orphan_and_records_every_attempt(sweep_file, tmp_path, host_lock):
    sweep = sweep_file(tiny_sweep("orphan", phases="[inference]", iterations=400))
    out = tmp_path / "results"
    campaign = out / "orphan"
    cli = start_cli("sweep", sweep, "--output", out)
    cell_id, orphan = wait_for(lambda: running(campaign), what="a running cell")
    cli.kill()  # SIGKILL: no handler runs; the job (its own session) is left running alone
    cli.communicate(timeout=30)
    assert alive(orphan)
    quick = sweep_file(tiny_sweep("orphan", phases="[inference]", iterations=400), "same.yaml")
    rerun = start_cli("sweep", quick, "--output", out)
    cell, new_pid = wait_for(lambda: (lambda r: r if r and r[1] != orphan else None)(running(campaign)),
                             what="the rerun's job")
    assert not alive(orphan)  # never two measured jobs of one cell at once
    rerun.send_signal(signal.SIGINT)
    _, err = rerun.communicate(timeout=60)
    assert "still runs; stopping it" in err
    status = statuses(campaign)[cell_id]
    assert status["attempts"] == 2
    assert status["history"][-1]["reason"].startswith("its sweep was killed; the job left running")
    folder = campaign / "cells" / cell_id  # one job record per attempt, the earlier ones set aside
    assert json.loads((folder / "attempts" / "1" / "job.json").read_text())["attempt"] == 1
    assert json.loads((folder / "job.json").read_text())["attempt"] == 2


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


def test_a_job_whose_sweep_was_killed_keeps_its_timeout_through_its_guard(sweep_file, tmp_path, host_lock):
    sweep = sweep_file(tiny_sweep("guarded", phases="[inference]", iterations=100000, timeout=25))
    out = tmp_path / "results"
    campaign = out / "guarded"
    cli = start_cli("sweep", sweep, "--output", out)
    cell_id, pid = wait_for(lambda: running(campaign), what="a running cell")
    cli.kill()  # SIGKILL: nothing in the sweep runs; the guard on the node still owns the job
    cli.communicate(timeout=30)
    # The job's own "failed" (SIGTERM) comes first; the guard's final status, written last, says why.
    status = wait_for(lambda: (lambda s: s if s.get("exit_code") is not None else None)(statuses(campaign)[cell_id]),
                      timeout=120, what="the guard's final status")
    assert status.get("timed_out") is True, status
    assert status["reason"].startswith("timed out after 25 s")
    assert not alive(pid)


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
