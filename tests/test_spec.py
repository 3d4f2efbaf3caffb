"""Sweep validation: every bad input gets file, line and key, exit code 2, and nothing is written."""
from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.spec import SWEEPS_DIR, load_sweep, resolve_sweep_path

VALID = """
name: good
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
  repetitions: 2
  node_types: [local]
"""


def error_of(path) -> str:
    with pytest.raises(UserError) as info:
        load_sweep(str(path))
    return str(info.value)


def test_valid_sweep_loads_with_defaults(sweep_file):
    spec = load_sweep(str(sweep_file(VALID)))
    assert spec.sweep.name == "good"
    assert spec.sweep.matrix.repetitions == 2
    assert spec.sweep.launcher == "auto"
    assert spec.sweep.energy.pue is None  # from the node's site table, else 1.0 (see test_energy_factors)
    assert spec.sweep.energy.idle_s == 30 and spec.sweep.order.shuffle


def test_energy_factors_come_from_sweep_then_site_then_defaults():
    from orchestrator.nodes import energy_factors

    assert energy_factors("local", {})["carbon_intensity_g_per_kwh"] == 56.039
    grele = energy_factors("grele", {"pue": 1.3})
    assert grele["pue"] == 1.3 and grele["country_iso_code"] == "FRA"
    assert grele["source"].startswith("sweep (pue); otherwise site nancy")
    assert energy_factors("vianden", {})["country_iso_code"] == "LUX"  # the luxembourg site


def test_adaptive_repetitions_are_validated(sweep_file):
    message = error_of(sweep_file(VALID.replace("repetitions: 2", "repetitions: {min: 5, max: 3}")))
    assert "matrix.repetitions" in message and "max (3) is below min (5)" in message
    # the stopping rule reads a CI, and no interval is given from n < 3
    message = error_of(sweep_file(VALID.replace("repetitions: 2", "repetitions: {min: 2, max: 5}")))
    assert "matrix.repetitions.min" in message and "must be at least 3 (got 2)" in message


def test_shipped_sweeps_are_valid():
    for path in SWEEPS_DIR.glob("*.yaml"):
        assert load_sweep(str(path)).sweep.name


def test_bare_name_is_looked_up_in_sweeps_folder():
    assert resolve_sweep_path("smoke") == SWEEPS_DIR / "smoke.yaml"
    assert resolve_sweep_path("smoke.yaml") == SWEEPS_DIR / "smoke.yaml"


def test_missing_file_names_the_lookup(tmp_path):
    message = error_of(tmp_path / "nope.yaml")
    assert "sweep file not found" in message and "nope.yaml" in message


@pytest.mark.parametrize("text, line, key, words", [
    # line 3, where the bracket opened: the file has no line 4
    ("name: x\nmatrix:\n  tests: [mobilenet_v2\n", 3, "", "YAML syntax error"),
    (VALID.replace("repetitions: 2", "repetitions: -1"), 5, "matrix.repetitions", "greater than 0"),
    (VALID.replace("repetitions: 2", 'repetitions: "2"'), 5, "matrix.repetitions", "valid integer"),
    (VALID.replace("[inference]", "[inference, testing]"), 4, "matrix.phases[1]", "'inference', 'training' or 'fit'"),
    (VALID.replace("[mobilenet_v2]", "[mobilenet_v2, mobilenet]"), 3, "matrix.tests[1]",
     "did you mean 'mobilenet_v2'"),
    (VALID.replace("[local]", "[chiflet]"), 6, "matrix.node_types[0]", "did you mean 'chifflet'"),
    (VALID + "launcher: pbs\n", 7, "launcher", "'auto', 'local', 'slurm' or 'oar'"),
    (VALID + "colour: blue\n", 7, "colour", "unknown key"),
    (VALID + "name: again\n", 7, "name", "key given twice"),
    (VALID + "defaults:\n  duration_s: 5\n  iterations: 3\n", 7, "defaults", "not both"),
    (VALID + "overrides:\n  vgg_16:\n    batch_size: 0\n", 9, "overrides.vgg_16.batch_size", "greater than 0"),
    (VALID + "include:\n  - test: vgg_16\n    tests: [x]\n", 9, "include[0].tests", "unknown key"),
    (VALID + "exclude:\n  - {}\n", 8, "exclude[0]", "at least one of"),
    (VALID + "energy:\n  country_iso_code: fr\n", 8, "energy.country_iso_code", "pattern"),
    (VALID.replace("name: good", "name: ../escape"), 1, "name", "pattern"),
    ("- just\n- a list\n", 1, "", "must be a mapping"),
    ("", 1, "", "empty"),
])
def test_bad_input_points_at_file_line_and_key(sweep_file, text, line, key, words):
    path = sweep_file(text)
    message = error_of(path)
    assert f"{path}:{line}: {key}" in message
    assert words in message


def test_unknown_test_lists_the_valid_ones(sweep_file):
    message = error_of(sweep_file(VALID.replace("[mobilenet_v2]", "[resnet]")))
    assert "valid tests: mobilenet_v2, inception_v3" in message and "gnmt" in message


def test_all_errors_are_reported_at_once(sweep_file):
    text = VALID.replace("repetitions: 2", "repetitions: 0").replace("[local]", "[nowhere]")
    message = error_of(sweep_file(text))
    assert "matrix.repetitions" in message and "matrix.node_types[0]" in message


@pytest.mark.parametrize("verb", ["expand", "sweep"])
def test_cli_bad_input_exits_2_without_traceback_or_output(sweep_file, tmp_path, capsys, verb):
    path = sweep_file(VALID.replace("repetitions: 2", "repetitions: -3"))
    output = tmp_path / "results"
    args = [verb, str(path)] + (["--output", str(output)] if verb == "sweep" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "matrix.repetitions" in err
    assert not output.exists()


def test_unwritable_output_is_refused_before_anything_runs(sweep_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["sweep", str(sweep_file(VALID + "launcher: local\n")), "--output", str(blocker / "results")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_unimplemented_tests_are_refused_by_sweep_and_listed_by_expand(sweep_file, tmp_path, capsys):
    from jobs.catalog import TESTS

    missing = next((name for name, t in TESTS.items() if not t.implemented), None)
    if missing is None:  # every test implemented: nothing left to refuse
        return
    path = sweep_file(VALID.replace("[mobilenet_v2]", f"[mobilenet_v2, {missing}]") + "launcher: local\n")
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    assert f"tests not implemented yet: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["expand", str(path)]) == 0
    assert f"not implemented yet (a sweep with them is refused): {missing}" in capsys.readouterr().out


def test_node_type_of_another_host_is_refused_locally(sweep_file, tmp_path, capsys):
    path = sweep_file(VALID.replace("[local]", "[chifflet]") + "launcher: local\n")
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "cannot run on this host" in capsys.readouterr().err
    assert not (tmp_path / "out" / "good").exists()
