"""A short check of the GPU energy path, for a machine with an NVIDIA GPU (not CI).

Runs a matmul load on the GPU for a few windows and prints, side by side, the
energy of our NVML meter (counter or polling), codecarbon's GPU figure, the
sources they report, and an idle window. Expected: nvml-counter on Volta and
newer, our figure and codecarbon's within a few percent over >= 10 s windows,
idle power well below loaded power.

Then (#14) the evidence path: the window's power trace (per device and source, with
temperatures and throttle reasons), the gate's verdict, the machine state (clocks,
temperature, power limit) at both edges, and a power limit set to 80 % of the current one,
read back, loaded for a few seconds, and restored (or the reason it may not be set here).

Usage: python bench/gpu_energy_check.py [--window-s 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from jobs.meters import build_meters
from jobs.meters.gate import gate, throttle_names
from jobs.meters.knobs import KnobRefused, applied_knobs
from jobs.meters.state import machine_state
from jobs.meters.trace import TraceRecorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window-s", type=float, default=10.0)
    args = parser.parse_args()
    gpus = tf.config.list_physical_devices("GPU")
    print(f"TensorFlow GPUs: {gpus}")
    meters = build_meters(Path(tempfile.mkdtemp()), {"id": "gpu-check", "campaign": "gpu-check"},
                          {"country_iso_code": "FRA", "carbon_intensity_g_per_kwh": 56.039, "nvml_poll_hz": 20})
    print(f"meters: {[m.name for m in meters.meters]}; notes: {meters.notes}")
    idle = meters.measure_idle(args.window_s)
    print("idle:", {k: (round(v.joules / idle.duration_s, 1), v.source) for k, v in idle.domains.items()},
          "W;", {k: [(round(a['joules'] / idle.duration_s, 1), a['source']) for a in v]
                 for k, v in idle.alternatives.items()})
    recorder = TraceRecorder(meters.trace_probes(), period_s=0.05, margin_s=1.0)
    nvml, handles = meters.nvml()
    with tf.device("/GPU:0" if gpus else "/CPU:0"):
        a = tf.random.normal((8192, 8192))
        recorder.start()
        for _ in range(3):
            a = tf.linalg.matmul(a, a) / 8192.0
        tf.test.experimental.sync_devices()
        state = {"start": machine_state(nvml, handles)}
        window_start = time.time()
        meters.start()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < args.window_s:
            a = tf.linalg.matmul(a, a) / 8192.0
            tf.test.experimental.sync_devices()
            n += 1
        duration = time.perf_counter() - start
        energy = meters.stop()
        window_end = time.time()
        state["end"] = machine_state(nvml, handles)
        time.sleep(1.0)
        trace = recorder.stop().clipped(window_start, window_end)
    print(f"load: {n} matmuls in {duration:.2f} s")
    report_evidence(trace, energy, state, window_start, window_end)
    check_power_limit(nvml, handles, a)
    for name, domain in energy.domains.items():
        others = [(round(a["joules"], 1), a["source"], a["via"]) for a in energy.alternatives.get(name, [])]
        print(f"  {name}: {domain.joules:.1f} J ({domain.source} via {domain.via}, "
              f"{domain.joules / duration:.1f} W); others: {others}")
    meters.close()


def report_evidence(trace, energy, state, t0: float, t1: float) -> None:
    """The trace per device and source, the gate's verdict, the state at both edges."""
    groups = {}
    for row in trace.rows:
        groups.setdefault((row[1], row[2], row[3]), []).append(row)
    for (domain, device, source), rows in sorted(groups.items()):
        powers = [r[4] for r in rows if r[4] == r[4]]
        temps = [r[6] for r in rows if r[6] == r[6]]
        reasons = sorted({n for r in rows if r[7] is not None for n in throttle_names(int(r[7]))})
        print(f"  trace {domain}/{device}/{source}: {len(rows)} samples"
              + (f", mean {sum(powers) / len(powers):.1f} W" if powers else "")
              + (f", {min(temps):.0f}-{max(temps):.0f} C" if temps else "") + (f", throttle {reasons}" if reasons else ""))
    verdict = gate(trace, t0, t1, {name: d.source for name, d in energy.domains.items()}, None, state)
    print(f"  gate: valid={verdict['valid']} {verdict['invalid_reasons']}")
    for edge in ("start", "end"):
        for gpu in state[edge].get("gpus", []):
            print(f"  {edge} GPU {gpu['index']}: {gpu.get('temperature_c')} C, SM {gpu.get('sm_clock_mhz')} MHz, "
                  f"mem {gpu.get('memory_clock_mhz')} MHz, limit {gpu.get('power_limit_w')} W, "
                  f"{gpu.get('throttle_names')}")


def check_power_limit(nvml, handles, a) -> None:
    """Set 80 % of the current power limit, load the GPU 5 s, restore; or say why it may not be set."""
    if not handles:
        print("power limit: no NVML GPU here")
        return
    current = min(nvml.nvmlDeviceGetPowerManagementLimit(h) for h in handles.values()) / 1000.0
    low = max(nvml.nvmlDeviceGetPowerManagementLimitConstraints(h)[0] for h in handles.values()) / 1000.0
    target = max(low, round(current * 0.8))
    try:
        with applied_knobs({"gpu_power_limit_w": target}, nvml, handles) as record:
            end = time.perf_counter() + 5
            while time.perf_counter() < end:
                a = tf.linalg.matmul(a, a) / 8192.0
                tf.test.experimental.sync_devices()
            print(f"power limit: loaded 5 s at {target} W; power now "
                  f"{[nvml.nvmlDeviceGetPowerUsage(h) / 1000 for h in handles.values()]} W")
    except KnobRefused as exc:
        print(f"power limit: not allowed here: {exc}")
        return
    print(f"power limit: {record}")


if __name__ == "__main__":
    main()
