"""Thermal and machine state at a window's edges, the node's load before a cell, and cooling down.

    machine_state()   temperatures (thermal zones, hwmon), CPU governor and frequencies, GPU
                      temperature/clocks/power limit/throttle reasons (NVML), driver, VBIOS, BIOS,
                      microcode and kernel versions
    load_before()     other processes using cores (and GPUs) just before the cell: a warning, or a
                      refusal (LoadRefused) with `strict`
    wait_until_cool() wait, bounded, until temperatures are back within a band of the idle baseline's

Everything reads the kernel's files under a root (`sys_root`, `proc_root`) so that tests can
give a tree in the kernel's layout; a file that is missing or unreadable is left out, never guessed.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

SYS = "/sys"
PROC = "/proc"


class LoadRefused(RuntimeError):
    """Other work is running on the cores or GPUs this cell measures, and the sweep is strict."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _number(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def temperatures(sys_root: str | os.PathLike = SYS) -> dict:
    """{sensor: °C} from /sys/class/thermal/thermal_zone*/ and /sys/class/hwmon/hwmon*/temp*_input."""
    root, found = Path(sys_root), {}
    for zone in sorted((root / "class" / "thermal").glob("thermal_zone*")):
        value = _number(zone / "temp")
        if value is not None:
            found[f"{zone.name}:{_read(zone / 'type') or '?'}"] = value / 1000.0  # millidegrees
    for hwmon in sorted((root / "class" / "hwmon").glob("hwmon*")):
        name = _read(hwmon / "name") or hwmon.name
        for sensor in sorted(hwmon.glob("temp*_input")):
            value = _number(sensor)
            if value is not None:
                label = _read(sensor.with_name(sensor.name.replace("_input", "_label"))) or sensor.name[:-6]
                found[f"{hwmon.name}:{name}:{label}"] = value / 1000.0
    return found


CPU_SENSORS = ("coretemp", "k10temp", "zenpower", "x86_pkg_temp", "cpu", "acpitz")


def cpu_temperature(found: dict) -> float | None:
    """The hottest CPU sensor (coretemp, k10temp, x86_pkg_temp...), else None."""
    cpu = [v for k, v in found.items() if any(s in k.lower() for s in CPU_SENSORS)]
    return max(cpu) if cpu else None


def cpufreq(sys_root: str | os.PathLike = SYS) -> dict:
    cpus = sorted(Path(sys_root, "devices", "system", "cpu").glob("cpu[0-9]*/cpufreq"))
    if not cpus:
        return {"available": False}
    governors = sorted({g for g in (_read(c / "scaling_governor") for c in cpus) if g})
    current = [v for v in (_number(c / "scaling_cur_freq") for c in cpus) if v is not None]
    maximum = sorted({int(v) for v in (_number(c / "scaling_max_freq") for c in cpus) if v is not None})
    return {"available": True, "governors": governors, "scaling_max_freq_khz": maximum,
            "mean_cur_freq_khz": statistics.fmean(current) if current else None,
            "driver": _read(cpus[0] / "scaling_driver")}


def firmware(sys_root: str | os.PathLike = SYS, proc_root: str | os.PathLike = PROC) -> dict:
    dmi = Path(sys_root, "class", "dmi", "id")
    microcode = None
    text = _read(Path(proc_root, "cpuinfo")) or ""
    for line in text.splitlines():
        if line.startswith("microcode"):
            microcode = line.split(":", 1)[1].strip()
            break
    return {"bios_version": _read(dmi / "bios_version"), "bios_date": _read(dmi / "bios_date"),
            "product": _read(dmi / "product_name"), "cpu_microcode": microcode, "kernel": platform.release()}


def gpu_state(nvml, handles: dict) -> list:
    """Per GPU (nvidia-ml-py calls): temperature, SM/memory clocks, power limits, pstate, throttle reasons."""
    out = []
    for index, handle in sorted(handles.items()):
        entry = {"index": index}
        for key, call in (("name", lambda: nvml.nvmlDeviceGetName(handle)),
                          ("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, 0)),
                          ("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, 1)),
                          ("memory_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, 2)),
                          ("power_limit_w", lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0),
                          ("enforced_power_limit_w", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0),
                          ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                          ("pstate", lambda: nvml.nvmlDeviceGetPerformanceState(handle)),
                          ("vbios", lambda: nvml.nvmlDeviceGetVbiosVersion(handle)),
                          ("throttle_reasons", lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))):
            try:
                value = call()
                entry[key] = value.decode() if isinstance(value, bytes) else value
            except Exception:  # noqa: BLE001 - NotSupported on some parts: left out, not guessed
                continue
        if "throttle_reasons" in entry:
            from jobs.meters.gate import throttle_names

            entry["throttle_names"] = throttle_names(int(entry["throttle_reasons"]))
        out.append(entry)
    return out


def machine_state(nvml=None, handles: dict | None = None, sys_root=SYS, proc_root=PROC) -> dict:
    found = temperatures(sys_root)
    state = {"at_unix": time.time(), "temperatures_c": found, "cpu_temperature_c": cpu_temperature(found),
             "cpufreq": cpufreq(sys_root), "firmware": firmware(sys_root, proc_root)}
    if nvml is not None and handles:
        state["gpus"] = gpu_state(nvml, handles)
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            state["gpu_driver"] = driver.decode() if isinstance(driver, bytes) else driver
        except Exception:  # noqa: BLE001
            pass
        temps = [g["temperature_c"] for g in state["gpus"] if "temperature_c" in g]
        state["gpu_temperature_c"] = max(temps) if temps else None
    return state


def _own_pids() -> set:
    """This job and its children: their load is the cell's, not another tenant's."""
    import psutil

    me = psutil.Process()
    return {me.pid, *(c.pid for c in me.children(recursive=True)), *(p.pid for p in me.parents())}


def load_before(interval_s: float = 0.5, busy_cpu_percent: float = 20.0, nvml=None, handles: dict | None = None,
                strict: bool = False) -> dict:
    """Who else was using cores (over `interval_s`) or the allocated GPUs, just before the cell.

    A process above `busy_cpu_percent` of one core, or any foreign process on an allocated GPU,
    is another tenant: a warning in the record, or LoadRefused when `strict`.
    """
    import psutil

    own = _own_pids()
    processes = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            process.cpu_percent(None)
            processes.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    system = psutil.cpu_percent(interval=interval_s)
    busy = []
    for process in processes:
        if process.pid in own:
            continue
        try:
            share = process.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if share >= busy_cpu_percent:
            busy.append({"pid": process.pid, "name": process.info.get("name"), "cpu_percent": round(share, 1)})
    gpu_users = []
    for index, handle in sorted((handles or {}).items()):
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:  # noqa: BLE001 - not supported: nothing known
            continue
        gpu_users += [{"gpu": index, "pid": p.pid, "used_memory_bytes": getattr(p, "usedGpuMemory", None)}
                      for p in running if p.pid not in own]
    try:
        loadavg = [float(v) for v in Path(PROC, "loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        loadavg = None
    warnings = []
    if busy:
        warnings.append(f"{len(busy)} other process(es) using cores before the cell: "
                        + ", ".join(f"{p['name']} ({p['cpu_percent']:.0f} %)" for p in busy[:5]))
    if gpu_users:
        warnings.append(f"{len(gpu_users)} other process(es) on the allocated GPU(s): "
                        + ", ".join(f"pid {p['pid']} on GPU {p['gpu']}" for p in gpu_users[:5]))
    record = {"interval_s": interval_s, "system_cpu_percent": system, "loadavg": loadavg,
              "cpu_count": os.cpu_count(), "busy_processes": sorted(busy, key=lambda p: -p["cpu_percent"])[:20],
              "gpu_processes": gpu_users, "warnings": warnings, "strict": strict}
    if strict and warnings:
        raise LoadRefused("refusing to measure on a busy node (strict): " + "; ".join(warnings))
    return record


def wait_until_cool(baseline: dict | None, band: float, max_s: float, read=None, poll_s: float = 2.0,
                    sleep=time.sleep, clock=time.monotonic) -> dict:
    """Wait until every baseline sensor is within `band` °C of its idle value, at most `max_s` seconds.

    `baseline`: {sensor: °C} (an idle record's `temperatures_c`, plus `gpu<i>` entries); `read()`
    returns the same keys now (default: this node's thermal zones, hwmon, and NVML GPUs). Sensors
    missing on either side are ignored. Returns {cooled, waited_s, over: {sensor: excess °C},
    start_c, reached_c} (the compared sensors at the first and the last reading); `cooled` is None,
    with a `reason`, when nothing can be compared (no baseline, or no sensor in common).
    """
    read = read or current_temperatures
    start = clock()
    if not baseline:
        return {"cooled": None, "waited_s": 0.0, "over": {}, "reason": "no idle baseline temperatures"}
    first = None
    while True:
        now = {k: float(v) for k, v in read().items() if k in baseline}
        if first is None:
            first = now
            if not now:
                return {"cooled": None, "waited_s": 0.0, "over": {}, "reason": "not measurable (no sensor)"}
        over = {k: round(now[k] - v, 2) for k, v in baseline.items() if k in now and now[k] - v > band}
        waited = clock() - start
        if not over or waited >= max_s:
            return {"cooled": not over, "waited_s": waited, "over": over, "start_c": first, "reached_c": now}
        sleep(min(poll_s, max(0.0, max_s - waited)))


def node_temperatures(nvml=None, handles: dict | None = None, sys_root=SYS) -> dict:
    """The keys wait_until_cool compares, read now: sysfs sensors, plus `gpu<i>` from already open NVML handles."""
    found = temperatures(sys_root)
    for index, handle in sorted((handles or {}).items()):
        try:
            found[f"gpu{index}"] = float(nvml.nvmlDeviceGetTemperature(handle, 0))
        except Exception:  # noqa: BLE001 - a GPU without a temperature sensor: left out
            continue
    return found


def current_temperatures(sys_root=SYS) -> dict:
    """This node's sensors as wait_until_cool compares them: sysfs, plus `gpu<i>` from NVML where present."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver: sysfs only
        return temperatures(sys_root)
    try:
        try:
            handles = {i: pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())}
        except Exception:  # noqa: BLE001 - a driver that answers init but not the devices: sysfs only
            handles = {}
        return node_temperatures(pynvml, handles, sys_root)
    finally:
        pynvml.nvmlShutdown()


def idle_temperatures(state: dict) -> dict:
    """The keys wait_until_cool compares, from a machine_state record."""
    found = dict(state.get("temperatures_c") or {})
    for gpu in state.get("gpus") or []:
        if "temperature_c" in gpu:
            found[f"gpu{gpu['index']}"] = float(gpu["temperature_c"])
    return found
