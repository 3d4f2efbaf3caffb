"""The validity gate on traces in trace.parquet's row format: clean ones pass; gaps, wraps the reads cannot
resolve, counter resets, a missing or silent device, thermal throttling and temperature drift fail, each
with its own reason. Throttle bits are nvml.h's (through nvidia-ml-py's constants)."""
from __future__ import annotations

import math

import pynvml
import pytest

from jobs.meters.gate import gate, throttle_names
from jobs.meters.trace import Trace

NAN = math.nan
T0, T1 = 1_795_000_000.0, 1_795_000_010.0
PERIOD = 0.1


def times(start=T0 - 1, end=T1 + 1, skip=None):
    n = int(round((end - start) / PERIOD))
    out = [start + i * PERIOD for i in range(n + 1)]
    return [t for t in out if not (skip and skip[0] < t < skip[1])]


def rapl_rows(ts, watts=50.0, start_j=0.0, range_j=None, device="package-0", reset_at=None):
    rows, energy = [], start_j
    for i, t in enumerate(ts):
        if i:
            energy += watts * (t - ts[i - 1])
        if reset_at is not None and t >= reset_at:
            energy, reset_at = 0.5, None
        value = energy % range_j if range_j else energy
        rows.append((t, "cpu", device, "rapl", watts, value, NAN, None))
    return rows


def probe(domain, device, source, range_j=None):
    return {"domain": domain, "device": device, "source": source, "counter": source in ("rapl", "nvml-counter"),
            "counter_range_j": range_j}


def gpu_rows(ts, device="gpu0", reasons=0, temperature=lambda t: 60.0):
    return [(t, "gpu", device, "nvml-power", 250.0, NAN, temperature(t), reasons) for t in ts]


def judge(rows, probes, sources, state=None, config=None):
    return gate(Trace(rows, probes, {}, PERIOD, 1.0), T0, T1, sources, config, state)


def test_a_clean_trace_passes_with_full_coverage():
    verdict = judge(rapl_rows(times()) + gpu_rows(times()),
                    [probe("cpu", "package-0", "rapl", 1000.0), probe("gpu", "gpu0", "nvml-power")],
                    {"cpu": "rapl", "gpu": "nvml-power"})
    assert verdict["valid"] and verdict["invalid_reasons"] == []
    cpu = verdict["gate"]["cpu"]
    assert cpu["coverage"] == 1.0 and cpu["longest_gap_s"] == pytest.approx(PERIOD, abs=1e-6)
    assert cpu["wraps"] == 0 and cpu["backwards"] == 0 and cpu["missing_devices"] == []
    assert set(verdict["gate"]) == {"cpu", "gpu"}


def test_a_gap_fails_on_coverage_and_longest_gap():
    verdict = judge(rapl_rows(times(skip=(T0 + 3, T0 + 6))), [probe("cpu", "package-0", "rapl")], {"cpu": "rapl"})
    cpu = verdict["gate"]["cpu"]
    assert not verdict["valid"] and cpu["longest_gap_s"] == pytest.approx(3.0, abs=0.11)
    assert cpu["coverage"] == pytest.approx(0.7, abs=0.02)
    assert any("cover 7" in r for r in verdict["invalid_reasons"])
    assert any("longest gap between samples 3.0" in r for r in verdict["invalid_reasons"])


def test_a_wrap_read_often_passes_and_is_counted_one_read_too_rarely_fails():
    dense = judge(rapl_rows(times(), watts=50.0, start_j=900.0, range_j=1000.0),
                  [probe("cpu", "package-0", "rapl", 1000.0)], {"cpu": "rapl"})
    assert dense["valid"] and dense["gate"]["cpu"]["wraps"] == 1
    # Reads 4 s apart at 150 W: 600 J between reads, more than half the 1000 J range: ambiguous.
    sparse_times = [T0 - 1 + 4 * i for i in range(4)]
    rows = rapl_rows(sparse_times, watts=150.0, start_j=500.0, range_j=1000.0)
    verdict = judge(rows, [probe("cpu", "package-0", "rapl", 1000.0)], {"cpu": "rapl"},
                    config={"max_gap_s": 10, "min_coverage": 0})
    assert not verdict["valid"] and verdict["gate"]["cpu"]["wraps"] >= 1
    assert any("wrapped between reads 4.0 s apart" in r for r in verdict["invalid_reasons"])


def test_a_counter_going_backwards_fails_as_a_reset():
    rows = [(t, "gpu", "gpu0", "nvml-counter", 200.0, e, NAN, None)
            for t, _, _, _, _, e, _, _ in rapl_rows(times(), watts=200.0, start_j=5000.0, reset_at=T0 + 5)]
    verdict = judge(rows, [probe("gpu", "gpu0", "nvml-counter")], {"gpu": "nvml-counter"})
    gpu = verdict["gate"]["gpu"]
    assert not verdict["valid"] and gpu["backwards"] == 1 and gpu["wraps"] == 0
    assert any("gpu0 counter went backwards" in r and "driver reload" in r for r in verdict["invalid_reasons"])


def test_a_missing_device_and_one_that_stops_answering_fail():
    rows = gpu_rows(times(), "gpu0") + gpu_rows(times(end=T0 + 4), "gpu1")
    probes = [probe("gpu", f"gpu{i}", "nvml-power") for i in range(3)]
    verdict = judge(rows, probes, {"gpu": "nvml-power"})
    gpu = verdict["gate"]["gpu"]
    assert not verdict["valid"] and gpu["missing_devices"] == ["gpu1", "gpu2"]
    assert any("gpu1 stopped answering 4.00 s into the 10.00 s window" in r for r in verdict["invalid_reasons"])
    assert any("gpu2 gave no sample in the window" in r for r in verdict["invalid_reasons"])


def test_thermal_throttling_fails_power_capping_is_reported_only():
    hot = pynvml.nvmlClocksThrottleReasonHwThermalSlowdown
    capped = pynvml.nvmlClocksThrottleReasonSwPowerCap
    rows = gpu_rows(times(end=T0 + 5), reasons=capped) + gpu_rows(times(start=T0 + 5.05), reasons=capped | hot)
    verdict = judge(rows, [probe("gpu", "gpu0", "nvml-power")], {"gpu": "nvml-power"})
    assert verdict["gate"]["gpu"]["throttle_reasons"] == ["hw_thermal_slowdown", "sw_power_cap"]
    assert verdict["invalid_reasons"] == ["gpu: clocks throttled during the window (hw_thermal_slowdown)"]
    capped_only = judge(gpu_rows(times(), reasons=capped), [probe("gpu", "gpu0", "nvml-power")],
                        {"gpu": "nvml-power"})
    assert capped_only["valid"] and capped_only["gate"]["gpu"]["throttle_reasons"] == ["sw_power_cap"]
    assert throttle_names(0x4 | 0x40 | 0x80) == ["sw_power_cap", "hw_thermal_slowdown", "hw_power_brake_slowdown"]


def test_temperature_drift_fails_on_gpus_and_cpus():
    warming = gpu_rows(times(), temperature=lambda t: 40.0 + 2.5 * (t - T0))  # +25 C over 10 s
    verdict = judge(warming, [probe("gpu", "gpu0", "nvml-power")], {"gpu": "nvml-power"})
    assert not verdict["valid"] and verdict["gate"]["gpu"]["temperature_drift_c"] == pytest.approx(25.0, abs=0.3)
    assert any("temperature drifted 25" in r for r in verdict["invalid_reasons"])
    state = {"start": {"cpu_temperature_c": 45.0}, "end": {"cpu_temperature_c": 71.0}}
    cpu = judge(rapl_rows(times()), [probe("cpu", "package-0", "rapl")], {"cpu": "rapl"}, state=state)
    assert cpu["gate"]["cpu"]["temperature_drift_c"] == 26.0 and not cpu["valid"]
    relaxed = judge(rapl_rows(times()), [probe("cpu", "package-0", "rapl")], {"cpu": "rapl"}, state=state,
                    config={"max_temperature_drift_c": 30})
    assert relaxed["valid"]


def test_a_domain_without_any_sample_fails_and_another_source_is_judged_when_its_own_left_none():
    verdict = judge([], [], {"ram": "codecarbon-ram-model"})
    assert not verdict["valid"] and verdict["invalid_reasons"] == ["ram: no trace samples"]
    fallback = judge(rapl_rows(times()), [probe("cpu", "package-0", "rapl")], {"cpu": "codecarbon-load-model"})
    assert fallback["gate"]["cpu"]["sources"] == ["rapl"] and fallback["valid"]
