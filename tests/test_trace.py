"""Power traces: the recorder over real RAPL zone reads (a powercap tree in the kernel's layout), a
stand-in NVML (no GPU here) built from nvidia-ml-py's own return types and error classes, and real
codecarbon on this machine (no RAPL, no GPU: its models, sampled by us); trace.parquet's columns."""
from __future__ import annotations

import math
import time

import pynvml
import pytest

from jobs.meters.nvml import NvmlMeter
from jobs.meters.rapl import RaplMeter
from jobs.meters.trace import COLUMNS, Trace, TraceRecorder, power_from_counter, read_trace
from tests.test_meters import set_uj, zone


class RecordedNvml:
    """NVML as nvidia-ml-py exposes it, for `count` GPUs: ints in mW/mJ/MHz/°C, the throttle bitmask as
    the c_ulonglong's int value, names as str, errors as pynvml.NVMLError subclasses with their codes.

    `power_w`, `temperature_c`, `reasons` are per-GPU functions of the seconds since creation;
    `lost_after_s` makes a GPU answer NVML_ERROR_GPU_IS_LOST after that time; `counter` per GPU (Volta+).
    """

    def __init__(self, count=2, power_w=None, temperature_c=None, reasons=None, lost_after_s=None,
                 counter=None, name="NVIDIA A100-SXM4-40GB", limit_w=400.0, root=False):
        self.t0 = time.monotonic()
        self.count, self.name = count, name
        self.power = power_w or {i: (lambda t: 200.0) for i in range(count)}
        self.temperature = temperature_c or {i: (lambda t: 50.0) for i in range(count)}
        self.reasons = reasons or {i: (lambda t: pynvml.nvmlClocksEventReasonNone) for i in range(count)}
        self.lost = lost_after_s or {}
        self.counter = counter if counter is not None else {i: True for i in range(count)}
        self.limit_mw = {i: int(limit_w * 1000) for i in range(count)}
        self.root, self.set_calls = root, []
        self.energy_mj = {i: 1_000_000.0 for i in range(count)}
        self.last = {i: 0.0 for i in range(count)}

    def _t(self):
        return time.monotonic() - self.t0

    def _check(self, handle):
        if handle in self.lost and self._t() > self.lost[handle]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}0000000-aaaa-bbbb-cccc-ddddeeeeffff"

    def nvmlDeviceGetName(self, handle):
        return self.name

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetVbiosVersion(self, handle):
        return "92.00.45.00.03"

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check(handle)
        return int(self.power[handle](self._t()) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self._check(handle)
        if not self.counter[handle]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        t = self._t()
        self.energy_mj[handle] += (t - self.last[handle]) * self.power[handle](t) * 1000
        self.last[handle] = t
        return int(self.energy_mj[handle])

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._check(handle)
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return int(self.temperature[handle](self._t()))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self._check(handle)
        return int(self.reasons[handle](self._t()))

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {pynvml.NVML_CLOCK_SM: 1410, pynvml.NVML_CLOCK_MEM: 1215}[clock]

    def nvmlDeviceGetPerformanceState(self, handle):
        return 0

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return self.limit_mw[handle]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self.limit_mw[handle]

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle):
        return [100_000, 400_000]  # mW, as a list [min, max]

    def nvmlDeviceSetPowerManagementLimit(self, handle, limit):
        if not self.root:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        self.set_calls.append((handle, limit))
        self.limit_mw[handle] = int(limit)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        process = pynvml.c_nvmlProcessInfo_t()
        process.pid, process.usedGpuMemory = 4242, 1 << 30
        return [process] if handle == 0 else []


def test_rapl_probes_record_raw_counters_with_wraps_and_power(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    small = 100_000_000  # a 100 J range, to wrap quickly
    p0 = zone(root, "intel-rapl:0", "package-0", small - 3_000_000, max_uj=small)
    probes = RaplMeter(root, period_s=60).trace_probes()
    assert [(p.domain, p.device, p.source, p.counter, p.counter_range_j) for p in probes] == [
        ("cpu", "package-0", "rapl", True, 100.0)]
    recorder = TraceRecorder(probes, period_s=0.02)
    recorder.start()
    time.sleep(0.1)
    set_uj(p0, 2_000_000)  # wrapped: +3 J to the top, +2 J after
    time.sleep(0.1)
    trace = recorder.stop()
    energies = [r[5] for r in trace.rows]
    assert energies[0] == pytest.approx(97.0) and energies[-1] == pytest.approx(2.0)
    drop = next(i for i, (a, b) in enumerate(zip(energies, energies[1:])) if b < a) + 1
    t_before, t_after = trace.rows[drop - 1][0], trace.rows[drop][0]
    assert trace.rows[drop][4] == pytest.approx(5.0 / (t_after - t_before))  # the wrap corrected in power_w
    assert math.isnan(trace.rows[0][4])  # no power from the first read
    assert power_from_counter((0.0, 10.0), 2.0, 4.0, None) != power_from_counter((0.0, 10.0), 2.0, 4.0, 100.0)


def test_nvml_probes_power_counter_temperature_and_throttle(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    hot = pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwPowerCap
    nvml = RecordedNvml(count=2, counter={0: True, 1: False},
                        reasons={0: lambda t: 0, 1: lambda t: hot if t > 0.1 else 0},
                        temperature_c={0: lambda t: 40 + 100 * t, 1: lambda t: 60})
    meter = NvmlMeter(nvml, poll_hz=20)
    probes = meter.trace_probes()
    assert sorted((p.device, p.source) for p in probes) == [("gpu0", "nvml-counter"), ("gpu0", "nvml-power"),
                                                            ("gpu1", "nvml-power")]  # no counter before Volta
    recorder = TraceRecorder(probes, period_s=0.02)
    recorder.start()
    time.sleep(0.3)
    trace = recorder.stop()
    power = [r for r in trace.rows if r[3] == "nvml-power"]
    counter = [r for r in trace.rows if r[3] == "nvml-counter"]
    assert all(r[4] == pytest.approx(200.0) and math.isnan(r[5]) for r in power)
    assert all(not math.isnan(r[5]) for r in counter) and counter[-1][5] > counter[0][5]
    assert {r[7] for r in power if r[2] == "gpu1"} == {0, hot}
    gpu0_temps = [r[6] for r in power if r[2] == "gpu0"]
    assert gpu0_temps[-1] > gpu0_temps[0]


def test_a_gpu_that_stops_answering_is_counted_not_fatal(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = NvmlMeter(RecordedNvml(count=2, lost_after_s={1: 0.1}), poll_hz=20)
    probes = [p for p in meter.trace_probes() if p.source == "nvml-power"]
    recorder = TraceRecorder(probes, period_s=0.02)
    recorder.start()
    time.sleep(0.3)
    trace = recorder.stop()
    assert trace.failed_reads["gpu/gpu1/nvml-power"] >= 5
    assert max(r[0] for r in trace.rows if r[2] == "gpu1") < max(r[0] for r in trace.rows if r[2] == "gpu0")


def test_codecarbon_path_here_gives_a_trace_of_its_models(tmp_path):
    """No RAPL and no GPU: codecarbon estimates; the trace samples its load model and RAM model."""
    from jobs.meters.codecarbon_meter import CodecarbonMeter

    meter = CodecarbonMeter(tmp_path, "p", "e", "FRA", 56.039)
    probes = meter.trace_probes()
    assert {(p.domain, p.source) for p in probes} >= {("ram", "codecarbon-ram-model")}
    assert {p.source for p in probes if p.domain == "cpu"} <= {"codecarbon-load-model", "codecarbon-constant"}
    recorder = TraceRecorder(probes, period_s=0.05)
    recorder.start()
    end = time.time() + 0.4
    while time.time() < end:  # some load, so the load model moves
        sum(i * i for i in range(20000))
    trace = recorder.stop()
    cpu = [r[4] for r in trace.rows if r[1] == "cpu"]
    ram = {r[4] for r in trace.rows if r[1] == "ram"}
    assert len(cpu) >= 5 and all(p > 0 for p in cpu)
    assert len(ram) == 1 and ram.pop() > 0  # the RAM model is a constant: it says so by being flat


def test_parquet_keeps_the_contract_columns_and_clips_to_the_margin(tmp_path):
    rows = [(float(t), "cpu", "package-0", "rapl", 10.0, float(t) * 10, math.nan, None) for t in range(100)]
    rows.append((50.0, "gpu", "gpu0", "nvml-power", 250.0, math.nan, 71.0, 0x44))
    trace = Trace(rows, [{"domain": "cpu", "device": "package-0", "source": "rapl"}], {}, 1.0, 2.0)
    clipped = trace.clipped(40.0, 60.0)
    assert min(r[0] for r in clipped.rows) == 38.0 and max(r[0] for r in clipped.rows) == 62.0
    clipped.write(tmp_path / "trace.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "trace.parquet")
    assert tuple(table.column_names) == COLUMNS
    assert tuple(table.column_names[:6]) == ("t_unix", "domain", "device", "source", "power_w", "energy_j")
    back = read_trace(tmp_path / "trace.parquet", clipped.meta())
    assert len(back.rows) == len(clipped.rows) and back.margin_s == 2.0
    gpu = next(r for r in back.rows if r[1] == "gpu")
    assert gpu[7] == 0x44 and math.isnan(gpu[5]) and gpu[6] == 71.0
    assert clipped.meta()["samples"] == 26 and clipped.meta()["file"] == "trace.parquet"


def test_collect_exports_every_done_cells_trace_and_names_a_damaged_one(tmp_path):
    """traces.parquet: the job's own trace files (its writer, its format) with the cell and window added."""
    import json

    import pandas as pd

    from orchestrator.traces import export_traces

    def cell(name, status="done", trace=True):
        folder = tmp_path / "cells" / name
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"status": status,
                                                        "window": {"start_unix": 100.0, "end_unix": 101.0}}))
        if trace:
            rows = [(99.5 + 0.25 * i, "cpu", "node", "codecarbon-load-model", 8.0, math.nan, math.nan, None)
                    for i in range(9)]
            Trace(rows).write(folder / "trace.parquet")
        return folder

    cell("a")
    cell("b", trace=False)  # a cell without a trace: nothing to export, no problem
    cell("c", status="failed")  # not done: left out
    (cell("d", trace=False) / "trace.parquet").write_bytes(b"PAR1 not parquet")
    out = export_traces(tmp_path)
    assert out["cells"] == 1 and out["rows"] == 9 and len(out["problems"]) == 1 and out["problems"][0].startswith("d:")
    table = pd.read_parquet(tmp_path / "traces.parquet")
    assert list(table.columns) == list(COLUMNS) + ["cell_id", "window_start_unix", "window_end_unix", "in_window"]
    assert set(table["cell_id"]) == {"a"} and table["in_window"].sum() == 5  # 100.0 ... 101.0 at 0.25 s
