"""Multi-worker cells through the local launcher on loopback: real TensorFlow and JAX workers.

Real processes, real collectives (TF gRPC, JAX gloo), real codecarbon. SRCNN (69 k parameters) at
32x32 keeps the workers' start-up, not the model, the cost; one TensorFlow run is shared by the
assertions that read it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs.records import read_json
from tests.conftest import run_cli, wait_for

SWEEP = """
name: {name}
matrix:
  tests: [srcnn]
  phases: [training]
  nodes: [2]
  backends: [{backend}]
defaults:
  batch_size: 2
  input_size: [32, 32]
  execution: graph
  warmup_iterations: 1
  iterations: {iterations}
launcher: local
timeout_s: 300
energy:
  idle_s: 1
"""


def _leftovers(folder: Path) -> list:
    """Processes whose command line names this campaign folder (a worker, a job, a guard left behind)."""
    mine, found = str(folder).encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if mine in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _sweep(tmp, name, backend, iterations=3):
    path = tmp / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, backend=backend, iterations=iterations))
    return path


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """One sweep, one TensorFlow and one JAX 2-worker cell (one CLI start, one collect for both)."""
    tmp = tmp_path_factory.mktemp("mw")
    result = run_cli("sweep", _sweep(tmp, "mw", "tensorflow, jax"), "--output", tmp / "out", timeout=400)
    assert result.returncode == 0, result.stderr + result.stdout
    root = tmp / "out" / "mw"
    cells = {read_json(c / "cell.json")["params"]["backend"]: c for c in (root / "cells").iterdir()}
    return root, cells, result.stdout


@pytest.fixture
def tf_campaign(campaign):
    root, cells, stdout = campaign
    return root, cells["tensorflow"], stdout


def test_two_tensorflow_workers_one_result(tf_campaign):
    root, cell, _ = tf_campaign
    record = read_json(cell / "result.json")
    assert record["status"] == "done"
    parallel = record["parallel"]
    assert parallel["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirroredStrategy's own class
    assert (parallel["replicas_in_sync"], parallel["workers"], parallel["hosts"]) == (2, 2, 1)
    window = record["window"]
    starts = [w["start_unix"] for w in window["workers"]]
    ends = [w["end_unix"] for w in window["workers"]]
    assert [w["worker"] for w in window["workers"]] == [0, 1]
    assert window["start_skew_s"] == pytest.approx(max(starts) - min(starts))
    assert window["end_skew_s"] == pytest.approx(max(ends) - min(ends))
    assert window["samples"] == 3 * 4  # the global batch: 2 per worker x 2 workers, each step
    assert not _leftovers(root)


def test_one_host_is_metered_once(tf_campaign):
    """Two loopback workers share one host: one reading (the first worker's), never that host twice."""
    _, cell, _ = tf_campaign
    energy = read_json(cell / "result.json")["energy"]
    [node] = energy["nodes"]
    assert node["worker"] == 0 and node["domains"]
    assert all(d["source"] for d in node["domains"].values())
    assert energy["complete"] is True and energy["total_kind"] != "incomplete"
    assert energy["total_joules"] == pytest.approx(node["total_joules"])
    unmetered = read_json(cell / "workers" / "1" / "result.json")["energy"]
    assert unmetered["domains"] == {} and "runs unmetered" in " ".join(unmetered["notes"])


def test_results_table_has_per_node_columns(tf_campaign):
    root, cell, stdout = tf_campaign
    table = pd.read_csv(root / "results.csv")
    row = table[table["backend"] == "tensorflow"].iloc[0]
    assert (row["nodes"], row["workers"], row["hosts"], row["energy_nodes"]) == (2, 2, 1, 1)
    hostname = read_json(cell / "result.json")["host"]["hostname"]
    assert row["energy_per_node"].startswith(f"{hostname}: ") and "cpu codecarbon" in row["energy_per_node"]
    assert row["window_start_skew_s"] >= 0
    assert "scaling_efficiency" in stdout  # the sweep's closing lines hold the scaling table


def test_jax_multi_process_cell(campaign):
    record = read_json(campaign[1]["jax"] / "result.json")
    assert record["parallel"]["strategy"] == "keras.distribution.DataParallel"
    assert len(record["parallel"]["devices"]) == 2  # one CPU device in each of the two processes
    assert len(record["window"]["workers"]) == 2 and len(record["energy"]["nodes"]) == 1


def test_worker_killed_mid_window_fails_the_cell_and_leaves_no_process(tmp_path):
    path = _sweep(tmp_path, "mwkill", "tensorflow", iterations=100000)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    sweep = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(path), "--output",
                              str(tmp_path / "out")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        cells = tmp_path / "out" / "mwkill" / "cells"
        worker = wait_for(lambda: next((c / "workers" / "1" for c in cells.iterdir()
                                        if (c / "workers" / "1" / "phase.json").exists()), None)
                          if cells.exists() else None, timeout=180, every=0.2, what="worker 1 started")
        wait_for(lambda: read_json(worker / "phase.json")["phase"] == "window", timeout=180, every=0.1,
                 what="worker 1 in its window")
        pid = read_json(worker / "status.json")["pid"]
        os.kill(pid, signal.SIGKILL)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, out + err
    status = read_json(worker.parent.parent / "status.json")
    assert status["state"] == "failed"
    assert f"worker 1 (pid {pid}) was killed by SIGKILL mid-window" in status["reason"]
    assert "the whole cell fails" in status["reason"]
    # the killed worker's own record says what happened to it, not that its job stopped it
    assert read_json(worker / "status.json")["reason"].startswith(f"worker 1 (pid {pid}) was killed by SIGKILL")
    peer = read_json(worker.parent / "0" / "status.json")  # its peer was stopped, and says why
    # stopped by the job, or its collective saw the dead peer first: either way it did not end as done
    assert peer["state"] == "failed" and peer["reason"]
    assert not _leftovers(tmp_path / "out")
