"""Progress of a running campaign: done / failed / remaining, the current cell and its phase, an ETA.

On a terminal, one live line drawn by rich (cut to the terminal's width, never
wrapped); on a pipe or a file, one plain line per event. The total is the
campaign's planned cells (every round) when the sweep knows it up front. The
ETA uses the cells' observed durations, or before the first one ends, an
estimate from the sweep's windows, warm-ups and idle baselines. The phase of
the running cell comes from the job's cells/<id>/phase.json when present.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from orchestrator import safeio

PHASE_FILE = "phase.json"
PHASE_NAMES = {"idle": "idle baseline", "build": "build", "warmup": "warm-up", "window": "window",
               "post": "saving"}
BUILD_S = 15.0  # model build and graph tracing before the warm-up, a rough CPU figure


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def cell_estimate_s(cells: list, idle_s: float = 0.0, idle_reuse_s: float = 0.0) -> float | None:
    """Expected seconds per cell: its window (30 s when set by iterations), a build, a warm-up, and the idle
    baseline amortised over the cells that reuse it (one per node type per `idle_reuse_s`)."""
    if not cells:
        return None
    windows = [float(c.params.get("duration_s") or 30.0) for c in cells]
    window = sum(windows) / len(windows)
    warmup = window * 0.2  # warm-up iterations are a few steps: a fraction of the window
    campaign_s = len(cells) * (window + warmup + BUILD_S)
    node_types = {c.params.get("node_type") for c in cells}
    baselines = len(node_types) * max(1, int(campaign_s // idle_reuse_s) + 1) if idle_reuse_s else len(cells)
    return (campaign_s + min(baselines, len(cells)) * float(idle_s)) / len(cells)


def read_phase(cell_dir: Path | None) -> str | None:
    """'warm-up', 'window'...: what the running job does now, from its phase.json; None when unknown."""
    if cell_dir is None:
        return None
    try:
        record = safeio.read_json(Path(cell_dir) / PHASE_FILE)
    except (OSError, ValueError):
        return None
    phase = record.get("phase") if isinstance(record, dict) else None
    return PHASE_NAMES.get(phase, phase) if isinstance(phase, str) else None


class Progress:
    """One line per event on a pipe or file; a live status line on a terminal."""

    def __init__(self, total: int, stream=None, expected: int | None = None, cell_estimate: float | None = None,
                 width: int | None = None):
        self.stream = stream or sys.stderr
        self.total, self.expected = total, expected  # total: cells counted so far (a sweep adds each round's)
        self.cell_estimate = cell_estimate
        self.done = self.failed = self.skipped = 0
        self.current = None
        self.current_dir = None
        self.current_since = 0.0
        self.durations = []
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._live = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=self.stream, width=width, highlight=False, markup=False, emoji=False)
            self._live = Live(console=self.console, auto_refresh=False, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    @property
    def planned(self) -> int:
        """The campaign's total when known up front (every round), never less than the cells counted so far."""
        return max(self.total, self.expected or 0, self.done + self.failed + self.skipped)

    @property
    def remaining(self) -> int:
        return self.planned - self.done - self.failed - self.skipped

    def eta(self) -> str:
        per_cell = sum(self.durations) / len(self.durations) if self.durations else self.cell_estimate
        if not per_cell:
            return "?"
        left = per_cell * self.remaining
        if self.current is not None:
            left -= min(time.monotonic() - self.current_since, per_cell)
        return ("~" if not self.durations else "") + _clock(max(left, 0))

    def counts(self) -> str:
        skipped = f", skipped {self.skipped}" if self.skipped else ""
        return (f"[{self.planned - self.remaining}/{self.planned}] done {self.done}, failed {self.failed}{skipped}, "
                f"remaining {self.remaining}, ETA {self.eta()}")

    def start(self, label: str, cell_dir: Path | None = None) -> None:
        self.current, self.current_dir, self.current_since = label, cell_dir, time.monotonic()
        self._emit(f"{self.counts()} | running {label}")

    def running_line(self) -> str:
        elapsed = _clock(time.monotonic() - self.current_since)
        phase = read_phase(self.current_dir)
        return f"{self.counts()} | running {self.current} ({phase + ', ' if phase else ''}{elapsed})"

    def tick(self) -> None:
        if self.live and self.current and time.monotonic() - self._last_draw >= 1:
            self._emit(self.running_line())

    def finish(self, label: str, state: str, reason: str | None = None, timed: bool = True) -> None:
        """A cell reached a final state; `timed=False` when it did not run under our watch."""
        took = ""
        if timed:
            self.durations.append(time.monotonic() - self.current_since)
            took = f" in {_clock(self.durations[-1])}"
        if state == "done":
            self.done += 1
        elif state == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        self.current = None
        detail = f": {reason}" if reason else ""
        self._emit(f"{state.upper():6} {label}{took}{detail}", permanent=True)

    def close(self) -> None:
        self._emit(self.counts().replace(f", ETA {self.eta()}", ""), permanent=True)
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _emit(self, line: str, permanent: bool = False) -> None:
        self._last_draw = time.monotonic()
        if self._live is not None:
            from rich.text import Text

            if permanent:  # printed above the live line, kept in the scrollback, wrapped like any log line
                self._live.console.print(Text(line))
                self._live.update(Text(""), refresh=True)
            else:
                self._live.update(Text(line, no_wrap=True, overflow="ellipsis"), refresh=True)
            return
        self.stream.write(line + "\n")
        self.stream.flush()
