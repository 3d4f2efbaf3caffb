"""The fit phase for real: MobileNet-V2 trained on digits to a target it reaches, under the meters."""
from __future__ import annotations

import json

import pytest

from jobs.fit import run_fit

ENERGY = {"pue": 1.0, "carbon_intensity_g_per_kwh": 50, "country_iso_code": "FRA", "idle_s": 0,
          "idle_reuse_s": 3600, "min_window_node_s": 60, "min_window_gpu_s": 10, "nvml_poll_hz": 20}


def fit_cell(tmp_path, test: str, input_shape: list, batch: int, fit: dict, budget=None, dataset=None,
             fraction: float = 1.0) -> tuple:
    """A fit cell as the matrix writes it, run in-process by the job's own code; (cell, result)."""
    cell_dir = tmp_path / "camp" / "cells" / test
    cell_dir.mkdir(parents=True)
    cell = {"id": test, "campaign": "camp", "energy": ENERGY,
            "params": {"test": test, "phase": "fit", "subtest": "-", "precision": "fp32", "execution": "graph",
                       "seed": 42, "repetition": 0, "batch_size": batch, "input_shape": input_shape,
                       "dataset": dataset or {"kind": "digits", "seed": 0, "validation_split": 0.2},
                       "fit": fit, "budget": budget, "train_fraction": fraction}}
    result = run_fit(cell, cell_dir)
    json.dumps(result, default=str)  # what jobs.run writes must serialise
    return cell, result


def test_mobilenet_v2_fits_digits_to_its_target_and_stops_there(tmp_path):
    # MobileNet-V2 from scratch at 32x32 on digits reaches 0.81 validation accuracy after its second
    # epoch with this seed (0.10 after the first: BatchNorm statistics are still settling), 0.88 after
    # the third; 0.7 leaves margin for run-to-run variation of multithreaded CPU kernels, and 8 epochs
    # leave room to reach it late rather than fail.
    _, result = fit_cell(tmp_path, "mobilenet_v2", [32, 32, 3], 32, {"epochs": 8, "target_accuracy": 0.7})
    fit = result["fit"]
    assert fit["stop_reason"] == "target_accuracy" and fit["target_reached"]
    curve = fit["curve"]
    assert curve[-1]["val_accuracy"] >= 0.7 and all(e["val_accuracy"] < 0.7 for e in curve[:-1])
    assert fit["epochs_run"] == len(curve) < 8
    assert fit["time_to_target_s"] == curve[-1]["time_s"] and fit["energy_to_target_j"] == curve[-1]["energy_total_j"]
    # The learning curve: cumulative samples and energy per epoch, each domain with its source.
    # Full batches only (the last partial one dropped, so no step retraces): 1437 images, 44 batches of 32.
    per_epoch = result["data"]["train_samples"] - result["data"]["train_samples"] % 32
    assert [e["samples"] for e in curve] == [(i + 1) * per_epoch for i in range(len(curve))]
    assert [e["steps"] for e in curve] == [per_epoch // 32] * len(curve)
    energies = [e["energy_total_j"] for e in curve]
    assert energies == sorted(energies) and energies[0] > 0
    assert all(d["source"] for e in curve for d in e["energy"].values())
    assert fit["eval_s"] > 0 and fit["eval_joules"] > 0 and fit["eval_s"] < result["window"]["duration_s"]
    assert result["data"]["in_window"] is False and result["data"]["num_classes"] == 10
    assert result["energy"]["total_joules"] >= curve[-1]["energy_total_j"] * 0.99
    assert result["model"]["output_shape"] == [10]


def test_evaluation_counts_every_validation_image_once(tmp_path):
    """The last evaluation batch is padded to full size (one traced shape); the padding must not count."""
    import numpy as np

    from jobs.catalog import get_test
    from jobs.fit import FIT_DEFAULTS, KerasTrainer

    trainer = KerasTrainer(get_test("mobilenet_v2"), (32, 32, 3), 10, FIT_DEFAULTS,
                           {"precision": "fp32", "seed": 0, "repetition": 0, "batch_size": 16, "execution": "graph"})
    rng = np.random.default_rng(0)
    x, y = rng.random((37, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 37)
    direct = float(np.mean(np.argmax(trainer.model.predict(x, batch_size=37, verbose=0), axis=1) == y))
    assert trainer.evaluate(x, y) == pytest.approx(direct, abs=1e-6)


def test_warm_up_traces_the_training_step_once(monkeypatch):
    """Keras on TensorFlow creates the optimizer's and the metrics' variables in the first trace when no
    strategy is set, and a tf.function that creates variables is traced twice: the warm-up builds them
    first, so the ~10 s trace of MobileNet-V2's training step is paid once (the old code traced it twice)."""
    import numpy as np
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from jobs.catalog import get_test
    from jobs.fit import FIT_DEFAULTS, KerasTrainer

    traces = []
    original = TensorFlowTrainer.train_step
    monkeypatch.setattr(TensorFlowTrainer, "train_step", lambda self, data: traces.append(1) or original(self, data))
    trainer = KerasTrainer(get_test("mobilenet_v2"), (32, 32, 1), 10, FIT_DEFAULTS,
                           {"precision": "fp32", "seed": 0, "repetition": 0, "batch_size": 8, "execution": "graph"})
    initial = [w.copy() for w in trainer.model.get_weights()]
    trainer.warm_up(None, None, (32, 32, 1))
    assert len(traces) == 1
    # ... and training still starts afresh: weights and optimizer state as built.
    assert all(np.array_equal(a, b) for a, b in zip(initial, trainer.model.get_weights()))
    assert int(trainer.model.optimizer.iterations.numpy()) == 0
