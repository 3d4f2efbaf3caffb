"""A sweep from file to finished cells: validate everything, then write, then launch.

Nothing is written or launched until the sweep, its expansion and the
launcher's checks have all passed. Rerunning the same command resumes:
done cells are skipped, and so are failed ones unless asked
(--rerun-failed); cells a previous run left unfinished run again.

Cells run in rounds, one per repetition index, each shuffled with a seed.
With adaptive repetitions a round runs only the groups that still need
precision; a launcher that submits and returns (a scheduler) gets the rounds
whose need is known now, and rerunning the command submits the next ones.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from jobs.records import FINAL_STATES
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import SchedulerUnreachable, pick_launcher
from orchestrator.matrix import expand, max_repetitions
from orchestrator.nodes import energy_factors, node_types
from orchestrator.precision import group_key, metric_value, needs_more, order_round, relative_half_width
from orchestrator.progress import Progress, cell_estimate_s
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
    submitted_only: bool = False  # a scheduler runs the cells: follow with `wait`
    campaign_failed: int = 0      # failed cells of the whole campaign, skipped ones included
    interrupt_exit_code: int = 130
    submitted: int = 0            # cells that reached their scheduler this run
    cancelled: bool = False       # a `cancel` stopped this sweep
    scheduler_down: str | None = None  # the scheduler stopped answering: submissions stopped there
    storage_error: str | None = None   # a campaign file could not be written: the sweep stopped there

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return self.interrupt_exit_code
        if self.storage_error or self.scheduler_down:
            return 1
        return 1 if self.failed or self.campaign_failed else 0


def select_cells(campaign: Campaign, cells: list, rerun_failed: bool, force: bool,
                 skip_in_flight: bool = False) -> tuple:
    """(cells to run, done skipped, failed skipped).

    `skip_in_flight`: for launchers that submit and return, a submitted or
    running cell is a live job (dead ones were marked failed by refresh), so
    it is never submitted twice.
    """
    chosen, done, failed = [], 0, 0
    for cell in cells:
        status = campaign.status(cell.id)
        if skip_in_flight and status["state"] in ("submitted", "running"):
            continue
        if force:
            chosen.append(cell)
        elif status["state"] == "done":
            done += 1
        elif status["state"] == "failed" and not (rerun_failed or lifecycle.resumable(status)):
            failed += 1  # an interruption or a cancel is not the cell's fault: it always resumes
        else:
            chosen.append(cell)
    return chosen, done, failed


def cell_record(sweep, cell) -> dict:
    """What a job needs besides its parameters: energy settings, node promises, limits."""
    node = node_types()[cell.node_type]
    energy = sweep.energy.model_dump()
    energy.update(energy_factors(cell.node_type, energy))
    energy["factor_source"] = energy.pop("source")
    return {"energy": energy, "timeout_s": sweep.timeout_s,
            "cooldown": sweep.cooldown.model_dump() if sweep.cooldown else None,  # evidence (#14)
            "node": {"name": node.name, "gpu_count": node.gpu_count, "gpu_model": node.gpu_model}}


def _adaptive_skip(campaign: Campaign, cells: list, by_group: dict, policy, round_index: int) -> tuple:
    """Split a round into (still needed, undecided); cells precision made unnecessary are marked skipped."""
    needed, undecided = [], []
    for cell in cells:
        earlier = [(c, campaign.status(c.id)["state"]) for c in by_group[group_key(cell)]
                   if c.repetition < round_index]
        if any(state not in FINAL_STATES for _, state in earlier):
            undecided.append(cell)  # earlier repetitions still running elsewhere
            continue
        values = [v for v in (metric_value(campaign, c, policy.metric) for c, state in earlier if state == "done")
                  if v is not None]
        if needs_more(values, policy):
            needed.append(cell)
        elif campaign.status(cell.id)["state"] != "done":
            lifecycle.mark_skipped(campaign, cell.id, f"not needed: {policy.metric} 95 % CI "
                                   f"±{relative_half_width(values):.2%} of the mean after {len(values)} repetitions "
                                   f"(target ±{policy.target_ci:.2%}, max {policy.max})")
    return needed, undecided


def _chosen_again(campaign, cells: list, rerun_failed: bool, force: bool) -> list:
    """Final cells this run will run again (forced, or failed and rerun): they go back to pending first."""
    out = []
    for cell in cells:
        status = campaign.status(cell.id)
        if status["state"] == "done" and force or status["state"] == "failed" and (
                force or rerun_failed or lifecycle.resumable(status)):
            out.append(cell.id)
    return out


def run_sweep(sweep_arg: str, output: str | None = None, rerun_failed: bool = False, force: bool = False,
              progress_stream=None, wait_for_host: bool = True, allow_concurrent: bool = False,
              set_overrides=None, only=None) -> SweepOutcome:
    spec = load_sweep(sweep_arg, set_overrides=set_overrides, only=only)
    sweep = spec.sweep
    expansion = expand(spec)
    missing = expansion.not_implemented()
    if missing:
        raise UserError(f"{spec.path}: tests not implemented yet: {', '.join(missing)}",
                        ["remove them from the sweep (`benchmark-tracker expand` lists what is runnable)"])
    launcher = pick_launcher(spec)
    launcher.check(expansion.cells)
    root = Path(output or sweep.output)
    campaign = Campaign(root / sweep.name)
    launcher.check_campaign(campaign.root)  # e.g. a folder name OAR refuses: before anything is written
    check_writable(root)

    policy = None if isinstance(sweep.matrix.repetitions, int) else sweep.matrix.repetitions
    by_group = {}
    for cell in expansion.cells:
        by_group.setdefault(group_key(cell), []).append(cell)

    with lifecycle.signals_interrupt(), campaign.lock():
        lifecycle.clear_cancel(campaign)
        campaign.freeze_sweep(spec.text)
        campaign.write_manifest(sweep.name, spec.text, launcher.name, expansion.cells)
        for cell in expansion.cells:
            campaign.write_cell(cell, cell_record(sweep, cell))
        if not launcher.blocking:  # settle jobs that died since the last look, before choosing
            in_flight = [c for c in expansion.cells if campaign.status(c.id)["state"] in ("submitted", "running")]
            if in_flight:
                lifecycle.refresh(campaign, launcher, in_flight, holding_lock=True)
                alive = sum(1 for c in in_flight if campaign.status(c.id)["state"] in ("submitted", "running"))
                if alive:  # never two jobs for one cell
                    (progress_stream or sys.stderr).write(f"{alive} cell(s) already queued or running in "
                                                          f"{launcher.name}: not submitted again\n")
        lifecycle.queue(campaign, _chosen_again(campaign, expansion.cells, rerun_failed, force))
        planned = select_cells(campaign, expansion.cells, rerun_failed, force, skip_in_flight=not launcher.blocking)[0]
        progress = Progress(0, progress_stream, expected=len(planned),
                            cell_estimate=cell_estimate_s(planned, sweep.energy.idle_s, sweep.energy.idle_reuse_s))
        launcher.allow_concurrent = allow_concurrent
        # Cells measured here hold this host's lock; a scheduler's exclusive node allocation is its lock.
        measuring = (lifecycle.host_lock(campaign, wait_for_host, progress.stream)
                     if launcher.blocking and not allow_concurrent else nullcontext())
        ran, skipped_done, skipped_failed, interrupted, interrupt, down = [], 0, 0, False, None, None
        storage = None
        try:
            with measuring:
                for round_index in range(max_repetitions(sweep)):
                    cells = [c for c in expansion.cells if c.repetition == round_index]
                    if policy is not None and round_index >= policy.min:
                        cells, undecided = _adaptive_skip(campaign, cells, by_group, policy, round_index)
                        if undecided:  # a scheduler is still running earlier rounds: the next run decides
                            break
                    todo, done, failed = select_cells(campaign, cells, rerun_failed, force,
                                                      skip_in_flight=not launcher.blocking)
                    skipped_done, skipped_failed = skipped_done + done, skipped_failed + failed
                    progress.total += len(todo)
                    order = order_round(todo, sweep.order.shuffle, sweep.order.seed, round_index)
                    ran.extend(todo)
                    try:
                        lifecycle.launch(campaign, launcher, order, progress)
                    except SchedulerUnreachable as exc:  # one rule for every scheduler: stop submitting here
                        down = exc
                        break
                    if not launcher.blocking and policy is not None and round_index + 1 >= policy.min:
                        break  # later rounds depend on results the scheduler has not produced yet
                    if lifecycle.cancel_requested(campaign):
                        break
        except KeyboardInterrupt as exc:
            interrupted, interrupt = True, exc
        except lifecycle.StorageError as exc:
            storage = str(exc)
        except OSError as exc:
            storage = f"the sweep stopped: {lifecycle.describe_os_error(exc)}"
        if skipped_done or skipped_failed:
            hint = " (--rerun-failed runs them again)" if skipped_failed else ""
            progress.stream.write(f"campaign {campaign.root}: {skipped_done} done and {skipped_failed} failed "
                                  f"cells skipped{hint}\n")
        progress.close()
    failed = sum(1 for c in ran if campaign.status(c.id)["state"] == "failed")
    # Reached a job: its attempt has a job record (a submission cut short by a hung scheduler has none yet).
    submitted = sum(1 for c in ran if campaign.status(c.id)["state"] in ("running", "done")
                    or lifecycle.current_job(campaign, c.id) is not None)
    return SweepOutcome(campaign, len(ran), skipped_done, skipped_failed, failed, interrupted,
                        submitted_only=not launcher.blocking,
                        campaign_failed=sum(1 for c in expansion.cells if campaign.status(c.id)["state"] == "failed"),
                        interrupt_exit_code=lifecycle.interrupt_exit_code(interrupt), submitted=submitted,
                        cancelled=lifecycle.cancel_requested(campaign),
                        scheduler_down=None if down is None else str(down), storage_error=storage)
