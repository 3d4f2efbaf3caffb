"""A scheduler that does not answer: the campaign stops submitting at the first unanswered command.

The hanging `oarsub` is a script that sleeps: what an unreachable server looks like from the client (no
output to imitate). The command bound is shortened for the test (BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import ROOT, tiny_sweep


def test_oar_unreachable_stops_at_the_first_batch_and_never_claims_a_submission(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hang = bin_dir / "oarsub"
    hang.write_text("#!/bin/sh\nexec sleep 300\n")
    hang.chmod(0o755)
    sweep = tmp_path / "oar.yaml"
    sweep.write_text(tiny_sweep("down", node_type="grele", launcher="oar", timeout=3600, repetitions=5))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}",
               BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S="2")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", str(sweep), "--output",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "OAR is unreachable: oarsub gave no answer in 2 s" in done.stderr
    assert "submitted" not in done.stdout  # 0 submissions are never reported as some
    assert "0 of 2 cell(s) were submitted before; none after" in done.stderr, done.stderr  # round 0: 2 cells
    assert elapsed < 40  # one bounded wait for the whole campaign, not 2 s per cell
    states = [json.loads(p.read_text()) for p in (tmp_path / "out" / "down").glob("cells/*/status.json")]
    assert len(states) == 2  # the first batch; the eight cells of the next rounds were never tried
    assert all(s["state"] == "failed" and s["interrupted"] and s["reason"].startswith("not submitted: oarsub gave "
                                                                                      "no answer") for s in states)


def test_a_hung_squeue_is_bounded_reported_and_judges_nothing(tmp_path):
    from orchestrator.lifecycle import write_submitted
    from orchestrator.matrix import expand
    from orchestrator.spec import parse_sweep
    from orchestrator.store import Campaign
    from jobs.records import atomic_write_json, now_iso

    catalog = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"
    os.environ["BENCHMARK_TRACKER_NODE_TYPES"] = str(catalog)
    try:
        text = tiny_sweep("hung", phases="[inference]", node_type="slurm-local", launcher="slurm")
        spec = parse_sweep(text, tmp_path / "sweep.yaml")
        [cell] = expand(spec).cells
    finally:
        del os.environ["BENCHMARK_TRACKER_NODE_TYPES"]
    campaign = Campaign(tmp_path / "out" / "hung")  # a campaign as `sweep` leaves it after one submission
    campaign.root.mkdir(parents=True)
    campaign.freeze_sweep(text)
    campaign.write_manifest("hung", text, "slurm", [cell])
    campaign.write_cell(cell, {})
    write_submitted(campaign.cell_dir(cell.id), {}, now_iso(), attempts=1, launcher="slurm", submission="tok")
    (campaign.root / "slurm" / "submissions").mkdir(parents=True)
    atomic_write_json(campaign.root / "slurm" / "submissions" / "tok.json",
                      {"token": "tok", "job_name": "bt-tok", "state": "submitted", "job_id": "4242",
                       "cells": [cell.id], "created": time.time()})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nexec sleep 300\n")
    (bin_dir / "squeue").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}",
               BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S="2", BENCHMARK_TRACKER_NODE_TYPES=str(catalog))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(campaign.root)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert time.monotonic() - started < 30
    assert done.returncode == 0, done.stderr
    assert "warning: squeue failed (squeue: no answer in 2 s); cell states not refreshed" in done.stderr
    assert done.stdout.strip() == "slurm-local: 1 submitted"  # not judged on a query that got no answer


def test_a_hung_sbatch_is_bounded_reported_and_its_cells_resume(tmp_path):
    # sbatch answers --test-only (the check before anything is written), then hangs on the real submission.
    catalog = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": 'case "$1" in --test-only) echo "sbatch: Job 1 to start at now" >&2; exit 0;; esac\n'
                         "exec sleep 300\n",
               "srun": "exit 0\n", "scontrol": "echo 'MaxArraySize = 1001'\n",
               "squeue": "exit 0\n", "sacct": "exit 0\n"}  # nothing of that name reached Slurm
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    sweep = tmp_path / "slurm.yaml"
    sweep.write_text(tiny_sweep("hungsbatch", phases="[inference]", node_type="slurm-local", launcher="slurm"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}:{os.environ['PATH']}",
               BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S="2", BENCHMARK_TRACKER_NODE_TYPES=str(catalog))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=120, env=env, cwd=ROOT)

    started = time.monotonic()
    done = cli("sweep", sweep, "--output", tmp_path / "out")
    assert time.monotonic() - started < 40
    assert done.returncode == 1, done.stderr
    assert "Slurm is unreachable: sbatch gave no answer in 2 s" in done.stderr and "Traceback" not in done.stderr
    assert "submitted" not in done.stdout
    campaign = tmp_path / "out" / "hungsbatch"
    status = cli("status", "-v", campaign)  # the submission never reached Slurm: its cell resumes
    assert status.returncode == 1, status.stderr
    assert "its submission was interrupted before it reached slurm" in status.stdout
    [state] = [json.loads(p.read_text()) for p in campaign.glob("cells/*/status.json")]
    assert state["state"] == "failed" and state["interrupted"] is True  # a plain rerun submits it again
