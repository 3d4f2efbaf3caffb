"""The Slurm launcher's pure parts, without a cluster: options, resources as data, sbatch parameters."""
from __future__ import annotations

import json

import pytest

from orchestrator.errors import UserError
from orchestrator.launchers.slurm import SlurmLauncher, slurm_time
from orchestrator.lifecycle import write_submitted
from orchestrator.launchers.slurm_job import parse_energy
from orchestrator.matrix import expand
from orchestrator.spec import parse_sweep
from tests.conftest import ROOT, tiny_sweep

CATALOG = ROOT / "tests" / "clusters" / "slurm" / "node_types.yaml"


@pytest.fixture(autouse=True)
def test_catalog(monkeypatch):
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(CATALOG))


def spec_for(tmp_path, slurm: str = "", node_types: str = "[slurm-local]", timeout: float = 300):
    text = tiny_sweep("opts", timeout=timeout).replace("node_types: [local]", f"node_types: {node_types}")
    text = text.replace("launcher: local", "launcher: slurm") + slurm
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return parse_sweep(text, path)


def launcher_for(spec) -> SlurmLauncher:
    from orchestrator.launchers.slurm import SlurmOptions

    return SlurmLauncher(spec, spec.launcher_options("slurm", SlurmOptions))


def test_resources_merge_catalog_then_sweep_then_per_node_type(tmp_path):
    spec = spec_for(tmp_path, "slurm:\n  account: proj1\n  node_types:\n    slurm-local: {qos: high, mem_gb: 4}\n")
    r = launcher_for(spec).resources("slurm-local")
    assert r["partition"] == "debug" and r["constraint"] == "bttest"  # from the catalog's slurm: block
    assert r["account"] == "proj1" and r["qos"] == "high" and r["mem_gb"] == 4  # sweep, then per node type
    assert r["exclusive"] is False  # the test catalog opts out; the default is exclusive
    assert r["time_limit_min"] == 7  # timeout_s 300 + the guard's margin (90 s), in whole minutes


def test_exclusive_by_default_and_time_limit_from_timeout(tmp_path, monkeypatch):
    catalog = tmp_path / "nodes.yaml"
    catalog.write_text("gpu-node:\n  hostname_pattern: 'g.*'\n  gpus: {count: 2}\n"
                       "  slurm: {partition: gpu, gres: 'gpu:2'}\n")
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(catalog))
    spec = spec_for(tmp_path, node_types="[gpu-node]", timeout=90)
    launcher = launcher_for(spec)
    r = launcher.resources("gpu-node")
    assert r == {"exclusive": True, "partition": "gpu", "gres": "gpu:2", "time_limit_min": 3}  # 90 s + 90 s
    params = launcher.sbatch_parameters(launcher.signature(expand(spec).cells[0]), "bt-x", tmp_path / "code",
                                        tmp_path)
    assert params["exclusive"] is True and params["gres"] == "gpu:2" and params["time"] == 3
    assert params["additional_parameters"]["no_requeue"] is True  # Slurm's requeue off: retries are ours
    assert params["array_parallelism"] == 8  # always an explicit throttle


def test_one_signature_per_resource_set(tmp_path):
    spec = spec_for(tmp_path, node_types="[slurm-local, slurm-local-nogpu]")
    launcher = launcher_for(spec)
    cells = expand(spec).cells
    assert len({launcher.signature(c) for c in cells}) == 2
    assert len({launcher.signature(c) for c in cells if c.node_type == "slurm-local"}) == 1


@pytest.mark.parametrize("key,value", [("partition", "debug; rm -rf /"), ("account", "$(id)"), ("qos", "a b"),
                                       ("constraint", "x`id`"), ("gres", "gpu:1\\n#SBATCH --uid=0"),
                                       ("python", "relative/python")])
def test_unsafe_values_are_refused_with_file_and_line(tmp_path, key, value):
    with pytest.raises(UserError) as error:
        spec_for(tmp_path, f'slurm:\n  {key}: "{value}"\n')
    assert f"sweep.yaml:22: slurm.{key}" in str(error.value)


def test_catalog_slurm_block_is_validated(tmp_path, monkeypatch):
    catalog = tmp_path / "nodes.yaml"
    catalog.write_text("bad:\n  hostname_pattern: '.*'\n  slurm: {partition: 'a;b'}\n")
    monkeypatch.setenv("BENCHMARK_TRACKER_NODE_TYPES", str(catalog))
    launcher = launcher_for(spec_for(tmp_path, node_types="[bad]"))
    with pytest.raises(UserError, match="node type bad: invalid `slurm:` block"):
        launcher.resources("bad")


def test_unknown_node_type_in_slurm_section(tmp_path):
    with pytest.raises(UserError, match="unknown node type"):
        spec_for(tmp_path, "slurm:\n  node_types:\n    nope: {qos: x}\n")


def test_setup_lines_quote_every_path(tmp_path):
    spec = spec_for(tmp_path)
    launcher = launcher_for(spec)
    lines = launcher.setup_lines(tmp_path / "we ird $(x)")
    assert lines[0].startswith("export PYTHONPATH='") and "$(x)'" in lines[0]
    assert "does not exist on this compute node" in lines[1]


def test_helpers(tmp_path):
    assert slurm_time(0.25) == 1 and slurm_time(5) == 5 and slurm_time(5.01) == 6
    assert parse_energy("12345\n") == 12345.0 and parse_energy("0\n") is None and parse_energy("") is None
    assert parse_energy("100\n200\n") == 300.0
    (tmp_path / "status.json").write_text(json.dumps({"state": "failed", "reason": "x", "attempts": 1,
                                                      "updated_at": "t", "history": []}))
    write_submitted(tmp_path, json.loads((tmp_path / "status.json").read_text()), "now", attempts=2,
                    launcher="slurm", submission="tok", array_index=3)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "submitted" and status["attempts"] == 2 and status["submitted_at"] == "now"
    assert status["history"] == [{"state": "failed", "reason": "x", "updated_at": "t", "attempts": 1}]
    assert "reason" not in status


def test_arrays_split_below_the_sites_max_array_size(tmp_path):
    launcher = launcher_for(spec_for(tmp_path))
    launcher._site = {"max_array_size": 1001, "energy_accounting": False}
    assert launcher.chunk_size() == 1000
    launcher = launcher_for(spec_for(tmp_path, "slurm:\n  max_array_size: 50\n"))
    launcher._site = {"max_array_size": 1001, "energy_accounting": False}
    assert launcher.chunk_size() == 50


def test_slurm_energy_is_one_more_labelled_source(tmp_path):
    from orchestrator.launchers.slurm_job import add_energy_source

    (tmp_path / "result.json").write_text(json.dumps({"energy": {"total_joules": 10.0}}))
    add_energy_source(tmp_path, 1234.0, "job 7 step 0")
    energy = json.loads((tmp_path / "result.json").read_text())["energy"]
    assert energy["total_joules"] == 10.0  # the window's own energy is untouched
    assert energy["other_sources"]["slurm"]["joules"] == 1234.0
    assert energy["other_sources"]["slurm"]["source"] == "slurm-consumed-energy"
