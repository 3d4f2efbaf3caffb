"""The core's rules, the same for every launcher: retries with counted attempts, one job record per attempt,
the current attempt only, one grace rule, one scheduler-down rule, cancel.

What is under test is orchestrator/lifecycle.py's policy, so the launcher is a small adapter of this file
that answers `query` with what the test says (no scheduler is imitated: its job states are plain values).
The launchers' own answers are tested on recorded outputs (test_slurm_recorded, test_grid5000) and live.
"""
from __future__ import annotations

import json

import pytest

from jobs.records import read_status
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import JobState, Launcher, QueryFailed
from orchestrator.matrix import expand
from orchestrator.spec import parse_sweep
from orchestrator.store import Campaign
from tests.conftest import tiny_sweep


class Adapter(Launcher):
    name = "adapter"

    def __init__(self, spec, options=None):
        super().__init__(spec, options)
        self.states, self.submitted, self.cancelled, self.down = {}, [], [], False

    def check(self, cells):
        pass

    def submit(self, campaign, cells, progress):
        out = {}
        for cell in cells:
            lifecycle.mark_submitted(campaign.cell_dir(cell.id), launcher=self.name,
                                     attempts=campaign.status(cell.id).get("attempts", 0) + 1)
            out[cell.id] = f"job{len(self.submitted)}"
            self.submitted.append(out[cell.id])
            self.states[out[cell.id]] = JobState(alive=True)
        return out

    def query(self, campaign, job_ids):
        if self.down:
            raise QueryFailed("adapter-stat failed (no answer in 2 s)")
        return {j: self.states[j] for j in job_ids if j in self.states}

    def cancel(self, campaign, job_ids):
        self.cancelled += job_ids
        for job_id in job_ids:
            self.states[job_id] = JobState(alive=False)


class Quiet:
    stream = None


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "GRACE_S", 0.0)
    text = tiny_sweep("core", phases="[inference]") + "max_retries: 1\n"
    spec = parse_sweep(text, tmp_path / "sweep.yaml")
    [cell] = expand(spec).cells
    campaign = Campaign(tmp_path / "out" / "core")
    campaign.write_cell(cell, {})
    return Adapter(spec), campaign, cell


def job_record(campaign, cell, attempt=None):
    folder = campaign.cell_dir(cell.id) if attempt is None else campaign.cell_dir(cell.id) / "attempts" / str(attempt)
    return json.loads((folder / "job.json").read_text())


def test_a_retryable_failure_is_retried_up_to_max_retries_each_attempt_with_its_job_record(setup):
    launcher, campaign, cell = setup
    assert lifecycle.launch(campaign, launcher, [cell], Quiet()) == 1
    assert job_record(campaign, cell) == {**job_record(campaign, cell), "attempt": 1, "job_id": "job0"}
    launcher.states["job0"] = JobState(alive=False, reason="node failure (node n1)", retryable=True)
    lifecycle.refresh(campaign, launcher, [cell])  # nobody holds the campaign: the core resubmits at once
    status = read_status(campaign.cell_dir(cell.id))
    assert status["state"] == "submitted" and status["attempts"] == 2 and launcher.submitted == ["job0", "job1"]
    assert status["history"][-1]["reason"] == "node failure (node n1)"
    assert job_record(campaign, cell, attempt=1)["job_id"] == "job0"  # every attempt's job is kept
    assert job_record(campaign, cell)["job_id"] == "job1" and job_record(campaign, cell)["attempt"] == 2
    launcher.states["job1"] = JobState(alive=False, reason="node failure (node n2)", retryable=True)
    lifecycle.refresh(campaign, launcher, [cell])
    status = read_status(campaign.cell_dir(cell.id))  # max_retries: 1 spent
    assert status["state"] == "failed" and status["reason"] == "node failure (node n2)"
    assert launcher.submitted == ["job0", "job1"]


def test_the_cells_own_failure_is_not_retried(setup):
    launcher, campaign, cell = setup
    lifecycle.launch(campaign, launcher, [cell], Quiet())
    launcher.states["job0"] = JobState(alive=False, reason="out of memory", fields={"slurm_state": "OUT_OF_MEMORY"})
    lifecycle.refresh(campaign, launcher, [cell])
    status = read_status(campaign.cell_dir(cell.id))
    assert status["state"] == "failed" and status["slurm_state"] == "OUT_OF_MEMORY" and launcher.submitted == ["job0"]


def test_only_the_current_attempts_job_is_judged_and_a_job_just_gone_gets_its_grace(setup, monkeypatch):
    launcher, campaign, cell = setup
    lifecycle.launch(campaign, launcher, [cell], Quiet())
    launcher.states["job0"] = JobState(alive=False, reason="ended")
    # A new attempt was marked (a sweep --force is submitting it) but its job is not recorded yet:
    # the previous attempt's job (ended) must not decide the new attempt's fate.
    lifecycle.mark_submitted(campaign.cell_dir(cell.id), launcher="adapter", attempts=2)
    with campaign.lock():  # the sweep that is submitting it
        lifecycle.refresh(campaign, launcher, [cell])
    assert read_status(campaign.cell_dir(cell.id))["state"] == "submitted"
    campaign.set_aside_outputs(cell.id, 1)
    lifecycle.record_job(campaign, cell.id, launcher, "job9")
    monkeypatch.setattr(lifecycle, "GRACE_S", 3600.0)
    lifecycle.refresh(campaign, launcher, [cell])  # job9 unknown, but its cell spoke just now: not judged
    assert read_status(campaign.cell_dir(cell.id))["state"] == "submitted"
    monkeypatch.setattr(lifecycle, "GRACE_S", 0.0)
    lifecycle.refresh(campaign, launcher, [cell], retry=False)
    status = read_status(campaign.cell_dir(cell.id))
    assert status["state"] == "failed" and status["job_id"] == "job9"
    assert status["reason"] == "its job job9 left adapter without a final status, and adapter has no record of how " \
                               "it ended"


def test_an_unanswered_query_judges_nothing_until_the_scheduler_is_down_for_good(setup, capsys):
    launcher, campaign, cell = setup
    lifecycle.launch(campaign, launcher, [cell], Quiet())
    launcher.states["job0"] = JobState(alive=False, reason="ended")
    launcher.down = True
    lifecycle.refresh(campaign, launcher, [cell])
    assert read_status(campaign.cell_dir(cell.id))["state"] == "submitted"
    assert "warning: adapter-stat failed (no answer in 2 s); cell states not refreshed" in capsys.readouterr().err
    launcher.unanswered_since -= lifecycle.SCHEDULER_DOWN_LIMIT_S
    with pytest.raises(UserError, match="adapter has not answered for 60[0-9] s"):
        lifecycle.refresh(campaign, launcher, [cell])


def test_cancel_stops_the_jobs_then_records_the_users_reason(setup):
    launcher, campaign, cell = setup
    lifecycle.launch(campaign, launcher, [cell], Quiet())
    assert lifecycle.cancel(campaign, launcher, [cell]) == 1
    assert launcher.cancelled == ["job0"]
    status = read_status(campaign.cell_dir(cell.id))
    assert status["reason"] == "cancelled by the user" and status["cancelled"] and status["job_id"] == "job0"
    assert lifecycle.cancel(campaign, launcher, [cell]) == 0  # nothing left open
