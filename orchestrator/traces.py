"""Every cell's power trace as one table: `benchmark-tracker collect <campaign> --traces`.

    <campaign>/traces.parquet   the columns of trace.parquet (jobs.meters.trace.COLUMNS), plus
                                cell_id, window_start_unix, window_end_unix and in_window

Only done cells that recorded a trace are read; a damaged trace file (or a link, a FIFO) is a
named problem, the other cells are still exported. Written atomically, rebuilt on every call.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from jobs.meters.trace import COLUMNS, TRACE_FILE
from jobs.records import RESULT_FILE, atomic_write
from orchestrator import safeio

EXPORT_FILE = "traces.parquet"
EXTRA = ("cell_id", "window_start_unix", "window_end_unix", "in_window")


def export_traces(root: Path, problems: list | None = None) -> dict:
    """Write <root>/traces.parquet; {path, cells, rows, problems}."""
    root = Path(root)
    problems = [] if problems is None else problems
    frames = []
    cells = sorted(p for p in (root / "cells").iterdir() if p.is_dir()) if (root / "cells").is_dir() else []
    for cell in cells:
        path = cell / TRACE_FILE
        if not path.exists() and not path.is_symlink():
            continue
        try:
            result = safeio.read_json(cell / RESULT_FILE)
            if result.get("status") != "done":
                continue
            window = result.get("window") or {}
            frame = pd.read_parquet(io.BytesIO(safeio.read_bytes(path)))
        except Exception as exc:  # noqa: BLE001 - a damaged cell is a problem, not a crash
            problems.append(f"{cell.name}: trace not exported ({safeio.describe(exc) or type(exc).__name__})")
            continue
        missing = [c for c in COLUMNS if c not in frame]
        if missing:
            problems.append(f"{cell.name}: {TRACE_FILE} lacks column(s) {', '.join(missing)}: not exported")
            continue
        start, end = window.get("start_unix"), window.get("end_unix")
        frame = frame[list(COLUMNS)].assign(cell_id=cell.name, window_start_unix=start, window_end_unix=end)
        frame["in_window"] = (frame["t_unix"] >= start) & (frame["t_unix"] <= end) if start and end else False
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS) + list(EXTRA))
    out = root / EXPORT_FILE
    atomic_write(out, lambda p: table.to_parquet(p, index=False))
    return {"path": out, "cells": len(frames), "rows": len(table), "problems": problems}
