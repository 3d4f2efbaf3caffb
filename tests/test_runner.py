"""The job's measurement: window discipline, statistics, energy labels, and one real cell in-process."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from jobs.meters import DomainEnergy, WindowEnergy
from jobs.runner import energy_record, latency_stats, measure_window


def test_window_by_iterations_counts_exactly_and_tiles_the_window():
    calls = []
    window = measure_window(lambda: calls.append(time.sleep(0.01)), lambda: None, None, 5)
    assert len(calls) == 5 and len(window["latencies"]) == 5
    assert sum(window["latencies"]) == pytest.approx(window["end"] - window["start"], abs=1e-9)
    assert all(lat >= 0.01 for lat in window["latencies"])


def test_window_by_duration_completes_the_last_iteration():
    window = measure_window(lambda: time.sleep(0.03), lambda: None, 0.1, None)
    duration = window["end"] - window["start"]
    assert duration >= 0.1 and duration < 0.1 + 0.03 * 3
    assert len(window["latencies"]) == pytest.approx(4, abs=1)


def test_sync_runs_after_every_iteration_and_before_the_window():
    events = []
    measure_window(lambda: events.append("step"), lambda: events.append("sync"), None, 3)
    assert events == ["sync", "step", "sync", "step", "sync", "step", "sync"]


def test_latency_stats_match_numpy():
    values = [0.5, 0.1, 0.3, 0.2, 0.9, 0.4]
    got = latency_stats(values)
    assert got["mean"] == pytest.approx(np.mean(values))
    assert got["std"] == pytest.approx(np.std(values, ddof=1))
    assert got["p50"] == pytest.approx(np.percentile(values, 50))
    assert got["p95"] == pytest.approx(np.percentile(values, 95))
    assert latency_stats([0.2])["std"] == 0.0


CONFIG = {"carbon_intensity_g_per_kwh": 50.0, "pue": 1.5, "country_iso_code": "FRA",
          "min_window_node_s": 60, "min_window_gpu_s": 10}


def window_energy(domains: dict) -> WindowEnergy:
    return WindowEnergy(domains, {}, 10.0, {}, {}, [])


def test_energy_record_labels_and_co2_arithmetic():
    energy = window_energy({"cpu": DomainEnergy(360.0, "rapl", "rapl"),
                            "ram": DomainEnergy(3240.0, "codecarbon-ram-model", "codecarbon")})
    record = energy_record(energy, samples=36, window_s=100.0, config=CONFIG)
    assert record["total_joules"] == 3600.0 and record["joules_per_sample"] == 100.0
    assert record["total_kind"] == "mixed"  # a counter plus a model is not a measurement
    assert record["domains"]["cpu"]["measured"] and not record["domains"]["ram"]["measured"]
    assert record["co2"]["grams"] == pytest.approx(3600 / 3.6e6 * 1.5 * 50)  # kWh x PUE x g/kWh
    assert record["low_confidence"] == [] and record["total_net_joules"] is None
    estimated = energy_record(window_energy({"cpu": DomainEnergy(1.0, "codecarbon-constant", "codecarbon")}),
                              1, 100.0, CONFIG)
    assert estimated["total_kind"] == "estimated"


def test_idle_subtraction_and_short_window_flags():
    energy = window_energy({"gpu": DomainEnergy(3000.0, "nvml-counter", "nvml"),
                            "cpu": DomainEnergy(1000.0, "rapl", "rapl")})
    idle = {"power_w": {"gpu": 50.0, "cpu": 20.0}, "sources": {"gpu": "nvml-counter", "cpu": "rapl"}}
    record = energy_record(energy, samples=10, window_s=20.0, config=CONFIG, idle=idle)
    assert record["domains"]["gpu"]["net_joules"] == 3000.0 - 50.0 * 20.0
    assert record["domains"]["cpu"]["net_joules"] == 1000.0 - 20.0 * 20.0
    assert record["total_net_joules"] == 4000.0 - 1400.0
    assert record["net_joules_per_sample"] == 260.0
    assert record["total_kind"] == "measured"
    # 20 s is long enough for a GPU counter (10 s), not for a node-level meter (60 s).
    assert len(record["low_confidence"]) == 1 and record["low_confidence"][0].startswith("cpu: window of 20.0 s")
    mismatch = energy_record(energy, 10, 20.0, CONFIG, {"power_w": {"gpu": 50.0, "cpu": 20.0},
                                                        "sources": {"gpu": "nvml-power", "cpu": "rapl"}})
    assert "net_joules" not in mismatch["domains"]["gpu"] and mismatch["total_net_joules"] is None
    assert any("gpu: idle baseline measured with nvml-power" in n for n in mismatch["notes"])


def test_real_cell_in_process(tmp_path):
    """A real MobileNet-V2 (tiny input) and real codecarbon, through the job's own code."""
    from jobs.runner import run_cell

    cell = {"id": "c0ffee000001", "campaign": "unit",
            "params": {"test": "mobilenet_v2", "subtest": "1.2", "phase": "training", "node_type": "local",
                       "repetition": 0, "task": "classification", "batch_size": 2, "input_shape": [32, 32, 3],
                       "precision": "fp32", "execution": "eager", "warmup_iterations": 1, "duration_s": None,
                       "iterations": 2, "seed": 42},
            "energy": {"pue": 1.2, "carbon_intensity_g_per_kwh": 56.039, "country_iso_code": "FRA",
                       "idle_s": 1, "idle_reuse_s": 3600, "min_window_node_s": 60, "min_window_gpu_s": 10,
                       "nvml_poll_hz": 20},
            "node": {"name": "local", "gpu_count": 0}}
    cell_dir = tmp_path / "cells" / cell["id"]
    cell_dir.mkdir(parents=True)
    result = run_cell(cell, cell_dir)
    window = result["window"]
    assert window["iterations"] == 2 and window["samples"] == 4
    assert window["throughput_samples_per_s"] == pytest.approx(4 / window["duration_s"])
    assert result["model"]["trainable_params"] == 3_506_153 == result["model"]["reference_trainable_params"]
    assert "CPU" in result["devices"]["compute_device"]
    energy = result["energy"]
    # This machine has no RAPL and no GPU: codecarbon can only estimate, and must say so.
    assert energy["domains"]["cpu"]["source"] in ("codecarbon-load-model", "codecarbon-constant")
    assert energy["domains"]["ram"]["source"] == "codecarbon-ram-model"
    assert "gpu" not in energy["domains"] and energy["total_kind"] == "estimated"
    assert energy["total_joules"] > 0 and math.isclose(
        energy["co2"]["grams"], energy["total_joules"] / 3.6e6 * 1.2 * 56.039)
    # The meter's span covers the window and little more: start-up stayed outside.
    assert window["duration_s"] <= energy["meter_duration_s"] < window["duration_s"] + 0.5
    # The idle baseline used the same meters, was cached for the campaign, and gives net energy.
    assert energy["idle"]["sources"] == {"cpu": energy["domains"]["cpu"]["source"], "ram": "codecarbon-ram-model"}
    assert list((tmp_path / "idle").glob("*.json")) and energy["total_net_joules"] < energy["total_joules"]
    assert energy["low_confidence"]  # a sub-second window is far below 60 s for node-level meters
    assert any(n.startswith("rapl: no RAPL package zone") for n in energy["notes"])
    assert window["end_unix"] - window["start_unix"] == pytest.approx(window["duration_s"], abs=1e-6)
    rows = (cell_dir / "emissions.csv").read_text().splitlines()
    assert rows[0].startswith("timestamp,project_name,run_id") and len(rows) == 3  # idle + window
    assert result["software"]["codecarbon"] == "3.3.2"


def test_gpu_promised_but_absent_fails_clearly(tmp_path):
    from jobs.runner import run_cell

    cell = {"id": "x", "campaign": "unit", "params": {"test": "mobilenet_v2", "node_type": "grele"},
            "energy": {}, "node": {"name": "grele", "gpu_count": 2}}
    with pytest.raises(RuntimeError, match="promises 2 GPU.*TensorFlow sees none"):
        run_cell(cell, tmp_path)


@pytest.mark.parametrize("precision, dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_steps(precision, dtype):
    import keras

    from jobs import workload
    from jobs.catalog import get_test

    try:
        workload.set_precision(precision)
        test = get_test("srcnn")  # small: float16 is emulated, slowly, on CPUs
        model = test.load_builder()((16, 16, 3), (16, 16, 3))
        x, y = workload.synthetic_batch(test.task, 2, (16, 16, 3), (16, 16, 3))
        before = [v.numpy().copy() for v in model.trainable_variables]
        step = workload.make_step(model, "training", x, y, "graph")
        for _ in range(30):  # float16's dynamic loss scale skips steps (halving) until gradients fit
            loss = step()
            if any((b != v.numpy()).any() for b, v in zip(before, model.trainable_variables)):
                break
        else:
            raise AssertionError("no training step was applied in 30 tries")
        assert {layer.compute_dtype for layer in model.layers if layer.weights} == {dtype}
        assert math.isfinite(float(loss))
    finally:
        keras.mixed_precision.set_global_policy("float32")
