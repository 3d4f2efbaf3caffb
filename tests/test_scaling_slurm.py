"""A 2-task multi-worker cell through the real one-node Slurm (tests/clusters/slurm-up.sh), and its sbatch layout.

The node declares CPUs=nproc (2 here): two tasks of one CPU each, one srun step, TensorFlow
MultiWorkerMirroredStrategy between them, ranks and hostnames from submitit's JobEnvironment.
"""
from __future__ import annotations

import pytest

from jobs.records import atomic_write_json, read_json
from orchestrator.launchers.slurm import SlurmLauncher, SlurmOptions
from orchestrator.matrix import expand
from orchestrator.spec import load_sweep
from tests.test_slurm import CATALOG, bt, follow_wait, sh

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
    # Submitted held, then the submission says the site collects energy (AcctGatherEnergyType here is .../none: no
    # plugin can run), so that the real energy post-step runs on both ranks against the real sstat (energy 0).
    submitted = bt("sweep", sweep_file(SWEEP.format(name="mwslurm", tasks=2) + "  hold: true\n"), "--output", out)
    assert submitted.returncode == 0, submitted.stderr
    campaign = out / "mwslurm"
    [(path, record)] = [(p, read_json(p)) for p in (campaign / "slurm" / "submissions").glob("*.json")]
    atomic_write_json(path, {**record, "energy_accounting": True})
    assert sh("scontrol", "release", record["job_id"]).returncode == 0
    assert follow_wait(campaign, timeout=280) == 0
    [cell] = (campaign / "cells").iterdir()
    record = read_json(cell / "result.json")
    assert record["status"] == "done"
    assert record["parallel"]["strategy"] == "CollectiveAllReduceStrategy"
    assert record["parallel"]["replicas_in_sync"] == 2
    assert record["parallel"]["launch"] == "tasks"
    # Worker 1 ran as the job's second task (its own status says so), worker 0 under the first task's job.
    worker = read_json(cell / "workers" / "1" / "status.json")
    assert worker["job_id"] == read_json(cell / "status.json")["job_id"]
    # Rank 0 merged once worker 1 was measured, while worker 1's guard held its task in the post-step; worker 1
    # was done before the cell (nothing of a done cell changes afterwards).
    assert worker["state"] == "done" and worker["measured"] is True
    [node] = record["energy"]["nodes"]  # one node: metered once, by its first task
    assert node["worker"] == 0 and node["domains"]
    assert len(record["window"]["workers"]) == 2
    # Slurm's energy, read by rank 0 while both tasks were live (sstat's NTasks); 0 J here is no reading.
    slurm = record["energy"]["other_sources"]["slurm"]
    assert slurm["live_tasks"] == {"sstat": 2, "workers": 2}
    assert slurm["joules"] is None and slurm["total_kind"] == "incomplete" and slurm["missing_hosts"] == ["vm"]
    # Worker 1 recorded nothing of its own (the step's sum is not its reading), and held until rank 0 had read.
    assert "other_sources" not in read_json(cell / "workers" / "1" / "result.json")["energy"]
    held = (cell / "workers" / "1" / "job.log").read_text()
    assert "[slurm] no energy counter" not in held
    assert 0 <= held.index("worker 1: holding this task live until rank 0 has read") \
        < held.index("worker 1: released, rank 0 has read the step's energy")
    log = (cell / "job.log").read_text()
    assert log.index("sstat saw 2 live task(s) of 2") < log.index("rank 0: the step's energy is read, the other")
    assert read_json(cell / "workers" / "slurm-energy-read.json")["job"] == worker["job_id"]


# --- Slurm's energy per node (#15), on sstat's format (tests/data/slurm/energy/) -------------------------------

ENERGY = __import__("pathlib").Path(__file__).parent / "data" / "slurm" / "energy"


def _merged(hosts, tasks_per_host=1):
    """A merged multi-host result (jobs.workers.merge's shape): one metering node per host, one window per worker."""
    workers = [{"worker": i, "host": h} for i, h in enumerate(h for h in hosts for _ in range(tasks_per_host))]
    return {"energy": {"nodes": [{"host": h, "worker": i * tasks_per_host, "domains": {}} for i, h in enumerate(hosts)],
                       "missing_hosts": []},
            "window": {"workers": workers}}


def _step(name, hosts, tasks_per_host=1):
    """The cell's result after the Slurm post-step, from one sstat sample of tests/data/slurm/energy/."""
    from orchestrator.launchers.slurm_job import add_node_energy, parse_step_readings

    result = _merged(hosts, tasks_per_host)
    entry = add_node_energy(result, parse_step_readings((ENERGY / name).read_text()), "job 3 step 0")
    own = {n["host"]: (n.get("other_sources") or {}).get("slurm") for n in result["energy"]["nodes"]}
    return entry, own


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


def test_the_recorded_per_node_fields_parse_live_tasks_and_the_named_max_min_nodes():
    from orchestrator.launchers.slurm_job import STEP_FIELDS, parse_step_readings

    text = (ENERGY / "sstat-2tasks-nodes-no-plugin.stdout").read_text()
    # Recorded with the very query the post-step sends (energy_step: -o ",".join(STEP_FIELDS)).
    assert ",".join(STEP_FIELDS) in (ENERGY / "README.md").read_text() and text.count("|") == len(STEP_FIELDS) - 1
    [both] = parse_step_readings(text)
    assert (both["step"], both["hosts"], both["joules"], both["tasks"]) == ("2.0", ["vm"], None, 2)
    assert both["max"] == {"host": "vm", "joules": 0.0} and both["min"] == {"host": "vm", "joules": 0.0}
    [ended] = parse_step_readings((ENERGY / "sstat-1of2tasks-ended-no-plugin.stdout").read_text())
    assert ended["tasks"] == 1  # task 1 had ended: sstat no longer counts it (nor its usage)
    entry, _ = _step("sstat-1of2tasks-ended-no-plugin.stdout", ["vm"], tasks_per_host=2)
    assert entry["live_tasks"] == {"sstat": 1, "workers": 2}
    assert "sstat saw 1 live task(s) of the cell's 2" in entry["note"]


def test_a_step_without_per_node_fields_is_one_sum_slurm_does_not_split_so_the_total_is_incomplete():
    from orchestrator.launchers.slurm_job import add_node_energy, parse_step_readings

    [_, two] = parse_step_readings((ENERGY / "sstat-with-plugin.stdout").read_text())
    assert two["hosts"] == ["grele-1", "grele-2"] and two["max"] is None
    result = _merged(["grele-1", "grele-2"])
    entry = add_node_energy(result, [two], "job 202 step 0")
    assert entry["joules"] is None and entry["total_kind"] == "incomplete"  # never 9876 J passed off per node
    assert entry["missing_hosts"] == ["grele-1", "grele-2"] and entry["step_sums"][0]["joules"] == 9876.0
    assert "sstat gave no per-node energy" in entry["note"]
    assert all("other_sources" not in n for n in result["energy"]["nodes"])


def test_two_hosts_one_energy_task_each_split_exactly_by_max_and_min_and_the_step_is_the_total():
    entry, own = _step("sstat-2hosts-exact.stdout", ["grele-1", "grele-2"])
    assert (entry["joules"], entry["total_kind"], entry["missing_hosts"]) == (9876.0, "measured", [])
    assert entry["nodes"] == {"grele-1": 5123.0, "grele-2": 4753.0} and entry["residual"] is None
    assert (own["grele-1"]["joules"], own["grele-1"]["via"]) == (5123.0, "TRESUsageInMaxNode")
    assert (own["grele-2"]["joules"], own["grele-2"]["via"]) == (4753.0, "TRESUsageInMinNode")
    assert own["grele-2"]["source"] == "slurm-consumed-energy" and "not the measurement window" in entry["note"]


def test_three_hosts_two_named_by_slurm_and_the_third_a_labelled_residual():
    entry, own = _step("sstat-3hosts.stdout", ["grele-1", "grele-2", "grele-3"])
    assert (entry["joules"], entry["total_kind"], entry["missing_hosts"]) == (14950.0, "measured", [])
    assert entry["nodes"] == {"grele-1": 4700.0, "grele-2": None, "grele-3": 5200.0}
    assert own["grele-2"] is None  # Slurm names no field after it: no figure of its own
    assert entry["residual"]["hosts"] == ["grele-2"] and entry["residual"]["joules"] == 5050.0
    assert "sum of hosts grele-2 not split by Slurm: 5050.0 J" in entry["note"]
    # The same step for a cell of two tasks per host: 3 live tasks of 6, a host may have none left in the sum.
    entry, own = _step("sstat-3hosts.stdout", ["grele-1", "grele-2", "grele-3"], tasks_per_host=2)
    assert entry["joules"] is None and entry["total_kind"] == "incomplete" and entry["residual"] is None
    assert entry["missing_hosts"] == ["grele-2"] and "3 live tasks, the cell has 6" in entry["note"]
    assert own["grele-3"]["joules"] == 5200.0 and own["grele-1"]["joules"] == 4700.0


def test_a_min_of_0_that_does_not_close_keeps_only_the_max_host_and_no_total():
    entry, own = _step("sstat-2hosts-min-zero.stdout", ["grele-1", "grele-2"], tasks_per_host=2)
    assert entry["joules"] is None and entry["total_kind"] == "incomplete"  # 9876 J is not one reading per host
    assert entry["nodes"] == {"grele-1": 5123.0, "grele-2": None} and entry["missing_hosts"] == ["grele-2"]
    assert own["grele-1"]["joules"] == 5123.0 and own["grele-2"] is None
    assert "grele-2's min reads 0 J" in entry["note"] and "only the max host's own reading is kept" in entry["note"]
    # Nor does a min that is a reading but leaves part of the step's sum unexplained (two hosts: max + min != sum).
    from orchestrator.launchers.slurm_job import add_node_energy, parse_step_readings

    [step] = parse_step_readings((ENERGY / "sstat-2hosts-exact.stdout").read_text())
    step.update(joules=10000.0, tres_total=10000.0)  # 124 J more than grele-1's 5123 J + grele-2's 4753 J
    result = _merged(["grele-1", "grele-2"])
    entry = add_node_energy(result, [step], "job 301 step 0")
    assert entry["joules"] is None and entry["nodes"] == {"grele-1": 5123.0, "grele-2": None}
    assert "max + min = 9876.0 J, not the step's 10000.0 J" in entry["note"]


def test_a_host_absent_from_the_step_makes_the_total_incomplete_and_names_nobody():
    entry, own = _step("sstat-host-absent.stdout", ["grele-1", "grele-2", "grele-3"])
    assert entry["joules"] is None and entry["total_kind"] == "incomplete" and entry["residual"] is None
    assert entry["missing_hosts"] == ["grele-1", "grele-2", "grele-3"]
    # sstat looks node names up among the hosts that answered: with one missing they may be shifted.
    assert all(v is None for v in own.values()) and "not the cell's grele-3" in entry["note"]


def test_more_slurm_nodes_than_the_node_type_has_are_refused(sweep_file):
    text = SWEEP.format(name="toomany", tasks=1).replace("nodes: [2]", "nodes: [14]").replace("[slurm-local]",
                                                                                          "[grele]")
    from orchestrator.errors import UserError

    with pytest.raises(UserError, match="14 workers need 14 Slurm nodes, but node type grele has 13"):
        expand(load_sweep(str(sweep_file(text))))


def test_rank_0_merges_once_the_other_rank_is_measured_not_only_done(tmp_path, monkeypatch):
    """run_rank0 counts a rank finished when its guard marked it `measured` (result written, post-steps running),
    as the Slurm energy post-step of that rank holds until rank 0 has read; `running` alone is not finished.

    Worker 0 is a stand-in (a script at `python`'s place that writes a done result): a real one needs TensorFlow
    (test_two_task_cell_through_slurm runs the real ranks). Worker 1 is only its status and result, as its guard
    writes them; the polls are counted, not timed."""
    import sys
    import time as real_time

    from jobs import workers
    from jobs.records import read_status, update_status

    result = {"status": "done", "energy": {"domains": {"cpu": {"joules": 1.0, "source": "rapl", "measured": True}},
                                           "total_joules": 1.0, "total_kind": "measured"},
              "window": {"start_unix": 1.0, "end_unix": 2.0, "duration_s": 1.0, "samples": 4}}
    python = tmp_path / "python"
    python.write_text(f"#!{sys.executable}\nimport json, pathlib, sys\n"
                      f"(pathlib.Path(sys.argv[-1]) / 'result.json').write_text(json.dumps({result!r}))\n")
    python.chmod(0o755)
    cell_dir = tmp_path / "campaign" / "cells" / "c1"
    cell_dir.mkdir(parents=True)
    cell = {"params": {"nodes": 2}, "energy": {"idle_s": 1}}
    ranks = workers.task_workers(2, ["vm"], 2, "77")
    other = workers.prepare_worker(cell_dir, cell, ranks[1])
    update_status(other, "running", job_id="77")  # its guard's child is in its window
    steps = []

    class Clock:  # run_rank0's sleeps, counted: worker 1 moves on only once worker 0 has ended
        monotonic = staticmethod(real_time.monotonic)

        @staticmethod
        def sleep(seconds):
            real_time.sleep(0.02)
            steps.append(read_status(other)["state"])
            ended = (cell_dir / "workers" / "0" / "result.json").exists()
            if ended and len(steps) > 20 and "measured" not in steps:  # the guard: measured, before its post-steps
                atomic_write_json(other / "result.json", {**result, "window": {**result["window"], "start_unix": 1.5}})
                update_status(other, "running", measured=True, job_id="77")
                steps.append("measured")
            assert len(steps) < 500, "rank 0 never counted worker 1 finished"

    monkeypatch.setattr(workers, "time", Clock)
    merged = workers.run_rank0(cell, cell_dir, ranks, python=str(python), poll_s=0.01)
    assert "measured" in steps and read_status(other)["state"] == "running"  # merged before worker 1's `done`
    assert [w["worker"] for w in merged["window"]["workers"]] == [0, 1]
    assert merged["window"]["start_skew_s"] == 0.5  # worker 1's own result, read as it stood


def test_the_energy_post_step_of_rank_1_reads_nothing_and_rank_0_releases_it_even_when_its_reading_fails(
        tmp_path, monkeypatch):
    """energy_step's two roles without a running step (the live test has the real one): rank 1 stops holding on
    another rank's stop.json; rank 0 whose reading raises still writes the marker the others wait for."""
    import json

    from jobs import workers
    from jobs.records import update_status
    from orchestrator.launchers import slurm_job

    cell_dir = tmp_path / "campaign" / "cells" / "c1"
    cell_dir.mkdir(parents=True)
    cell = {"params": {"nodes": 2}, "energy": {"idle_s": 1}}
    atomic_write_json(cell_dir / "cell.json", cell)
    ranks = workers.task_workers(2, ["vm"], 2, "78")
    other = workers.prepare_worker(cell_dir, cell, ranks[1])
    atomic_write_json(other / "result.json", {"status": "done", "energy": {}})
    workers.request_stop({"cell": str(cell_dir), "job": "77", "worker": 0, "host": "vm"}, "an earlier job's")
    monkeypatch.setattr(slurm_job, "HOLD_S", 1.0)
    assert slurm_job.energy_step(other) == 0  # an earlier job's stop.json does not release it: the bound does
    workers.request_stop({"cell": str(cell_dir), "job": "78", "worker": 0, "host": "vm"}, "rank 0 failed")
    monkeypatch.setattr(slurm_job, "HOLD_S", 60.0)
    monkeypatch.setattr(slurm_job, "_slurm", lambda *args, **kw: pytest.fail("rank 1 asked Slurm"))
    assert slurm_job.energy_step(other) == 0  # this job's: released at once, nothing read
    assert read_json(other / "result.json")["energy"] == {}
    update_status(other, "done", job_id="78")  # its guard, once released
    atomic_write_json(cell_dir / "result.json", {"energy": {"nodes": 5}})  # a reading that cannot be made
    monkeypatch.setenv(workers.TASKS_ENV, json.dumps(ranks))
    monkeypatch.setattr(slurm_job, "_slurm", lambda *args, **kw: "")
    with pytest.raises(TypeError):
        slurm_job.energy_step(cell_dir)
    assert read_json(cell_dir / "workers" / "slurm-energy-read.json")["job"] == "78"
