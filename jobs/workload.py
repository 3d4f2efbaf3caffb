"""What one iteration does: synthetic data, targets, and the inference or training step.

Follows ai-benchmark's protocol: raw pixel values in 0-255, random one-hot
targets for classification and nlp, image targets of the output shape
otherwise; training is one Adam(1e-4) step on the sum of squared errors
(`2 * tf.nn.l2_loss(output - target)`). BatchNorm runs in inference mode
during training, as in the original graphs, where it is frozen. The steps
themselves, one per backend, are in jobs/backends.py.
"""
from __future__ import annotations

import numpy as np

from jobs import backends
from jobs.backends import PRECISIONS, Step, sum_squared_error  # noqa: F401 - the job's vocabulary

EXECUTIONS = backends.EXECUTIONS
set_precision = backends.set_precision


def synthetic_arrays(task: str, batch: int, input_shape: tuple, output_shape: tuple, seed: int = 42) -> tuple:
    """Inputs and targets as host (NumPy) arrays, made in memory, never loaded from disk;
    the same values on every backend."""
    rng = np.random.default_rng(seed)
    if task == "nlp-text":
        # GNMT: source BPE token ids instead of a string (ids 0-2 are <unk>, <s>, </s>).
        # Inference only: the target is a placeholder of the output shape.
        from jobs.models.sequence import GNMT_VOCAB
        x = rng.integers(3, GNMT_VOCAB, (batch, *input_shape), dtype=np.int32)
        return x, np.zeros((batch, *output_shape), np.int32)
    if task == "nlp":
        x = rng.uniform(-4.0, 4.0, (batch, *input_shape)).astype(np.float32)
    else:
        x = rng.uniform(0.0, 255.0, (batch, *input_shape)).astype(np.float32)
    if task in ("classification", "nlp"):
        classes = output_shape[-1]
        y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    else:
        y = rng.uniform(0.0, 255.0, (batch, *output_shape)).astype(np.float32)
    return x, y


def synthetic_batch(task: str, batch: int, input_shape: tuple, output_shape: tuple, seed: int = 42) -> tuple:
    """The synthetic batch as tensors of the current backend, already on its device."""
    x, y = synthetic_arrays(task, batch, input_shape, output_shape, seed)
    return backends.to_device(x), backends.to_device(y)


def make_step(model, phase: str, x, y, execution: str | None = None, learning_rate: float = 1e-4) -> Step:
    """A zero-argument callable running one iteration on the fixed batch (see backends.Step).

    The returned value is the step's output tensor; callers synchronise with `step.sync()`.
    """
    return backends.make_step(model, phase, x, y, execution, learning_rate)


def sync_devices() -> None:
    """Wait for queued TensorFlow device work (TensorFlow only; other backends: `step.sync()`)."""
    import tensorflow as tf

    tf.test.experimental.sync_devices()
