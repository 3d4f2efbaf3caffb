"""Calibration's GPU load step (#14): the plan's shape with and without a GPU, and the refusals on this
machine, which has no GPU (NVML cannot start here: the real library answers, no stand-in)."""
from __future__ import annotations

import pytest

from grid5000 import calibrate


def test_the_plan_adds_a_gpu_step_where_the_node_has_a_gpu():
    steps, notes = calibrate.plan("auto", 2, gpus=[0, 1])
    assert steps == [{"repetition": r, "load": n} for r in (0, 1) for n in ("idle", "half", "full", "gpu")]
    assert notes == []
    steps, notes = calibrate.plan("auto", 3, gpus=[], why_no_gpu="no NVIDIA GPU on this node")
    assert [s["load"] for s in steps] == ["idle", "half", "full"] * 3
    assert notes == ["no GPU load step: no NVIDIA GPU on this node"]
    steps, _ = calibrate.plan("idle, gpu", 1, gpus=[0])
    assert steps == [{"repetition": 0, "load": "idle"}, {"repetition": 0, "load": "gpu"}]


def test_asking_for_a_gpu_load_without_a_gpu_is_refused_with_the_reason():
    with pytest.raises(calibrate.GpuLoadRefused, match="refusing the gpu load: no NVIDIA GPU on this node"):
        calibrate.plan("idle,gpu", 3, gpus=[], why_no_gpu="no NVIDIA GPU on this node")
    with pytest.raises(calibrate.GpuLoadRefused, match="unknown load.*heavy"):
        calibrate.plan("idle,heavy", 3, gpus=[0])


def test_this_node_has_no_gpu_and_the_verb_refuses_before_measuring(tmp_path, capsys):
    gpus, why = calibrate.visible_gpus()
    assert gpus == [] and why.startswith("no NVIDIA GPU on this node (NVML unavailable")
    code = calibrate.main(["run", "--node-type", "orion", "--site", "lyon", "--node", "orion-3", "--loads",
                           "idle,gpu", "--window-s", "0.2", "--store", str(tmp_path / "cal"), "--wait", "0"])
    out = capsys.readouterr().out
    assert code == 2 and "calibrate: refusing the gpu load: no NVIDIA GPU on this node" in out
    assert not (tmp_path / "cal").exists()  # nothing measured, nothing stored


def test_the_gpu_load_refuses_when_the_framework_sees_no_gpu():
    import keras  # the backend this test session already runs (TensorFlow's CPU build here)

    load = calibrate.GpuLoad(keras.backend.backend(), size=16)
    with pytest.raises(calibrate.GpuLoadRefused, match=f"Keras' {keras.backend.backend()} backend sees no GPU"):
        load.prepare()
