"""Energy knobs a cell may set: a GPU power limit (NVML) and a CPU maximum frequency (cpufreq).

    with applied_knobs({"gpu_power_limit_w": 200, "cpu_max_freq_khz": 2000000}, nvml, handles) as record:
        ... the measured part ...

Each knob is checked before anything changes, and refused with the reason where the job may not
set it (no NVML or no GPU, a value outside the device's range, no permission: NVML needs root;
cpufreq's scaling_max_freq needs write access, i.e. root or `sudo-g5k` on Grid'5000). A refusal
raises KnobRefused: measuring at the default and labelling it with the requested value would be a
lie. Set values are read back and recorded; the previous values are restored on the way out,
whatever happened (an exception, SIGTERM turned into one by jobs.run), and read back again.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

KNOBS = ("gpu_power_limit_w", "cpu_max_freq_khz")
CPU_ROOT = "/sys/devices/system/cpu"
SUDO_HINT = "run the job as root, or on Grid'5000 with `sudo-g5k` (deploy or sudo-capable jobs)"


class KnobRefused(RuntimeError):
    """A requested knob cannot be set here; the message says why."""


class GpuPowerLimit:
    """nvmlDeviceSetPowerManagementLimit on every allocated GPU (milliwatts in NVML, watts here)."""

    name = "gpu_power_limit_w"

    def __init__(self, watts: float, nvml, handles: dict):
        if nvml is None or not handles:
            raise KnobRefused("gpu_power_limit_w: no NVIDIA GPU allocated to this job (NVML unavailable)")
        self.watts, self.nvml, self.handles = float(watts), nvml, dict(handles)
        self.previous = {}
        for index, handle in sorted(self.handles.items()):
            try:
                low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
                self.previous[index] = nvml.nvmlDeviceGetPowerManagementLimit(handle)
            except Exception as exc:  # noqa: BLE001 - NotSupported: the GPU has no settable limit
                raise KnobRefused(f"gpu_power_limit_w: GPU {index} cannot report its power limit range "
                                  f"({exc})") from None
            if not low <= self.watts * 1000 <= high:
                raise KnobRefused(f"gpu_power_limit_w: {self.watts:g} W is outside GPU {index}'s range "
                                  f"{low / 1000:g}-{high / 1000:g} W")

    def _set(self, index: int, milliwatts: int) -> None:
        self.nvml.nvmlDeviceSetPowerManagementLimit(self.handles[index], int(milliwatts))

    def read(self) -> dict:
        return {i: self.nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0 for i, h in sorted(self.handles.items())}

    def apply(self) -> dict:
        for index in sorted(self.handles):
            try:
                self._set(index, round(self.watts * 1000))
            except Exception as exc:  # noqa: BLE001 - NVMLError_NoPermission without root
                if _no_permission(exc):
                    raise KnobRefused(f"gpu_power_limit_w: setting a power limit needs root (NVML answered "
                                      f"{exc}); {SUDO_HINT}") from None
                raise KnobRefused(f"gpu_power_limit_w: NVML refused {self.watts:g} W on GPU {index}: {exc}") from None
        return self.read()

    def restore(self) -> dict:
        for index, milliwatts in sorted(self.previous.items()):
            self._set(index, milliwatts)
        return self.read()

    def before(self) -> dict:
        return {i: mw / 1000.0 for i, mw in sorted(self.previous.items())}


def _no_permission(exc) -> bool:
    return getattr(exc, "value", None) == 4 or "permission" in str(exc).lower()  # NVML_ERROR_NO_PERMISSION


class CpuMaxFreq:
    """cpufreq's scaling_max_freq on every CPU this job may run on (kHz, as the kernel writes it)."""

    name = "cpu_max_freq_khz"

    def __init__(self, khz: int, root: str | os.PathLike = CPU_ROOT, cpus=None):
        self.khz, self.root = int(khz), Path(root)
        cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.files = {c: self.root / f"cpu{c}" / "cpufreq" / "scaling_max_freq" for c in cpus}
        missing = [c for c, f in self.files.items() if not f.exists()]
        if not self.files or missing:
            raise KnobRefused(f"cpu_max_freq_khz: no cpufreq on CPU(s) {missing or cpus} under {self.root} "
                              "(no cpufreq driver, a VM or a container)")
        denied = [c for c, f in self.files.items() if not os.access(f, os.W_OK)]
        if denied:
            raise KnobRefused(f"cpu_max_freq_khz: no write access to {self.files[denied[0]]} "
                              f"({len(denied)} CPU(s)); {SUDO_HINT}")
        self.previous = {}
        for cpu, path in self.files.items():
            low = _int(path.with_name("cpuinfo_min_freq"))
            high = _int(path.with_name("cpuinfo_max_freq"))
            if (low is not None and self.khz < low) or (high is not None and self.khz > high):
                raise KnobRefused(f"cpu_max_freq_khz: {self.khz} kHz is outside CPU {cpu}'s range {low}-{high} kHz")
            self.previous[cpu] = int(path.read_text().strip())

    def read(self) -> dict:
        return {c: int(f.read_text().strip()) for c, f in self.files.items()}

    def apply(self) -> dict:
        for cpu, path in self.files.items():
            try:
                path.write_text(f"{self.khz}\n")
            except PermissionError:
                raise KnobRefused(f"cpu_max_freq_khz: permission denied writing {path}; {SUDO_HINT}") from None
        return self.read()

    def restore(self) -> dict:
        for cpu, khz in self.previous.items():
            self.files[cpu].write_text(f"{khz}\n")
        return self.read()

    def before(self) -> dict:
        return dict(self.previous)


def _int(path: Path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def requested(params: dict) -> dict:
    return {k: params[k] for k in KNOBS if params.get(k) is not None}


@contextlib.contextmanager
def applied_knobs(wanted: dict, nvml=None, handles: dict | None = None, cpu_root=CPU_ROOT, cpus=None):
    """Set the requested knobs, yield their record, restore them whatever happens.

    The record: {knob: {requested, before, applied (read back), restored (read back), restore_error}}.
    Every knob is checked (constructed) before any is set, so a refusal changes nothing.
    """
    controls = []
    for name, value in sorted(wanted.items()):
        if name == "gpu_power_limit_w":
            controls.append(GpuPowerLimit(value, nvml, handles or {}))
        elif name == "cpu_max_freq_khz":
            controls.append(CpuMaxFreq(value, cpu_root, cpus))
        else:
            raise KnobRefused(f"{name}: not a knob this job knows ({', '.join(KNOBS)})")
    record = {c.name: {"requested": wanted[c.name], "before": c.before()} for c in controls}
    applied = []
    try:
        for control in controls:
            applied.append(control)  # before apply: a half-applied knob is restored too
            record[control.name]["applied"] = control.apply()
        yield record
    finally:
        for control in reversed(applied):
            try:
                record[control.name]["restored"] = control.restore()
            except Exception as exc:  # noqa: BLE001 - recorded; the other knobs are still restored
                record[control.name]["restore_error"] = f"{type(exc).__name__}: {exc}"
