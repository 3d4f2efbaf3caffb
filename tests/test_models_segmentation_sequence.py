"""Segmentation and sequence models (tests 13-19): run at tiny inputs, count at full size.

Run from the repository root with PYTHONPATH=. ; eager steps only (compiled
first steps cost 10-45 s each on 2 cores).
"""
from __future__ import annotations

import gc

import numpy as np
import pytest
import tensorflow as tf

from jobs.catalog import get_test
from jobs.models.segmentation import PSP_BINS, PSP_KERNELS, ICNET_BINS, _pool_kernels
from jobs.models.sequence import GNMT_VOCAB
from jobs.workload import make_step, synthetic_batch

NAMES = ("icnet", "pspnet", "deeplab", "spade", "lstm", "pixel_rnn", "gnmt")
SUBTESTS = [(name, sub.id) for name in NAMES for sub in get_test(name).subtests]


def _subtest(name, sub_id):
    return next(s for s in get_test(name).subtests if s.id == sub_id)


def _tiny_output(test, sub) -> tuple:
    """The sub-test's output shape at the test's tiny input (images scale with the input)."""
    if len(sub.input_shape) == 3 and len(sub.output_shape) == 3:
        scale = zip(test.tiny_input[:2], sub.output_shape[:2], sub.input_shape[:2])
        return (*(t * o // i for t, o, i in scale), sub.output_shape[2])
    return sub.output_shape


_models: dict = {}


def _model(test, input_shape, output_shape):
    """Build once per (test, shapes); the sub-tests of a test share their tiny model.

    Only one model is kept alive at a time, to stay well under the memory
    budget (SPADE and GNMT are 0.55 and 1.1 GB of weights, plus Adam slots).
    """
    key = (test.name, tuple(input_shape), tuple(output_shape))
    if key not in _models:
        _models.clear()
        gc.collect()
        _models[key] = test.load_builder()(tuple(input_shape), tuple(output_shape))
    return _models[key]


def _check_spade_state(model, x, first_out):
    """SPADE draws z inside the model and runs its power iteration at inference too."""
    u = [v for v in model.non_trainable_weights]
    # the only state besides the weights: the u vectors of the 18 spectrally normalised convs
    assert len(u) == 18 and all(v.path.endswith("/u") for v in u)
    u_before = u[0].numpy().copy()
    again = model(x, training=False)
    assert not np.allclose(first_out.numpy(), again.numpy())  # new z, same input map
    assert not np.array_equal(u_before, u[0].numpy())


@pytest.mark.parametrize("name,sub_id", SUBTESTS)
def test_subtest_runs_at_tiny_input(name, sub_id):
    test, sub = get_test(name), _subtest(name, sub_id)
    out_shape = _tiny_output(test, sub)
    model = _model(test, test.tiny_input, out_shape)
    x, y = synthetic_batch(test.task, 1, test.tiny_input, out_shape)
    step = make_step(model, sub.phase, x, y, execution="eager")

    if sub.phase == "inference":
        out = step()
        assert isinstance(out, tf.Tensor)
        assert tuple(out.shape) == (1, *out_shape)
        if name == "gnmt":
            assert out.dtype == tf.int32
            assert np.all((out.numpy() >= 0) & (out.numpy() < GNMT_VOCAB))
        else:
            assert np.all(np.isfinite(out.numpy()))
        if name == "spade":
            _check_spade_state(model, x, out)
        return

    before = [v.numpy().copy() for v in model.trainable_variables]
    loss = step()
    assert loss.shape == ()
    assert np.isfinite(float(loss)) and float(loss) > 0
    # Every trainable variable is on the loss path: one Adam step moves each of them
    # (a variable without gradient would be skipped by make_step and stay put).
    unchanged = [v.path for b, v in zip(before, model.trainable_variables) if np.array_equal(b, v.numpy())]
    assert unchanged == []


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_at_full_size(name):
    test = get_test(name)
    sub = test.subtests[0]
    model = _model(test, sub.input_shape, sub.output_shape)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert model.count_params() == test.total_params
    assert trainable == test.trainable_params
    assert tuple(model.output_shape[1:]) == sub.output_shape
    if name == "icnet":  # the original trains its extra 1x1 head only
        assert [v.path for v in model.trainable_variables] == ["final/kernel", "final/bias"]


def test_pyramid_pooling_kernels():
    # PSPNet: fixed 60/30/20/10 at both full sizes (90x90 and 64x64 feature maps), shrunk below 60.
    assert _pool_kernels(90, 90, PSP_BINS, PSP_KERNELS) == [(60, 60), (30, 30), (20, 20), (10, 10)]
    assert _pool_kernels(64, 64, PSP_BINS, PSP_KERNELS) == [(60, 60), (30, 30), (20, 20), (10, 10)]
    assert _pool_kernels(1, 1, PSP_BINS, PSP_KERNELS) == [(1, 1)] * 4
    # ICNet: sized for the 32x48 feature map of a 1024x1536 input.
    assert _pool_kernels(32, 48, ICNET_BINS) == [(32, 48), (16, 24), (10, 16), (5, 8)]


def test_nlp_text_batch_is_token_ids():
    x, y = synthetic_batch("nlp-text", 2, (20,), (22,))
    assert x.dtype == tf.int32 and tuple(x.shape) == (2, 20)
    assert np.all((x.numpy() >= 3) & (x.numpy() < GNMT_VOCAB))
    assert tuple(y.shape) == (2, 22)
