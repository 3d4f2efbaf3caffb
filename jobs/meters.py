"""Energy over a measurement window, per domain, each labelled with how it was obtained.

codecarbon's OfflineEmissionsTracker is the meter here (never the online
tracker: it probes the network and silently falls back to Quebec's grid).
It reads RAPL and NVML counters where it can and estimates otherwise; the
label says which, so an estimate is never shown as a measurement.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

JOULES_PER_KWH = 3.6e6

# Labels per domain, and whether the number comes from a hardware counter.
MEASURED_SOURCES = {"rapl", "nvml-counter", "nvml-power"}


@dataclass
class DomainEnergy:
    joules: float
    source: str  # rapl | nvml-counter | nvml-power | codecarbon-load-model | codecarbon-constant | codecarbon-ram-model
    via: str = "codecarbon"

    @property
    def measured(self) -> bool:
        return self.source in MEASURED_SOURCES

    def record(self) -> dict:
        return {"joules": self.joules, "source": self.source, "measured": self.measured, "via": self.via}


@dataclass
class WindowEnergy:
    domains: dict  # name -> DomainEnergy
    meter_duration_s: float  # what the meter itself saw, start() to stop()
    details: dict = field(default_factory=dict)


def _cpu_source(hardware) -> str:
    mode = getattr(hardware, "_mode", None)
    return {"intel_rapl": "rapl", "cpu_load": "codecarbon-load-model",
            "constant": "codecarbon-constant"}.get(mode, f"codecarbon-{mode}")


def _gpu_source(hardware) -> str:
    """nvml-counter when every GPU used its energy counter (Volta+), else nvml-power polling."""
    devices = getattr(getattr(hardware, "devices", None), "devices", None) or []
    if any(getattr(d, "_use_power_fallback", False) for d in devices):
        return "nvml-power"
    return "nvml-counter"


class CodecarbonMeter:
    def __init__(self, output_dir: Path, project_name: str, experiment_name: str,
                 country_iso_code: str, carbon_intensity_g_per_kwh: float, measure_power_secs: float = 1.0):
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker_class, self._csv = OfflineEmissionsTracker, OutputMethod.CSV
        self._options = dict(
            country_iso_code=country_iso_code,
            force_carbon_intensity_g_co2e_kwh=carbon_intensity_g_per_kwh,
            pue=1.0,  # PUE is applied in collect, never baked into raw energy
            tracking_mode="machine",
            allow_multiple_runs=True,  # False leaves a stale lock after a SIGKILL
            measure_power_secs=measure_power_secs,
            log_level="error",
            project_name=project_name,
            experiment_name=experiment_name,
        )
        self._output_dir = Path(output_dir)
        self._tracker = None

    def prepare(self) -> None:
        """Pay the first start's hardware probing (over a second) outside the window."""
        probe = self._tracker_class(output_methods=[], **self._options)
        probe.start()
        probe.stop()
        self._tracker = self._tracker_class(output_dir=str(self._output_dir), output_file="emissions.csv",
                                            output_methods=[self._csv], **self._options)

    def start(self) -> None:
        if self._tracker is None:
            self.prepare()
        self._started = time.perf_counter()
        self._tracker.start()

    def stop(self) -> WindowEnergy:
        self._tracker.stop()
        duration = time.perf_counter() - self._started
        data = self._tracker.final_emissions_data
        domains = {}
        for hardware in self._tracker._hardware:
            kind = type(hardware).__name__
            if kind == "CPU":
                domains["cpu"] = DomainEnergy(data.cpu_energy * JOULES_PER_KWH, _cpu_source(hardware))
            elif kind == "GPU":
                domains["gpu"] = DomainEnergy(data.gpu_energy * JOULES_PER_KWH, _gpu_source(hardware))
            elif kind == "RAM":
                domains["ram"] = DomainEnergy(data.ram_energy * JOULES_PER_KWH, "codecarbon-ram-model")
        details = {"cpu_model": data.cpu_model, "gpu_model": data.gpu_model, "gpu_count": data.gpu_count,
                   "codecarbon_duration_s": data.duration, "hardware": self._tracker._conf.get("hardware")}
        return WindowEnergy(domains, duration, details)
