"""Sweeps with the fit phase: the dataset section, budgets and train fractions as axes, errors at file:line."""
from __future__ import annotations

import pytest

from orchestrator.errors import UserError
from orchestrator.matrix import expand
from orchestrator.spec import load_sweep

FIT = """
name: fit
matrix:
  tests: [mobilenet_v2, logistic_regression]
  phases: [fit]
  budgets: [{joules: 10}, {wh: 0.01}, null]
  train_fractions: [0.5, 1.0]
  node_types: [local]
dataset:
  kind: digits
fit:
  epochs: 3
  target_accuracy: 0.9
"""


def test_budgets_and_fractions_multiply_fit_cells(sweep_file):
    cells = expand(load_sweep(str(sweep_file(FIT)))).cells
    assert len(cells) == 2 * 3 * 2
    mobilenet = [c for c in cells if c.test == "mobilenet_v2"]
    assert {c.subtest for c in mobilenet} == {"1.2"}  # the training sub-test's model, trained to quality
    assert sorted({(c.budget or {}).get("joules", -1) for c in cells}) == [-1, 10.0, 36.0]
    assert {c.train_fraction for c in cells} == {0.5, 1.0}
    assert all(c.dataset["kind"] == "digits" and c.fit["target_accuracy"] == 0.9 for c in cells)
    assert all(c.duration_s is None and c.iterations is None for c in cells)
    assert {c.input_shape[-1] for c in cells if c.test == "logistic_regression"} == {1}


def test_exclude_and_include_match_the_fit_axes(sweep_file):
    text = FIT + """exclude:
  - {test: logistic_regression, budget: {joules: 10}}
  - {train_fraction: 0.5}
include:
  - {test: mobilenet_v2, budget: {wh: 0.01}, batch_size: 16}
"""
    cells = expand(load_sweep(str(sweep_file(text)))).cells
    assert all(c.train_fraction == 1.0 for c in cells)
    assert not [c for c in cells if c.test == "logistic_regression" and c.budget == {"joules": 10.0}]
    assert {c.batch_size for c in cells if c.test == "mobilenet_v2" and c.budget == {"joules": 36.0}} == {16}
    assert len(cells) == 5


def test_other_phases_keep_their_cells_and_ids(sweep_file):
    plain = """
name: plain
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
"""
    cells = expand(load_sweep(str(sweep_file(plain)))).cells
    assert len(cells) == 1 and "budget" not in cells[0].params and "dataset" not in cells[0].params


@pytest.mark.parametrize("change,where,message", [
    (("dataset:\n  kind: digits\n", ""), "matrix.phases", "add a `dataset:` section"),
    (("kind: digits", "kind: folder"), "dataset", "needs a path"),
    (("{joules: 10}", "{joules: 10, wh: 1}"), "matrix.budgets[0]", "either {joules: x} or {wh: x}"),
    (("[0.5, 1.0]", "[0.5, 1.5]"), "matrix.train_fractions[1]", "at most 1"),
    (("target_accuracy: 0.9", "target_acc: 0.9"), "fit.target_acc", "unknown key"),
])
def test_bad_fit_sweeps_point_at_file_line_and_key(sweep_file, change, where, message):
    path = sweep_file(FIT.replace(*change))
    with pytest.raises(UserError) as info:
        expand(load_sweep(str(path)))
    detail = " ".join(info.value.details) if hasattr(info.value, "details") else str(info.value)
    assert f"{path}:" in detail and where in detail and message in detail


def test_shipped_fit_sweeps_expand():
    for name in ("budget", "dataset-size", "shallow-vs-deep"):
        cells = expand(load_sweep(name)).cells
        assert cells and all(c.phase == "fit" for c in cells)
        assert all(c.dataset["kind"] == "digits" for c in cells)  # nothing to prepare or download


def test_shallow_cells_exist_once_whatever_the_backends(sweep_file):
    """A backend axis means nothing to scikit-learn: one shallow cell per combination, backend `sklearn`;
    the deep model's cells, and their ids, are the ones a single-backend sweep gives."""
    text = FIT.replace("  node_types: [local]", "  node_types: [local]\n  backends: [tensorflow, jax, torch]")
    cells = expand(load_sweep(str(sweep_file(text)))).cells
    shallow = [c for c in cells if c.test == "logistic_regression"]
    assert len(shallow) == 3 * 2 and {c.backend for c in shallow} == {"sklearn"}
    assert {c.execution for c in shallow} == {None}
    deep = [c for c in cells if c.test == "mobilenet_v2"]
    assert len(deep) == 3 * 3 * 2 and {c.backend for c in deep} == {"tensorflow", "jax", "torch"}
    alone = expand(load_sweep(str(sweep_file(FIT.replace("mobilenet_v2, logistic_regression", "mobilenet_v2"))))).cells
    assert {c.id for c in alone} <= {c.id for c in deep}
    # An include naming a backend adds its settings to deep cells only; a new shallow combination gets sklearn.
    text += "include:\n  - {test: logistic_regression, phase: fit, node_type: grele, budget: {joules: 10}}\n"
    extra = [c for c in expand(load_sweep(str(sweep_file(text)))).cells
             if c.test == "logistic_regression" and c.node_type == "grele"]
    assert extra and {c.backend for c in extra} == {"sklearn"}


def test_the_grid5000_imagenet_example_expands():
    """The cluster example is a valid sweep (its data is on a site's storage, not here)."""
    cells = expand(load_sweep("sweeps/imagenet-budget-g5k.yaml")).cells
    assert len(cells) == 3 * 3 * 3 and {c.node_type for c in cells} == {"grele"}
    assert {c.dataset["kind"] for c in cells} == {"folder"} and {c.train_fraction for c in cells} == {0.1}
    assert {c.budget["joules"] for c in cells} == {50 * 3600.0, 200 * 3600.0, 800 * 3600.0}
    assert {c.backend for c in cells if c.test == "logistic_regression"} == {"sklearn"}
