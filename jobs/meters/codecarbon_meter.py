"""codecarbon's OfflineEmissionsTracker as a meter: the estimator of last resort, and emissions.csv.

Never the online tracker: it probes the network and, offline, silently falls
back to Quebec's grid. The mode codecarbon chose (RAPL, load model,
constant) is not in its CSV, so it is read back from the tracker and put on
the label.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from jobs.meters import JOULES_PER_KWH, DomainEnergy, Reading


def cpu_source(hardware) -> str:
    mode = getattr(hardware, "_mode", None)
    return {"intel_rapl": "rapl", "cpu_load": "codecarbon-load-model",
            "constant": "codecarbon-constant"}.get(mode, f"codecarbon-{mode}")


def gpu_source(hardware) -> str:
    """nvml-counter when every GPU used its energy counter (Volta+), else nvml-power."""
    devices = getattr(getattr(hardware, "devices", None), "devices", None) or []
    if any(getattr(d, "_use_power_fallback", False) for d in devices):
        return "nvml-power"
    return "nvml-counter"


class CodecarbonMeter:
    name = "codecarbon"

    def __init__(self, output_dir: Path, project_name: str, experiment_name: str,
                 country_iso_code: str, carbon_intensity_g_per_kwh: float, measure_power_secs: float = 15.0):
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker_class, self._csv = OfflineEmissionsTracker, OutputMethod.CSV
        self._options = dict(
            country_iso_code=country_iso_code,
            force_carbon_intensity_g_co2e_kwh=carbon_intensity_g_per_kwh,
            pue=1.0,  # PUE is applied to CO2 only, never baked into raw energy
            tracking_mode="machine",
            allow_multiple_runs=True,  # False leaves a stale lock behind a SIGKILL
            measure_power_secs=measure_power_secs,
            log_level="error",
            project_name=project_name,
            experiment_name=experiment_name,
        )
        self._output_dir = Path(output_dir)
        # The first start in a process probes the hardware for over a second: pay it here,
        # outside any window, with a tracker that writes nothing.
        probe = self._tracker_class(output_methods=[], **self._options)
        probe.start()
        probe.stop()
        self._hardware = list(probe._hardware)  # what it chose, for the trace (RAPL/model, TDP, RAM)

    def trace_probes(self) -> list:
        """codecarbon's estimates, sampled by us: its own models with its own parameters.

        codecarbon measures every 15 s (a few per-measure records per window at best), so
        the trace applies its models at the recorder's rate instead: CPU load mode is
        TDP x (0.1 + 0.9 (load/100)^3) with codecarbon's TDP and a system CPU-load meter of our
        own (psutil keeps one baseline per caller; sharing codecarbon's would corrupt its
        reading); constant mode is its constant; RAM is its per-DIMM model. Hardware that
        codecarbon reads from counters (RAPL, NVML) is traced by our own meters instead.
        """
        from codecarbon.external.hardware import SystemCPULoadMeter

        from jobs.meters.trace import Probe

        probes = []
        for hardware in self._hardware:
            kind = type(hardware).__name__
            if kind == "CPU" and cpu_source(hardware) == "codecarbon-load-model":
                load, tdp = SystemCPULoadMeter(), float(hardware._tdp)
                load.reset()

                def model(load=load, tdp=tdp):
                    return {"power_w": tdp * (0.1 + 0.9 * (load.percent() / 100.0) ** 3)}

                probes.append(Probe("cpu", "node", "codecarbon-load-model", model))
            elif kind == "CPU" and cpu_source(hardware) == "codecarbon-constant":
                probes.append(Probe("cpu", "node", "codecarbon-constant",
                                    lambda hardware=hardware: {"power_w": hardware.total_power().W}))
            elif kind == "RAM":
                probes.append(Probe("ram", "node", "codecarbon-ram-model",
                                    lambda hardware=hardware: {"power_w": hardware.total_power().W}))
        return probes

    @property
    def domains(self) -> set:
        kinds = {"CPU": "cpu", "GPU": "gpu", "RAM": "ram"}
        return {kinds[type(h).__name__] for h in self._hardware if type(h).__name__ in kinds}

    def read_so_far(self) -> dict:
        """codecarbon's running estimate per domain since start(), without stopping: it measures now
        (as it does every `measure_power_secs`) and reports its totals; the labels are stop()'s."""
        tracker = self._tracker
        tracker._measure_power_and_energy()
        totals = {"CPU": ("cpu", tracker._total_cpu_energy), "GPU": ("gpu", tracker._total_gpu_energy),
                  "RAM": ("ram", tracker._total_ram_energy)}
        out = {}
        for hardware in tracker._hardware:
            kind = type(hardware).__name__
            if kind in totals:
                domain, energy = totals[kind]
                source = {"CPU": cpu_source, "GPU": gpu_source}.get(kind, lambda _: "codecarbon-ram-model")(hardware)
                out[domain] = DomainEnergy(energy.kWh * JOULES_PER_KWH, source, self.name)
        return out

    def start(self) -> None:
        # A fresh tracker per window: one emissions.csv row per window (idle, measurement).
        self._tracker = self._tracker_class(output_dir=str(self._output_dir), output_file="emissions.csv",
                                            output_methods=[self._csv], **self._options)
        self._started = time.perf_counter()
        self._tracker.start()

    def stop(self) -> Reading:
        self._tracker.stop()
        duration = time.perf_counter() - self._started
        data = self._tracker.final_emissions_data
        domains = {}
        for hardware in self._tracker._hardware:
            kind = type(hardware).__name__
            if kind == "CPU":
                domains["cpu"] = DomainEnergy(data.cpu_energy * JOULES_PER_KWH, cpu_source(hardware), self.name)
            elif kind == "GPU":
                domains["gpu"] = DomainEnergy(data.gpu_energy * JOULES_PER_KWH, gpu_source(hardware), self.name)
            elif kind == "RAM":
                domains["ram"] = DomainEnergy(data.ram_energy * JOULES_PER_KWH, "codecarbon-ram-model", self.name)
        details = {"cpu_model": data.cpu_model, "gpu_model": data.gpu_model, "gpu_count": data.gpu_count,
                   "codecarbon_duration_s": data.duration, "run_id": str(data.run_id),
                   "hardware": self._tracker._conf.get("hardware")}
        return Reading(domains, duration, [], details)
