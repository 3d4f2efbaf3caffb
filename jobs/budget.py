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

from jobs.meters import JOULES_PER_KWH, MEASURED_SOURCES


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
    """Joules per domain since the window's meters started, from the most direct source available."""

    def __init__(self, meters):
        by_name = {m.name: m for m in meters.meters}
        self._readers = {}  # domain -> (source, via, reader returning joules)
        rapl = by_name.get("rapl")
        if rapl is not None:
            domains = {zone.domain for zone in rapl.zones}
            for domain in sorted(domains):
                self._readers[domain] = ("rapl", "rapl", self._rapl_reader(rapl, domain))
        nvml = by_name.get("nvml")
        if nvml is not None:
            self._readers["gpu"] = ("nvml-counter" if all(nvml.has_counter.values()) else "nvml-power", "nvml",
                                    self._nvml_reader(nvml))
        self._codecarbon = by_name.get("codecarbon")
        self._cached = None

    def _rapl_reader(self, rapl, domain):
        state = {"at": None, "values": {}}

        def read():
            now = time.perf_counter()
            if state["at"] != now:  # one sample of every zone serves all RAPL domains of one reading
                rapl._sample()
                with rapl._lock:
                    state["values"] = rapl._domain_joules()
                state["at"] = now
            return state["values"].get(domain, 0.0)
        return read

    @staticmethod
    def _nvml_reader(nvml):
        def read():
            joules = 0.0
            for index, handle in nvml.handles.items():
                start = nvml._start_counter.get(index)
                now = nvml._counter(handle) if start is not None else None
                joules += (now - start) / 1000.0 if now is not None and now >= start else nvml._integrate(index)
            return joules
        return read

    def _codecarbon_domains(self) -> dict:
        """codecarbon's running totals per domain (it estimates energy at each measurement)."""
        from jobs.meters.codecarbon_meter import cpu_source, gpu_source

        tracker = self._codecarbon._tracker
        tracker._measure_power_and_energy()
        out = {}
        for hardware in tracker._hardware:
            kind = type(hardware).__name__
            if kind == "CPU":
                out["cpu"] = (cpu_source(hardware), tracker._total_cpu_energy.kWh * JOULES_PER_KWH)
            elif kind == "GPU":
                out["gpu"] = (gpu_source(hardware), tracker._total_gpu_energy.kWh * JOULES_PER_KWH)
            elif kind == "RAM":
                out["ram"] = ("codecarbon-ram-model", tracker._total_ram_energy.kWh * JOULES_PER_KWH)
        return out

    def read(self) -> dict:
        """{domain: {"joules", "source", "measured", "via"}} now."""
        out = {}
        for domain, (source, via, reader) in self._readers.items():
            out[domain] = {"joules": reader(), "source": source, "measured": source in MEASURED_SOURCES,
                           "via": via}
        if self._codecarbon is not None:
            missing = {"cpu", "ram", "gpu"} - set(out)
            if missing:
                for domain, (source, joules) in self._codecarbon_domains().items():
                    if domain in missing:
                        out[domain] = {"joules": joules, "source": source, "measured": source in MEASURED_SOURCES,
                                       "via": "codecarbon"}
        self._cached = out
        return out

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
