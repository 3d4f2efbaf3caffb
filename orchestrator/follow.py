"""After submission: reattach to a campaign from its folder, then status, wait and cancel.

Any later process can follow a campaign: the frozen sweep gives the launcher
and its options, the manifest gives the cells, status files give the state.
Scheduler queries only decide what happened to cells without a final status.
"""
from __future__ import annotations

import time
from collections import Counter

from jobs.records import CELL_FILE, FINAL_STATES, read_json
from orchestrator import lifecycle
from orchestrator.errors import UserError
from orchestrator.launchers import launcher_class
from orchestrator.matrix import Cell
from orchestrator.progress import Progress
from orchestrator.spec import parse_sweep
from orchestrator.store import SWEEP_COPY, Campaign


# The manifest lists these per cell: what following a campaign needs (ids, labels, node types), without
# reading 10,000 cell.json files.
MANIFEST_AXES = ("test", "subtest", "phase", "node_type", "repetition")


def reattach(campaign: Campaign) -> tuple:
    """(launcher, cells) of an existing campaign, as its last sweep left it.

    Cells carry the manifest's axes only (MANIFEST_AXES); cell.json holds the full parameters.
    """
    manifest = campaign.manifest()
    copy = campaign.root / SWEEP_COPY
    spec = parse_sweep(copy.read_text(encoding="utf-8"), copy)
    cls = launcher_class(manifest["launcher"])
    launcher = cls(spec, spec.launcher_options(manifest["launcher"], cls.options_model))
    cells = []
    for entry in manifest["cells"]:
        if all(k in entry for k in MANIFEST_AXES):  # enough to follow a cell; cell.json has the rest
            cells.append(Cell(entry["id"], {k: entry[k] for k in MANIFEST_AXES}))
            continue
        try:
            cells.append(Cell(entry["id"], read_json(campaign.cell_dir(entry["id"]) / CELL_FILE)["params"]))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"campaign {campaign.root}: cell {entry['id']} has no readable {CELL_FILE}: {exc}")
    return launcher, cells


def refresh(campaign: Campaign, statuses: dict | None = None) -> tuple:
    """Reattach and refresh; `statuses`, when given, receives every cell's status afterwards (read once)."""
    launcher, cells = reattach(campaign)
    seen = {} if statuses is None else statuses
    pending = lifecycle.open_cells(campaign, cells, seen, launcher)
    if pending:
        lifecycle.refresh(campaign, launcher, pending)
        seen.update({c.id: campaign.status(c.id) for c in pending})
    return launcher, cells


def counts_by_node_type(campaign: Campaign, cells: list, statuses: dict | None = None) -> dict:
    statuses = statuses or {}
    counts = {}
    for cell in cells:
        status = statuses.get(cell.id) or campaign.status(cell.id)
        counts.setdefault(cell.node_type, Counter())[status["state"]] += 1
    return counts


def wait(campaign: Campaign, poll_s: float = 10.0, timeout_s: float | None = None, stream=None) -> int:
    """Follow until every cell is final; 0 all done, 1 some failed, 3 timed out waiting."""
    launcher, cells = reattach(campaign)
    progress = Progress(len(cells), stream)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reported = set()
    while True:
        pending = lifecycle.open_cells(campaign, cells, launcher=launcher)
        if pending:
            lifecycle.refresh(campaign, launcher, pending)
        for cell in cells:
            status = campaign.status(cell.id)
            if cell.id not in reported and status["state"] in FINAL_STATES:
                reported.add(cell.id)
                progress.finish(cell.label, status["state"], status.get("reason"), timed=False)
        if len(reported) == len(cells):  # final means final: a guard writes `done` after its post-steps
            progress.close()
            return 1 if progress.failed else 0
        if deadline is not None and time.monotonic() > deadline:
            progress.close()
            return 3
        progress.tick()
        time.sleep(poll_s)


def cancel(campaign: Campaign) -> int:
    """Stop the campaign: a running sweep starts no more cells, open ones are stopped and recorded cancelled."""
    launcher, cells = reattach(campaign)
    return lifecycle.cancel(campaign, launcher, cells)
