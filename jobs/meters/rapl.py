"""RAPL energy counters from the Linux powercap tree (Intel, and AMD Zen since Linux 5.8).

    /sys/class/powercap/intel-rapl:<p>/name        package-<p> (or package-<p>-die-<d>), psys
    /sys/class/powercap/intel-rapl:<p>/energy_uj   microjoules, wraps at max_energy_range_uj
    /sys/class/powercap/intel-rapl:<p>:<n>/name    core, uncore, dram (Intel only)

Package zones give the cpu domain, dram subzones the ram domain; core and
uncore are inside the package and psys spans the platform, so neither is
added. A background thread reads every counter often enough that at most
one wrap-around happens between two reads. Mirrored per-die counters (some
multi-die AMD parts expose the same package counter per die) count once.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.meters import DomainEnergy, MeterUnavailable, Reading

DEFAULT_ROOT = "/sys/class/powercap"
FIX = ("make the counters readable, e.g. `sudo chmod -R a+r /sys/class/powercap/intel-rapl` "
       "(Grid'5000: `sudo-g5k chmod -R a+r /sys/class/powercap/intel-rapl`), or a udev rule at boot")
_PACKAGE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")


@dataclass
class Zone:
    path: Path
    domain: str  # cpu or ram
    package: int
    die: int | None
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def discover(root: str | os.PathLike) -> list:
    root = Path(root)
    zones = []
    tops = sorted(p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name))
    for top in tops:
        try:
            name = (top / "name").read_text().strip()
        except OSError:
            continue
        match = _PACKAGE.match(name)
        if not match:  # psys: the whole platform, would double count
            continue
        package, die = int(match.group(1)), (int(match.group(2)) if match.group(2) else None)
        zones.append(_zone(top, "cpu", package, die))
        for sub in sorted(top.glob(f"{top.name}:*")):
            try:
                if (sub / "name").read_text().strip() == "dram":
                    zones.append(_zone(sub, "ram", package, die))
            except OSError:
                continue
    return zones


def _zone(path: Path, domain: str, package: int, die: int | None) -> Zone:
    try:
        max_range = int((path / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        max_range = 2**32  # the older 32-bit counters
    return Zone(path, domain, package, die, max_range)


def delta_uj(previous: int, current: int, max_range_uj: int) -> int:
    """Counter increase, assuming at most one wrap-around since the previous read."""
    return current - previous if current >= previous else current + max_range_uj - previous


class RaplMeter:
    name = "rapl"

    def __init__(self, root: str | os.PathLike | None = None, period_s: float = 1.0):
        root = root or os.environ.get("BENCHMARK_TRACKER_POWERCAP_ROOT", DEFAULT_ROOT)
        self.zones = discover(root)
        if not self.zones:
            raise MeterUnavailable(f"rapl: no RAPL package zone under {root} (no powercap driver, a VM, "
                                   "or a container without the tree mounted)")
        try:
            for zone in self.zones:
                zone.read_uj()
        except PermissionError as exc:
            raise MeterUnavailable(f"rapl: permission denied reading {exc.filename}: {FIX}") from None
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"rapl: cannot read {getattr(exc, 'filename', root)}: {exc}") from None
        self.period_s = period_s
        self._lock = threading.Lock()
        self._thread = None

    @property
    def domains(self) -> set:
        return {zone.domain for zone in self.zones}

    def _sample(self, keep: bool = True) -> None:
        now = time.perf_counter()
        with self._lock:
            for index, zone in enumerate(self.zones):
                try:
                    value = zone.read_uj()
                except (OSError, ValueError):  # a missed read: the next one covers the interval
                    self._missed += 1
                    continue
                self._totals[index] += delta_uj(self._last[index], value, zone.max_range_uj)
                self._last[index] = value
            if keep:
                self._series.append((now - self._t0, self._domain_joules()))

    def _domain_joules(self) -> dict:
        """Joules per domain so far; mirrored dies of one package count once."""
        per = {}
        groups = {}
        for zone, total in zip(self.zones, self._totals):
            groups.setdefault((zone.domain, zone.package), []).append((zone, total))
        for (domain, _), members in groups.items():
            values = [total for _, total in members]
            mirrored = len(members) > 1 and self._mirrored[(domain, members[0][0].package)]
            per[domain] = per.get(domain, 0.0) + (values[0] if mirrored else sum(values)) / 1e6
        return per

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._last = [zone.read_uj() for zone in self.zones]
        self._totals = [0] * len(self.zones)
        self._series = []
        self._missed = 0
        # Dies of one package reading the same raw value are one counter shown twice.
        self._mirrored = {}
        for zone, raw in zip(self.zones, self._last):
            key = (zone.domain, zone.package)
            same = [r for z, r in zip(self.zones, self._last) if (z.domain, z.package) == key]
            self._mirrored[key] = len(same) > 1 and len(set(same)) == 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rapl-sampler", daemon=True)
        self._thread.start()

    def trace_probes(self) -> list:
        """One probe per zone: the raw counter in joules (wraps show as drops), power since the last read."""
        from jobs.meters.trace import Probe, power_from_counter

        probes = []
        for zone in self.zones:
            device = f"package-{zone.package}" + (f"-die-{zone.die}" if zone.die is not None else "")
            device += "-dram" if zone.domain == "ram" else ""
            last = {}

            def read(zone=zone, last=last):
                joules, now = zone.read_uj() / 1e6, time.time()
                power = power_from_counter(last.get("read"), now, joules, zone.max_range_uj / 1e6)
                last["read"] = (now, joules)
                return {"t": now, "energy_j": joules, "power_w": power}

            probes.append(Probe(zone.domain, device, "rapl", read, zone.max_range_uj / 1e6, counter=True))
        return probes

    def read_so_far(self) -> dict:
        """Joules per domain since start(), read from the counters now, without stopping (energy budgets).

        Not added to the series: a budget reads at every training step.
        """
        self._sample(keep=False)
        with self._lock:
            return {name: DomainEnergy(value, "rapl", "rapl") for name, value in self._domain_joules().items()}

    def stop(self) -> Reading:
        self._stop.set()
        self._thread.join()
        self._sample()
        duration = time.perf_counter() - self._t0
        joules = self._domain_joules()
        domains = {name: DomainEnergy(value, "rapl", "rapl") for name, value in joules.items()}
        return Reading(domains, duration, list(self._series),
                       {"zones": [str(z.path) for z in self.zones], "period_s": self.period_s,
                        "missed_reads": self._missed,
                        "mirrored_packages": sorted(f"{d}:{p}" for (d, p), m in self._mirrored.items() if m)})
