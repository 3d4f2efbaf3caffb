"""Issue 3 benchmark: harness overhead on the 7 classification models, on this CPU.

For each model: throughput of the job's own path (jobs.workload.make_step in
graph mode, timed by jobs.runner.measure_window with a device sync per
iteration) divided by a bare compiled Keras loop on the same model and batch
(`predict_on_batch` for inference; `train_on_batch` after `compile(Adam(1e-4),
sum of squared errors)` for training, BatchNorm frozen). Keras can only freeze
BatchNorm by making it non-trainable, so that baseline skips the gamma/beta
gradients our step computes (as the original graphs did): for BatchNorm-heavy
nets it does less work. Training therefore also prints the ratio to the very
same compiled step called in a bare loop: the harness's own overhead.
Windows alternate (harness, bare,
harness, bare, ...) in one process; the printed ratio is of the means.
Goal: >= 0.98.

Sizes default to small inputs so the run fits a 2-core machine (about 10 min);
`--original` uses the catalog's batches and input sizes (for a GPU node).

Per backend (`--backend tensorflow|jax|torch`, issue 12): the same comparison with that
backend's step (jobs/backends.py, default execution) and Keras' own compiled loop on it; the
"same step in a bare loop" ratio (printed for both phases) is the harness's own overhead there.

Usage: python bench/bench_harness.py [--backend B] [--phase inference|training|both] [--window-s 3] [--pairs 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

from jobs import backends
from jobs.catalog import get_test
from jobs.runner import measure_window

MODELS = ["mobilenet_v2", "inception_v3", "inception_v4", "inception_resnet_v2", "resnet_v2_50",
          "resnet_v2_152", "vgg_16"]
SMALL = {"mobilenet_v2": 96, "inception_v3": 96, "inception_v4": 96, "inception_resnet_v2": 96,
         "resnet_v2_50": 64, "resnet_v2_152": 64, "vgg_16": 64}


def bare_loop(call, seconds: float) -> float:
    """Iterations per second of a bare Keras call, with the result fetched (a sync) each time."""
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["inference", "training", "both"], default="both")
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--original", action="store_true", help="the catalog's batches and input sizes")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--backend", choices=list(backends.BACKENDS), default="tensorflow")
    args = parser.parse_args()
    backends.select_backend(args.backend)  # before Keras is imported
    import keras

    from jobs import workload
    phases = ["inference", "training"] if args.phase == "both" else [args.phase]

    for name in args.models:
        test = get_test(name)
        for phase in phases:
            sub = test.subtests_for(phase)[0]
            shape = sub.input_shape if args.original else (SMALL[name], SMALL[name], 3)
            batch = sub.batch if args.original else args.batch
            model = test.load_builder()(shape, sub.output_shape)
            x, y = workload.synthetic_batch(test.task, batch, shape, tuple(model.output_shape[1:]))
            step = workload.make_step(model, phase, x, y)  # the backend's default execution
            if phase == "inference":
                def bare():
                    model.predict_on_batch(x)
            else:
                bare_model = test.load_builder()(shape, sub.output_shape)
                for layer in bare_model.layers:  # frozen BatchNorm, as in the original graphs and our step
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False
                bare_model.compile(optimizer=keras.optimizers.Adam(1e-4),
                                   loss=lambda t, o: backends.sum_squared_error(o, t))

                def bare():
                    bare_model.train_on_batch(x, y)
            for _ in range(2):  # compile both paths outside the timed windows
                step()
                bare()
            step.sync()
            ours, theirs, same = [], [], []
            for _ in range(args.pairs):
                window = measure_window(step, step.sync, args.window_s, None)
                ours.append(len(window["latencies"]) / (window["end"] - window["start"]))
                theirs.append(bare_loop(bare, args.window_s))
                # the very same compiled step, without the harness around it
                same.append(bare_loop(lambda: (step(), step.sync()), args.window_s))
            ratio = statistics.fmean(ours) / statistics.fmean(theirs)
            extra = (f"; vs the same step in a bare loop RATIO {statistics.fmean(ours) / statistics.fmean(same):.3f}"
                     if same else "")
            print(f"{args.backend:10} {name:20} {phase:9} input {shape[0]}x{shape[1]} batch {batch}: harness "
                  f"{statistics.fmean(ours) * batch:8.2f} samples/s, bare {statistics.fmean(theirs) * batch:8.2f} "
                  f"samples/s, RATIO {ratio:.3f} (goal >= 0.98){extra}", flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
