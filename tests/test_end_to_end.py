"""The real command line, local launcher, job subprocesses, TensorFlow and codecarbon, end to end.

Each cell is a real MobileNet-V2 at its smallest input: about 10 s per job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import ROOT, run_cli, tiny_sweep, wait_for
from tests.conftest import process_alive as _alive


def running_pid(campaign: Path):
    for status_file in campaign.glob("cells/*/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            continue
        if status.get("state") == "running" and status.get("pid"):
            return status["pid"]
    return None


def statuses(campaign: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted(campaign.glob("cells/*/status.json"))]


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sweep_to_table_and_resume(sweep_file, tmp_path):
    sweep = sweep_file(tiny_sweep("e2e"))
    out = tmp_path / "results"
    first = run_cli("sweep", sweep, "--output", "results", cwd=tmp_path)  # relative, as users write it
    assert first.returncode == 0, first.stderr
    campaign = out / "e2e"
    table = pd.read_csv(campaign / "results.csv")
    assert len(table) == 2 and set(table["state"]) == {"done"}
    assert set(table["phase"]) == {"inference", "training"}
    assert (table["throughput_samples_per_s"] > 0).all() and (table["iterations_measured"] == 3).all()
    assert (table["energy_total_j"] > 0).all()
    assert set(table["energy_ram_source"]) == {"codecarbon-ram-model"}
    assert set(table["energy_kind"]) == {"estimated"}
    assert (table["co2_g"] - table["energy_total_j"] / 3.6e6 * 1.5 * 50).abs().max() < 1e-12
    summary = pd.read_csv(campaign / "summary.csv")
    assert len(summary) == 2 and set(summary["n"]) == {1}
    for cell in campaign.glob("cells/*"):
        assert {"cell.json", "status.json", "result.json", "emissions.csv", "job.log"} <= {
            p.name for p in cell.iterdir()}
        # Why the number is weak (a 3-iteration window; no RAPL here) is said in the job's own log too.
        assert "[job] note: " in (cell / "job.log").read_text()
    assert (campaign / "sweep.yaml").read_text() == sweep.read_text()
    manifest = json.loads((campaign / "manifest.json").read_text())
    assert sorted(c["id"] for c in manifest["cells"]) == sorted(table["cell_id"])
    assert "done 2" in first.stderr and "running mobilenet_v2" in first.stderr

    again = run_cli("sweep", sweep, "--output", "results", cwd=tmp_path)
    assert again.returncode == 0
    assert "2 done and 0 failed cells skipped" in again.stderr
    assert all(s["attempts"] == 1 for s in statuses(campaign))

    status = run_cli("status", campaign)
    assert status.stdout.strip() == "local: 2 done" and status.returncode == 0

    # --force: while it runs, status and wait see the attempt under way, never the previous result.
    forced = start_cli("sweep", sweep, "--output", out, "--force")
    wait_for(lambda: running_pid(campaign))
    during = run_cli("status", campaign)
    assert "done" not in during.stdout and "1 running" in during.stdout and "1 pending" in during.stdout, during
    assert run_cli("wait", campaign, "--poll", "0.2", "--timeout", "1").returncode == 3  # still measuring
    _, err = forced.communicate(timeout=300)
    assert forced.returncode == 0, err
    for s in statuses(campaign):
        assert s["state"] == "done" and s["attempts"] == 2 and s["history"][-1]["state"] == "done"
    assert all((c / "attempts" / "1" / "result.json").exists() for c in campaign.glob("cells/*"))


def test_ctrl_c_leaves_a_consistent_campaign_that_resumes(sweep_file, tmp_path):
    sweep = sweep_file(tiny_sweep("interrupt"))
    out = tmp_path / "results"
    cli = start_cli("sweep", sweep, "--output", out)
    job_pid = wait_for(lambda: running_pid(out / "interrupt"))
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=60)
    assert cli.returncode == 130 and "rerun the same command to resume" in err
    states = sorted(s["state"] for s in statuses(out / "interrupt"))
    assert states == ["failed"]  # the second cell was never started
    assert statuses(out / "interrupt")[0]["interrupted"] is True
    wait_for(lambda: not _alive(job_pid), timeout=15)  # the job did not outlive the sweep
    assert not (out / "interrupt" / ".lock").read_text()  # lock released

    resumed = run_cli("sweep", sweep, "--output", out)  # no flag needed after an interruption
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(s["state"] for s in statuses(out / "interrupt")) == ["done", "done"]
