"""Issue 12 benchmark: TF : JAX : PyTorch on the 7 classification models, at small inputs, on this CPU.

For each backend (one subprocess each: Keras fixes its backend at import), each model and
phase: build, warm up, then `--windows` measurement windows of `--window-s` through the job's
own path (jobs.backends step in the backend's default execution, jobs.runner.measure_window,
the job's meters). Printed per model and phase: throughput and J/sample per backend (mean and
95 % Student-t interval over the windows; no interval below 3 windows), and the ratios to
TensorFlow. Energy here is codecarbon's estimate (this machine has no RAPL): labelled as such.
Backends run one after the other in one invocation, never at the same time.

Usage: python bench/bench_frameworks.py [--backends tensorflow jax torch] [--models ...]
       [--phase inference|training|both] [--window-s 3] [--windows 3] [--input 64] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["mobilenet_v2", "inception_v3", "inception_v4", "inception_resnet_v2", "resnet_v2_50",
          "resnet_v2_152", "vgg_16"]
MIN_INPUT = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}


def interval(values: list) -> tuple:
    """(mean, half-width of the 95 % t interval or nan below 3 values)."""
    mean = statistics.fmean(values)
    if len(values) < 3:
        return mean, math.nan
    from scipy import stats

    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def worker(args) -> None:
    from jobs import backends

    backends.select_backend(args.worker)
    import keras

    from jobs import workload
    from jobs.catalog import get_test
    from jobs.meters import build_meters
    from jobs.runner import measure_window

    meters = build_meters(Path(tempfile.mkdtemp()), {"id": "bench", "campaign": "bench"},
                          {"country_iso_code": "FRA", "carbon_intensity_g_per_kwh": 56.039, "nvml_poll_hz": 20})
    for name in args.models:
        test = get_test(name)
        size = max(args.input, MIN_INPUT.get(name, 32))
        for phase in args.phases:
            sub = test.subtests_for(phase)[0]
            model = test.load_builder()((size, size, 3), sub.output_shape)
            x, y = workload.synthetic_batch(test.task, args.batch, (size, size, 3), tuple(model.output_shape[1:]))
            step = workload.make_step(model, phase, x, y)
            for _ in range(2):
                step()
                step.sync()
            throughput, joules = [], []
            for _ in range(args.windows):
                meters.start()
                window = measure_window(step, step.sync, args.window_s, None)
                energy = meters.stop()
                samples = len(window["latencies"]) * args.batch
                throughput.append(samples / (window["end"] - window["start"]))
                joules.append(sum(d.joules for d in energy.domains.values()) / samples)
            sources = sorted({d.source for d in energy.domains.values()})
            print(json.dumps({"backend": args.worker, "model": name, "phase": phase, "input": size,
                              "execution": step.execution, "throughput": throughput, "j_per_sample": joules,
                              "sources": sources}), flush=True)
            del model, step
            keras.backend.clear_session()
    meters.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="*", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--phase", choices=["inference", "training", "both"], default="both")
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.phases = ["inference", "training"] if args.phase == "both" else [args.phase]
    if args.worker:
        return worker(args)

    rows = {}
    for backend in args.backends:
        started = time.perf_counter()
        command = [sys.executable, __file__, "--worker", backend, "--models", *args.models, "--phase", args.phase,
                   "--window-s", str(args.window_s), "--windows", str(args.windows), "--input", str(args.input),
                   "--batch", str(args.batch)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode:
            print(f"{backend}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows[(row["model"], row["phase"], backend)] = row
        print(f"[{backend}: {time.perf_counter() - started:.0f} s]", flush=True)

    for name in args.models:
        for phase in args.phases:
            ref = rows.get((name, phase, "tensorflow"))
            parts = []
            for backend in args.backends:
                row = rows.get((name, phase, backend))
                if row is None:
                    parts.append(f"{backend}: -")
                    continue
                (t, th), (j, jh) = interval(row["throughput"]), interval(row["j_per_sample"])
                ratio = ""
                if ref is not None and backend != "tensorflow":
                    ratio = (f" [x{t / statistics.fmean(ref['throughput']):.2f} throughput, "
                             f"x{j / statistics.fmean(ref['j_per_sample']):.2f} J/sample vs TF]")
                parts.append(f"{backend} ({row['execution']}): {t:.2f} ±{th:.2f} samples/s, {j:.3g} ±{jh:.2g} J/sample"
                             f" ({'+'.join(row['sources'])}, estimated unless rapl/nvml){ratio}")
            size = next((r["input"] for (m, p, _), r in rows.items() if m == name and p == phase), "?")
            print(f"{name} {phase} {size}x{size} batch {args.batch}, {args.windows} windows of {args.window_s:g} s:\n  "
                  + "\n  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
