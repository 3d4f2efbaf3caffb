"""A 2-task multi-worker cell through the real one-node Slurm (tests/clusters/slurm-up.sh), and its sbatch layout.

The node declares CPUs=nproc (2 here): two tasks of one CPU each, one srun step, TensorFlow
MultiWorkerMirroredStrategy between them, ranks and hostnames from submitit's JobEnvironment.
"""
from __future__ import annotations

import pytest

from jobs.records import read_json
from orchestrator.launchers.slurm import SlurmLauncher, SlurmOptions
from orchestrator.matrix import expand
from orchestrator.spec import load_sweep
from tests.test_slurm import CATALOG, bt, follow_wait

SWEEP = """
name: {name}
matrix:
  tests: [srcnn]
  phases: [training]
  nodes: [2]
  node_types: [slurm-local]
defaults:
  batch_size: 2
  input_size: [32, 32]
  execution: graph
  warmup_iterations: 1
  iterations: 3
launcher: slurm
timeout_s: 300
energy:
  idle_s: 1
slurm:
  ntasks_per_node: {tasks}
  array_parallelism: 1
"""


def test_multi_worker_cell_asks_slurm_for_nodes_and_tasks(sweep_file, monkeypatch):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(CATALOG))
    spec = load_sweep(str(sweep_file(SWEEP.format(name="layout", tasks=2))))
    [cell] = expand(spec).cells
    launcher = SlurmLauncher(spec, SlurmOptions(ntasks_per_node=2))
    params = launcher.sbatch_parameters(launcher.signature(cell), "bt-x", spec.path.parent, spec.path.parent)
    assert (params["nodes"], params["ntasks_per_node"]) == (1, 2) and "gpus_per_node" not in params


def test_workers_that_do_not_fill_nodes_are_refused(sweep_file, monkeypatch):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(CATALOG))
    path = sweep_file(SWEEP.format(name="uneven", tasks=3))
    result = bt("expand", path)
    assert result.returncode == 2 and "2 workers do not fill Slurm nodes of slurm.ntasks_per_node: 3" in result.stderr


@pytest.mark.cluster
def test_two_task_cell_through_slurm(sweep_file, tmp_path):
    out = tmp_path / "out"
    submitted = bt("sweep", sweep_file(SWEEP.format(name="mwslurm", tasks=2)), "--output", out)
    assert submitted.returncode == 0, submitted.stderr
    campaign = out / "mwslurm"
    assert follow_wait(campaign, timeout=280) == 0
    [cell] = (campaign / "cells").iterdir()
    record = read_json(cell / "result.json")
    assert record["status"] == "done"
    assert record["parallel"]["strategy"] == "CollectiveAllReduceStrategy"
    assert record["parallel"]["replicas_in_sync"] == 2
    assert record["parallel"]["launch"] == "tasks"
    # Worker 1 ran as the job's second task (its own status says so), worker 0 under the first task's job.
    assert read_json(cell / "workers" / "1" / "status.json")["job_id"] == read_json(cell / "status.json")["job_id"]
    [node] = record["energy"]["nodes"]  # one node: metered once, by its first task
    assert node["worker"] == 0 and node["domains"]
    assert len(record["window"]["workers"]) == 2
