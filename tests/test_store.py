"""Campaign store: atomic writes, status history, lock, frozen sweep, resume selection."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jobs.records import atomic_write_json, read_status, update_status
from orchestrator.errors import UserError
from orchestrator.matrix import Cell
from orchestrator.store import Campaign
from orchestrator.sweep import select_cells


def test_atomic_write_replaces_whole_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_atomic_write_keeps_the_previous_version(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"good": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {1j: 1})  # complex keys are not JSON
    assert json.loads(path.read_text()) == {"good": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_status_transitions_keep_history_of_attempts(tmp_path):
    assert read_status(tmp_path) == {"state": "pending", "attempts": 0}
    update_status(tmp_path, "submitted", attempts=1)
    update_status(tmp_path, "running", pid=123)
    update_status(tmp_path, "failed", reason="boom")
    status = update_status(tmp_path, "submitted", attempts=2)
    assert status["state"] == "submitted" and status["attempts"] == 2
    assert "pid" not in status and "reason" not in status  # per-attempt fields start clean
    assert status["history"][0]["state"] == "failed" and status["history"][0]["reason"] == "boom"
    status = update_status(tmp_path, "done")
    assert "reason" not in status and status["done_at"]
    with pytest.raises(ValueError):
        update_status(tmp_path, "finished")


def test_lock_refuses_a_second_writer_even_from_another_process(tmp_path):
    campaign = Campaign(tmp_path / "c")
    with campaign.lock():
        with pytest.raises(UserError, match="is in use by pid"):
            with Campaign(tmp_path / "c").lock():
                pass
        code = textwrap.dedent(f"""
            from orchestrator.store import Campaign
            from orchestrator.errors import UserError
            try:
                with Campaign({str(tmp_path / 'c')!r}).lock():
                    print("acquired")
            except UserError as exc:
                print("refused", exc)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        assert out.startswith("refused") and f"pid {os.getpid()}" in out
    with campaign.lock():  # released on exit
        pass


def test_frozen_sweep_keeps_earlier_versions(tmp_path):
    campaign = Campaign(tmp_path / "c")
    campaign.root.mkdir()
    campaign.freeze_sweep("name: a\n")
    campaign.freeze_sweep("name: a\n")
    assert sorted(p.name for p in campaign.root.iterdir()) == ["sweep.yaml"]
    campaign.freeze_sweep("name: a\n# changed\n")
    names = sorted(p.name for p in campaign.root.iterdir())
    assert len(names) == 2 and (campaign.root / "sweep.yaml").read_text().endswith("# changed\n")


def test_outputs_of_an_earlier_attempt_are_set_aside(tmp_path):
    campaign = Campaign(tmp_path / "c")
    folder = campaign.cell_dir("abc")
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    (folder / "job.log").write_text("old log")
    campaign.set_aside_outputs("abc", 1)
    assert not (folder / "result.json").exists()
    assert (folder / "attempts" / "1" / "job.log").read_text() == "old log"


def test_resume_selection(tmp_path):
    campaign = Campaign(tmp_path / "c")
    cells = [Cell(name, {}) for name in ("done", "failed", "interrupted", "stale", "new")]
    for name, state, extra in [("done", "done", {}), ("failed", "failed", {"reason": "x"}),
                               ("interrupted", "failed", {"interrupted": True}), ("stale", "running", {})]:
        campaign.cell_dir(name).mkdir(parents=True)
        update_status(campaign.cell_dir(name), state, **extra)

    def chosen(**flags):
        todo, done, failed = select_cells(campaign, cells, **flags)
        return [c.id for c in todo], done, failed

    assert chosen(rerun_failed=False, force=False) == (["interrupted", "stale", "new"], 1, 1)
    assert chosen(rerun_failed=True, force=False) == (["failed", "interrupted", "stale", "new"], 1, 0)
    assert chosen(rerun_failed=False, force=True) == ([c.id for c in cells], 0, 0)


def test_manifest_missing_or_corrupt_is_a_user_error(tmp_path):
    campaign = Campaign(tmp_path / "c")
    with pytest.raises(UserError, match="no campaign"):
        campaign.manifest()
    campaign.root.mkdir()
    (campaign.root / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        campaign.manifest()


def test_write_phase_is_for_progress_only_and_never_touches_the_status(tmp_path):
    from jobs.records import PHASES, read_phase, write_phase

    update_status(tmp_path, "running", pid=1)
    before = (tmp_path / "status.json").read_text()
    assert read_phase(tmp_path) is None
    for phase in PHASES:
        write_phase(tmp_path, phase)
        record = read_phase(tmp_path)
        assert record["phase"] == phase and record["at"]
    assert (tmp_path / "status.json").read_text() == before
    with pytest.raises(ValueError, match="unknown phase 'measure'"):
        write_phase(tmp_path, "measure")
