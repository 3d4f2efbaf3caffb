"""NVIDIA GPU energy through NVML (nvidia-ml-py), for the GPUs allocated to this job only.

Volta and newer have a total-energy counter (mJ since driver load): read it at
the window edges. Older parts (Pascal: GTX 1080 Ti, P100) have none: poll
the power at `poll_hz` (>= 10 Hz) in a thread and integrate (trapezoids).
A counter that fails or goes backwards (driver reload) turns that GPU to
polling for the window, and the label says so.
"""
from __future__ import annotations

import os
import threading
import time

from jobs.meters import DomainEnergy, MeterUnavailable, Reading


def visible_indices(nvml, count: int) -> list:
    """Indices of the GPUs in CUDA_VISIBLE_DEVICES (indices or UUID prefixes); all when unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    chosen = []
    for index in range(count):
        uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if str(index) in wanted or any(uuid.startswith(w) for w in wanted if not w.isdigit()):
            chosen.append(index)
    return chosen


class NvmlMeter:
    name = "nvml"

    def __init__(self, nvml=None, poll_hz: float = 20.0):
        if poll_hz < 10:
            raise ValueError("NVML power polling needs at least 10 Hz")
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise MeterUnavailable("nvml: nvidia-ml-py is not installed") from None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # no driver, no GPU: nothing to meter
            raise MeterUnavailable(f"nvml: no NVIDIA driver here ({exc})") from None
        self.nvml, self.period_s = nvml, 1.0 / poll_hz
        indices = visible_indices(nvml, nvml.nvmlDeviceGetCount())
        if not indices:
            nvml.nvmlShutdown()
            raise MeterUnavailable("nvml: no GPU allocated to this job (CUDA_VISIBLE_DEVICES)")
        self.handles = {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in indices}
        self.has_counter = {i: self._counter(h) is not None for i, h in self.handles.items()}

    domains = {"gpu"}

    def _counter(self, handle):
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception:  # NVMLError_NotSupported on pre-Volta parts
            return None

    def _power_w(self, handle) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def _poll(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            sample = {i: self._power_w(self.handles[i]) for i in self._polled}
            self._series.append((now - self._t0, sample))
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start_counter = {i: self._counter(h) for i, h in self.handles.items() if self.has_counter[i]}
        # Poll every GPU without a counter; counter GPUs too, so a failing counter has a fallback.
        self._polled = list(self.handles)
        self._series = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="nvml-poller", daemon=True)
        self._thread.start()

    def _integrate(self, index: int) -> float:
        points = [(t, s[index]) for t, s in self._series]
        return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:]))

    def read_so_far(self) -> dict:
        """The gpu domain's joules since start(), without stopping: the counters where they answer and have
        not gone backwards, the polled power integrated so far elsewhere (labelled nvml-power then)."""
        joules, polled = 0.0, False
        for index, handle in self.handles.items():
            start = self._start_counter.get(index)
            now = self._counter(handle) if start is not None else None
            if now is not None and now >= start:
                joules += (now - start) / 1000.0  # mJ
            else:
                joules, polled = joules + self._integrate(index), True
        return {"gpu": DomainEnergy(joules, "nvml-power" if polled else "nvml-counter", "nvml")}

    def stop(self) -> Reading:
        end_counter = {i: self._counter(self.handles[i]) for i in self._start_counter}
        self._stop.set()
        self._thread.join()
        self._series.append((time.perf_counter() - self._t0,
                             {i: self._power_w(self.handles[i]) for i in self._polled}))
        duration = time.perf_counter() - self._t0
        joules, sources = 0.0, {}
        for index in self.handles:
            start, end = self._start_counter.get(index), end_counter.get(index)
            if start is not None and end is not None and end >= start:
                joules += (end - start) / 1000.0  # mJ
                sources[index] = "nvml-counter"
            else:
                joules += self._integrate(index)
                sources[index] = "nvml-power"
        # One label for the domain: polling anywhere makes the whole domain a polled figure.
        label = "nvml-power" if "nvml-power" in sources.values() else "nvml-counter"
        return Reading({"gpu": DomainEnergy(joules, label, "nvml")}, duration, list(self._series),
                       {"gpus": sorted(self.handles), "source_per_gpu": sources, "poll_hz": 1 / self.period_s})

    def throttle_reasons(self, handle):
        """The clock event (throttle) bitmask; None where the driver cannot say."""
        for call in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            function = getattr(self.nvml, call, None)
            if function is not None:
                try:
                    return int(function(handle))
                except Exception:  # noqa: BLE001 - NotSupported on some parts: try the older name
                    continue
        return None

    def temperature_c(self, handle):
        try:
            return float(self.nvml.nvmlDeviceGetTemperature(handle, 0))  # NVML_TEMPERATURE_GPU
        except Exception:  # noqa: BLE001 - no sensor: no temperature, not an error
            return None

    def trace_probes(self) -> list:
        """Per GPU: polled power with temperature and throttle reasons; the energy counter where there is one."""
        from jobs.meters.trace import NAN, Probe, power_from_counter

        probes = []
        for index, handle in self.handles.items():
            def power(handle=handle):
                temperature, reasons = self.temperature_c(handle), self.throttle_reasons(handle)
                return {"power_w": self._power_w(handle), "throttle_reasons": reasons,
                        "temperature_c": NAN if temperature is None else temperature}

            probes.append(Probe("gpu", f"gpu{index}", "nvml-power", power))
            if self.has_counter[index]:
                last = {}

                def counter(handle=handle, last=last):
                    value = self._counter(handle)
                    if value is None:
                        raise RuntimeError("energy counter did not answer")
                    joules, now = value / 1000.0, time.time()
                    rate = power_from_counter(last.get("read"), now, joules, None)
                    last["read"] = (now, joules)
                    return {"t": now, "energy_j": joules, "power_w": rate}

                probes.append(Probe("gpu", f"gpu{index}", "nvml-counter", counter, None, counter=True))
        return probes

    def close(self) -> None:
        self.nvml.nvmlShutdown()
