"""Scale axes and data parallel: validation of scale requests, a real MirroredStrategy cell."""
from __future__ import annotations

import json

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix import expand
from orchestrator.spec import load_sweep
from tests.conftest import run_cli

BASE = """
name: {name}
matrix:
  tests: [srcnn]
  phases: [training]
{axes}
defaults:
  batch_size: 2
  input_size: [32, 32]
  warmup_iterations: 1
  iterations: 3
{extra}
launcher: local
timeout_s: 300
energy:
  idle_s: 1
"""


def _sweep(sweep_file, axes, extra="", name="scale"):
    return sweep_file(BASE.format(name=name, axes=axes, extra=extra))


def test_unscaled_sweep_has_no_scale_params(sweep_file):
    cells = expand(load_sweep(str(_sweep(sweep_file, ""))))
    assert all("devices_per_node" not in c.params for c in cells.cells)


def test_scale_axes_in_params_ids_and_excludes(sweep_file):
    path = _sweep(sweep_file, "  devices_per_node: [1, 2]\n  backends: [tensorflow]", "  batch_scaling: weak")
    cells = expand(load_sweep(str(path))).cells
    assert sorted((c.devices_per_node, c.batch_size, c.per_device_batch) for c in cells) == [(1, 2, 2), (2, 4, 2)]
    assert len({c.id for c in cells}) == 2


def test_strong_scaling_must_divide(sweep_file):
    path = _sweep(sweep_file, "  devices_per_node: [2]", "  batch_scaling: strong")
    path.write_text(path.read_text().replace("batch_size: 2", "batch_size: 3"))
    with pytest.raises(UserError, match="invalid sweep") as err:
        expand(load_sweep(str(path)))
    assert "global batch 3 over 2 devices" in str(err.value.__dict__) + str(err.value)


def test_refused_requests_point_at_file_line_key(sweep_file):
    path = _sweep(sweep_file, "  devices_per_node: [64]\n  nodes: [2]\n  backends: [torch]")
    result = run_cli("expand", path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"{path}:5: matrix.devices_per_node[0]: 64 devices per node" in result.stderr
    assert "matrix.backends[0]: torch" in result.stderr and "no data-parallel distribution" in result.stderr
    assert "matrix.nodes[0]" in result.stderr


def test_mirrored_strategy_cell_over_two_logical_cpu_devices(sweep_file, tmp_path):
    path = _sweep(sweep_file, "  devices_per_node: [2]", name="mirrored")
    result = run_cli("sweep", path, "--output", tmp_path / "out", timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    [cell] = (tmp_path / "out" / "mirrored" / "cells").iterdir()
    record = json.loads((cell / "result.json").read_text())
    assert record["status"] == "done"
    assert record["parallel"]["strategy"] == "MirroredStrategy"
    assert record["parallel"]["replicas_in_sync"] == 2
    assert [d.rsplit(":", 2)[-2:] for d in record["parallel"]["devices"]] == [["CPU", "0"], ["CPU", "1"]]
    assert record["params"]["batch_size"] == 4 and record["params"]["per_device_batch"] == 2
    assert record["window"]["samples"] == 3 * 4
    assert all(d["source"] for d in record["energy"]["domains"].values())
