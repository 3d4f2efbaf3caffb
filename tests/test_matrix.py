"""Expansion: counts, include/exclude with GitHub Actions semantics, settings layers, stable ids."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.matrix import cell_id, expand
from orchestrator.spec import load_sweep

BASE = """
name: m
matrix:
  tests: [mobilenet_v2, vgg_16]
  phases: [inference, training]
  repetitions: 2
  node_types: [local, grele]
"""


def cells_of(sweep_file, text):
    return expand(load_sweep(str(sweep_file(text)))).cells


def test_full_factorial_is_repetition_major(sweep_file):
    cells = cells_of(sweep_file, BASE)
    assert len(cells) == 2 * 2 * 2 * 2
    assert [c.repetition for c in cells] == [0] * 8 + [1] * 8  # interleaves tests across repetitions
    assert {(c.test, c.phase, c.node_type) for c in cells[:8]} == {(c.test, c.phase, c.node_type)
                                                                   for c in cells[8:]}


def test_tests_with_several_subtests_expand_to_each(sweep_file):
    cells = cells_of(sweep_file, BASE.replace("[mobilenet_v2, vgg_16]", "[srcnn]").replace("[local, grele]",
                                                                                           "[local]"))
    assert sorted({c.subtest for c in cells}) == ["8.1", "8.2", "8.3"]
    by_sub = {c.subtest: c for c in cells}
    assert by_sub["8.2"].batch_size == 1 and by_sub["8.2"].input_shape == [1536, 1536, 3]


def test_missing_phase_is_a_note_not_a_silent_drop(sweep_file):
    spec = load_sweep(str(sweep_file(BASE.replace("[mobilenet_v2, vgg_16]", "[gnmt]"))))
    expansion = expand(spec)
    assert {c.phase for c in expansion.cells} == {"inference"}
    assert any("gnmt has no training sub-test" in n for n in expansion.notes)


def test_exclude_removes_combinations_matching_all_listed_axes(sweep_file):
    cells = cells_of(sweep_file, BASE + "exclude:\n  - {test: vgg_16, phase: training}\n  - {node_type: grele}\n")
    assert len(cells) == 2 * 3  # 4 combos on local, minus vgg_16 training
    assert not any(c.test == "vgg_16" and c.phase == "training" for c in cells)
    assert {c.node_type for c in cells} == {"local"}


def test_include_adds_settings_to_matching_combinations(sweep_file):
    cells = cells_of(sweep_file, BASE + "include:\n  - {test: vgg_16, batch_size: 3}\n")
    assert len(cells) == 16
    assert {c.batch_size for c in cells if c.test == "vgg_16"} == {3}
    assert {c.batch_size for c in cells if c.test == "mobilenet_v2"} == {50}


def test_include_matching_nothing_creates_new_combinations(sweep_file):
    text = BASE + "include:\n  - {test: resnet_v2_50, phase: inference, node_type: local, precision: mixed_bfloat16}\n"
    cells = cells_of(sweep_file, text)
    new = [c for c in cells if c.test == "resnet_v2_50"]
    assert len(cells) == 18 and len(new) == 2  # one per repetition
    assert {c.precision for c in new} == {"mixed_bfloat16"} and new[0].subtest == "5.1"


def test_include_that_matches_nothing_must_name_a_full_combination(sweep_file):
    path = sweep_file(BASE + "include:\n  - {test: resnet_v2_50, batch_size: 2}\n")
    with pytest.raises(UserError) as info:
        expand(load_sweep(str(path)))
    assert f"{path}:8: include[0]" in str(info.value) and "phase, node_type" in str(info.value)


def test_settings_layers_resolve_in_order(sweep_file):
    text = BASE + """defaults:
  duration_s: 20
  batch_scale: 4
overrides:
  vgg_16:
    iterations: 7
include:
  - {test: vgg_16, phase: training, duration_s: 5}
"""
    cells = cells_of(sweep_file, text)
    mobilenet = next(c for c in cells if c.test == "mobilenet_v2" and c.phase == "inference")
    vgg_inf = next(c for c in cells if c.test == "vgg_16" and c.phase == "inference")
    vgg_train = next(c for c in cells if c.test == "vgg_16" and c.phase == "training")
    assert (mobilenet.duration_s, mobilenet.iterations, mobilenet.batch_size) == (20.0, None, 200)  # 50 x 4
    assert (vgg_inf.duration_s, vgg_inf.iterations) == (None, 7)
    assert (vgg_train.duration_s, vgg_train.iterations, vgg_train.batch_size) == (5.0, None, 8)


def test_input_size_must_fit_the_test(sweep_file):
    path = sweep_file(BASE + "overrides:\n  vgg_16:\n    input_size: [64, 64, 3]\n")
    with pytest.raises(UserError) as info:
        expand(load_sweep(str(path)))
    assert f"{path}:9: overrides.vgg_16.input_size" in str(info.value)
    assert "takes 2 input size value(s)" in str(info.value)


def test_ids_are_stable_and_content_addressed(sweep_file, tmp_path):
    first = [c.id for c in cells_of(sweep_file, BASE)]
    again = [c.id for c in cells_of(sweep_file, "# a comment changes nothing\n" + BASE)]
    assert first == again and len(set(first)) == len(first)
    # Writing 10 or 10.0 is the same measurement, so the same cell.
    a = cells_of(sweep_file, BASE + "defaults:\n  duration_s: 10\n")
    b = cells_of(sweep_file, BASE + "defaults:\n  duration_s: 10.0\n")
    assert [c.id for c in a] == [c.id for c in b]
    changed = cells_of(sweep_file, BASE + "defaults:\n  batch_size: 4\n")
    assert not set(c.id for c in changed) & set(first)


def test_cell_id_depends_on_every_parameter():
    params = {"test": "mobilenet_v2", "repetition": 0, "batch_size": 2}
    assert cell_id(params) == cell_id(dict(reversed(list(params.items()))))
    assert cell_id(params) != cell_id({**params, "repetition": 1})
    assert len(cell_id(params)) == 12


def test_expand_json_and_table(sweep_file, capsys):
    path = sweep_file(BASE)
    assert main(["expand", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["cells"]) == 16 and data["not_implemented"] == []
    assert {"id", "params", "implemented"} <= set(data["cells"][0])
    assert main(["expand", str(path)]) == 0
    out = capsys.readouterr().out
    assert "16 cells" in out and data["cells"][0]["id"] in out


def test_classification_sweep_shape():
    expansion = expand(load_sweep("classification"))
    assert len(expansion.cells) == 7 * 2 * 10
    assert {c.node_type for c in expansion.cells} == {"chifflet"}
    inception = next(c for c in expansion.cells if c.test == "inception_resnet_v2" and c.phase == "training")
    assert inception.batch_size == 8 and inception.input_shape == [346, 346, 3]
