"""The Slurm launcher's refresh against fakes replaying outputs recorded from the real one-node Slurm
(tests/data/slurm: `sacct -n -X -P -o JobID,State,ExitCode,NodeList`, squeue's answer for ids it no longer
knows). Each case: a job gone without a final status is failed with Slurm's reason; a live one is left alone.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jobs.records import atomic_write_json, now_iso, read_status
from orchestrator import follow
from orchestrator.lifecycle import write_submitted
from orchestrator.matrix import expand
from orchestrator.spec import parse_sweep
from orchestrator.store import Campaign
from tests.conftest import ROOT, tiny_sweep

DATA = ROOT / "tests" / "data" / "slurm"
CATALOG = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"


def slurm_campaign(root: Path, job_ids: list) -> tuple:
    """A campaign as `sweep` leaves it: one submitted cell per job id, each with its submission record."""
    text = tiny_sweep("recorded", phases="[inference]", node_type="slurm-local", launcher="slurm",
                      repetitions=len(job_ids))
    spec = parse_sweep(text, root / "sweep.yaml")
    cells = expand(spec).cells
    campaign = Campaign(root / "out" / "recorded")
    campaign.root.mkdir(parents=True)
    campaign.freeze_sweep(text)
    campaign.write_manifest("recorded", text, "slurm", cells)
    (campaign.root / "slurm" / "submissions").mkdir(parents=True)
    long_ago = "2026-01-01T00:00:00+00:00"  # past the grace period for jobs Slurm has no record of
    for cell, job_id in zip(cells, job_ids):
        campaign.write_cell(cell, {})
        token = f"tok{job_id}"
        write_submitted(campaign.cell_dir(cell.id), {}, long_ago, attempts=1, launcher="slurm", submission=token)
        atomic_write_json(campaign.root / "slurm" / "submissions" / f"{token}.json",
                          {"token": token, "job_name": f"bt-{token}", "state": "submitted", "job_id": job_id,
                           "cells": [cell.id], "created": time.time() - 3600})
    return campaign, dict(zip(job_ids, cells))


def fake(bin_dir: Path, name: str, stdout: Path | None = None, stderr: Path | None = None, rc: int = 0,
         text: str | None = None) -> None:
    body = "#!/bin/sh\n"
    if text is not None:
        body += f"printf '%s\\n' '{text}'\n"
    if stdout is not None:
        body += f"cat '{stdout}'\n"
    if stderr is not None:
        body += f"cat '{stderr}' >&2\n"
    (bin_dir / name).write_text(body + f"exit {rc}\n")
    (bin_dir / name).chmod(0o755)


@pytest.fixture
def slurm_fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(CATALOG))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    fake(bin_dir, "scontrol", text="MaxArraySize = 1001")
    return bin_dir


def test_jobs_gone_without_a_final_status_get_slurms_reason(tmp_path, slurm_fakes):
    # squeue no longer knows them (its recorded error), sacct says how each ended (recorded).
    fake(slurm_fakes, "squeue", stderr=DATA / "squeue-invalid.stderr", rc=1)
    fake(slurm_fakes, "sacct", stdout=DATA / "sacct-X-P-JobID,State,ExitCode,NodeList.txt")
    campaign, cells = slurm_campaign(tmp_path, ["2", "7", "9", "28", "43"])
    follow.refresh(campaign)
    reasons = {job: read_status(campaign.cell_dir(cell.id)) for job, cell in cells.items()}
    assert all(s["state"] == "failed" for s in reasons.values())
    assert reasons["2"]["reason"] == "cancelled (scancel) before writing a result" and reasons["2"]["cancelled"]
    assert reasons["7"]["reason"] == "the job failed before writing a result (exit code 3:0)"
    assert reasons["9"]["reason"].startswith("timeout: over its Slurm time limit") and reasons["9"]["timed_out"]
    assert reasons["28"]["reason"] == "node failure: the node stopped responding while the job ran (node vm)"
    assert reasons["43"]["reason"] == "the job ended without writing a final status"  # a silent death


def test_a_live_job_is_left_alone_and_an_unanswered_query_judges_nothing(tmp_path, slurm_fakes):
    fake(slurm_fakes, "squeue", text="43|RUNNING")  # the format recorded in tests/data/slurm
    fake(slurm_fakes, "sacct", stdout=DATA / "sacct-X-P-JobID,State,ExitCode,NodeList.txt")
    campaign, cells = slurm_campaign(tmp_path, ["43"])
    follow.refresh(campaign)
    assert read_status(campaign.cell_dir(cells["43"].id))["state"] == "submitted"
    down = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    fake(slurm_fakes, "squeue", text=down, rc=1)
    follow.refresh(campaign)
    assert read_status(campaign.cell_dir(cells["43"].id))["state"] == "submitted"
