"""Energy read live during a window, and energy budgets enforced at step boundaries.

`LiveEnergy` reads the window's own running meters without stopping them, per domain, from the
most direct source there is: the RAPL counters (cpu, and ram where a dram zone exists) and the
NVML counters (gpu) read directly; codecarbon's estimate, labelled as one, for any domain nothing
better covers (on a VM without RAPL: all of them). Reading the window's meters, not new ones, keeps
the live figure and the window's final energy the same measurement (and codecarbon's load model
reads psutil's process-wide CPU counters: a second tracker would corrupt the first).

`Budget` is checked at every step boundary (a Keras batch, a partial_fit mini-batch, a tree): the
first boundary whose reading is at or past the budget stops training. The record says the energy
spent at the stop, the overshoot, the reading one boundary before (under the budget, by
construction), and which meter enforced it.
"""
from __future__ import annotations

import time



def parse_budget(budget: dict | None) -> float | None:
    """{joules: x} or {wh: x} -> joules; None for no budget."""
    if not budget:
        return None
    if "joules" in budget:
        return float(budget["joules"])
    if "wh" in budget:
        return float(budget["wh"]) * 3600.0
    raise ValueError(f"a budget is {{joules: x}} or {{wh: x}}, got {budget!r}")


class LiveEnergy:
    """Joules per domain since the window's meters started, from the most direct source available
    (each meter's public `read_so_far`, combined by the MeterSet as its `stop` would)."""

    def __init__(self, meters):
        self.meters = meters
        self._cached = None

    def read(self) -> dict:
        """{domain: {"joules", "source", "measured", "via"}} now."""
        self._cached = {name: domain.record() for name, domain in self.meters.read_so_far().items()}
        return self._cached

    def label(self) -> str:
        """Which meter reads what, e.g. 'cpu: rapl (measured); ram: codecarbon-ram-model (estimated)'."""
        reading = self._cached or self.read()
        return "; ".join(f"{d}: {r['source']} ({'measured' if r['measured'] else 'estimated'}, via {r['via']})"
                         for d, r in sorted(reading.items()))


def total(reading: dict) -> float:
    return sum(r["joules"] for r in reading.values())


class Budget:
    """Checks the live energy at step boundaries; `exceeded()` is true from the first one past the budget."""

    def __init__(self, live: LiveEnergy, joules: float | None):
        self.live, self.joules = live, joules
        self.steps = 0
        self.before = None  # total at the previous boundary
        self.at_stop = None  # total at the boundary that stopped training
        self.stopped = False
        self.read_s = 0.0  # time spent reading meters at step boundaries

    def step(self) -> bool:
        """Call after each step; True once the budget is spent (stop now)."""
        self.steps += 1
        if self.joules is None or self.stopped:
            return self.stopped
        clock = time.perf_counter()
        spent = total(self.live.read())
        self.read_s += time.perf_counter() - clock
        if spent >= self.joules:
            self.stopped, self.at_stop = True, spent
        else:
            self.before = spent
        return self.stopped

    def record(self) -> dict | None:
        if self.joules is None:
            return None
        return {"joules": self.joules, "enforced_by": self.live.label(), "stopped_by_budget": self.stopped,
                "spent_at_stop_joules": self.at_stop, "overshoot_joules": (self.at_stop - self.joules
                                                                            if self.at_stop is not None else None),
                "last_reading_under_budget_joules": self.before, "steps": self.steps,
                "read_overhead_s": self.read_s, "enforceable": True}
