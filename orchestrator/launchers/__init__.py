"""Launchers: one interface, one module per way of running a cell.

A launcher is given a campaign and the cells to run. It makes each cell's
job run `python -m jobs.run <cell folder>`, and guarantees that every cell it
started ends with a final status (done, or failed with a reason), whatever
happened to the job.
"""
from __future__ import annotations

import shutil
from abc import ABC, abstractmethod

from orchestrator.errors import UserError


class Launcher(ABC):
    name: str

    @abstractmethod
    def check(self, cells: list) -> None:
        """Raise UserError when these cells cannot run through this launcher, before anything starts."""

    @abstractmethod
    def launch(self, campaign, cells: list, progress) -> None:
        """Run (or submit) the cells; on return, local cells all have a final status."""


# Launchers not built yet are refused with a clear message, never silently replaced.
PLANNED = {"slurm": "sbatch", "oar": "oarsub"}


def pick_launcher(requested: str, timeout_s: float) -> Launcher:
    from orchestrator.launchers.local import LocalLauncher

    if requested == "auto":
        found = [name for name, command in PLANNED.items() if shutil.which(command)]
        if found:
            raise UserError(f"launcher: auto found a {found[0]} scheduler ({PLANNED[found[0]]} is on PATH), "
                            f"but the {found[0]} launcher is not available in this version",
                            ["set `launcher: local` in the sweep to run the cells on this machine"])
        requested = "local"
    if requested == "local":
        return LocalLauncher(timeout_s=timeout_s)
    raise UserError(f"launcher {requested!r} is not available in this version; use `launcher: local`")
