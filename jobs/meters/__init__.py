"""Energy over a measurement window, per domain, each number labelled with how it was obtained.

Meters share one small interface: `start()`, then `stop()` returns joules per
domain (cpu, gpu, ram) with a source label, plus any sample series. A
MeterSet runs several over the same window and keeps, per domain, the most
direct reading: a hardware counter read by us (RAPL, NVML) over the same
counter read by codecarbon, over codecarbon's estimates. The others are kept
as alternatives, so a reader can compare them.

Sources: rapl, nvml-counter, nvml-power (hardware, "measured"); and the
estimates codecarbon-load-model, codecarbon-constant, codecarbon-ram-model.

The evidence around a window lives beside the meters: trace (every sampler's
readings), gate (is the trace good enough), uncertainty (the systematic term
per source), state (temperatures, clocks, load, cooldown), knobs (power
limit, CPU frequency), evidence (the order run_cell calls them in).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

JOULES_PER_KWH = 3.6e6
MEASURED_SOURCES = {"rapl", "nvml-counter", "nvml-power"}


@dataclass
class DomainEnergy:
    joules: float
    source: str
    via: str  # which meter read it: rapl, nvml, codecarbon

    @property
    def measured(self) -> bool:
        return self.source in MEASURED_SOURCES

    def record(self) -> dict:
        return {"joules": self.joules, "source": self.source, "measured": self.measured, "via": self.via}


@dataclass
class Reading:
    """What one meter saw over one window."""

    domains: dict  # name -> DomainEnergy
    duration_s: float
    series: list = field(default_factory=list)  # [(seconds since start, {domain: value})], meter-specific
    details: dict = field(default_factory=dict)


class MeterUnavailable(Exception):
    """This meter cannot run here; the message says why and how to fix it."""


# Preference per domain: the lower the better. Our own counter reads beat codecarbon's.
_RANK = {("rapl", "rapl"): 0, ("nvml", "nvml-counter"): 0, ("nvml", "nvml-power"): 1,
         ("codecarbon", "rapl"): 2, ("codecarbon", "nvml-counter"): 2, ("codecarbon", "nvml-power"): 3}


def _rank(domain: DomainEnergy) -> int:
    return _RANK.get((domain.via, domain.source), 9)


@dataclass
class WindowEnergy:
    domains: dict  # chosen DomainEnergy per domain
    alternatives: dict  # domain -> [records of the other meters]
    duration_s: float  # the longest meter span (start of the first to stop of the last)
    series: dict  # meter name -> series
    details: dict
    notes: list


class MeterSet:
    """Several meters over one window; start in order, stop in reverse, so each spans the window."""

    def __init__(self, meters: list, notes: list | None = None):
        self.meters, self.notes = meters, list(notes or [])

    def start(self) -> None:
        self._started = time.perf_counter()
        for meter in self.meters:
            meter.start()

    def stop(self) -> WindowEnergy:
        readings = {}
        for meter in reversed(self.meters):
            readings[meter.name] = meter.stop()
        duration = time.perf_counter() - self._started
        chosen, alternatives = {}, {}
        for reading in readings.values():
            for name, domain in reading.domains.items():
                if name not in chosen or _rank(domain) < _rank(chosen[name]):
                    if name in chosen:
                        alternatives.setdefault(name, []).append(chosen[name].record())
                    chosen[name] = domain
                else:
                    alternatives.setdefault(name, []).append(domain.record())
        return WindowEnergy(chosen, alternatives, duration,
                            {name: r.series for name, r in readings.items() if r.series},
                            {name: r.details for name, r in readings.items() if r.details}, list(self.notes))

    def read_so_far(self) -> dict:
        """{domain: DomainEnergy} since start(), without stopping: per domain the most direct meter's
        reading, as stop() chooses. A meter whose domains are all covered by better ones is not read
        (codecarbon's estimate costs a measurement; on a node with RAPL and NVML it is not needed)."""
        chosen = {}
        for meter in self.meters:  # build_meters' order: our counters first, codecarbon last
            if not hasattr(meter, "read_so_far") or set(getattr(meter, "domains", ())) <= set(chosen):
                continue
            for name, domain in meter.read_so_far().items():
                if name not in chosen or _rank(domain) < _rank(chosen[name]):
                    chosen[name] = domain
        return chosen

    def measure_idle(self, seconds: float) -> WindowEnergy:
        """The same meters over a window in which this process does nothing."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    def trace_probes(self) -> list:
        """Every meter's trace probes (jobs.meters.trace), for one recorder over all of them."""
        return [probe for meter in self.meters for probe in getattr(meter, "trace_probes", lambda: [])()]

    def nvml(self) -> tuple:
        """(nvml module, {index: handle}) of the NVML meter, or (None, {}) without one."""
        for meter in self.meters:
            if getattr(meter, "name", None) == "nvml":
                return meter.nvml, dict(meter.handles)
        return None, {}

    def close(self) -> None:
        for meter in self.meters:
            close = getattr(meter, "close", None)
            if close:
                close()


def build_meters(cell_dir, cell: dict, energy: dict) -> MeterSet:
    """Every meter that can run here; the ones that cannot leave a note saying why and how to fix it."""
    from jobs.meters.codecarbon_meter import CodecarbonMeter
    from jobs.meters.nvml import NvmlMeter
    from jobs.meters.rapl import RaplMeter

    meters, notes = [], []
    for factory in (lambda: RaplMeter(), lambda: NvmlMeter(poll_hz=energy.get("nvml_poll_hz", 20))):
        try:
            meters.append(factory())
        except MeterUnavailable as exc:
            notes.append(str(exc))
    # Last: the estimator of last resort, and the emissions.csv downstream tools expect.
    meters.append(CodecarbonMeter(cell_dir, project_name=cell["id"], experiment_name=cell["campaign"],
                                  country_iso_code=energy["country_iso_code"],
                                  carbon_intensity_g_per_kwh=energy["carbon_intensity_g_per_kwh"]))
    return MeterSet(meters, notes)
