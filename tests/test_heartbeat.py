"""A host that dies whole (power, kernel panic, network cut) leaves no process to announce its rank's failure:
the ranks' guards beat in the cell folder and the rank watching a silent one announces it lost (#15).

The ranks are test_scaling_oar's: two real guards (rank 0 told its peers by the task environment, rank 1 with its
scheduler worker record), each over a stand-in worker that sits in a "collective" (a shell sleeping, which one
rank's ignores SIGTERM, as TensorFlow's and gloo's waits do). A host dying whole is its guard and its worker
SIGKILLed together. The guards' own timeout is 120 s: on code without a heartbeat the surviving rank waits for it,
past these tests' bounded waits. The heartbeat timeout is lowered to 1-2 s through its setting.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from jobs import workers
from jobs.records import CELL_FILE, atomic_write_json, read_json, read_status
from tests import test_scaling_oar
from tests.test_scaling_oar import _cell, _ranks
from tests.test_scaling_workers import _leftovers


def _beats(cell: Path, rank: int, job: str = "77") -> int:
    """The counter of rank's heartbeat in this job (0 before its first)."""
    try:
        record = read_json(cell / "workers" / f"heartbeat-{rank}.json")
    except (OSError, ValueError):
        return 0
    return record.get("beat", 0) if str(record.get("job")) == job else 0


def _wait_for(condition, what: str, bound_s: float = 60) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _stale(cell: Path) -> Path:
    """What an earlier job (76) of this cell left in its folder: both ranks' heartbeats, one ended, and its stop."""
    (cell / "workers").mkdir(exist_ok=True)
    atomic_write_json(cell / "workers" / "heartbeat-0.json", {"job": "76", "worker": 0, "host": "old", "beat": 9})
    atomic_write_json(cell / "workers" / "heartbeat-1.json",
                      {"job": "76", "worker": 1, "host": "old", "beat": 9, "ended": True})
    atomic_write_json(cell / "workers" / workers.STOP_FILE,
                      {"job": "76", "worker": 1, "host": "old", "reason": "an old failure", "cause": "failed"})
    return cell


@pytest.mark.parametrize("dies, watcher, host", [(1, 0, "hostB"), (0, 1, "hostA")])  # rank 0's host may be the one
def test_a_host_dying_whole_stops_the_other_rank_with_no_heartbeat_as_the_reason(tmp_path, monkeypatch, dies,
                                                                                 watcher, host):
    monkeypatch.setenv(workers.HEARTBEAT_ENV, "2")
    cell, rank1, guards = _ranks(tmp_path, stuck=watcher)  # the survivor's worker ignores SIGTERM (a collective)
    folders = [cell, rank1]
    try:
        _wait_for(lambda: _beats(cell, dies) >= 4, f"rank {dies}'s beats")  # beaten: the watcher has seen it live
        for pid in (guards[dies].pid, int((folders[dies] / "pid").read_text())):  # no process left to say a word
            os.kill(pid, 9)
        code = guards[watcher].wait(timeout=60)  # well under the guards' 120 s timeout
    finally:
        for g in guards:
            g.kill()
            g.wait()
    assert code == 1
    status = read_status(folders[watcher])
    assert status["state"] == "failed" and status.get("timed_out") is None
    assert status["stopped_by_worker"] == dies and status["stop_cause"] == "no heartbeat"
    assert status["reason"].startswith(f"stopped: worker {dies} on host {host}: no heartbeat ")
    assert "host down or unreachable" in status["reason"]
    stop = read_json(cell / "workers" / workers.STOP_FILE)  # announced for every rank, by the one that saw it
    assert (stop["job"], stop["worker"], stop["host"], stop["by"]) == ("77", dies, host, watcher)
    assert read_status(folders[dies])["state"] == "running"  # the dead host wrote nothing
    assert not _leftovers(tmp_path)


def test_an_earlier_jobs_heartbeats_count_as_none(tmp_path):
    """Rank 1 of job 77 never starts; job 76's beats in the folder are not its: neither its ended record (that
    would leave rank 1 unwatched) nor its counter (that would count as beaten, and call it silent, not absent)."""
    cell = _cell(tmp_path / "cell", 3)
    records = workers.task_workers(3, ["hostA", "hostB", "hostC"], 1, "77")
    context = workers.peer_context(cell, read_json(cell / CELL_FILE), {workers.TASKS_ENV: json.dumps(records)})
    _stale(cell)
    atomic_write_json(cell / "workers" / "heartbeat-2.json", {"job": "76", "worker": 2, "host": "old", "beat": 9})
    heartbeat = workers.Heartbeat(context, 1.0)
    found = []
    _wait_for(lambda: found.append(heartbeat.lost()) or found[-1], "a rank declared lost", 30)
    stop = found[-1]
    assert (stop["job"], stop["worker"], stop["host"], stop["cause"]) == ("77", 1, "hostB", "no heartbeat")
    assert stop["reason"] == ("worker 1 on host hostB: no heartbeat in its first 2 s (its task did not start, "
                              "or its host is down or unreachable)")
    assert read_json(cell / "workers" / workers.STOP_FILE) == stop  # job 76's announcement did not stand in its way


def test_a_slow_live_rank_is_not_declared_lost(tmp_path, monkeypatch):
    """Both workers sit still for many heartbeat timeouts (a slow step), with an earlier job's files around:
    nobody is declared lost; the rank that then fails is the one that stops the other."""
    monkeypatch.setenv(workers.HEARTBEAT_ENV, "1")
    monkeypatch.setattr(test_scaling_oar, "_cell", lambda folder, nodes: _stale(_cell(folder, nodes)))
    cell, rank1, guards = _ranks(tmp_path, stuck=1)  # job 77's ranks start in job 76's folder
    try:
        # Past the start-up grace (2 s) and several timeouts, by both ranks' counters (every 0.25 s)
        _wait_for(lambda: min(_beats(cell, 0), _beats(cell, 1)) >= 16, "both ranks' beats")
        assert all(g.poll() is None for g in guards)
        assert read_json(cell / "workers" / workers.STOP_FILE)["job"] == "76"
        os.kill(int((rank1 / "pid").read_text()), 9)  # only the worker: its guard, alive, says so
        codes = [g.wait(timeout=60) for g in guards]
    finally:
        for g in guards:
            g.kill()
            g.wait()
    assert codes == [1, 1]
    status = read_status(cell)
    assert status["stop_cause"] == "failed" and status["stopped_by_worker"] == 1
    assert status["reason"].startswith("stopped: worker 1 on hostB failed mid-window: ")
    assert read_json(cell / "workers" / "heartbeat-1.json")["ended"] is True  # its guard's last beat
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("value", ["abc", "0", "0.5", "-3", "nan", "inf"])
def test_a_bad_heartbeat_timeout_is_refused_naming_the_setting(value):
    with pytest.raises(ValueError) as error:
        workers.heartbeat_timeout({workers.HEARTBEAT_ENV: value})
    assert f"{workers.HEARTBEAT_ENV}={value!r} is not a number of seconds >= 1" in str(error.value)
    assert workers.heartbeat_timeout({}) == 60 and workers.heartbeat_timeout({workers.HEARTBEAT_ENV: "2.5"}) == 2.5


def test_a_bad_setting_fails_the_cell_before_its_worker_starts_and_stops_the_other_ranks(tmp_path):
    cell = _cell(tmp_path / "cell", 2)
    records = workers.task_workers(2, ["hostA", "hostB"], 1, "77")
    env = dict(os.environ, PYTHONPATH=str(test_scaling_oar.ROOT), **{workers.TASKS_ENV: json.dumps(records),
                                                                     workers.HEARTBEAT_ENV: "soon"})
    never = tmp_path / "worker"  # would leave its pid if it ran
    never.write_text(f"#!/bin/sh\necho $$ > {tmp_path / 'pid'}\n")
    never.chmod(0o755)
    assert test_scaling_oar._guard(cell, never, env).wait(timeout=60) == 1
    status = read_status(cell)
    assert status["state"] == "failed" and status["reason"].startswith(f"{workers.HEARTBEAT_ENV}='soon' is not")
    stop = read_json(cell / "workers" / workers.STOP_FILE)
    assert (stop["job"], stop["worker"], stop["cause"]) == ("77", 0, "failed") and "'soon'" in stop["reason"]
    assert not (tmp_path / "pid").exists()
    # and OAR's remote ranks get the setting rank 0 has (Slurm's tasks inherit the whole environment)
    remote = workers.remote_command(cell, 1, cell / "hosts.json", None, {workers.HEARTBEAT_ENV: "2"})
    assert f"{workers.HEARTBEAT_ENV}=2 " in remote
