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


# --- Slurm's energy per node (#15), on sstat's format (tests/data/slurm/energy/) -------------------------------

ENERGY = __import__("pathlib").Path(__file__).parent / "data" / "slurm" / "energy"


def _merged(hosts):
    return {"energy": {"nodes": [{"host": h, "worker": i, "domains": {}} for i, h in enumerate(hosts)],
                       "missing_hosts": []}}


def test_slurm_energy_per_node_from_a_one_node_step_and_none_from_the_recorded_plugin_less_answer():
    from orchestrator.launchers.slurm_job import add_node_energy, expand_nodelist, parse_step_readings

    assert expand_nodelist("grele-[1-2,07],vm") == ["grele-1", "grele-2", "grele-07", "vm"]
    recorded = parse_step_readings((ENERGY / "sstat-2tasks-no-plugin.stdout").read_text())
    assert [(r["step"], r["hosts"], r["joules"]) for r in recorded] == [("199.batch", ["vm"], None),
                                                                         ("199.0", ["vm"], None)]
    result = _merged(["vm"])
    entry = add_node_energy(result, recorded, "job 199 step 0")
    assert entry["joules"] is None and entry["total_kind"] == "incomplete" and entry["missing_hosts"] == ["vm"]
    [one, two] = parse_step_readings((ENERGY / "sstat-with-plugin.stdout").read_text())
    result = _merged(["grele-1.nancy.grid5000.fr"])
    entry = add_node_energy(result, [one], "job 201 step 0")
    assert entry["joules"] == 5123.0 and entry["total_kind"] == "measured"
    node = result["energy"]["nodes"][0]["other_sources"]["slurm"]
    assert node["joules"] == 5123.0 and node["source"] == "slurm-consumed-energy"


def test_a_step_over_two_nodes_is_one_sum_slurm_does_not_split_so_the_total_is_incomplete():
    from orchestrator.launchers.slurm_job import add_node_energy, parse_step_readings

    [_, two] = parse_step_readings((ENERGY / "sstat-with-plugin.stdout").read_text())
    assert two["hosts"] == ["grele-1", "grele-2"]
    result = _merged(["grele-1", "grele-2"])
    entry = add_node_energy(result, [two], "job 202 step 0")
    assert entry["joules"] is None and entry["total_kind"] == "incomplete"  # never 9876 J passed off per node
    assert entry["missing_hosts"] == ["grele-1", "grele-2"] and entry["step_sums"][0]["joules"] == 9876.0
    assert "one sum Slurm does not split per node" in entry["note"]
    assert all("other_sources" not in n for n in result["energy"]["nodes"])


def test_more_slurm_nodes_than_the_node_type_has_are_refused(sweep_file):
    text = SWEEP.format(name="toomany", tasks=1).replace("nodes: [2]", "nodes: [14]").replace("[slurm-local]",
                                                                                          "[grele]")
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="14 workers need 14 Slurm nodes, but node type grele has 13"):
        expand(load_sweep(str(sweep_file(text))))
