"""A short check of the GPU energy path, for a machine with an NVIDIA GPU (not CI).

Runs a matmul load on the GPU for a few windows and prints, side by side, the
energy of our NVML meter (counter or polling), codecarbon's GPU figure, the
sources they report, and an idle window. Expected: nvml-counter on Volta and
newer, our figure and codecarbon's within a few percent over >= 10 s windows,
idle power well below loaded power.

Usage: python bench/gpu_energy_check.py [--window-s 10]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from jobs.meters import build_meters


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
    with tf.device("/GPU:0" if gpus else "/CPU:0"):
        a = tf.random.normal((8192, 8192))
        for _ in range(3):
            a = tf.linalg.matmul(a, a) / 8192.0
        tf.test.experimental.sync_devices()
        meters.start()
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < args.window_s:
            a = tf.linalg.matmul(a, a) / 8192.0
            tf.test.experimental.sync_devices()
            n += 1
        duration = time.perf_counter() - start
        energy = meters.stop()
    print(f"load: {n} matmuls in {duration:.2f} s")
    for name, domain in energy.domains.items():
        others = [(round(a["joules"], 1), a["source"], a["via"]) for a in energy.alternatives.get(name, [])]
        print(f"  {name}: {domain.joules:.1f} J ({domain.source} via {domain.via}, "
              f"{domain.joules / duration:.1f} W); others: {others}")
    meters.close()


if __name__ == "__main__":
    main()
