"""Expand a validated sweep into cells: one test × phase × sub-test × node type × backend × repetition each.

include/exclude follow GitHub Actions' matrix rules: excludes remove the
combinations whose listed axes all match; each include adds its settings to
every combination it matches on its axes, or, matching none, creates new
combinations. Settings resolve as built-in < `defaults` < `overrides.<test>`
< include entries, in file order. A cell's execution not set by the sweep is
its backend's default (graph for TensorFlow and JAX, eager for PyTorch).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from pathlib import Path

from jobs import backends as job_backends
from jobs.catalog import FIT_PHASE, INPUT_MULTIPLE, MIN_INPUT, TESTS
from jobs.records import RESULT_SCHEMA_VERSION
from jobs.shallow import SHALLOW_BACKEND
from orchestrator import scale
from orchestrator.errors import UserError
from orchestrator.spec import AXIS_KEYS, BUILTIN_SETTINGS, MAX_CELLS, SweepSpec, did_you_mean

ID_LENGTH = 12


@dataclass(frozen=True)
class Cell:
    id: str
    params: dict

    def __getattr__(self, key):
        try:
            return self.params[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def implemented(self) -> bool:
        return TESTS[self.params["test"]].implemented

    @property
    def label(self) -> str:
        p = self.params
        backend = f" {p['backend']}" if "backend" in p else ""
        scaled = f" {p['nodes']} node(s) x {p['devices_per_node']} device(s)" if "nodes" in p else ""  # scale
        return f"{p['test']} {p['phase']} {p['subtest']}{backend}{scaled} on {p['node_type']} rep {p['repetition']}"


@dataclass
class Expansion:
    cells: list
    notes: list = field(default_factory=list)

    def not_implemented(self) -> list:
        return sorted({c.test for c in self.cells if not c.implemented})


def cell_id(params: dict) -> str:
    """Content address: the same resolved parameters always give the same id.

    Versions of TensorFlow, drivers and the like are left out on purpose, so
    results stay comparable (and resumable) across them; they are recorded in
    each result instead.
    """
    canonical = json.dumps({"params": params, "schema": RESULT_SCHEMA_VERSION},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def expand(spec: SweepSpec) -> Expansion:
    sweep = spec.sweep
    notes = []
    combos = []  # [axes dict, [(key path, settings dict)...]]
    for node_type in sweep.matrix.node_types:
        for test_name in sweep.matrix.tests:
            test = TESTS[test_name]
            for phase in sweep.matrix.phases:
                subs = test.subtests_for(phase)
                if not subs:
                    notes.append(f"{test_name} has no {phase} sub-test (it runs: {', '.join(test.phases())})")
                for sub in subs:
                    for backend in _backends_of(test, sweep.matrix.backends):
                        axes = {"test": test_name, "phase": phase, "node_type": node_type, "subtest": sub.id,
                                "backend": backend}
                        combos.extend((fit_axes, []) for fit_axes in _fit_combos(sweep, axes))
    combos = scale.with_scale_axes(spec, combos)  # scale: devices_per_node x nodes, when the sweep names them

    for entry in sweep.exclude:
        axes = entry.axes()
        combos = [c for c in combos if not _matches(c[0], axes)]

    for index, entry in enumerate(sweep.include):
        axes, settings, where = entry.axes(), entry.settings(), ("include", index)
        matched = [c for c in combos if _matches(c[0], axes)]
        for combo in matched:
            combo[1].append((where, settings))
        if not matched:
            combos.extend((new, [(where, settings)]) for new in _new_combos(spec, index, axes))

    combos = _with_knobs(sweep.matrix, combos)
    combos = _select(spec, combos)
    _check_count(spec, combos)
    cells, seen = [], {}
    for repetition in range(max_repetitions(sweep)):  # repetition-major: interleaves tests
        for axes, layers in combos:
            params = _resolve(spec, axes, layers, repetition)
            cid = cell_id(params)
            if cid in seen:
                if repetition == 0:
                    notes.append(f"{_label(axes)} is listed twice with the same settings: one cell kept")
                continue
            seen[cid] = True
            cells.append(Cell(cid, params))
    _check_backends(spec, combos)
    from orchestrator.launchers import resolve_name  # here: launchers import the spec
    scale.check(spec, cells, resolve_name(sweep.launcher))  # scale: catalog, backend and launcher limits
    return Expansion(cells, notes)


KNOB_AXES = ("gpu_power_limit_w", "cpu_max_freq_khz")


def _with_knobs(matrix, combos: list) -> list:
    """Each combination once per energy-knob setting (#14); null (the default) adds no parameter,
    so sweeps without knobs keep their cell ids."""
    out = combos
    for knob in KNOB_AXES:
        values = getattr(matrix, knob)
        out = [({**axes, knob: value} if value is not None else axes, layers) for axes, layers in out
               for value in values]
    return out


def _check_backends(spec: SweepSpec, combos: list) -> None:
    """Every backend installed here, every execution and precision one its backend runs;
    all problems at once, one line each with file, line and key."""
    problems = {}
    for index, name in enumerate(spec.sweep.matrix.backends):
        if not job_backends.is_installed(name):
            problems[name] = (f"{spec.where('matrix', 'backends', index)}: backend {name} is not installed; "
                              f"install it with: {job_backends.get_backend(name).install}")
    for index, entry in enumerate(spec.sweep.include):
        if entry.backend and not job_backends.is_installed(entry.backend):
            problems.setdefault(entry.backend, f"{spec.where('include', index, 'backend')}: backend {entry.backend} "
                                f"is not installed; install it with: {job_backends.get_backend(entry.backend).install}")
    lines = list(problems.values())
    for axes, layers in combos:
        if axes["backend"] == SHALLOW_BACKEND:  # scikit-learn: no Keras execution or precision to check
            continue
        settings, origin = _settings(spec, axes, layers)
        for key, message in job_backends.check_execution(axes["backend"], settings["execution"],
                                                         settings["precision"]):
            line = f"{spec.where(*origin[key], key)}: {message}"
            if line not in lines:  # one line per setting and backend, not per cell
                lines.append(line)
    if lines:
        raise UserError(f"invalid sweep {spec.path}", lines)


def _select(spec: SweepSpec, combos: list) -> list:
    """Keep the combinations `only` selects (any axis of the matrix; values it has, or did-you-mean)."""
    everything = combos
    for axis, wanted in spec.sweep.only.items():
        present = sorted({str(c[0][axis]) for c in everything if axis in c[0]})
        if not present:
            axes = sorted({k for c in combos for k in c[0]}) or list(AXIS_KEYS)
            raise spec.error(("only", axis), f"unknown axis {axis!r}{did_you_mean(axis, axes)}; "
                                             f"axes: {', '.join(axes)}")
        for index, value in enumerate(wanted):
            if value not in present:
                raise spec.error(("only", axis, index), f"{value!r} is not a {axis} of this sweep"
                                                        f"{did_you_mean(value, present)}; it has: {', '.join(present)}")
        combos = [c for c in combos if str(c[0].get(axis)) in wanted]
    return combos


def _check_count(spec: SweepSpec, combos: list) -> None:
    """Refuse an empty campaign, and one too large to build, before building any cell."""
    sweep = spec.sweep
    if not combos:
        blame = ("only",) if sweep.only else ("exclude",) if sweep.exclude else ("matrix",)
        why = {"only": "`only` (or --only) selects", "exclude": "`exclude` leaves",
               "matrix": "the matrix has"}[blame[0]]
        raise spec.error(blame, f"{why} no cell to run: nothing would be measured")
    total = len(combos) * max_repetitions(sweep)
    if total > MAX_CELLS:
        raise spec.error(("matrix", "repetitions"), f"the sweep expands to {total:,} cells ({len(combos):,} "
                                                    f"combinations x {max_repetitions(sweep):,} repetitions), "
                                                    f"more than the {MAX_CELLS:,} a campaign may have")


def _check_input_limits(spec: SweepSpec, test, input_shape: list, where: tuple) -> None:
    """A model's own static limits (Inception needs 75x75, U-Net multiples of 16), refused now
    rather than after a queue wait."""
    minimum, multiple = MIN_INPUT.get(test.name), INPUT_MULTIPLE.get(test.name)
    shown = "x".join(map(str, input_shape[:2]))
    if minimum and any(size < low for size, low in zip(input_shape, minimum)):
        raise spec.error(where, f"{test.name} needs an input of at least {'x'.join(map(str, minimum))} "
                                f"(the model cannot be built smaller), got {shown}")
    if multiple and any(size % multiple for size in input_shape[:2]):
        raise spec.error(where, f"{test.name} takes input sizes in multiples of {multiple} (its layers must "
                                f"line up), got {shown}")


def max_repetitions(sweep) -> int:
    """Cells exist for every repetition a group may need; adaptive ones run only if needed."""
    reps = sweep.matrix.repetitions
    return reps if isinstance(reps, int) else reps.max


def _matches(axes: dict, wanted: dict) -> bool:
    return all(axes.get(k) == v for k, v in wanted.items())


def _label(axes: dict) -> str:
    return " ".join(str(axes[k]) for k in AXIS_KEYS if k in axes)


def _backends_of(test, backends) -> list:
    """The Keras backends a test runs on: each of the sweep's for a deep model; a scikit-learn
    estimator runs on none of them, so its cells exist once, with backend `sklearn` (docs/accuracy.md)."""
    return [SHALLOW_BACKEND] if test.family == "shallow" else list(backends)


def _new_combos(spec: SweepSpec, index: int, axes: dict) -> list:
    backends = [axes["backend"]] if "backend" in axes else list(spec.sweep.matrix.backends)
    return scale.with_scale_axes(spec, [{**combo, "backend": backend} for combo in _new_test_combos(spec, index, axes)
                                        for backend in _backends_of(TESTS[combo["test"]], backends)], axes)


def _new_test_combos(spec: SweepSpec, index: int, axes: dict) -> list:
    missing = [k for k in ("test", "phase", "node_type") if k not in axes]
    if missing:
        raise spec.error(("include", index), "matches no combination of the matrix, and a new combination "
                                             f"needs {', '.join(missing)}")
    test = TESTS[axes["test"]]
    subs = [s.id for s in test.subtests_for(axes["phase"])]
    if not subs:
        raise spec.error(("include", index, "phase"),
                         f"{test.name} has no {axes['phase']} sub-test (it runs: {', '.join(test.phases())})")
    if "subtest" in axes and axes["subtest"] not in subs:
        raise spec.error(("include", index, "subtest"),
                         f"sub-test {axes['subtest']} is not a {axes['phase']} sub-test of {test.name} "
                         f"({', '.join(subs)})")
    chosen = [axes["subtest"]] if "subtest" in axes else subs
    fit_axes = {k: axes[k] for k in ("budget", "train_fraction") if k in axes}  # fit cells' own axes
    return [{"test": test.name, "phase": axes["phase"], "node_type": axes["node_type"], "subtest": s, **fit_axes}
            for s in chosen]


def _settings(spec: SweepSpec, axes: dict, include_layers: list) -> tuple:
    """(settings, origin): the layered settings of a combination and where each came from."""
    sweep = spec.sweep
    layers = [((), BUILTIN_SETTINGS.model_dump(exclude_none=True)),
              (("defaults",), sweep.defaults.model_dump(exclude_none=True))]
    if axes["test"] in sweep.overrides:
        layers.append((("overrides", axes["test"]), sweep.overrides[axes["test"]].model_dump(exclude_none=True)))
    layers.extend(include_layers)

    settings, origin = {}, {}
    for where, layer in layers:
        if "duration_s" in layer or "iterations" in layer:  # a window set later replaces, not merges
            settings.pop("duration_s", None)
            settings.pop("iterations", None)
        settings.update(layer)
        origin.update({key: where for key in layer})
    if axes["backend"] == SHALLOW_BACKEND:  # a scikit-learn estimator has no Keras execution mode
        settings["execution"] = None
    elif origin.get("execution") == ():  # not set by the sweep: the backend's own default
        settings["execution"] = job_backends.get_backend(axes["backend"]).default_execution
    return settings, origin


def _resolve(spec: SweepSpec, axes: dict, include_layers: list, repetition: int) -> dict:
    sweep = spec.sweep
    settings, origin = _settings(spec, axes, include_layers)
    test = TESTS[axes["test"]]
    sub = next(s for s in test.subtests if s.id == axes["subtest"])
    input_shape = list(sub.input_shape)
    if "input_size" in settings:
        size = settings["input_size"]
        if len(size) != len(sub.input_shape) - 1:
            raise spec.error(origin["input_size"] + ("input_size",),
                             f"{test.name} takes {len(sub.input_shape) - 1} input size value(s) "
                             f"(its input is {'x'.join(map(str, sub.input_shape))}), got {size}")
        input_shape = [*size, sub.input_shape[-1]]
        _check_input_limits(spec, test, input_shape, origin["input_size"] + ("input_size",))
    batch = settings.get("batch_size", sub.batch * settings["batch_scale"])
    params = {
        "test": test.name,
        "subtest": sub.id,
        "phase": axes["phase"],
        "node_type": axes["node_type"],
        # In every cell's params (so in its id), tensorflow included: ids are unique per backend.
        "backend": axes["backend"],
        "repetition": repetition,
        "task": test.task,
        "batch_size": batch,
        "input_shape": input_shape,
        "precision": settings["precision"],
        "execution": settings["execution"],
        "warmup_iterations": settings["warmup_iterations"],
        "duration_s": None if "duration_s" not in settings else float(settings["duration_s"]),
        "iterations": settings.get("iterations"),
        "seed": sweep.seed,
        **{knob: axes[knob] for knob in KNOB_AXES if axes.get(knob) is not None},  # energy knobs (#14)
        # scale: devices_per_node, nodes, batch_scaling, per_device_batch, the global batch_size (scaled sweeps only)
        **scale.scale_params(spec, axes, settings, origin, batch),
    }
    if axes["phase"] == FIT_PHASE:
        params.update(_fit_params(spec, axes))
    return params


# --- the fit phase (issue #13): budget and train_fraction axes, dataset and fit settings -----------

def _fit_combos(sweep, axes: dict) -> list:
    """A fit combination per budget x train_fraction; other phases have neither axis."""
    if axes["phase"] != FIT_PHASE:
        return [axes]
    return [{**axes, "budget": None if budget is None else budget.as_joules(), "train_fraction": float(fraction)}
            for budget in sweep.matrix.budgets for fraction in sweep.matrix.train_fractions]


def _fit_params(spec: SweepSpec, axes: dict) -> dict:
    sweep = spec.sweep
    if sweep.dataset is None:
        raise spec.error(("matrix", "phases"), "the fit phase trains on real data: add a `dataset:` section "
                                               "(e.g. `dataset: {kind: digits}`)")
    dataset = sweep.dataset.model_dump()
    if dataset["path"] is not None:
        dataset["path"] = str(Path(dataset["path"]).expanduser().resolve())
    budget = axes.get("budget")
    # The window is the fit's own (epochs and stop rules), not a duration or an iteration count.
    return {"duration_s": None, "iterations": None, "warmup_iterations": 0, "dataset": dataset,
            "fit": sweep.fit.model_dump(), "budget": None if budget is None else {"joules": budget},
            "train_fraction": axes.get("train_fraction", 1.0)}
