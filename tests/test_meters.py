"""Meters: RAPL on synthetic powercap trees in the kernel's layout, NVML against a stand-in NVML
(no GPU exists here; bench/gpu_energy_check.py checks the real thing on a GPU machine), the
meter set's choice per domain, and codecarbon's mode labelling on this machine."""
from __future__ import annotations

import threading
import time

import pytest

from jobs.meters import DomainEnergy, MeterSet, MeterUnavailable, Reading
from jobs.meters.nvml import NvmlMeter
from jobs.meters.rapl import RaplMeter, Zone, delta_uj, discover

MAX = 262143328850  # a real max_energy_range_uj (Intel Xeon)


def zone(root, name, label, energy_uj, max_uj=MAX, parent=None):
    """One powercap zone: a folder inside its parent, plus the class-level link, as the kernel has it."""
    folder = (parent or root) / name
    folder.mkdir(parents=True)
    (folder / "name").write_text(f"{label}\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if parent is not None:
        (root / name).symlink_to(folder)
    return folder


def set_uj(folder, value):
    """Replace the counter at once, as sysfs shows it (a plain rewrite could be read half-way)."""
    temporary = folder / "energy_uj.new"
    temporary.write_text(f"{value}\n")
    temporary.replace(folder / "energy_uj")


@pytest.fixture
def intel_two_sockets(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    (root / "intel-rapl").mkdir()  # the control type folder: no counter
    p0 = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000, parent=p0)
    d0 = zone(root, "intel-rapl:0:1", "dram", 2_000_000, parent=p0)
    p1 = zone(root, "intel-rapl:1", "package-1", 3_000_000)
    d1 = zone(root, "intel-rapl:1:0", "dram", 4_000_000, parent=p1)
    zone(root, "intel-rapl:2", "psys", 9_000_000)  # the platform: would double count
    return root, {"p0": p0, "d0": d0, "p1": p1, "d1": d1}


def test_discovery_keeps_packages_and_dram_only(intel_two_sockets):
    root, _ = intel_two_sockets
    zones = discover(root)
    assert sorted((z.domain, z.package) for z in zones) == [("cpu", 0), ("cpu", 1), ("ram", 0), ("ram", 1)]


def test_two_packages_with_dram(intel_two_sockets):
    root, f = intel_two_sockets
    meter = RaplMeter(root, period_s=60)
    meter.start()
    set_uj(f["p0"], 1_000_000 + 10_000_000)  # +10 J
    set_uj(f["p1"], 3_000_000 + 5_000_000)  # +5 J
    set_uj(f["d0"], 2_000_000 + 2_000_000)  # +2 J
    set_uj(f["d1"], 4_000_000 + 1_000_000)  # +1 J
    reading = meter.stop()
    assert reading.domains["cpu"].joules == pytest.approx(15.0)
    assert reading.domains["ram"].joules == pytest.approx(3.0)
    assert {d.source for d in reading.domains.values()} == {"rapl"}
    assert all(d.measured for d in reading.domains.values())


def test_wrap_around_is_corrected_between_samples(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    small = 100_000_000  # 100 J range, to wrap quickly
    p0 = zone(root, "intel-rapl:0", "package-0", small - 3_000_000, max_uj=small)
    meter = RaplMeter(root, period_s=0.02)
    meter.start()
    set_uj(p0, small - 1_000_000)  # +2 J
    time.sleep(0.1)  # the sampler reads it
    set_uj(p0, 4_000_000)  # wrapped: +1 J to the top, +4 J after
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.domains["cpu"].joules == pytest.approx(7.0)
    assert len(reading.series) >= 3  # the sample series is kept
    assert reading.details["missed_reads"] == 0
    assert delta_uj(90, 10, 100) == 20 and delta_uj(10, 90, 100) == 80


def test_a_failed_read_is_skipped_not_fatal(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    p0 = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    meter = RaplMeter(root, period_s=0.02)
    meter.start()
    (p0 / "energy_uj").write_text("")  # unreadable for a while
    time.sleep(0.1)
    set_uj(p0, 4_000_000)
    reading = meter.stop()
    assert reading.domains["cpu"].joules == pytest.approx(3.0)
    assert reading.details["missed_reads"] >= 1


def test_amd_without_dram_and_mirrored_dies(tmp_path):
    root = tmp_path / "powercap"
    root.mkdir()
    a = zone(root, "intel-rapl:0", "package-0-die-0", 7_000_000)
    b = zone(root, "intel-rapl:1", "package-0-die-1", 7_000_000)  # the same counter, shown per die
    meter = RaplMeter(root, period_s=60)
    meter.start()
    set_uj(a, 7_000_000 + 68_000_000)
    set_uj(b, 7_000_000 + 68_000_000)
    reading = meter.stop()
    assert reading.domains["cpu"].joules == pytest.approx(68.0)  # once, not 136
    assert "ram" not in reading.domains  # AMD has no DRAM domain
    assert reading.details["mirrored_packages"] == ["cpu:0"]


def test_no_tree_and_unreadable_counters_say_how_to_fix(tmp_path, monkeypatch):
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        RaplMeter(tmp_path)
    root = tmp_path / "powercap"
    root.mkdir()
    zone(root, "intel-rapl:0", "package-0", 1)

    def denied(self):  # what a patched kernel (CVE-2020-8694) answers to a normal user
        raise PermissionError(13, "Permission denied", str(self.path / "energy_uj"))

    monkeypatch.setattr(Zone, "read_uj", denied)
    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(root)
    assert "permission denied" in str(info.value) and "chmod -R a+r /sys/class/powercap/intel-rapl" in str(
        info.value)


class StandInNvml:
    """NVML's calls as nvidia-ml-py exposes them, for two GPUs: a Volta-class one with an energy
    counter (at 100 W) and a Pascal one without (NotSupported, polled at 250 W)."""

    class NotSupported(Exception):
        pass

    def __init__(self, backwards: bool = False):
        self.t0 = time.perf_counter()
        self.backwards = backwards
        self.calls = 0
        self.lock = threading.Lock()

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}aaaa-bbbb"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle == 1:
            raise self.NotSupported("pre-Volta")
        with self.lock:
            self.calls += 1
            if self.backwards and self.calls > 2:  # after the probe and the window's first read
                return 0  # a driver reload resets the counter
        return int(5_000_000 + (time.perf_counter() - self.t0) * 100_000)  # mJ at 100 W

    def nvmlDeviceGetPowerUsage(self, handle):
        return 100_000 if handle == 0 else 250_000  # mW


def test_nvml_counter_and_power_polling(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = NvmlMeter(StandInNvml(), poll_hz=50)
    assert meter.has_counter == {0: True, 1: False}
    meter.start()
    time.sleep(0.5)
    reading = meter.stop()
    expected = reading.duration_s * (100 + 250)
    assert reading.domains["gpu"].joules == pytest.approx(expected, rel=0.1)
    assert reading.domains["gpu"].source == "nvml-power"  # one GPU is polled: the domain says so
    assert reading.details["source_per_gpu"] == {0: "nvml-counter", 1: "nvml-power"}
    assert len(reading.series) >= 10  # >= 10 Hz polling


def test_nvml_only_allocated_gpus_and_counter_label(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = NvmlMeter(StandInNvml(), poll_hz=20)
    assert list(meter.handles) == [0]
    meter.start()
    time.sleep(0.3)
    reading = meter.stop()
    assert reading.domains["gpu"].source == "nvml-counter"
    assert reading.domains["gpu"].joules == pytest.approx(reading.duration_s * 100, rel=0.1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1aaaa")  # by UUID prefix
    assert list(NvmlMeter(StandInNvml()).handles) == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MeterUnavailable, match="no GPU allocated"):
        NvmlMeter(StandInNvml())
    with pytest.raises(ValueError):
        NvmlMeter(StandInNvml(), poll_hz=5)


def test_nvml_counter_going_backwards_falls_back_to_polling(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    meter = NvmlMeter(StandInNvml(backwards=True), poll_hz=50)
    meter.start()
    time.sleep(0.3)
    reading = meter.stop()
    assert reading.details["source_per_gpu"] == {0: "nvml-power"}
    assert reading.domains["gpu"].joules == pytest.approx(reading.duration_s * 100, rel=0.15)


def test_nvml_absent_here_is_unavailable_with_reason():
    with pytest.raises(MeterUnavailable, match="nvml"):
        NvmlMeter()


class FixedMeter:
    def __init__(self, name, domains):
        self.name, self.domains = name, domains

    def start(self):
        pass

    def stop(self):
        return Reading(self.domains, 1.0)


def test_meter_set_prefers_direct_counters_and_keeps_the_others():
    meters = MeterSet([
        FixedMeter("rapl", {"cpu": DomainEnergy(10.0, "rapl", "rapl")}),
        FixedMeter("codecarbon", {"cpu": DomainEnergy(8.0, "codecarbon-load-model", "codecarbon"),
                                  "ram": DomainEnergy(20.0, "codecarbon-ram-model", "codecarbon")}),
    ], notes=["nvml: no NVIDIA driver here"])
    meters.start()
    energy = meters.stop()
    assert energy.domains["cpu"].source == "rapl" and energy.domains["ram"].source == "codecarbon-ram-model"
    assert energy.alternatives["cpu"][0]["source"] == "codecarbon-load-model"
    assert energy.notes == ["nvml: no NVIDIA driver here"]


def test_codecarbon_labels_its_mode_on_this_machine(tmp_path):
    """This machine has no RAPL and no GPU: codecarbon estimates, and the label must say so."""
    from jobs.meters.codecarbon_meter import CodecarbonMeter

    meter = CodecarbonMeter(tmp_path, "p", "e", "FRA", 56.039)
    meter.start()
    time.sleep(0.5)
    reading = meter.stop()
    assert reading.domains["cpu"].source in ("codecarbon-load-model", "codecarbon-constant")
    assert reading.domains["cpu"].source != "rapl" and not reading.domains["cpu"].measured
    assert reading.domains["ram"].source == "codecarbon-ram-model"
    assert "gpu" not in reading.domains
