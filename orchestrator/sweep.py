"""A sweep from file to finished cells: validate everything, then write, then launch.

Nothing is written or launched until the sweep, its expansion and the
launcher's checks have all passed. Rerunning the same command resumes:
done cells are skipped, and so are failed ones unless asked
(--rerun-failed); cells a previous run left unfinished run again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.launchers import pick_launcher
from orchestrator.matrix import expand
from orchestrator.nodes import node_types
from orchestrator.progress import Progress
from orchestrator.spec import load_sweep
from orchestrator.store import Campaign, check_writable


@dataclass
class SweepOutcome:
    campaign: Campaign
    ran: int
    skipped_done: int
    skipped_failed: int
    failed: int
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


def select_cells(campaign: Campaign, cells: list, rerun_failed: bool, force: bool) -> tuple:
    """(cells to run, done skipped, failed skipped)."""
    chosen, done, failed = [], 0, 0
    for cell in cells:
        status = campaign.status(cell.id)
        if force:
            chosen.append(cell)
        elif status["state"] == "done":
            done += 1
        elif status["state"] == "failed" and not (rerun_failed or status.get("interrupted")):
            failed += 1  # an interruption is not the cell's fault: it always resumes
        else:
            chosen.append(cell)
    return chosen, done, failed


def run_sweep(sweep_arg: str, output: str | None = None, rerun_failed: bool = False, force: bool = False,
              progress_stream=None) -> SweepOutcome:
    spec = load_sweep(sweep_arg)
    sweep = spec.sweep
    expansion = expand(spec)
    missing = expansion.not_implemented()
    if missing:
        raise UserError(f"{spec.path}: tests not implemented yet: {', '.join(missing)}",
                        ["remove them from the sweep (`benchmark-tracker expand` lists what is runnable)"])
    launcher = pick_launcher(spec)
    launcher.check(expansion.cells)
    root = Path(output or sweep.output)
    check_writable(root)

    campaign = Campaign(root / sweep.name)
    with campaign.lock():
        campaign.freeze_sweep(spec.text)
        campaign.write_manifest(sweep.name, spec.text, launcher.name, expansion.cells)
        for cell in expansion.cells:
            node = node_types()[cell.node_type]
            campaign.write_cell(cell, {
                "energy": sweep.energy.model_dump(),
                "timeout_s": sweep.timeout_s,
                "node": {"name": node.name, "gpu_count": node.gpu_count, "gpu_model": node.gpu_model},
            })
        todo, skipped_done, skipped_failed = select_cells(campaign, expansion.cells, rerun_failed, force)
        progress = Progress(len(todo), progress_stream)
        if skipped_done or skipped_failed:
            hint = " (--rerun-failed runs them again)" if skipped_failed else ""
            progress.stream.write(f"campaign {campaign.root}: {skipped_done} done and {skipped_failed} failed "
                                  f"cells skipped{hint}\n")
        interrupted = False
        try:
            launcher.launch(campaign, todo, progress)
        except KeyboardInterrupt:
            interrupted = True
        progress.close()
    failed = sum(1 for c in todo if campaign.status(c.id)["state"] == "failed")
    return SweepOutcome(campaign, len(todo), skipped_done, skipped_failed, failed, interrupted)
