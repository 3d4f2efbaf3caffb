"""What one iteration does: synthetic data, targets, and the inference or training step.

Follows ai-benchmark's protocol: raw pixel values in 0-255, random one-hot
targets for classification and nlp, image targets of the output shape
otherwise; training is one Adam(1e-4) step on the sum of squared errors
(`2 * tf.nn.l2_loss(output - target)`). BatchNorm runs in inference mode
during training, as in the original graphs, where it is frozen.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

import keras

PRECISIONS = {"fp32": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}
EXECUTIONS = ("graph", "xla", "eager")


def set_precision(precision: str) -> None:
    """Set Keras' global dtype policy; call before building the model."""
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])


def synthetic_batch(task: str, batch: int, input_shape: tuple, output_shape: tuple,
                    seed: int = 42) -> tuple:
    """Inputs and targets made in memory, never loaded from disk."""
    rng = np.random.default_rng(seed)
    if task == "nlp-text":
        # GNMT: source BPE token ids instead of a string (ids 0-2 are <unk>, <s>, </s>).
        # Inference only: the target is a placeholder of the output shape.
        from jobs.models.sequence import GNMT_VOCAB
        x = rng.integers(3, GNMT_VOCAB, (batch, *input_shape), dtype=np.int32)
        return tf.constant(x), tf.zeros((batch, *output_shape), tf.int32)
    if task == "nlp":
        x = rng.uniform(-4.0, 4.0, (batch, *input_shape)).astype(np.float32)
    else:
        x = rng.uniform(0.0, 255.0, (batch, *input_shape)).astype(np.float32)
    if task in ("classification", "nlp"):
        classes = output_shape[-1]
        y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    else:
        y = rng.uniform(0.0, 255.0, (batch, *output_shape)).astype(np.float32)
    return tf.constant(x), tf.constant(y)


def sum_squared_error(output, target):
    return tf.reduce_sum(tf.square(tf.cast(output, tf.float32) - target))


def make_step(model: keras.Model, phase: str, x, y, execution: str = "graph",
              learning_rate: float = 1e-4) -> Callable[[], object]:
    """A zero-argument callable running one iteration on the fixed batch.

    The returned value is the step's output tensor; callers synchronise the
    device themselves.
    """
    if execution not in EXECUTIONS:
        raise ValueError(f"unknown execution {execution!r}; valid: {', '.join(EXECUTIONS)}")

    if phase == "inference":
        def step():
            return model(x, training=False)
    elif phase == "training":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # The Inception aux heads are dead code in both phases (the loss reads the main output):
        # like TF1's minimize(), no gradient, no update and no Adam slots for them.
        aux = getattr(model, "aux_logits", None)
        dead = {id(v) for v in aux.trainable_variables} if aux is not None else set()
        variables = [v for v in model.trainable_variables if id(v) not in dead]
        optimizer.build(variables)

        def step():
            with tf.GradientTape() as tape:
                loss = sum_squared_error(model(x, training=False), y)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, variables)
            # Any other variable off the loss path gets no gradient and no update.
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss
    else:
        raise ValueError(f"unknown phase {phase!r}")

    if execution == "eager":
        return step
    return tf.function(step, jit_compile=(execution == "xla"))


def sync_devices() -> None:
    """Wait for queued device work, so a clock read covers finished iterations only."""
    tf.test.experimental.sync_devices()
