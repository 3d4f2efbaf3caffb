"""Issue 4 benchmarks, measured side by side in one run on this machine.

1. Meter overhead: throughput with the meters running / without, same model and
   process, runs interleaved (goal >= 0.99).
2. Window purity: time in the window outside the counted iterations' own work
   (step + device sync) / window (goal <= 1 %), and the meters' span beyond the
   window / window (the energy window's excess).

Usage: python bench/bench_meters.py [--pairs 5] [--window-s 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from jobs import workload
from jobs.catalog import get_test
from jobs.meters import build_meters
from jobs.runner import measure_window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--input", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    test = get_test("mobilenet_v2")
    model = test.load_builder()((args.input, args.input, 3), (1001,))
    x, y = workload.synthetic_batch(test.task, args.batch, (args.input, args.input, 3), (1001,))
    step = workload.make_step(model, "inference", x, y, "graph")
    for _ in range(5):
        step()
    workload.sync_devices()

    folder = Path(tempfile.mkdtemp(prefix="bench-meters-"))
    cell = {"id": "bench", "campaign": "bench"}
    config = {"country_iso_code": "FRA", "carbon_intensity_g_per_kwh": 56.039, "nvml_poll_hz": 20}
    meters = build_meters(folder, cell, config)
    print(f"meters: {[m.name for m in meters.meters]}; unavailable: {meters.notes}")

    inner = []  # each iteration's own work, timed inside the step

    def timed_step():
        start = time.perf_counter()
        step()
        workload.sync_devices()
        inner.append(time.perf_counter() - start)

    on, off, purity, excess = [], [], [], []
    for pair in range(args.pairs):
        for metered in ((True, False) if pair % 2 == 0 else (False, True)):  # interleaved, alternating first
            inner.clear()
            if metered:
                meters.start()
            window = measure_window(timed_step, workload.sync_devices, args.window_s, None)
            duration = window["end"] - window["start"]
            if metered:
                energy = meters.stop()
                excess.append((energy.duration_s - duration) / duration)
            throughput = len(window["latencies"]) * args.batch / duration
            (on if metered else off).append(throughput)
            purity.append((duration - sum(inner)) / duration)
    meters.close()

    ratio = statistics.fmean(on) / statistics.fmean(off)
    pairwise = sorted(a / b for a, b in zip(on, off))  # each pair ran back to back: drift cancels
    print(f"throughput with meters: {statistics.fmean(on):.2f} samples/s (n={len(on)}), "
          f"without: {statistics.fmean(off):.2f} samples/s (n={len(off)})")
    print(f"RATIO meters on / off = {ratio:.4f} of the means, {statistics.median(pairwise):.4f} median of "
          f"{len(pairwise)} back-to-back pairs (range {pairwise[0]:.3f}-{pairwise[-1]:.3f})  (goal >= 0.99)")
    print(f"RATIO window time outside counted iterations / window = {max(purity):.5f} worst, "
          f"{statistics.fmean(purity):.5f} mean  (goal <= 0.01)")
    print(f"meter span beyond the window / window = {statistics.fmean(excess):.5f} mean "
          f"(start/stop of the meters, outside the timed window)")


if __name__ == "__main__":
    main()
