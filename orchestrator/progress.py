"""Progress of a running campaign: done / failed / remaining, the current cell, an ETA."""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class Progress:
    """One line per event on a pipe or file; a live status line on a terminal."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.done = self.failed = self.skipped = 0
        self.current = None
        self.current_since = 0.0
        self.durations = []
        self.live = self.stream.isatty()
        self._last_draw = 0.0

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed - self.skipped

    def eta(self) -> str:
        if not self.durations:
            return "?"
        left = sum(self.durations) / len(self.durations) * self.remaining
        if self.current is not None:
            left -= min(time.monotonic() - self.current_since, sum(self.durations) / len(self.durations))
        return _clock(max(left, 0))

    def counts(self) -> str:
        skipped = f", skipped {self.skipped}" if self.skipped else ""
        return (f"[{self.total - self.remaining}/{self.total}] done {self.done}, failed {self.failed}{skipped}, "
                f"remaining {self.remaining}, ETA {self.eta()}")

    def start(self, label: str) -> None:
        self.current, self.current_since = label, time.monotonic()
        self._emit(f"{self.counts()} | running {label}")

    def tick(self) -> None:
        if self.live and self.current and time.monotonic() - self._last_draw >= 1:
            elapsed = _clock(time.monotonic() - self.current_since)
            self._emit(f"{self.counts()} | running {self.current} ({elapsed})")

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

    def _emit(self, line: str, permanent: bool = False) -> None:
        self._last_draw = time.monotonic()
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if permanent else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
