"""Sweep files, format v1: load YAML, validate, and point every error at file, line and key.

Validation is complete before anything else happens: a sweep that loads is
one the matrix can expand and the launchers can run.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import typing
import unicodedata
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, ValidationError, field_validator, model_validator)

from jobs.backends import BACKENDS, DEFAULT_BACKEND
from jobs.catalog import ALL_PHASES, PHASES, TESTS
from orchestrator.errors import UserError
from orchestrator.nodes import ROOT, node_types

SWEEPS_DIR = ROOT / "sweeps"
LAUNCHERS = ("auto", "local", "slurm", "oar")
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")
EXECUTIONS = ("graph", "xla", "eager", "compile")  # which backend runs which: jobs/backends.py
BACKEND_NAMES = tuple(BACKENDS)

# Limits that keep loading bounded (a sweep is a small hand-written file); see docs/sweep-format.md.
MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 32            # nesting of mappings and lists
MAX_ALIASES = 100         # `*name` references
MAX_VALUES = 100_000      # values once aliases are expanded (a "billion laughs" file has 10^9)
MAX_REPETITIONS = 1000
MAX_CELLS = 100_000       # cells of one campaign, checked before they are built

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveNumber = Annotated[StrictFloat | StrictInt, Field(gt=0)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def did_you_mean(name: str, valid) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    close += [v for v in valid if len(name) >= 3 and v.startswith(name) and v not in close][:3 - len(close)]
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


_did_you_mean = did_you_mean  # the older private name


def _known_test(name: str) -> str:
    if name not in TESTS:
        raise ValueError(f"unknown test {name!r}{did_you_mean(name, TESTS)}; valid tests: {', '.join(TESTS)}")
    return name


def _known_node_type(name: str) -> str:
    known = node_types()
    if name not in known:
        raise ValueError(f"unknown node type {name!r}{did_you_mean(name, known)}; "
                         f"valid node types: {', '.join(sorted(known))}")
    return name


@lru_cache(maxsize=1)
def known_countries() -> frozenset:
    """ISO 3166 alpha-3 codes codecarbon has an energy mix for (its data file, read offline).

    Found without importing codecarbon (slow, and not needed to validate); empty when it is not
    installed, and then only the pattern is checked.
    """
    spec = find_spec("codecarbon")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        mix = Path(folder) / "data" / "private_infra" / "global_energy_mix.json"
        if mix.is_file():
            return frozenset(json.loads(mix.read_text(encoding="utf-8")))
    return frozenset()


def _known_country(code: str) -> str:
    known = known_countries()
    if known and code not in known:
        raise ValueError(f"unknown country code {code!r}{did_you_mean(code, known)}: codecarbon has no "
                         "energy mix for it (ISO 3166 alpha-3, e.g. FRA, DEU, LUX)")
    return code


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty (give a folder, e.g. results)")
    return value


TestName = Annotated[StrictStr, AfterValidator(_known_test)]
NodeTypeName = Annotated[StrictStr, AfterValidator(_known_node_type)]


class Settings(_Strict):
    """What one cell runs; every field is optional so that layers can override each other."""

    batch_size: PositiveInt | None = None
    batch_scale: PositiveInt | None = None
    input_size: list[PositiveInt] | None = None
    precision: Literal[PRECISIONS] | None = None
    execution: Literal[EXECUTIONS] | None = None
    warmup_iterations: NonNegativeInt | None = None
    duration_s: PositiveNumber | None = None
    iterations: PositiveInt | None = None
    # --- scale (orchestrator/scale.py): weak = batch per device, strong = batch global ---
    batch_scaling: Literal["weak", "strong"] | None = None

    @model_validator(mode="after")
    def _one_window(self):
        if self.duration_s is not None and self.iterations is not None:
            raise ValueError("give either duration_s or iterations for the measurement window, not both")
        return self


SETTING_KEYS = tuple(Settings.model_fields)
AXIS_KEYS = ("test", "phase", "node_type", "subtest", "backend")
# --- scale (orchestrator/scale.py): the scale axes, in include/exclude like the others ---
DevicesPerNode = PositiveInt | Literal["all"]  # all: every accelerator of the node type (catalog)
AXIS_KEYS = AXIS_KEYS + ("devices_per_node", "nodes")

# Built-in defaults, overridden by the sweep's `defaults`, then `overrides.<test>`, then include entries.
BUILTIN_SETTINGS = Settings(batch_scale=1, precision="fp32", execution="graph",
                            warmup_iterations=3, duration_s=30)


METRICS = ("energy_per_sample_j", "throughput_samples_per_s", "window_s", "energy_total_j")


class Repetitions(_Strict):
    """Repetitions driven by precision: repeat a group until its 95 % CI is tight enough, or `max`."""

    # At least 3: the stopping rule reads a confidence interval, and none is given from n < 3.
    min: Annotated[StrictInt, Field(ge=3, le=MAX_REPETITIONS)] = 3
    max: Annotated[StrictInt, Field(gt=0, le=MAX_REPETITIONS)] = 20
    target_ci: Annotated[StrictFloat | StrictInt, Field(gt=0, lt=1)] = 0.02  # CI half-width / mean
    metric: Literal[METRICS] = "energy_per_sample_j"

    @model_validator(mode="after")
    def _ordered(self):
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


# --- the fit phase: datasets, training settings, budgets, dataset size (issue #13) ---------------

Fraction = Annotated[StrictFloat | StrictInt, Field(gt=0, le=1)]


class Budget(_Strict):
    """An energy budget for a `fit` cell: `{joules: x}` or `{wh: x}`."""

    joules: PositiveNumber | None = None
    wh: PositiveNumber | None = None

    @model_validator(mode="after")
    def _one_unit(self):
        if (self.joules is None) == (self.wh is None):
            raise ValueError("a budget is either {joules: x} or {wh: x}")
        return self

    def as_joules(self) -> float:
        return float(self.joules) if self.joules is not None else float(self.wh) * 3600.0


class Dataset(_Strict):
    """Where a `fit` cell's data comes from (jobs/data.py); a path from a sweep never reaches a shell."""

    kind: Literal["folder", "npz", "digits", "tfrecord"] = "folder"
    path: StrictStr | None = None  # relative paths are resolved from the folder the sweep is run in; tfrecord: a glob
    validation_split: Annotated[StrictFloat, Field(gt=0, lt=1)] = 0.2
    seed: NonNegativeInt = 0
    cache: StrictStr | None = None  # a node-local folder for the decoded arrays, e.g. $TMPDIR/bt-data
    strict_data: StrictBool = False  # an unreadable image fails the cell instead of being skipped
    data_in_window: StrictBool = False  # decode the dataset inside the energy window

    @model_validator(mode="after")
    def _path_for_files(self):
        if self.kind != "digits" and not self.path:
            raise ValueError(f"dataset kind {self.kind} needs a path")
        if self.kind == "digits" and self.path:
            raise ValueError("dataset kind digits reads scikit-learn's bundled data: it takes no path")
        return self


class Fit(_Strict):
    """Stop rules and training settings of the `fit` phase (jobs/fit.py)."""

    epochs: PositiveInt = 10  # the most epochs; fewer when the target or the budget stops it first
    target_accuracy: Annotated[StrictFloat | StrictInt, Field(gt=0, le=1)] | None = None
    learning_rate: PositiveNumber = 1e-3
    bn_momentum: Annotated[StrictFloat, Field(ge=0, lt=1)] = 0.9
    estimators_per_epoch: PositiveInt = 10  # trees or boosting iterations per epoch (shallow family)


FIT_AXIS_KEYS = ("budget", "train_fraction")


class Matrix(_Strict):
    tests: Annotated[list[TestName], Field(min_length=1)]
    phases: Annotated[list[Literal[ALL_PHASES]], Field(min_length=1)] = list(PHASES)
    budgets: Annotated[list[Budget | None], Field(min_length=1)] = [None]  # fit cells only; null: none
    train_fractions: Annotated[list[Fraction], Field(min_length=1)] = [1.0]  # fit cells only
    repetitions: Annotated[StrictInt, Field(gt=0, le=MAX_REPETITIONS)] | Repetitions = 1
    node_types: Annotated[list[NodeTypeName], Field(min_length=1)] = ["local"]
    backends: Annotated[list[Literal[BACKEND_NAMES]], Field(min_length=1)] = [DEFAULT_BACKEND]
    # Energy knobs (#14) as axes: null is the node's own setting; a value is set by the job before the
    # window, read back and restored, or the cell fails with the reason (no root, no NVML, no cpufreq).
    gpu_power_limit_w: Annotated[list[PositiveNumber | None], Field(min_length=1)] = [None]
    cpu_max_freq_khz: Annotated[list[PositiveInt | None], Field(min_length=1)] = [None]

    @field_validator("gpu_power_limit_w", "cpu_max_freq_khz")
    @classmethod
    def _unique_knobs(cls, values):
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return values

    # --- scale (orchestrator/scale.py): unset = an unscaled sweep (cells as before, no scale params) ---
    devices_per_node: Annotated[list[DevicesPerNode], Field(min_length=1)] | None = None
    nodes: Annotated[list[PositiveInt], Field(min_length=1)] | None = None

    @field_validator("devices_per_node", "nodes")
    @classmethod
    def _unique_scale(cls, values):
        duplicates = sorted({str(v) for v in (values or []) if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return values

    @field_validator("tests", "phases", "node_types", "backends")
    @classmethod
    def _unique(cls, values):
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return values


class MatrixEntry(_Strict):
    """An exclude entry: the axis values a combination must all match."""

    test: TestName | None = None
    phase: Literal[ALL_PHASES] | None = None
    node_type: NodeTypeName | None = None
    backend: Literal[BACKEND_NAMES] | None = None
    subtest: StrictStr | None = None
    budget: Budget | None = None  # fit cells
    train_fraction: Fraction | None = None  # fit cells
    # --- scale (orchestrator/scale.py) ---
    devices_per_node: DevicesPerNode | None = None
    nodes: PositiveInt | None = None

    @field_validator("subtest")
    @classmethod
    def _known_subtest(cls, value):
        ids = [s.id for t in TESTS.values() for s in t.subtests]
        if value is not None and value not in ids:
            raise ValueError(f"unknown sub-test {value!r}; sub-test ids look like '1.1' "
                             "(see `benchmark-tracker catalog`)")
        return value

    @model_validator(mode="after")
    def _not_empty(self):
        if self.axes() == {}:
            raise ValueError(f"an entry needs at least one of: {', '.join(AXIS_KEYS + FIT_AXIS_KEYS)}")
        return self

    def axes(self) -> dict:
        axes = {k: getattr(self, k) for k in AXIS_KEYS if getattr(self, k) is not None}
        if self.budget is not None:
            axes["budget"] = self.budget.as_joules()
        if self.train_fraction is not None:
            axes["train_fraction"] = float(self.train_fraction)
        return axes


class IncludeEntry(MatrixEntry, Settings):
    """An include entry: axis values to match or create, plus settings to apply."""

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in SETTING_KEYS if getattr(self, k) is not None}


class Gate(_Strict):
    """Validity-gate thresholds (#14, jobs/meters/gate.py): a cell's telemetry failing one is energy.valid false."""

    min_coverage: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] = 0.95
    max_gap_s: Annotated[StrictFloat | StrictInt, Field(gt=0)] = 2.0
    max_temperature_drift_c: Annotated[StrictFloat | StrictInt, Field(gt=0)] = 15.0


class Energy(_Strict):
    # Factors for CO2; unset ones come from the node type's site table, else the defaults
    # (codecarbon's France figure, 2023 lifecycle; PUE 1). Never applied to raw energy.
    pue: Annotated[StrictFloat | StrictInt, Field(ge=1.0)] | None = None
    carbon_intensity_g_per_kwh: Annotated[StrictFloat | StrictInt, Field(ge=0)] | None = None
    country_iso_code: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_country)] | None = None
    idle_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 30  # idle baseline before a cell; 0: none
    idle_reuse_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 3600  # per node, within a campaign
    min_window_node_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 60  # RAPL, codecarbon
    min_window_gpu_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 10  # NVML counters
    nvml_poll_hz: Annotated[StrictFloat | StrictInt, Field(ge=10)] = 20
    # Evidence (#14): refuse a busy node instead of warning; the power trace's sampling period and margin.
    strict: StrictBool = False
    trace_period_s: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)] = 0.1
    trace_margin_s: Annotated[StrictFloat | StrictInt, Field(ge=0, le=60)] = 1.0
    gate: Gate = Gate()


class Cooldown(_Strict):
    """Temperature-gated cooldown (#14, jobs/meters/evidence.py): in the job, before its idle baseline and window,
    wait until the node's temperatures are within band_c of its idle baseline's; at most max_s, then proceed."""

    band_c: Annotated[StrictFloat | StrictInt, Field(gt=0, le=50)] = 3.0
    max_s: Annotated[StrictFloat | StrictInt, Field(gt=0, le=86400)] = 300


class Order(_Strict):
    """Execution order within each repetition: shuffled with a seed, so time of day and
    thermal drift do not line up with tests or node types."""

    shuffle: StrictBool = True
    seed: NonNegativeInt = 0


class Sweep(_Strict):
    version: Literal[1] = 1
    name: Name
    description: StrictStr = ""
    matrix: Matrix
    include: list[IncludeEntry] = []
    exclude: list[MatrixEntry] = []
    defaults: Settings = Settings()
    overrides: dict[TestName, Settings] = {}
    launcher: Literal[LAUNCHERS] = "auto"
    timeout_s: PositiveNumber = 3600
    # Attempts after the first for a failure that is not the cell's (node failure, a job lost by its scheduler).
    max_retries: NonNegativeInt = 0
    cooldown_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 0  # idle gap between cells
    cooldown: Cooldown | None = None  # evidence (#14): wait for temperatures, in the job (any launcher)
    order: Order = Order()
    seed: NonNegativeInt = 42
    energy: Energy = Energy()
    dataset: Dataset | None = None  # required when a cell runs the fit phase
    fit: Fit = Fit()
    output: Annotated[StrictStr, AfterValidator(_not_blank)] = "results"
    # Cells to keep, by axis value (what `--only` sets); checked against the matrix by expand.
    only: dict[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]] = {}
    # Scheduler options, validated by the launcher's own model (see orchestrator/launchers).
    slurm: dict[StrictStr, object] = {}
    oar: dict[StrictStr, object] = {}


class SweepSpec:
    """A validated sweep with where it came from, for messages and the frozen copy.

    `text` is what a campaign freezes: the file as written, or, when `--set`/`--only` changed
    it, the effective sweep (see `_effective_text`), which loads to the same cells.
    """

    def __init__(self, sweep: Sweep, path: Path, text: str, lines: dict):
        self.sweep, self.path, self.text, self._lines = sweep, path, text, lines

    def where(self, *keys) -> str:
        """`file:line: key.path` for a key path, falling back to the nearest parent."""
        return _where(self.path, self._lines, tuple(keys))

    def error(self, keys: tuple, message: str) -> UserError:
        return UserError(f"invalid sweep {self.path}", [f"{self.where(*keys)}: {message}"])

    def launcher_options(self, name: str, model):
        """The sweep's `<name>:` section validated by the launcher's options model (None if it has none)."""
        section = getattr(self.sweep, name, None) or {}
        if model is None:
            if section:
                raise self.error((name,), f"the {name} launcher takes no options")
            return None
        try:
            return model.model_validate(section)
        except ValidationError as exc:
            raise UserError(f"invalid sweep {self.path}",
                            _explain(exc, model, section, lambda keys: self.where(name, *keys))) from None


def resolve_sweep_path(value: str) -> Path:
    """A path as given, else a bare name looked up in sweeps/ (with or without .yaml)."""
    candidate = Path(value)
    if candidate.is_file():
        return candidate
    if candidate.parent == Path("."):
        for name in (value, f"{value}.yaml", f"{value}.yml"):
            if (SWEEPS_DIR / name).is_file():
                return SWEEPS_DIR / name
    known = ", ".join(sorted(p.name for p in SWEEPS_DIR.glob("*.yaml")))
    raise UserError(f"sweep file not found: {value}", [f"bare names are looked up in {SWEEPS_DIR}: {known}"])


def load_sweep(value: str, set_overrides: list | None = None, only: list | None = None) -> SweepSpec:
    """Load and validate a sweep; `set_overrides` (["key.path=yaml value", ...]) and `only`
    (["axis=value,value", ...]) change it as the command line asks, validated like the file."""
    path = resolve_sweep_path(value)
    return parse_sweep(_read_text(path), path, set_overrides=set_overrides, only=only)


def parse_sweep(text: str, path: Path, set_overrides: list | None = None, only: list | None = None) -> SweepSpec:
    data, lines = _load_yaml(text, path)
    if not isinstance(data, dict):
        raise UserError(f"invalid sweep {path}", [f"{path}:1: the file must be a mapping (name:, matrix:, ...)"])
    changes = [*(f"--set {a}" for a in set_overrides or ()), *(f"--only {a}" for a in only or ())]
    for arg in set_overrides or ():
        _apply_set(data, lines, path, arg)
    if only:
        _apply_only(data, lines, path, only)
    problems = _check_values(data, lines, path)
    if problems:
        raise UserError(f"invalid sweep {path}", problems)
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"invalid sweep {path}",
                        _explain(exc, Sweep, data, lambda keys: _where(path, lines, keys))) from None
    spec = SweepSpec(sweep, path, _effective_text(text, path, data, changes) if changes else text, lines)
    from orchestrator.launchers import launcher_class  # here: launchers import this module

    for name in ("slurm", "oar"):
        if getattr(sweep, name):
            try:
                model = launcher_class(name).options_model
            except UserError as exc:
                raise spec.error((name,), f"configures a launcher that cannot be used: {exc}") from None
            spec.launcher_options(name, model)
    return spec


# --- Reading the file: bounded, with positions that exist --------------------------------------

def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UserError(f"invalid sweep {path}", [f"{path}:1: the file is {size:,} bytes, more than the "
                                                      f"{MAX_FILE_BYTES:,} a sweep may have"])
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"invalid sweep {path}", [f"{path}:{line}: not UTF-8 text: byte 0x{data[exc.start]:02x} "
                                                  f"at column {column} (save the file as UTF-8)"]) from None


# --- YAML with line numbers ----------------------------------------------------

_YAML_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_FREE_TEXT_KEYS = {"description"}  # may hold newlines and tabs; reaches no path, script or command line


_OPENED = {"while scanning a quoted scalar": "the quote", "while parsing a flow sequence": "the [",
           "while parsing a flow mapping": "the {", "while scanning a double-quoted scalar": "the quote"}


class _Refused(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class _SweepLoader(yaml.SafeLoader):
    """SafeLoader, bounded: nesting and aliases capped while composing, so no input recurses or
    multiplies without end. Booleans are YAML 1.2's (true/false only: `yes`, `on`, `no` stay
    text, so a strict boolean key refuses them); dates stay text."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag not in (_YAML_TAG + "bool", _YAML_TAG + "timestamp", _YAML_TAG + "value")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream):
        super().__init__(stream)
        self._depth, self._aliases = 0, 0

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(mark.line + 1, f"more than {MAX_ALIASES} aliases (*name): a sweep does not need "
                                              "that many")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(mark.line + 1, f"nested more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_SweepLoader.add_implicit_resolver(_YAML_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def _line_count(text: str) -> int:
    return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))


def _mark_line(text: str, exc: yaml.MarkedYAMLError) -> int:
    """The line to blame: where the problem is, or, when the problem is the end of the file
    (an unclosed quote or bracket), where the unclosed thing opened; never past the last line."""
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return 1
    if exc.context_mark is not None and not text[mark.index:].strip():
        mark = exc.context_mark
    return min(mark.line + 1, _line_count(text))


def _load_yaml(text: str, path: Path, origin: str | None = None) -> tuple:
    """Parse YAML into plain data plus {key path: line}; duplicate keys are errors.

    `origin` (e.g. "--set a=b") replaces "file:line" in messages about a command-line value.
    """
    def refuse(line: int, message: str):
        where = origin or f"{path}:{line}"
        return UserError(f"invalid sweep {path}", [f"{where}: {message}"])

    try:
        root = yaml.compose(text, Loader=_SweepLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow: NUL, ESC, other controls
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise refuse(line, f"control character {_char(exc.character)} at column {column} is not allowed "
                           "in a sweep") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context and exc.context_mark and mark is not None and not text[mark.index:].strip():
            opened = _OPENED.get(exc.context, exc.context.removeprefix("while "))
            problem = f"{opened} opened on this line is not closed before the end of the file"
        else:
            problem = (exc.problem or str(exc)) + (f" ({exc.context} at line {exc.context_mark.line + 1})"
                                                   if exc.context and exc.context_mark else "")
        raise refuse(_mark_line(text, exc), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise refuse(1, f"YAML syntax error: {exc}") from None
    except _Refused as exc:
        raise refuse(exc.line, exc.message) from None
    if root is None:
        if origin:
            return None, {(): origin}
        raise refuse(1, "the file is empty")
    lines: dict = {}
    try:
        _refuse_if_it_expands_too_far(root)
        data = _to_data(root, (), lines, yaml.SafeLoader(""))
    except _Refused as exc:
        raise refuse(exc.line, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        raise refuse(_mark_line(text, exc), f"YAML error: {exc.problem}") from None
    if origin:
        lines = {keys: origin for keys in lines}
    return data, lines


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _refuse_if_it_expands_too_far(root) -> None:
    """Refuses a file whose aliases expand past MAX_VALUES values, citing the line where the count
    passes it, before anything is built.

    An alias is the anchored node itself, so sizes are counted once per node (memoised), not once
    per use: a "billion laughs" file costs as many steps as it has lines.
    """
    sizes: dict = {}

    def size(node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a node that contains itself is refused later for its depth
        if depth > MAX_DEPTH:
            return 1
        sizes[id(node)] = min(1 + sum(size(child, depth + 1) for child in _children(node)), MAX_VALUES + 1)
        return sizes[id(node)]

    left = MAX_VALUES
    if size(root, 0) <= left:
        return
    node = root
    while True:  # walk down, in document order, to the node where the count runs out
        left -= 1
        for child in _children(node):
            if sizes[id(child)] > left:
                node = child
                break
            left -= sizes[id(child)]
        else:
            raise _Refused(node.start_mark.line + 1, f"the file expands to more than {MAX_VALUES:,} values "
                                                     "(aliases multiply what they repeat)")


def _to_data(node, keys: tuple, lines: dict, constructor):
    line = node.start_mark.line + 1
    lines[keys] = line
    if len(keys) > MAX_DEPTH:
        raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep (an alias that contains itself?)")
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace(_YAML_TAG, "!!")
        raise _Refused(line, f"the YAML tag {tag} is not allowed: a sweep is plain data (mappings, lists, text, "
                             "numbers, true/false)")
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(key_line, f"{_dotted(keys)}: a key must be a name, not a list or a mapping")
            if key_node.tag == _YAML_TAG + "merge":
                raise _Refused(key_line, "YAML merge keys (<<) are not allowed: write the keys out")
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Refused(key_line, f"{_dotted(keys)}: the key {key!r} must be a name (quote it to use it "
                                         "as text)")
            if key in result:
                raise _Refused(key_line, f"{_dotted(keys + (key,))}: key given twice")
            result[key] = _to_data(value_node, keys + (key,), lines, constructor)
            lines[keys + (key,)] = key_line
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, keys + (i,), lines, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def _char(character) -> str:
    character = chr(character) if isinstance(character, int) else character
    return f"U+{ord(character):04X}" + (f" ({unicodedata.name(character)})" if unicodedata.name(character, "") else "")


# --- Values: the checks every field gets ------------------------------------------------------

def _unsafe_char(text: str, free_text: bool) -> str | None:
    """The first character that must not reach a path, a script or a command line.

    Control characters (C0, DEL, C1), line and paragraph separators and bidirectional
    overrides (which make a printed value read differently from what runs). Free text
    (descriptions) may hold newlines and tabs.
    """
    for character in text:
        if free_text and character in "\n\t":
            continue
        if unicodedata.category(character) in ("Cc", "Zl", "Zp") or "\u202a" <= character <= "\u202e" \
                or "\u2066" <= character <= "\u2069":
            return character
    return None


def _check_values(data, lines: dict, path: Path) -> list:
    """Every string and number of the sweep, whatever model reads it later (the launchers' sections
    included): no control characters, only finite numbers."""
    problems = []

    def visit(value, keys: tuple):
        free_text = bool(keys) and keys[-1] in _FREE_TEXT_KEYS
        if isinstance(value, dict):
            for key, item in value.items():
                bad = _unsafe_char(key, False)
                if bad:
                    problems.append(f"{_where(path, lines, keys + (key,))}: the key contains the control "
                                    f"character {_char(bad)}")
                visit(item, keys + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, keys + (index,))
        elif isinstance(value, str):
            bad = _unsafe_char(value, free_text)
            if bad:
                problems.append(f"{_where(path, lines, keys)}: control character {_char(bad)} is not allowed "
                                f"(got {_show(value)})")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{_where(path, lines, keys)}: must be a finite number (got {value})")

    visit(data, ())
    return problems


# --- Command-line changes: --set and --only ----------------------------------------------------

_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parse_key_path(key: str) -> tuple | None:
    parts, position = [], 0
    for match in _KEY_PART.finditer(key):
        if match.start() != position + (1 if parts and key[position] == "." else 0):
            return None
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    return tuple(parts) if parts and position == len(key) and isinstance(parts[0], str) else None


def _apply_set(data: dict, lines: dict, path: Path, arg: str) -> None:
    """`key.path=value`: the value is YAML (`3`, `[a, b]`, `{min: 3}`), put at the key path."""
    origin = f"--set {arg}"
    key, sep, value = arg.partition("=")
    keys = _parse_key_path(key.strip()) if sep else None
    if keys is None:
        raise UserError(f"invalid sweep {path}", [f"{origin}: expected KEY=VALUE with a dotted key, e.g. "
                                                  "matrix.repetitions=3 or include[0].batch_size=8"])
    parsed, value_lines = _load_yaml(value, path, origin=origin)

    def refuse(message: str):
        return UserError(f"invalid sweep {path}", [f"{origin}: {message}"])

    cursor = data
    for depth, part in enumerate(keys):
        here = keys[:depth + 1]
        if isinstance(part, int) and not (isinstance(cursor, list) and part < len(cursor)):
            raise refuse(f"{_dotted(here)} does not exist in the sweep")
        if isinstance(part, str) and not isinstance(cursor, dict):
            raise refuse(f"{_dotted(keys[:depth])} is not a mapping in the sweep")
        if depth == len(keys) - 1:
            break
        if isinstance(part, str) and cursor.get(part) is None:
            if isinstance(keys[depth + 1], int):
                raise refuse(f"{_dotted(keys[:depth + 2])} does not exist in the sweep")
            cursor[part] = {}
        cursor = cursor[part]
        if not isinstance(cursor, (dict, list)):
            raise refuse(f"{_dotted(here)} is not a mapping or list in the sweep")
    last = keys[-1]
    cursor[last] = parsed
    for old in [k for k in lines if k[:len(keys)] == keys]:
        del lines[old]
    lines.update({keys + sub: origin for sub in value_lines})
    lines[keys] = origin


def parse_only(args: list) -> dict:
    """["test=a,b", "phase=training"] or ["test=a,b,phase=training"] -> {"test": [...], "phase": [...]}."""
    selection, axis = {}, None
    for arg in args:
        for token in arg.split(","):
            token = token.strip()
            if "=" in token:
                axis, _, token = token.partition("=")
                axis = axis.strip()
                selection.setdefault(axis, [])
            if axis is None or not axis or not token.strip():
                raise UserError(f"--only {arg}: expected AXIS=VALUE[,VALUE...], e.g. test=vgg_16,mobilenet_v2 "
                                "phase=training")
            selection[axis].append(token.strip())
    return selection


def _apply_only(data: dict, lines: dict, path: Path, args: list) -> None:
    origin = f"--only {' '.join(args)}"
    selection = parse_only(args)
    data["only"] = {**(data.get("only") if isinstance(data.get("only"), dict) else {}), **selection}
    for axis, values in selection.items():
        lines[("only", axis)] = origin
        lines.update({("only", axis, i): origin for i in range(len(values))})
    lines.setdefault(("only",), origin)


def _effective_text(text: str, path: Path, data: dict, changes: list) -> str:
    """The sweep as run: a header naming the file and the command-line changes, the original
    text as comments, then the effective data, which loads to the same cells."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    header = [f"# Effective sweep: {path} (sha256 {digest}) changed on the command line by:",
              *(f"#   {change}" for change in changes),
              "# The original text, as comments:",
              *(f"# | {line}" for line in text.splitlines()),
              ""]
    return "\n".join(header) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)


# --- Messages: file:line: key: plain words -----------------------------------------------------

def _dotted(keys: tuple) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(top level)"


def _where(path: Path, lines: dict, keys: tuple) -> str:
    # pydantic adds union-branch and validator names to locations; keep real keys only.
    real = tuple(k for k in keys if isinstance(k, int) or not str(k).startswith(("function-", "literal[", "[key]")))
    probe = real
    while probe not in lines and probe:
        probe = probe[:-1]
    line = lines.get(probe, 1)
    return f"{line if isinstance(line, str) else f'{path}:{line}'}: {_dotted(real)}"


def _real_keys(data, loc: tuple, missing: bool) -> tuple:
    """The keys of a pydantic location that exist in the data: union branches ("constrained-int",
    "Repetitions") and validator names are pydantic's, not the user's."""
    keys, cursor = [], data
    for index, part in enumerate(loc):
        if isinstance(cursor, dict) and part in cursor:
            keys.append(part)
            cursor = cursor[part]
        elif isinstance(cursor, list) and isinstance(part, int) and 0 <= part < len(cursor):
            keys.append(part)
            cursor = cursor[part]
        elif missing and index == len(loc) - 1 and isinstance(cursor, dict):
            keys.append(part)
    return tuple(keys)


def _models_in(annotation) -> set:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    return set().union(*(_models_in(a) for a in typing.get_args(annotation))) if typing.get_args(annotation) else set()


def keys_at(model, keys: tuple) -> list:
    """The keys a model accepts at a key path (list indices and mapping keys pass through)."""
    models = {model}
    for key in keys:
        models = set().union(*(_models_in(m.model_fields[key].annotation) if key in m.model_fields else {m}
                               for m in models)) if models else set()
    return sorted({name for m in models for name in m.model_fields})


_TYPE_WORDS = {
    "int_type": "must be a valid integer (a whole number)", "int_from_float": "must be a valid integer (a whole number)",
    "int_parsing": "must be a valid integer (a whole number)", "float_type": "must be a number",
    "float_parsing": "must be a number", "string_type": "must be text", "bool_type": "must be true or false",
    "list_type": "must be a list", "dict_type": "must be a mapping", "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping", "none_required": "must be empty (null)",
}
_PATTERN_WORDS = {
    NAME_PATTERN: "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                                  "digit (pattern {pattern})",
    r"^[A-Z]{3}$": "must be an ISO 3166 alpha-3 code in capitals, e.g. FRA (pattern {pattern})",
}


def _words(error: dict, model, keys: tuple) -> tuple:
    """(plain message, whether it is a type mismatch, whether to show the input)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        valid = keys_at(model, keys[:-1])
        hint = did_you_mean(str(keys[-1]), valid) if keys else ""
        return f"unknown key{hint}" + (f"; valid keys here: {', '.join(valid)}" if valid else ""), False, False
    if kind == "missing":
        return "required key is missing", False, False
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind], True, True
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}", True, True
    limits = {"greater_than": "must be greater than {gt}", "greater_than_equal": "must be at least {ge}",
              "less_than": "must be less than {lt}", "less_than_equal": "must be at most {le}",
              "too_short": "must have at least {min_length} item(s)", "too_long": "must have at most {max_length} items",
              "string_too_short": "must have at least {min_length} character(s)",
              "string_too_long": "must have at most {max_length} characters"}
    if kind in limits:
        return limits[kind].format(**ctx), False, True
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return _PATTERN_WORDS.get(pattern, "must match pattern {pattern}").format(pattern=repr(pattern)), False, True
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message.replace("Input should be", "must be"), False, kind not in ("value_error", "assertion_error")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _explain(exc: ValidationError, model, data, where) -> list:
    """pydantic's errors as `file:line: key: plain words`, one line per location: the branches of
    a union are joined ("must be a valid integer or a mapping"), type mismatches dropped when
    another branch says what is wrong with a value of the right type."""
    grouped: dict = {}
    for error in exc.errors():
        keys = _real_keys(data, tuple(error["loc"]), error["type"] == "missing")
        grouped.setdefault(keys, []).append((*_words(error, model, keys), error.get("input")))
    out = []
    for keys, found in grouped.items():
        if any(not is_type for _, is_type, _, _ in found):
            found = [f for f in found if not f[1]]
        messages = list(dict.fromkeys(message for message, _, _, _ in found))
        text = " or ".join([messages[0], *(m.removeprefix("must be ") for m in messages[1:])]) \
            if all(m.startswith("must be ") for m in messages) else "; ".join(messages)
        shown = next((f for f in found if f[2]), None)
        out.append(f"{where(keys)}: {text}" + (f" (got {_show(shown[3])})" if shown else ""))
    return out
