"""Inception classifiers (tests 2-4) and image-to-image nets (tests 8-12).

Small-input checks run the job's own eager step on every sub-test; full-size checks only build
the model (cheap) and compare parameter counts and shapes with the original graphs.
Run from the repo root with PYTHONPATH=. ; about a minute on 2 CPU cores.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from jobs.catalog import get_test
from jobs.workload import make_step, synthetic_batch

CLASSIFIERS = ("inception_v3", "inception_v4", "inception_resnet_v2")
IMAGE_NETS = ("srcnn", "vgg19_super_res", "srgan", "dped", "unet")

# Trainable parameters of each original AuxLogits head (test-catalog notes, §3).
AUX_TRAINABLE = {"inception_v3": 3_326_569, "inception_v4": 3_359_337,
                 "inception_resnet_v2": 3_367_529}
# Output range implied by each net's final tanh mapping; None where the output is unbounded.
OUTPUT_RANGE = {"srcnn": (0.0, 255.0), "vgg19_super_res": None, "srgan": (0.0, 255.0),
                "dped": ((0.5 - 0.58) * 255.0, (0.5 + 0.58) * 255.0), "unet": (0.0, 255.0)}

SUBTESTS = [(name, sub) for name in CLASSIFIERS + IMAGE_NETS for sub in get_test(name).subtests]


def _ids(case):
    return f"{case[0]}-{case[1].id}"


def _n_params(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


# maxsize=1: the parametrised cases of one test run together, so one model alive at a time.
@functools.lru_cache(maxsize=1)
def tiny_model(name: str):
    test = get_test(name)
    return test.load_builder()(test.tiny_input, _tiny_output(test, test.subtests[0]))


@functools.lru_cache(maxsize=1)
def full_model(name: str, input_shape: tuple, output_shape: tuple):
    return get_test(name).load_builder()(input_shape, output_shape)


def _tiny_output(test, sub) -> tuple:
    return sub.output_shape if test.task == "classification" else test.tiny_input


@pytest.mark.parametrize("case", SUBTESTS, ids=_ids)
def test_small_input_step(case):
    name, sub = case
    test = get_test(name)
    model = tiny_model(name)
    batch = min(sub.batch, 2)
    out_shape = _tiny_output(test, sub)
    x, y = synthetic_batch(test.task, batch, test.tiny_input, out_shape)
    aux = getattr(model, "aux_logits", None)

    if sub.phase == "inference":
        out = make_step(model, "inference", x, y, execution="eager")()
        assert isinstance(out, tf.Tensor)  # one output: the aux head is not returned
        assert tuple(out.shape) == (batch, *out_shape)
        assert np.isfinite(out.numpy()).all()
        bounds = OUTPUT_RANGE.get(name)
        if bounds is not None:
            assert bounds[0] - 1e-3 <= float(tf.reduce_min(out))
            assert float(tf.reduce_max(out)) <= bounds[1] + 1e-3
        return

    main_vars = [v for v in model.trainable_variables
                 if aux is None or all(v is not a for a in aux.trainable_variables)]
    # First and last layer: the update reaches the input end (copying all weights is slow).
    main_vars = [main_vars[0], main_vars[-1]]
    before = [v.numpy().copy() for v in main_vars]
    aux_before = [] if aux is None else [v.numpy().copy() for v in aux.weights]
    loss = make_step(model, "training", x, y, execution="eager")()
    assert np.isfinite(float(loss))
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, main_vars))
    if aux is not None:  # dead code in the original: no gradient, no update
        assert all(np.array_equal(b, v.numpy()) for b, v in zip(aux_before, aux.weights))


@pytest.mark.parametrize("case", SUBTESTS, ids=_ids)
def test_full_size_counts_and_shape(case):
    name, sub = case
    test = get_test(name)
    model = full_model(name, sub.input_shape, sub.output_shape)
    assert tuple(model.output_shape) == (None, *sub.output_shape)
    # Our implementations match the original graphs to the parameter.
    assert model.count_params() == test.total_params
    assert _n_params(model.trainable_weights) == test.trainable_params
    if name in CLASSIFIERS:
        _check_aux_head(name, model, sub)


def _check_aux_head(name, model, sub):
    aux = model.aux_logits
    assert _n_params(aux.trainable_weights) == AUX_TRAINABLE[name]
    assert all(any(w is v for v in model.weights) for w in aux.weights)
    # At the benchmark's 346² input the head fits the 19² map it reads in the original graph.
    features = model.get_layer(model.aux_logits_source).output
    assert tuple(features.shape[1:3]) == (19, 19)
    assert tuple(aux(features).shape) == (None, sub.output_shape[0])
