"""Hostile and mistyped sweeps: loading never hangs or crashes, values that could reach a path, a
script or a command line are refused at load, messages are plain words with did-you-mean, and
the run-time changes (--set, --only), the estimate and the models' static limits."""
from __future__ import annotations

import json

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.matrix import expand
from orchestrator.spec import MAX_CELLS, load_sweep, parse_sweep
from tests.conftest import run_cli, tiny_sweep

VALID = """\
name: good
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
  repetitions: 2
  node_types: [local]
"""
# 9 levels of 9 aliases: 9^9 strings once expanded ("billion laughs").
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def error_of(path, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        expand(load_sweep(str(path), **kwargs))
    return str(info.value)


# (id, file content as bytes, line to cite, words)
HOSTILE = [
    ("alias-bomb", (VALID + BOMB).encode(), 7, "more than 100,000 values"),
    ("alias-to-itself", (VALID + "x: &a [*a]\n").encode(), 7, "nested more than"),
    ("huge-repetitions", VALID.replace("repetitions: 2", "repetitions: 1000000000000").encode(), 5,
     "matrix.repetitions: must be at most 1000"),
    ("3000-brackets", (VALID + "x: " + "[" * 3000 + "]" * 3000 + "\n").encode(), 7, "nested more than 32"),
    ("complex-key", (VALID + "? [a, b]\n: 1\n").encode(), 7, "a key must be a name"),
    ("number-key", (VALID + "overrides:\n  1: {batch_size: 2}\n").encode(), 8, "must be a name"),
    ("include-tag", (VALID + "defaults: !include other.yaml\n").encode(), 7, "YAML tag !include is not allowed"),
    ("python-tag", (VALID + "defaults: !!python/name:os.system\n").encode(), 7, "!!python/name:os.system is not"),
    ("merge-key", (VALID + "d: &d {batch_size: 2}\ndefaults:\n  <<: *d\n").encode(), 9, "merge keys"),
    ("nul-byte", (VALID + "description: a\x00b\n").encode(), 7, "control character U+0000"),
    ("escape-byte", (VALID + "description: a\x1bb\n").encode(), 7, "control character U+001B"),
    ("not-utf8", VALID.encode() + b"description: caf\xe9\n", 7, "not UTF-8 text: byte 0xe9 at column 17"),
    ("unclosed-quote", (VALID + 'description: "abc\n\nlauncher: local\n').encode(), 7,
     "the quote opened on this line is not closed"),
    ("error-on-last-line", (VALID + "launcher: [local").encode(), 7, "the [ opened on this line"),
    ("error-on-last-line-newline", (VALID + "launcher: [local\n").encode(), 7, "the [ opened on this line"),
]


@pytest.mark.parametrize("content, line, words", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_with_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        expand(load_sweep(str(path)))
    assert f"{path}:{line}: " in str(info.value) and words in str(info.value)
    assert line <= content.count(b"\n") + 1  # a line that exists

    result = run_cli("expand", path, timeout=30)  # the real command: exit 2, no traceback
    assert result.returncode == 2, result.stderr
    assert f"{path}:{line}: " in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr and ":?:" not in result.stderr


def test_alias_bomb_is_refused_before_any_value_is_built(tmp_path, monkeypatch):
    """Counting, not timing: the refusal costs as many steps as the file has nodes, whatever the
    aliases multiply, so not one value is constructed (the old walk built 100,000 first)."""
    built = []
    original = yaml.SafeLoader.construct_object
    monkeypatch.setattr(yaml.SafeLoader, "construct_object",
                        lambda self, node, deep=False: built.append(node) or original(self, node, deep))
    path = tmp_path / "bomb.yaml"
    path.write_text(VALID + BOMB)
    with pytest.raises(UserError, match="more than 100,000 values"):
        load_sweep(str(path))
    assert built == []


def test_too_many_cells_are_refused_before_building_them(sweep_file):
    from jobs.catalog import TESTS
    from orchestrator.nodes import node_types

    text = VALID.replace("[mobilenet_v2]", f"[{', '.join(TESTS)}]").replace("[inference]", "[inference, training]") \
        .replace("repetitions: 2", "repetitions: 1000").replace("[local]", f"[{', '.join(sorted(node_types())[:3])}]")
    spec = load_sweep(str(sweep_file(text)))
    with pytest.raises(UserError) as info:  # counted from the combinations, not built: 114,000 cells
        expand(spec)
    assert f"more than the {MAX_CELLS:,} a campaign may have" in str(info.value)
    assert "matrix.repetitions" in str(info.value)


# --- values that reach paths, scripts and command lines -----------------------------------------

CONTROL = [
    ("output-newline", 'output: "results\\n#SBATCH --exclusive"\n', 7, "output", "U+000A"),
    ("output-cr", 'output: "results\\r"\n', 7, "output", "U+000D"),
    ("name-escape", 'name: "a\\eb"\n', 1, "name", "U+001B"),
    ("node-type-nul", None, 6, "matrix.node_types[0]", "U+0000"),
    ("slurm-partition", 'slurm:\n  partition: "gpu\\nhostname"\n', 8, "slurm.partition", "U+000A"),
    ("slurm-node-type-key", 'slurm:\n  node_types:\n    "grele\\t": {partition: x}\n', 9, "slurm.node_types.grele",
     "U+0009"),
    ("include-subtest", 'include:\n  - {subtest: "1.1\\u2028"}\n', 8, "include[0].subtest", "U+2028"),
    ("bidi-override", 'oar:\n  queue: "default\\u202e"\n', 8, "oar.queue", "U+202E"),
]


@pytest.mark.parametrize("extra, line, key, char", [c[1:] for c in CONTROL], ids=[c[0] for c in CONTROL])
def test_control_characters_are_refused_at_load_with_file_line_key(sweep_file, extra, line, key, char):
    text = VALID.replace("[local]", '["local\\0"]') if extra is None else VALID + extra
    if key == "name":
        text = VALID.replace("name: good\n", "") + extra
        line = 6
    path = sweep_file(text)
    message = error_of(path)
    assert f"{path}:{line}: {key}" in message and f"control character {char}" in message


def test_description_may_hold_newlines_and_tabs(sweep_file):
    spec = load_sweep(str(sweep_file(VALID + 'description: "two\\n\\tlines"\n')))
    assert spec.sweep.description == "two\n\tlines"


def test_newline_in_output_never_reaches_a_job_script(sweep_file, tmp_path):
    path = sweep_file(VALID + 'launcher: slurm\noutput: "x\\nhostname > /tmp/pwned"\n')
    result = run_cli("sweep", path, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "output: control character U+000A" in result.stderr
    assert list(tmp_path.iterdir()) == [path]  # nothing written, no script generated


@pytest.mark.parametrize("verb", ["expand", "sweep"])
def test_empty_output_is_refused(sweep_file, tmp_path, verb):
    path = sweep_file(VALID + 'launcher: local\noutput: ""\n')
    result = run_cli(verb, path, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and f"{path}:8: output: must not be empty" in result.stderr
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("verb", ["expand", "sweep"])
def test_exclude_that_removes_every_cell_is_refused(sweep_file, tmp_path, verb):
    path = sweep_file(VALID + "launcher: local\nexclude:\n  - {test: mobilenet_v2}\n")
    args = [verb, path] + (["--output", tmp_path / "out"] if verb == "sweep" else [])
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{path}:8: exclude: `exclude` leaves no cell to run" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, line, key", [
    ("timeout_s: .inf\n", 7, "timeout_s"),
    ("defaults:\n  duration_s: .inf\n", 8, "defaults.duration_s"),
    ("cooldown_s: .nan\n", 7, "cooldown_s"),
    ("energy:\n  idle_s: .inf\n", 8, "energy.idle_s"),
    ("slurm:\n  time_limit_min: .inf\n", 8, "slurm.time_limit_min"),
    ("slurm:\n  mem_gb: .inf\n", 8, "slurm.mem_gb"),
    ("slurm:\n  node_types:\n    grele: {mem_gb: -.inf}\n", 9, "slurm.node_types.grele.mem_gb"),
])
def test_infinite_and_nan_numbers_are_refused(sweep_file, extra, line, key):
    path = sweep_file(VALID + extra)
    message = error_of(path)
    assert f"{path}:{line}: {key}: must be a finite number" in message


def test_unknown_country_code_is_refused_with_codecarbon_list(sweep_file):
    path = sweep_file(VALID + "energy:\n  country_iso_code: FRX\n")
    message = error_of(path)
    assert f"{path}:8: energy.country_iso_code: unknown country code 'FRX' (did you mean " in message
    assert "'FRA'" in message
    assert load_sweep(str(sweep_file(VALID + "energy:\n  country_iso_code: LUX\n"))).sweep.energy.country_iso_code \
        == "LUX"


@pytest.mark.parametrize("extra, key", [
    ("order:\n  shuffle: yes\n", "order.shuffle"),
    ("order:\n  shuffle: off\n", "order.shuffle"),
    ("slurm:\n  exclusive: on\n", "slurm.exclusive"),
    ("slurm:\n  hold: 'true'\n", "slurm.hold"),
])
def test_strict_booleans_take_only_true_and_false(sweep_file, extra, key):
    message = error_of(sweep_file(VALID + extra))
    assert f"{key}: must be true or false" in message
    assert load_sweep(str(sweep_file(VALID + "order:\n  shuffle: False\n"))).sweep.order.shuffle is False


def test_norway_is_not_false(sweep_file):  # YAML 1.1 read NO as false
    spec = load_sweep(str(sweep_file(VALID.replace("name: good", "name: NO"))))
    assert spec.sweep.name == "NO"


# --- messages --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    (VALID.replace("repetitions: 2", 'repetitions: "2"'), 5,
     "matrix.repetitions: must be a valid integer (a whole number) or a mapping (got '2')"),
    (VALID.replace("repetitions: 2", "repetitions: -1"), 5, "matrix.repetitions: must be greater than 0 (got -1)"),
    (VALID.replace("phases:", "phase:"), 4, "matrix.phase: unknown key (did you mean 'phases'?)"),
    (VALID + "launchr: local\n", 7, "launchr: unknown key (did you mean 'launcher'?)"),
    (VALID + "energy:\n  idle: 3\n", 8, "energy.idle: unknown key (did you mean 'idle_s'"),
    (VALID + "order:\n  sed: 3\n", 8, "order.sed: unknown key (did you mean 'seed'?)"),
    (VALID + "include:\n  - {test: vgg_16, batch_sise: 3}\n", 8, "include[0].batch_sise: unknown key (did you mean "
                                                                   "'batch_size'"),
    (VALID + "overrides:\n  vgg_16:\n    warmup: 3\n", 9, "overrides.vgg_16.warmup: unknown key (did you mean "
                                                          "'warmup_iterations'"),
    (VALID + "slurm:\n  partiton: gpu\n", 8, "slurm.partiton: unknown key (did you mean 'partition'?)"),
    (VALID.replace("repetitions: 2", "repetitions: {min: 3, mx: 5}"), 5,
     "matrix.repetitions.mx: unknown key (did you mean 'max'?)"),
])
def test_messages_are_plain_words_with_did_you_mean(sweep_file, text, line, words):
    path = sweep_file(text)
    message = error_of(path)
    assert f"{path}:{line}: {words}" in message
    for internal in ("constrained-int", "Repetitions", "Input should", "function-after", "literal["):
        assert internal not in message


def test_mistyped_verb_gets_did_you_mean():
    result = run_cli("expnad", "smoke", timeout=60)
    assert result.returncode == 2 and "did you mean 'expand'?" in result.stderr


def test_help_lists_exit_codes():
    result = run_cli("sweep", "--help", timeout=60)
    assert result.returncode == 0
    assert "2    bad input" in result.stdout and "130  interrupted" in result.stdout and "--only" in result.stdout


# --- --set and --only --------------------------------------------------------------------------

def test_set_changes_the_sweep_with_yaml_typed_values(sweep_file):
    path = sweep_file(VALID)
    spec = load_sweep(str(path), set_overrides=["matrix.repetitions=3", "matrix.tests=[mobilenet_v2, vgg_16]",
                                                "defaults.iterations=4", "order.shuffle=false"])
    cells = expand(spec).cells
    assert len(cells) == 3 * 2 and {c.iterations for c in cells} == {4} and spec.sweep.order.shuffle is False
    assert "--set matrix.repetitions=3" in spec.text  # what the campaign freezes
    again = parse_sweep(spec.text, path)  # the frozen copy loads to the same cells
    assert [c.id for c in expand(again).cells] == [c.id for c in cells]


@pytest.mark.parametrize("arg, words", [
    ("matrix.repetitions=-1", "--set matrix.repetitions=-1: matrix.repetitions: must be greater than 0"),
    ("matrix.repetitions=[1, 2", "--set matrix.repetitions=[1, 2: YAML syntax error"),
    ("matrix.repetition=3", "--set matrix.repetition=3: matrix.repetition: unknown key (did you mean 'repetitions'"),
    ("timeout_s=.inf", "--set timeout_s=.inf: timeout_s: must be a finite number"),
    ('output="a\\nb"', 'output: control character U+000A'),
    ("name.x=3", "--set name.x=3: name is not a mapping or list"),
    ("repetitions", "--set repetitions: expected KEY=VALUE"),
    ("include[3].batch_size=2", "--set include[3].batch_size=2: include[3] does not exist in the sweep"),
])
def test_set_errors_name_the_option(sweep_file, arg, words):
    message = error_of(sweep_file(VALID), set_overrides=[arg])
    assert words in message


def test_only_selects_over_axes(sweep_file):
    path = sweep_file(VALID.replace("[mobilenet_v2]", "[mobilenet_v2, vgg_16]").replace("[inference]",
                                                                                        "[inference, training]"))
    cells = expand(load_sweep(str(path), only=["test=vgg_16,mobilenet_v2,phase=training"])).cells
    assert {(c.test, c.phase) for c in cells} == {("vgg_16", "training"), ("mobilenet_v2", "training")}
    cells = expand(load_sweep(str(path), only=["test=vgg_16", "phase=inference"])).cells
    assert {(c.test, c.phase) for c in cells} == {("vgg_16", "inference")} and len(cells) == 2


@pytest.mark.parametrize("only, words", [
    (["tests=vgg_16"], "--only tests=vgg_16: only.tests: unknown axis 'tests' (did you mean 'test'"),
    (["test=vgg16"], "only.test[0]: 'vgg16' is not a test of this sweep (did you mean 'vgg_16'?)"),
    (["phase=trainig"], "'trainig' is not a phase of this sweep (did you mean 'training'?)"),
    (["test=gnmt", "phase=training"], "`only` (or --only) selects no cell to run"),
    (["vgg_16"], "expected AXIS=VALUE"),
])
def test_only_refuses_unknown_axes_and_values(sweep_file, only, words):
    path = sweep_file(VALID.replace("[mobilenet_v2]", "[gnmt, vgg_16]").replace("[inference]",
                                                                                "[inference, training]"))
    assert words in error_of(path, only=only)


def test_sweep_with_set_and_only_freezes_the_effective_sweep(sweep_file, tmp_path):
    path = sweep_file(tiny_sweep(name="eff", phases="[inference, training]", iterations=1, idle_s=0))
    out = tmp_path / "out"
    result = run_cli("sweep", path, "--output", out, "--set", "matrix.repetitions=1", "--set",
                     "defaults.warmup_iterations=0", "--only", "phase=inference", timeout=600)
    assert result.returncode == 0, result.stderr
    frozen = (out / "eff" / "sweep.yaml").read_text()
    assert "#   --set matrix.repetitions=1" in frozen and "#   --only phase=inference" in frozen
    assert f"# Effective sweep: {path}" in frozen
    manifest = json.loads((out / "eff" / "manifest.json").read_text())
    assert [c["phase"] for c in manifest["cells"]] == ["inference"]
    reloaded = expand(parse_sweep(frozen, out / "eff" / "sweep.yaml")).cells
    assert [c.id for c in reloaded] == [c["id"] for c in manifest["cells"]]
    assert yaml.safe_load(frozen)["only"] == {"phase": ["inference"]}


# --- expand --estimate -------------------------------------------------------------------------

def test_estimate_adds_windows_warmups_idle_and_cooldowns(sweep_file, capsys):
    path = sweep_file(VALID + "defaults:\n  duration_s: 10\n  warmup_iterations: 4\ncooldown_s: 3\n"
                              "energy:\n  idle_s: 5\n")
    assert main(["expand", str(path), "--estimate", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["estimate"]
    # per cell: 30 s start (guess) + 4 x 0.5 s warm-up (guess) + 10 s window; 2 cells, 1 cooldown, 1 baseline
    assert found["total_s"] == pytest.approx(2 * 42 + 3 + 5)
    assert found["guessed_s"] == pytest.approx(2 * 32)
    assert all(not c["window_guessed"] for c in found["cells"].values())

    assert main(["expand", str(path), "--estimate", "--set", "defaults={iterations: 20, warmup_iterations: 4}"]) == 0
    text = capsys.readouterr().out
    assert "total: 1 min 32 s" in text and "guessed" in text  # 2 x (30 + 2 + 20 x 0.5) + 3 + 5 = 92 s
    assert "0.5 s per iteration" in text


def test_estimate_bounds_the_temperature_gated_cooldown(sweep_file, capsys):
    # How long a cell waits for temperatures is unknown: not in the total, but its bound is shown
    # (the old estimate said nothing of it, so a 2-cell sweep could wait 10 min more than it said).
    plain = sweep_file(VALID + "defaults:\n  duration_s: 10\n")
    assert main(["expand", str(plain), "--estimate", "--json"]) == 0
    without = json.loads(capsys.readouterr().out)["estimate"]
    path = sweep_file(VALID + "defaults:\n  duration_s: 10\ncooldown:\n  max_s: 300\n")
    assert main(["expand", str(path), "--estimate", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["estimate"]
    assert found["total_s"] == without["total_s"]
    assert [n["temperature_wait_max_s"] for n in found["node_types"].values()] == [600]
    assert main(["expand", str(path), "--estimate"]) == 0
    assert "plus up to 10 min 00 s waiting for temperatures (cooldown.max_s 300 s a cell" in capsys.readouterr().out


# --- static model limits -----------------------------------------------------------------------

@pytest.mark.parametrize("test_name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_model_minimum_input_is_checked_by_expand(sweep_file, test_name):
    path = sweep_file(VALID.replace("mobilenet_v2", test_name) + "defaults:\n  input_size: [64, 64]\n")
    result = run_cli("expand", path, timeout=60)
    assert result.returncode == 2
    assert f"{path}:8: defaults.input_size: {test_name} needs an input of at least 75x75" in result.stderr
    assert "got 64x64" in result.stderr


def test_minimum_input_is_a_real_limit_of_the_model():
    import keras

    from jobs.catalog import MIN_INPUT, get_test

    test = get_test("inception_v3")
    low = MIN_INPUT["inception_v3"]
    sub = test.subtests[0]
    model = test.load_builder()((*low, 3), sub.output_shape)  # builds at its minimum
    assert model.output_shape[-1] == sub.output_shape[0]
    with pytest.raises(ValueError):
        test.load_builder()((low[0] - 1, low[1] - 1, 3), sub.output_shape)
    keras.backend.clear_session()
