"""Energy knobs: refused with the reason where the job may not set them (this machine's real answers:
no NVML, no cpufreq; NVML's NoPermission error class; a user without write access), set, read back
and restored whatever happens (on a cpufreq tree in the kernel's layout and the recorded NVML)."""
from __future__ import annotations

import os

import pytest

from jobs.meters import knobs
from jobs.meters.knobs import CpuMaxFreq, GpuPowerLimit, KnobRefused, applied_knobs, requested
from tests.test_trace import RecordedNvml


@pytest.fixture
def cpufreq(tmp_path):
    """/sys/devices/system/cpu/cpu{0,1}/cpufreq as the kernel lays it out (acpi-cpufreq, kHz)."""
    root = tmp_path / "cpu"
    for cpu in (0, 1):
        folder = root / f"cpu{cpu}" / "cpufreq"
        folder.mkdir(parents=True)
        for name, value in (("cpuinfo_min_freq", 1200000), ("cpuinfo_max_freq", 3000000),
                            ("scaling_max_freq", 3000000), ("scaling_governor", "performance")):
            (folder / name).write_text(f"{value}\n")
    return root


def max_freqs(root):
    return [int((root / f"cpu{c}" / "cpufreq" / "scaling_max_freq").read_text()) for c in (0, 1)]


def test_this_machine_refuses_both_knobs_with_the_reason():
    with pytest.raises(KnobRefused, match="no NVIDIA GPU allocated"):
        with applied_knobs({"gpu_power_limit_w": 200}):
            pass
    if not os.path.exists("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"):
        with pytest.raises(KnobRefused, match="no cpufreq"):
            with applied_knobs({"cpu_max_freq_khz": 2000000}):
                pass


def test_cpu_frequency_is_set_read_back_and_restored_after_an_error(cpufreq):
    with pytest.raises(RuntimeError, match="the cell failed"):
        with applied_knobs({"cpu_max_freq_khz": 2000000}, cpu_root=cpufreq, cpus=[0, 1]) as record:
            assert max_freqs(cpufreq) == [2000000, 2000000]
            raise RuntimeError("the cell failed")
    assert max_freqs(cpufreq) == [3000000, 3000000]
    knob = record["cpu_max_freq_khz"]
    assert knob["requested"] == 2000000 and knob["before"] == {0: 3000000, 1: 3000000}
    assert knob["applied"] == {0: 2000000, 1: 2000000} and knob["restored"] == {0: 3000000, 1: 3000000}


def test_cpu_frequency_outside_the_range_or_without_write_access_is_refused(cpufreq, monkeypatch):
    with pytest.raises(KnobRefused, match="outside CPU 0's range 1200000-3000000"):
        CpuMaxFreq(5000000, cpufreq, [0, 1])
    # This machine runs the tests as root, for whom os.access always says yes: emulate a normal user.
    monkeypatch.setattr(knobs.os, "access", lambda path, mode: False)
    with pytest.raises(KnobRefused, match="no write access .*sudo-g5k"):
        CpuMaxFreq(2000000, cpufreq, [0, 1])
    assert max_freqs(cpufreq) == [3000000, 3000000]


def test_gpu_power_limit_without_root_is_refused_by_nvml_no_permission(cpufreq):
    nvml = RecordedNvml(count=2, root=False)
    with pytest.raises(KnobRefused, match="needs root") as info:
        with applied_knobs({"gpu_power_limit_w": 250}, nvml, {0: 0, 1: 1}):
            pass
    assert "NVML_ERROR_NO_PERMISSION" in str(info.value) or "Insufficient Permissions" in str(info.value)
    assert nvml.limit_mw == {0: 400_000, 1: 400_000}


def test_gpu_power_limit_is_set_read_back_and_restored(monkeypatch):
    nvml = RecordedNvml(count=2, root=True)
    with applied_knobs({"gpu_power_limit_w": 250}, nvml, {0: 0, 1: 1}) as record:
        assert nvml.limit_mw == {0: 250_000, 1: 250_000}
    assert nvml.limit_mw == {0: 400_000, 1: 400_000}
    knob = record["gpu_power_limit_w"]
    assert knob["before"] == {0: 400.0, 1: 400.0} and knob["applied"] == {0: 250.0, 1: 250.0}
    assert knob["restored"] == {0: 400.0, 1: 400.0}
    with pytest.raises(KnobRefused, match="outside GPU 0's range 100-400 W"):
        GpuPowerLimit(450, nvml, {0: 0})


def test_one_refusal_changes_nothing(cpufreq):
    nvml = RecordedNvml(count=1, root=True)
    with pytest.raises(KnobRefused, match="outside CPU"):
        with applied_knobs({"gpu_power_limit_w": 250, "cpu_max_freq_khz": 9_000_000}, nvml, {0: 0},
                           cpu_root=cpufreq, cpus=[0, 1]):
            pass
    assert nvml.set_calls == [] and max_freqs(cpufreq) == [3000000, 3000000]


def test_requested_reads_only_the_knob_params():
    assert requested({"test": "x", "gpu_power_limit_w": 200, "cpu_max_freq_khz": None}) == {"gpu_power_limit_w": 200}
    assert requested({"test": "x"}) == {}


def test_knob_axes_multiply_cells_and_leave_knob_free_cell_ids_alone(tmp_path):
    from orchestrator.matrix import expand
    from orchestrator.spec import parse_sweep

    base = "name: k\nmatrix:\n  tests: [mobilenet_v2]\n  phases: [inference]\n"
    plain = expand(parse_sweep(base, tmp_path / "a.yaml")).cells
    nulls = expand(parse_sweep(base + "  gpu_power_limit_w: [null]\n", tmp_path / "b.yaml")).cells
    knobs_cells = expand(parse_sweep(base + "  gpu_power_limit_w: [null, 200]\n  cpu_max_freq_khz: [null, 1800000]\n",
                                     tmp_path / "c.yaml")).cells
    assert [c.id for c in plain] == [c.id for c in nulls]
    assert len(knobs_cells) == 4 * len(plain) and plain[0].id in {c.id for c in knobs_cells}
    assert {(c.params.get("gpu_power_limit_w"), c.params.get("cpu_max_freq_khz")) for c in knobs_cells} == {
        (None, None), (200, None), (None, 1800000), (200, 1800000)}
