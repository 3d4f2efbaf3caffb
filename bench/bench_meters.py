"""Issue 4 and 14 benchmarks, measured side by side in one run on this machine.

1. Meter overhead: throughput with the meters running / without, same model and
   process, runs interleaved (goal >= 0.99).
2. Window purity: time in the window outside the counted iterations' own work
   (step + device sync) / window (goal <= 1 %), and the meters' span beyond the
   window / window (the energy window's excess).
3. Trace recorder overhead (#14): throughput with the meters and the job's trace
   recorder (jobs.meters.trace, every probe of the meters, at --trace-period-s)
   / with the meters alone, interleaved pairs (goal >= 0.99); and the recorder
   thread's own CPU time (psutil, per thread) / window: its share of one core.

Usage: python bench/bench_meters.py [--pairs 5] [--window-s 5] [--trace-pairs 5] [--trace-period-s 0.1]
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
from jobs.meters.trace import DEFAULT_PERIOD_S, TraceRecorder
from jobs.runner import measure_window


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, by its kernel id."""
    import psutil

    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return float("nan")


def trace_overhead(meters, step, batch: int, pairs: int, window_s: float, period_s: float) -> None:
    """Meters on in both windows of a pair; the trace recorder in one of them, alternating first."""
    traced, plain, cpu_share, samples = [], [], [], []
    for pair in range(pairs):
        for with_trace in ((True, False) if pair % 2 == 0 else (False, True)):
            recorder = TraceRecorder(meters.trace_probes(), period_s=period_s) if with_trace else None
            if recorder is not None:
                recorder.start()
                cpu_before = thread_cpu_s(recorder._thread.native_id)
            meters.start()
            window = measure_window(step, workload.sync_devices, window_s, None)
            meters.stop()
            duration = window["end"] - window["start"]
            if recorder is not None:
                cpu_share.append((thread_cpu_s(recorder._thread.native_id) - cpu_before) / duration)
                samples.append(len(recorder.stop().rows) / duration)
            (traced if with_trace else plain).append(len(window["latencies"]) * batch / duration)
    pairwise = sorted(a / b for a, b in zip(traced, plain))
    print(f"trace recorder: {len(meters.trace_probes())} probe(s) every {period_s:g} s, "
          f"{statistics.fmean(samples):.1f} rows/s")
    print(f"throughput with meters + trace: {statistics.fmean(traced):.2f} samples/s (n={len(traced)}), "
          f"meters only: {statistics.fmean(plain):.2f} samples/s (n={len(plain)})")
    print(f"RATIO trace on / off = {statistics.fmean(traced) / statistics.fmean(plain):.4f} of the means, "
          f"{statistics.median(pairwise):.4f} median of {len(pairwise)} back-to-back pairs "
          f"(range {pairwise[0]:.3f}-{pairwise[-1]:.3f})  (goal >= 0.99)")
    print(f"RATIO recorder thread CPU / window = {statistics.fmean(cpu_share):.5f} mean, {max(cpu_share):.5f} worst "
          "(share of one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--input", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--trace-pairs", type=int, default=5, help="0: skip the trace recorder comparison")
    parser.add_argument("--trace-period-s", type=float, default=DEFAULT_PERIOD_S)
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
    if args.trace_pairs:
        trace_overhead(meters, step, args.batch, args.trace_pairs, args.window_s, args.trace_period_s)
    meters.close()

    if not args.pairs:
        return
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
