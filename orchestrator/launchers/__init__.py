"""Launchers: one interface, one module per way of running a cell.

A launcher is an adapter: it gets each cell's job to run `python -m jobs.guard
<cell folder>` on the right kind of node (`submit`), says what its scheduler knows
of those jobs (`query`) and stops them (`cancel`). Policy is the core's
(orchestrator/lifecycle.py): refresh, the grace and scheduler-down rules, retries,
cancel, job records; the guard (jobs/guard.py) writes every final status on the node.

Launchers are found by name ("module:Class"), so the core never imports a site's
package. The names come from the entry point group `benchmark_tracker.launchers`
(setup.cfg: one line per launcher; a PBS or Flux plug-in adds one line in its own
package). A plain checkout without installed package metadata reads the same
lines from its setup.cfg, and the core's own launchers (BUILT_IN) are known even
without either. A launcher may declare an options model (a pydantic class,
`options_model`), validated from the sweep's section of the same name when the
sweep is loaded.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from orchestrator.errors import UserError

# The core's own launchers: the last fallback (no package metadata, no setup.cfg). Site launchers are never here.
BUILT_IN = {
    "local": "orchestrator.launchers.local:LocalLauncher",
    "slurm": "orchestrator.launchers.slurm:SlurmLauncher",
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


# Added to a cell's timeout_s in a scheduler's limit (Slurm's --time, OAR's walltime): the guard on the node, not
# the scheduler, stops an overlong cell and says why (its kill grace, Slurm's early signal, the post-steps fit).
GUARD_MARGIN_S = 90


@dataclass
class JobState:
    """What a scheduler says of one job (launchers answer, orchestrator.lifecycle judges)."""

    alive: bool                        # queued or running: nothing to judge yet
    reason: str | None = None          # how it ended, in the scheduler's words, when it ended
    retryable: bool = False            # the infrastructure's fault (node failure...), not the cell's
    fields: dict = field(default_factory=dict)  # extra status fields (slurm_state, timed_out, exit_code...)
    ended_at: float | None = None      # unix time of its end, when the scheduler says


@dataclass
class Refused:
    """A cell its scheduler would not take (no matching resource...): failed with this reason."""

    reason: str
    fields: dict = field(default_factory=dict)


class SubmissionStopped(UserError):
    """Submitting stopped part-way: `submitted` {cell id: job id} reached the scheduler, `refused` {cell id:
    Refused} did not; the cells after them were not tried (they resume on the next run)."""

    def __init__(self, message: str, hints=None, submitted: dict | None = None, refused: dict | None = None):
        super().__init__(message, hints)
        self.submitted, self.refused = dict(submitted or {}), dict(refused or {})


class SchedulerUnreachable(SubmissionStopped):
    """The scheduler did not answer a submission: the campaign stops submitting at the first one (no cell after
    it waits its own timeout); the cells not submitted resume on the next run."""

    exit_code = 1


class QueryFailed(Exception):
    """The scheduler did not answer a query: nothing is judged on it (the core's scheduler-down rule counts)."""


def command_timeout_s(default: float) -> float:
    """How long one scheduler command may take before it counts as unanswered (tests shorten it)."""
    try:
        return float(os.environ.get("BENCHMARK_TRACKER_SCHEDULER_TIMEOUT_S", default))
    except ValueError:
        return default


class Launcher(ABC):
    """A way of running cells: a few methods, no policy (orchestrator/lifecycle.py owns the cell's life).

    `submit` hands cells to the scheduler (marking each `submitted` through the lifecycle before its job can
    start) and returns their job ids; `query` says which jobs still live and how the others ended; `cancel`
    stops jobs. `recover` finds the job of a cell whose submission was interrupted before its id was recorded.
    """

    name: str
    # True: the core waits for each cell's job before starting the next one (local, one measurement at a time).
    blocking: bool = False
    options_model = None  # pydantic model for the sweep's `<name>:` section, if any
    allow_concurrent = False  # --allow-concurrent: no host lock; the cells it runs are marked shared-node

    def __init__(self, spec, options=None):
        self.spec, self.options = spec, options
        self.unanswered_since = None  # the core's scheduler-down rule: first of the consecutive failed queries

    @property
    def max_retries(self) -> int:
        """Attempts after the first for a failure that is not the cell's: the launcher's option, else the sweep's."""
        own = getattr(self.options, "max_retries", None)
        return own if own is not None else getattr(self.spec.sweep, "max_retries", 0)

    @abstractmethod
    def check(self, cells: list) -> None:
        """Raise UserError when these cells cannot run through this launcher, before anything starts."""

    def check_campaign(self, root) -> None:
        """Raise UserError when the campaign folder cannot be used by this launcher; before anything is written."""
        refuse_control_characters({"campaign folder": root})

    @abstractmethod
    def submit(self, campaign, cells: list, progress) -> dict:
        """{cell id: job id or Refused}; SubmissionStopped when the scheduler stops taking them."""

    @abstractmethod
    def query(self, campaign, job_ids: list) -> dict:
        """{job id: JobState} in one call; a job the scheduler does not know is absent. QueryFailed: no answer."""

    @abstractmethod
    def cancel(self, campaign, job_ids: list) -> None:
        """Stop these jobs (their guards record the signal; the lifecycle records the cancel)."""

    def recover(self, campaign, cells: list) -> dict:
        """{cell id: job id, or None when its submission never reached the scheduler}; absent: cannot tell yet."""
        return {}


def registry() -> dict:
    """{name: "module:Class"}: the installed entry points; without package metadata, the checkout's setup.cfg."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return found or {**BUILT_IN, **declared_in_setup_cfg()}


def declared_in_setup_cfg() -> dict:
    """The entry point lines of the checkout's setup.cfg (a plain checkout, not installed)."""
    import configparser
    from pathlib import Path

    config = configparser.ConfigParser()
    try:
        config.read(Path(__file__).resolve().parents[2] / "setup.cfg", encoding="utf-8")
        lines = config["options.entry_points"][ENTRY_POINT_GROUP]
    except (KeyError, configparser.Error, OSError):
        return {}
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines.strip().splitlines()
                if "=" in line and not line.strip().startswith("#"))


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
