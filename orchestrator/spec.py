"""Sweep files, format v1: load YAML, validate, and point every error at file, line and key.

Validation is complete before anything else happens: a sweep that loads is
one the matrix can expand and the launchers can run.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, ValidationError, field_validator, model_validator)

from jobs.backends import BACKENDS, DEFAULT_BACKEND
from jobs.catalog import PHASES, TESTS
from orchestrator.errors import UserError
from orchestrator.nodes import ROOT, node_types

SWEEPS_DIR = ROOT / "sweeps"
LAUNCHERS = ("auto", "local", "slurm", "oar")
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")
EXECUTIONS = ("graph", "xla", "eager", "compile")  # which backend runs which: jobs/backends.py
BACKEND_NAMES = tuple(BACKENDS)

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveNumber = Annotated[StrictFloat | StrictInt, Field(gt=0)]
Name = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _did_you_mean(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=3)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _known_test(name: str) -> str:
    if name not in TESTS:
        raise ValueError(f"unknown test {name!r}{_did_you_mean(name, TESTS)}; valid tests: {', '.join(TESTS)}")
    return name


def _known_node_type(name: str) -> str:
    known = node_types()
    if name not in known:
        raise ValueError(f"unknown node type {name!r}{_did_you_mean(name, known)}; "
                         f"valid node types: {', '.join(sorted(known))}")
    return name


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

    min: Annotated[StrictInt, Field(ge=2)] = 3
    max: PositiveInt = 20
    target_ci: Annotated[StrictFloat | StrictInt, Field(gt=0, lt=1)] = 0.02  # CI half-width / mean
    metric: Literal[METRICS] = "energy_per_sample_j"

    @model_validator(mode="after")
    def _ordered(self):
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Matrix(_Strict):
    tests: Annotated[list[TestName], Field(min_length=1)]
    phases: Annotated[list[Literal[PHASES]], Field(min_length=1)] = list(PHASES)
    repetitions: PositiveInt | Repetitions = 1
    node_types: Annotated[list[NodeTypeName], Field(min_length=1)] = ["local"]
    backends: Annotated[list[Literal[BACKEND_NAMES]], Field(min_length=1)] = [DEFAULT_BACKEND]
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
    phase: Literal[PHASES] | None = None
    node_type: NodeTypeName | None = None
    backend: Literal[BACKEND_NAMES] | None = None
    subtest: StrictStr | None = None
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
            raise ValueError(f"an entry needs at least one of: {', '.join(AXIS_KEYS)}")
        return self

    def axes(self) -> dict:
        return {k: getattr(self, k) for k in AXIS_KEYS if getattr(self, k) is not None}


class IncludeEntry(MatrixEntry, Settings):
    """An include entry: axis values to match or create, plus settings to apply."""

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in SETTING_KEYS if getattr(self, k) is not None}


class Energy(_Strict):
    # Factors for CO2; unset ones come from the node type's site table, else the defaults
    # (codecarbon's France figure, 2023 lifecycle; PUE 1). Never applied to raw energy.
    pue: Annotated[StrictFloat | StrictInt, Field(ge=1.0)] | None = None
    carbon_intensity_g_per_kwh: Annotated[StrictFloat | StrictInt, Field(ge=0)] | None = None
    country_iso_code: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] | None = None
    idle_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 30  # idle baseline before a cell; 0: none
    idle_reuse_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 3600  # per node, within a campaign
    min_window_node_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 60  # RAPL, codecarbon
    min_window_gpu_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 10  # NVML counters
    nvml_poll_hz: Annotated[StrictFloat | StrictInt, Field(ge=10)] = 20


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
    cooldown_s: Annotated[StrictFloat | StrictInt, Field(ge=0)] = 0  # idle gap between cells
    order: Order = Order()
    seed: NonNegativeInt = 42
    energy: Energy = Energy()
    output: StrictStr = "results"
    # Scheduler options, validated by the launcher's own model (see orchestrator/launchers).
    slurm: dict[StrictStr, object] = {}
    oar: dict[StrictStr, object] = {}


class SweepSpec:
    """A validated sweep with where it came from, for messages and the frozen copy."""

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
            raise UserError(f"invalid sweep {self.path}", [
                f"{self.where(name, *e['loc'])}: {_message(e)}" for e in exc.errors()]) from None


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


def load_sweep(value: str) -> SweepSpec:
    path = resolve_sweep_path(value)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read sweep file {path}: {exc}") from None
    return parse_sweep(text, path)


def parse_sweep(text: str, path: Path) -> SweepSpec:
    data, lines = _load_yaml(text, path)
    if not isinstance(data, dict):
        raise UserError(f"invalid sweep {path}", [f"{path}:1: the file must be a mapping (name:, matrix:, ...)"])
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"invalid sweep {path}",
                        [f"{_where(path, lines, tuple(e['loc']))}: {_message(e)}" for e in exc.errors()]) from None
    spec = SweepSpec(sweep, path, text, lines)
    from orchestrator.launchers import launcher_class  # here: launchers import this module

    for name in ("slurm", "oar"):
        if getattr(sweep, name):
            try:
                model = launcher_class(name).options_model
            except UserError as exc:
                raise spec.error((name,), f"configures a launcher that cannot be used: {exc}") from None
            spec.launcher_options(name, model)
    return spec


# --- YAML with line numbers ----------------------------------------------------

def _load_yaml(text: str, path: Path) -> tuple:
    """Parse YAML into plain data plus {key path: line}; duplicate keys are errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"invalid sweep {path}", [f"{path}:{line}: YAML syntax error: {problem}"]) from None
    if root is None:
        raise UserError(f"invalid sweep {path}", [f"{path}:1: the file is empty"])
    lines: dict = {}
    constructor = yaml.SafeLoader("")
    return _to_data(root, (), lines, constructor, path), lines


def _to_data(node, keys: tuple, lines: dict, constructor, path: Path):
    lines[keys] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if key in result:
                raise UserError(f"invalid sweep {path}", [
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted(keys + (key,))}: key given twice"])
            result[key] = _to_data(value_node, keys + (key,), lines, constructor, path)
            lines[keys + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, keys + (i,), lines, constructor, path) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


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
    return f"{path}:{lines.get(probe, 1)}: {_dotted(real)}"


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type",
                         "model_type", "literal_error", "greater_than", "greater_than_equal"):
        message += f" (got {error.get('input')!r})"
    return message
