"""The command line as a cluster user meets it: names for campaigns, status --json, Ctrl-C and `| head` end
quietly, a sweep's closing summary names the next command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from jobs.records import update_status
from orchestrator.cli import main, sweep_summary
from orchestrator.collect import collect
from orchestrator.matrix import expand
from orchestrator.spec import load_sweep
from orchestrator.store import Campaign
from tests.conftest import ROOT

SWEEP = "name: waitme\nmatrix:\n  tests: [mobilenet_v2]\n  phases: [inference]\ndefaults:\n  duration_s: 1\n"


def _campaign(tmp_path, state="running") -> Campaign:
    """A real campaign folder (frozen sweep, manifest, cells) whose one cell is in `state`."""
    (tmp_path / "s.yaml").write_text(SWEEP)
    spec = load_sweep(str(tmp_path / "s.yaml"))
    cells = expand(spec).cells
    campaign = Campaign(tmp_path / "results" / "waitme")
    campaign.root.mkdir(parents=True)
    campaign.freeze_sweep(spec.text)
    campaign.write_manifest("waitme", spec.text, "local", cells)
    for cell in cells:
        campaign.cell_dir(cell.id).mkdir(parents=True)
        update_status(campaign.cell_dir(cell.id), state, pid=os.getpid(), **(
            {"reason": "rapl: permission denied"} if state == "failed" else {}))
    return campaign


def _cli(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_ctrl_c_in_wait_ends_without_a_traceback(tmp_path):
    campaign = _campaign(tmp_path)
    with campaign.lock():  # a live sweep owns the running cell: wait follows it, judges nothing
        process = _cli("wait", "waitme", "--poll", "0.2", cwd=tmp_path)  # found as results/waitme
        time.sleep(4)
        assert process.poll() is None, process.communicate()
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err


def test_closed_pipe_ends_quietly():
    done = subprocess.run(f"{sys.executable} -m orchestrator.cli catalog --no-build | head -n 1", shell=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.startswith("id") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_status_json_and_verbose_by_name(tmp_path, monkeypatch, capsys):
    campaign = _campaign(tmp_path, state="failed")
    cell = next(campaign.cells_dir.iterdir())
    (cell / "result.json").write_text("{}")  # unreadable details never stop status
    monkeypatch.chdir(tmp_path)
    assert main(["status", "waitme", "--json"]) == 1  # a failed cell: 1, with or without --json
    overview = json.loads(capsys.readouterr().out)
    assert overview["total"] == 1 and overview["states"] == {"failed": 1}
    assert overview["node_types"] == {"local": {"failed": 1}}
    assert overview["failed"][0]["reason"] == "rapl: permission denied"
    assert main(["status", "waitme", "-v"]) == 1
    assert "rapl: permission denied" in capsys.readouterr().out
    assert main(["status", "nothere"]) == 2


def test_status_verbose_says_why_once(tmp_path, monkeypatch, capsys):
    campaign = _campaign(tmp_path, state="done")
    note = "rapl: no RAPL package zone is readable; fix: `sudo chmod -R a+r /sys/class/powercap/intel-rapl`"
    for cell in campaign.cells_dir.iterdir():
        (cell / "result.json").write_text(json.dumps({"status": "done", "energy": {"notes": [note]}}))
    monkeypatch.chdir(tmp_path)
    assert main(["status", "waitme", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.count("chmod -R a+r") == 1 and "note: rapl" in out


def test_sweep_summary_names_the_report_to_run(tmp_path):
    campaign = _campaign(tmp_path, state="failed")
    text = sweep_summary(collect(campaign.root), campaign.root)
    assert text.splitlines()[0] == "summary: 1 failed"
    assert text.splitlines()[-1] == f"next: benchmark-tracker report {campaign.root}"
