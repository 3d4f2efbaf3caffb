"""Launchers: one interface, one module per way of running a cell.

A launcher makes each cell's job run `python -m jobs.run <cell folder>` on
the right kind of node, and guarantees that every cell it started ends with
a final status (done, or failed with a reason), whatever happened to the
job. The job writes its own statuses (running, done, failed); the launcher
writes `submitted` (with `launcher` and `job_id`) and, for jobs that died
without a word, `failed` with the reason.

Launchers are found by name ("module:Class"), so the core never imports a
site's package: `oar` lives in grid5000/. The names come from the entry point
group `benchmark_tracker.launchers` (setup.cfg: local, slurm, oar; a PBS or Flux
plug-in adds one line in its own package), with LAUNCHERS as the built-in table
for a plain checkout whose package metadata is not installed (and for
in-process registrations, which win). A launcher may declare an
options model (a pydantic class, `options_model`), validated from the sweep's
section of the same name (`slurm:`, `oar:`) when the sweep is loaded.
"""
from __future__ import annotations

import importlib
import re
import shutil
from abc import ABC, abstractmethod

from orchestrator.errors import UserError

LAUNCHERS = {
    "local": "orchestrator.launchers.local:LocalLauncher",
    "slurm": "orchestrator.launchers.slurm:SlurmLauncher",
    "oar": "grid5000.launcher:OarLauncher",
}
ENTRY_POINT_GROUP = "benchmark_tracker.launchers"
# Where `launcher: auto` looks for a scheduler, in order; local when none is found.
SCHEDULER_COMMANDS = {"slurm": "sbatch", "oar": "oarsub"}


# A newline in a value written into a job script ends its line: what follows becomes a shell line of its own
# (and sbatch stops reading #SBATCH lines there). No control character goes into a script, ever.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def refuse_control_characters(values: dict, where: str = "a job script") -> None:
    """Raise UserError when any value (a path, a name, an option) holds a control character (newline, tab...)."""
    for what, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if item is not None and CONTROL_CHARACTERS.search(str(item)):
                raise UserError(f"{what} {str(item)!r} contains a control character (newline, tab...) "
                                f"and cannot go into {where}",
                                ["use plain printable characters in paths, names and options"])


class SchedulerUnreachable(UserError):
    """The scheduler did not answer a submission: the campaign stops submitting at the first one (no cell after
    it waits its own timeout); the cells not submitted resume on the next run."""

    exit_code = 1


def command_timeout_s(default: float) -> float:
    """How long one scheduler command may take before it counts as unanswered (tests shorten it)."""
    import os

    try:
        return float(os.environ.get("BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S", default))
    except ValueError:
        return default


class Launcher(ABC):
    name: str
    # True: launch() returns when every cell is final (local). False: it submits and returns.
    blocking: bool = False
    options_model = None  # pydantic model for the sweep's `<name>:` section, if any
    allow_concurrent = False  # --allow-concurrent: no host lock; the cells it runs are marked shared-node

    def __init__(self, spec, options=None):
        self.spec, self.options = spec, options

    @abstractmethod
    def check(self, cells: list) -> None:
        """Raise UserError when these cells cannot run through this launcher, before anything starts."""

    def check_campaign(self, root) -> None:
        """Raise UserError when the campaign folder cannot be used by this launcher; before anything is written."""
        refuse_control_characters({"campaign folder": root})

    @abstractmethod
    def launch(self, campaign, cells: list, progress) -> None:
        """Run or submit the cells."""

    def refresh(self, campaign, cells: list) -> None:
        """Mark failed, with the reason, every non-final cell whose job is gone (one batched query)."""

    def cancel(self, campaign, cells: list) -> None:
        """Stop the jobs of non-final cells and mark them failed (cancelled)."""

    def settle(self, campaign, cells: list) -> None:
        """Once every cell is final (`wait`): wait, bounded, for work a job does after its final status."""


def registry() -> dict:
    """{name: "module:Class"}: the installed entry points, then the built-in table on top (see above)."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **LAUNCHERS}


def launcher_class(name: str):
    known = registry()
    if name not in known:
        raise UserError(f"unknown launcher {name!r}; known launchers: {', '.join(sorted(known))}")
    module_name, class_name = known[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"launcher {name!r} is not available in this version") from None
        raise UserError(f"launcher {name!r} cannot be loaded: {exc}") from None
    return getattr(module, class_name)


def resolve_name(requested: str) -> str:
    if requested != "auto":
        return requested
    for name, command in SCHEDULER_COMMANDS.items():
        if shutil.which(command):
            return name
    return "local"


def pick_launcher(spec) -> Launcher:
    """The sweep's launcher, with its options validated (errors point into the sweep file)."""
    name = resolve_name(spec.sweep.launcher)
    cls = launcher_class(name)
    options = spec.launcher_options(name, cls.options_model)
    return cls(spec, options)
