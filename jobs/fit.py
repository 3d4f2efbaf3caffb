"""The `fit` phase: train to quality on a real dataset, under the same meters and window as any cell.

Epochs of real training, each followed by an evaluation on the validation split. Training stops at
the first of: the validation accuracy reaching `target_accuracy` (checked after each epoch's
evaluation, as MLPerf Training does), `epochs` epochs, or the energy `budget` (checked at every
step boundary, jobs/budget.py). The window covers training and evaluation (time-to-target counts
both, as MLPerf does); evaluation's time and energy are also reported apart.

The result's `fit` section holds the learning curve (per epoch: samples, time, energy by domain with
its source, train loss, validation accuracy), the final and best accuracy, the stop reason, time
and energy to the target, and the budget record. `data_in_window` says whether decoding the dataset
(the input pipeline) happened inside the window; either way the dataset is checked first, so bad
input fails the cell before any window opens.

Deep models train through Keras' backend-neutral API (compile/fit/evaluate), so the phase runs on
any Keras backend; shallow ones through scikit-learn (jobs/shallow.py). Deep models read their
batches through a `keras.utils.PyDataset` (Keras' own input pipeline on every backend) that slices
the uint8 images (a file-backed array for folders, jobs/data.py) and scales each batch as it goes,
`PREFETCH_BATCHES` ahead on a worker thread: the whole dataset is never converted at once. Inputs
are pixels scaled to [0, 1]; the loss is sparse categorical cross-entropy with Adam. BatchNorm momentum
is set to `bn_momentum` (default 0.9): Keras' 0.999 needs about a thousand steps before the moving
statistics used at evaluation track the data, longer than a small dataset's whole training.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from jobs.budget import Budget, LiveEnergy, parse_budget, total
from jobs.catalog import get_test
from jobs.data import load_dataset, peek_classes

# Batches the input pipeline prepares ahead of the training step (Keras' PyDataset queue).
PREFETCH_BATCHES = 4
FIT_DEFAULTS = {"epochs": 10, "target_accuracy": None, "learning_rate": 1e-3, "bn_momentum": 0.9,
                "estimators_per_epoch": 10}


def batches(x, y, batch: int, order=None, weight=None, prefetch: int = PREFETCH_BATCHES):
    """A keras.utils.PyDataset over uint8 images `x` (an array or a memmap) and labels `y`: batch i
    is the rows `order[i*batch:(i+1)*batch]` scaled to float32 [0, 1]; with `weight` (one per
    position in `order`), (x, y, weight) triples. Only full batches: one traced shape."""
    import keras

    order = np.arange(len(y)) if order is None else order

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            # workers > 1: Keras' enqueuer (two threads) keeps up to `prefetch` batches ready, on every backend.
            super().__init__(workers=2, use_multiprocessing=False, max_queue_size=prefetch)

        def __len__(self):
            return len(order) // batch

        def __getitem__(self, index):
            positions = slice(index * batch, (index + 1) * batch)
            rows = order[positions]
            images = np.asarray(x[rows], dtype=np.float32) / 255.0
            return (images, y[rows]) if weight is None else (images, y[rows], weight[positions])
    return Batches()


class KerasTrainer:
    """A catalog model trained with model.fit, one epoch per call, stopping at a budget's step boundary."""

    def __init__(self, test, input_shape: tuple, num_classes: int, fit: dict, params: dict):
        import keras

        keras.mixed_precision.set_global_policy({"fp32": "float32"}.get(params["precision"], params["precision"]))
        keras.utils.set_random_seed(params["seed"] + params["repetition"])
        self.keras = keras
        self.model = test.load_builder()(input_shape, (num_classes,))
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = fit["bn_momentum"]
        # weighted_metrics: evaluate pads its last batch with weight-0 images, which accuracy must not count.
        self.model.compile(optimizer=keras.optimizers.Adam(learning_rate=fit["learning_rate"]),
                           loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"],
                           jit_compile=params.get("execution") == "xla",
                           run_eagerly=params.get("execution") == "eager")
        self.batch = params["batch_size"]
        self.rng = np.random.default_rng(params["seed"] + params["repetition"])  # each epoch's order

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return x  # uint8 as loaded; each batch is scaled as the pipeline reads it (batches())

    def warm_up(self, n_train: int | None, n_val: int | None, input_shape: tuple) -> None:
        """Trace the training and evaluation steps before the window, then restore the initial state.

        As every cell does (jobs/runner.py): compilation is kept out of the measured window. Every
        batch has the same shape (train_epoch and evaluate see to it), so one trace of each step
        serves the whole run: tracing MobileNet-V2's training step takes TensorFlow 20-50 s on 2 cores,
        a second shape would double it. The weights, BatchNorm statistics and optimizer state (Adam
        starts at zero) are put back, so training starts afresh.
        """
        x, y = np.zeros((self.batch, *input_shape), np.uint8), np.zeros(self.batch, np.int64)
        self._build_state(x, y)
        weights = self.model.get_weights()
        before = {v.path: v.numpy() for v in self.model.optimizer.variables}
        self.model.fit(batches(x, y, self.batch), epochs=1, verbose=0)  # the same input pipeline as the window's
        self.model.evaluate(batches(x, y, self.batch, weight=np.ones(self.batch, np.float32)), verbose=0)
        self.model.set_weights(weights)
        for variable in self.model.optimizer.variables:
            variable.assign(before[variable.path] if variable.path in before else np.zeros(variable.shape,
                                                                                           variable.dtype))

    def _build_state(self, x: np.ndarray, y: np.ndarray) -> None:
        """Create the optimizer's slots and the compiled metrics' variables now, eagerly.

        Keras on TensorFlow without a distribution strategy creates them inside the first trace of the
        training step, and a tf.function whose first trace creates variables is traced a second time:
        building them here halves the warm-up's trace (~5 s of MobileNet-V2's ~20 s on 2 cores).
        """
        model = self.model
        model.optimizer.build(model.trainable_variables)
        images = x.astype(np.float32) / 255.0  # as batches() feeds them
        model.compute_metrics(images, y, model(images, training=False), sample_weight=np.ones(len(y), np.float32))
        model.reset_metrics()

    def train_epoch(self, x, y, budget: Budget) -> dict:
        """One epoch of full batches in a fresh seeded order; the last partial batch is dropped (its
        images are in other epochs' batches), as tf.data's drop_remainder does, so no step retraces."""
        steps = []
        order = self.rng.permutation(len(y))[:len(y) - len(y) % self.batch]

        class StepBoundary(self.keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                steps.append(batch)
                if budget.step():
                    self.model.stop_training = True  # Keras stops after this batch

        history = self.model.fit(batches(x, y, self.batch, order), epochs=1, shuffle=False, verbose=0,
                                 callbacks=[StepBoundary()])
        samples = len(steps) * self.batch
        return {"steps": len(steps), "samples": samples, "train_loss": float(history.history["loss"][-1])}

    def evaluate(self, x, y) -> float:
        """Accuracy over every validation image: the last batch is padded to full size with images of
        weight 0, which the accuracy does not count (BatchNorm uses its moving statistics here)."""
        pad = -len(y) % self.batch
        order = np.concatenate([np.arange(len(y)), np.zeros(pad, np.int64)])  # padding repeats image 0
        weight = np.concatenate([np.ones(len(y), np.float32), np.zeros(pad, np.float32)])
        return float(self.model.evaluate(batches(x, y, self.batch, order, weight), verbose=0,
                                         return_dict=True)["accuracy"])

    def model_record(self) -> dict:
        trainable = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return {"total_params": self.model.count_params(), "trainable_params": trainable,
                "output_shape": list(self.model.output_shape[1:]), "family": "deep"}


def fit_settings(params: dict) -> dict:
    return {**FIT_DEFAULTS, **(params.get("fit") or {})}


def run_fit(cell: dict, cell_dir: Path) -> dict:
    from jobs import hostinfo
    from jobs.idle import idle_baseline
    from jobs.meters import build_meters
    from jobs.meters.evidence import CellEvidence
    from jobs.runner import energy_record

    params = cell["params"]
    test = get_test(params["test"])
    if test.family != "shallow":  # before anything imports Keras: it picks its backend at import
        from jobs import backends

        backends.select_backend(params.get("backend", backends.DEFAULT_BACKEND))
    fit = fit_settings(params)
    spec = params["dataset"]
    in_window = bool(spec.get("data_in_window", False))
    input_shape = tuple(params["input_shape"])
    fraction = params.get("train_fraction", 1.0)
    budget_joules = parse_budget(params.get("budget"))
    timings = {}

    def load():
        return load_dataset(spec, input_shape, fraction, params["batch_size"])

    # Before any meter: bad data fails the cell here, never inside a window.
    clock = time.perf_counter()
    data = None if in_window else load()
    classes = data.classes if data is not None else peek_classes(spec)
    timings["data_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    meters = build_meters(cell_dir, cell, cell["energy"])
    timings["meters_setup_s"] = time.perf_counter() - clock
    evidence = CellEvidence(cell, meters)  # evidence (#14): load, cooldown, knobs, trace, state, as every cell
    try:
        evidence.check_load()
        evidence.cool_down(Path(cell_dir).parent.parent)
        clock = time.perf_counter()
        idle = idle_baseline(meters, Path(cell_dir).parent.parent, cell["energy"]["idle_s"],
                             cell["energy"]["idle_reuse_s"], cell["id"])
        timings["idle_s"] = time.perf_counter() - clock
        evidence.begin()  # knobs set, trace recording starts (build and warm-up are its front margin)

        clock = time.perf_counter()
        if test.family == "shallow":
            from jobs.shallow import ShallowTrainer

            trainer = ShallowTrainer(test, len(classes), fit, params)
        else:
            trainer = KerasTrainer(test, input_shape, len(classes), fit, params)
        timings["build_s"] = time.perf_counter() - clock

        clock = time.perf_counter()
        if hasattr(trainer, "warm_up"):
            trainer.warm_up(len(data.y_train) if data is not None else None,
                            len(data.y_val) if data is not None else None, input_shape)
        timings["warmup_s"] = time.perf_counter() - clock

        evidence.window_opens()
        meters.start()
        start_unix, start = time.time(), time.perf_counter()
        live = LiveEnergy(meters)
        budget = Budget(live, budget_joules if getattr(trainer, "enforceable", True) else None)
        if data is None:
            data = load()
        x_train, x_val = trainer.prepare(data.x_train), trainer.prepare(data.x_val)
        pipeline_s = time.perf_counter() - start
        curve = _train(trainer, data, x_train, x_val, fit, budget, live, start)
        energy = meters.stop()
        end = time.perf_counter()
        evidence.window_closed({"end_unix": start_unix + (end - start)})  # state at the end, knobs restored
    finally:
        evidence.close()  # before meters.close(), which shuts NVML down
        meters.close()

    summary = _summary(curve["epochs"], fit, curve["reason"])
    duration = end - start
    samples = sum(e["epoch_samples"] for e in curve["epochs"])
    train_s = sum(e["train_s"] for e in curve["epochs"])
    budget_record = budget.record()
    if budget_joules is not None and budget_record is None:  # an estimator that cannot stop mid-fit
        budget_record = {"joules": budget_joules, "enforceable": False, "enforced_by": None,
                         "note": "budget: not enforceable (one fit call, no step boundary); reports what it used",
                         "spent_joules": curve["epochs"][-1]["energy_total_j"]}
    if budget_record is not None:
        budget_record["within_budget"] = curve["epochs"][-1]["energy_total_j"] <= budget_joules
    return evidence.into({  # trace.parquet, gate verdict, uncertainty, machine state
        "host": hostinfo.host_record(),
        "software": hostinfo.software_record() if test.family != "shallow" else _shallow_software(),
        "devices": {},
        "model": trainer.model_record(),
        "setup": timings,
        "window": {
            "duration_s": duration,
            "start_utc": datetime.fromtimestamp(start_unix, timezone.utc).isoformat(),
            "end_utc": datetime.fromtimestamp(start_unix + duration, timezone.utc).isoformat(),
            "start_unix": start_unix, "end_unix": start_unix + duration,
            "iterations": sum(e["steps"] for e in curve["epochs"]),
            "samples": samples,
            "throughput_samples_per_s": samples / train_s if train_s > 0 else None,
        },
        "energy": energy_record(energy, max(samples, 1), duration, cell["energy"], idle),
        "data": {**data.record(), "in_window": in_window, "pipeline_in_window_s": pipeline_s if in_window else 0.0},
        "fit": {**summary, "settings": fit, "budget": budget_record, "live_meter": live.label(),
                "curve": curve["epochs"], "eval_s": sum(e["eval_s"] for e in curve["epochs"]),
                "eval_joules": sum(e["eval_joules"] for e in curve["epochs"]), "train_s": train_s,
                "notes": _notes(test, in_window)},
    }, cell_dir)


def _shallow_software() -> dict:
    """Versions for a scikit-learn cell, without importing Keras (which would start a framework)."""
    import platform
    from importlib import metadata

    from jobs.shallow import SHALLOW_BACKEND

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "backend": SHALLOW_BACKEND,
            "backend_version": version("scikit-learn"), "backend_package": "scikit-learn",
            **{name: version(name) for name in ("scikit-learn", "numpy", "codecarbon")}}


def _train(trainer, data, x_train, x_val, fit, budget, live, start) -> dict:
    epochs, reason = [], "epochs"
    total_samples = 0
    for epoch in range(1, fit["epochs"] + 1):
        clock = time.perf_counter()
        step = trainer.train_epoch(x_train, data.y_train, budget)
        train_s = time.perf_counter() - clock
        before_eval = total(live.read())
        clock = time.perf_counter()
        accuracy = trainer.evaluate(x_val, data.y_val)
        eval_s = time.perf_counter() - clock
        reading = live.read()
        total_samples += step["samples"]
        epochs.append({"epoch": epoch, "samples": total_samples, "epoch_samples": step["samples"],
                       "steps": step["steps"], "partial": budget.stopped,
                       "train_s": train_s, "eval_s": eval_s, "time_s": time.perf_counter() - start,
                       "energy": reading, "energy_total_j": total(reading),
                       "eval_joules": total(reading) - before_eval,
                       "train_loss": step["train_loss"], "val_accuracy": accuracy})
        print(f"[fit] epoch {epoch}: loss {step['train_loss']:.4f}, val accuracy {accuracy:.4f}, "
              f"{total(reading):.1f} J", flush=True)
        if budget.stopped:
            reason = "budget"
            break
        if fit["target_accuracy"] is not None and accuracy >= fit["target_accuracy"]:
            reason = "target_accuracy"
            break
        if getattr(trainer, "done", False):  # a one-shot estimator: nothing more to fit
            reason = "fitted"
            break
    return {"epochs": epochs, "reason": reason}


def _summary(epochs: list, fit: dict, reason: str) -> dict:
    accuracies = [e["val_accuracy"] for e in epochs]
    best = int(np.argmax(accuracies))
    target = fit["target_accuracy"]
    hit = next((e for e in epochs if target is not None and e["val_accuracy"] >= target), None)
    return {"stop_reason": reason, "epochs_run": len(epochs), "final_accuracy": accuracies[-1],
            "best_accuracy": accuracies[best], "best_epoch": epochs[best]["epoch"],
            "accuracy_kind": "measured (validation split)",
            "target_accuracy": target, "target_reached": hit is not None,
            "time_to_target_s": hit["time_s"] if hit else None,
            "energy_to_target_j": hit["energy_total_j"] if hit else None,
            "samples_to_target": hit["samples"] if hit else None}


def _notes(test, in_window: bool) -> list:
    if test.family != "deep":
        return []
    return ["training and evaluation steps traced before the window (weights and optimizer state restored); "
            "each epoch trains on full batches (the last partial one dropped), evaluation counts every image"]
