"""Issue 13 benchmark: the cost of reading the meters live at every step (energy budgets).

MobileNet-V2 trains on digits with the fit phase's own trainer (jobs.fit.KerasTrainer), in one
process, epochs alternating: with a budget that is never reached (the meters are read after every
step, as for a real budget) and without one (no reading). The printed ratio is the mean throughput
with reading over the mean without. Goal: >= 0.99. On a VM the reader is codecarbon's estimate
(the costliest: it measures at each read); on a node with RAPL it is a sysfs read.

Usage: python bench/bench_budget.py [--pairs 3] [--size 32] [--batch 32]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from jobs.budget import Budget, LiveEnergy
from jobs.catalog import get_test
from jobs.data import load_dataset
from jobs.fit import FIT_DEFAULTS, KerasTrainer
from jobs.meters import build_meters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    shape = (args.size, args.size, 3)
    data = load_dataset({"kind": "digits"}, shape, 1.0, args.batch)
    params = {"precision": "fp32", "seed": 0, "repetition": 0, "batch_size": args.batch, "execution": "graph"}
    trainer = KerasTrainer(get_test("mobilenet_v2"), shape, data.num_classes, dict(FIT_DEFAULTS), params)
    trainer.warm_up(len(data.y_train), len(data.y_val), shape)
    x = trainer.prepare(data.x_train)
    with tempfile.TemporaryDirectory() as folder:
        energy = {"country_iso_code": "FRA", "carbon_intensity_g_per_kwh": 56.039}
        meters = build_meters(Path(folder), {"id": "bench", "campaign": "bench"}, energy)
        meters.start()
        live = LiveEnergy(meters)
        rates = {"reading": [], "plain": []}
        reads = []
        for _ in range(args.pairs):
            for mode in ("reading", "plain"):
                budget = Budget(live, 1e12 if mode == "reading" else None)
                clock = time.perf_counter()
                step = trainer.train_epoch(x, data.y_train, budget)
                rates[mode].append(step["samples"] / (time.perf_counter() - clock))
                if mode == "reading":
                    reads.append(budget.read_s / max(budget.steps, 1))
        meters.stop()
        meters.close()
    ratio = statistics.fmean(rates["reading"]) / statistics.fmean(rates["plain"])
    print(f"live meter: {live.label()}")
    print(f"throughput with a read per step / without: {ratio:.4f} "
          f"({args.pairs} pairs; {statistics.fmean(reads) * 1e3:.2f} ms per read) goal >= 0.99")


if __name__ == "__main__":
    main()
