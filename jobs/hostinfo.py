"""What the job ran on: host, CPU, GPUs and driver, library versions."""
from __future__ import annotations

import os
import platform
import socket
from importlib import metadata


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def gpus() -> tuple:
    """(GPUs visible to this job through NVML, driver version); empty without NVIDIA hardware."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library: no NVIDIA GPU here
        return [], None
    from jobs.meters.nvml import visible_indices

    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        found = []
        for index in visible_indices(pynvml, pynvml.nvmlDeviceGetCount()):  # the allocation only
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            found.append({"index": index, "name": pynvml.nvmlDeviceGetName(handle),
                          "uuid": pynvml.nvmlDeviceGetUUID(handle)})
        return found, driver
    finally:
        pynvml.nvmlShutdown()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def host_record() -> dict:
    gpu_list, driver = gpus()
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "memory_gib": _memory_gib(),
        "gpus": gpu_list,
        "gpu_driver": driver,
    }


def software_record() -> dict:
    """Library versions; the backend's own (name, version, CUDA build) come from jobs.backends."""
    import keras

    from jobs import backends

    record = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "codecarbon": _version("codecarbon"),
        "numpy": _version("numpy"),
        # Every installed framework's version, whichever one ran: results stay traceable.
        "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
        "tensorflow_package": next((p for p in ("tensorflow", "tensorflow-cpu") if _version(p)), None),
        "jax": _version("jax"),
        "torch": _version("torch"),
    }
    record.update(backends.software_record())
    return record
