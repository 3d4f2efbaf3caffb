"""A campaign at a glance, read safely from its folder: counts, failures, meter notes (status -v, status --json).

The lifecycle verb (`status`) refreshes the scheduler's view first, then calls
`campaign_overview`; nothing here queries a scheduler or follows a link.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from jobs.records import RESULT_FILE
from orchestrator import safeio
from orchestrator.collect import campaign_notes, manifest_cells, read_cell_status, read_manifest, result_row

STATE_ORDER = ("pending", "submitted", "running", "done", "failed", "skipped")


def campaign_overview(root: Path) -> dict:
    """JSON-ready: {campaign, root, total, states, node_types: {nt: {state: n}}, failed: [...], notes, problems}."""
    root = Path(root).absolute()
    manifest = read_manifest(root)
    problems = []
    cells = manifest_cells(manifest, problems)
    by_node, states, failed, rows = {}, Counter(), [], []
    for entry in cells:
        cell_dir = root / "cells" / entry["id"]
        status = read_cell_status(cell_dir)
        if status.get("damaged"):
            problems.append(f"{entry['id']}: {status['reason']}")
        state = status["state"]
        states[state] += 1
        by_node.setdefault(str(entry.get("node_type", "?")), Counter())[state] += 1
        label = " ".join(str(entry.get(k, "")) for k in ("test", "subtest", "phase", "node_type")).strip()
        if state == "failed":
            failed.append({"id": entry["id"], "label": label, "reason": status.get("reason")})
        if state == "done":
            try:
                result = safeio.read_json(cell_dir / RESULT_FILE)
                if isinstance(result, dict):
                    rows.append({"state": "done", **result_row(result)})
            except (OSError, ValueError) as exc:
                problems.append(f"{entry['id']}: unreadable {RESULT_FILE}: {safeio.describe(exc)}")
    notes = campaign_notes(pd.DataFrame(rows)) if rows else []
    order = {s: i for i, s in enumerate(STATE_ORDER)}
    return {"campaign": manifest.get("campaign", root.name) if isinstance(manifest.get("campaign"), str) else root.name,
            "root": str(root), "total": len(cells),
            "states": dict(sorted(states.items(), key=lambda kv: order.get(kv[0], 99))),
            "node_types": {nt: dict(sorted(c.items(), key=lambda kv: order.get(kv[0], 99)))
                           for nt, c in sorted(by_node.items())},
            "failed": failed, "notes": notes, "problems": problems}


def overview_lines(overview: dict, verbose: bool = False) -> list:
    """The text `status` prints: one line per node type; with `verbose`, failures, notes and problems."""
    lines = [f"{nt}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) for nt, counts in
             overview["node_types"].items()]
    if verbose:
        lines += [f"{f['id']} {f['label']}: {f['reason']}" for f in overview["failed"]]
        lines += [f"note: {n}" for n in overview["notes"]]
        lines += [f"problem: {p}" for p in overview["problems"]]
    return lines
