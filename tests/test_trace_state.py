"""Machine state at a window's edges (a sysfs tree in the kernel's layout, the recorded NVML), the load
before a cell (a real foreign busy process), and the bounded cooldown to the idle baseline's temperatures."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from jobs.idle import cooldown_baseline
from jobs.meters.evidence import CellEvidence
from jobs.meters.state import (LoadRefused, cpu_temperature, idle_temperatures, load_before, machine_state,
                               temperatures, wait_until_cool)
from tests.test_trace import RecordedNvml


@pytest.fixture
def sysfs(tmp_path):
    root = tmp_path / "sys"
    zone = root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text("47000\n")
    hwmon = root / "class" / "hwmon" / "hwmon2"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("coretemp\n")
    (hwmon / "temp1_input").write_text("52000\n")
    (hwmon / "temp1_label").write_text("Package id 0\n")
    (hwmon / "temp2_input").write_text("oops\n")  # unreadable values are left out
    for cpu in (0, 1):
        freq = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("performance\n")
        (freq / "scaling_cur_freq").write_text(f"{2_000_000 + cpu * 200_000}\n")
        (freq / "scaling_max_freq").write_text("3000000\n")
        (freq / "scaling_driver").write_text("intel_pstate\n")
    dmi = root / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "bios_version").write_text("2.19.0\n")
    return root


def test_state_reads_temperatures_governor_firmware_and_gpus(sysfs, tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nmicrocode\t: 0xb000040\n")
    nvml = RecordedNvml(count=1, temperature_c={0: lambda t: 63})
    state = machine_state(nvml, {0: 0}, sys_root=sysfs, proc_root=tmp_path / "proc")
    assert state["temperatures_c"] == {"thermal_zone0:x86_pkg_temp": 47.0, "hwmon2:coretemp:Package id 0": 52.0}
    assert state["cpu_temperature_c"] == 52.0
    assert state["cpufreq"]["governors"] == ["performance"] and state["cpufreq"]["mean_cur_freq_khz"] == 2_100_000
    assert state["cpufreq"]["scaling_max_freq_khz"] == [3000000] and state["cpufreq"]["driver"] == "intel_pstate"
    assert state["firmware"]["bios_version"] == "2.19.0" and state["firmware"]["cpu_microcode"] == "0xb000040"
    gpu = state["gpus"][0]
    assert gpu["temperature_c"] == 63 and gpu["sm_clock_mhz"] == 1410 and gpu["memory_clock_mhz"] == 1215
    assert gpu["power_limit_w"] == 400.0 and gpu["vbios"] == "92.00.45.00.03" and gpu["throttle_names"] == []
    assert state["gpu_driver"] == "550.54.15" and state["gpu_temperature_c"] == 63


def test_state_on_this_machine_leaves_out_what_it_cannot_read():
    state = machine_state()
    assert set(state) >= {"temperatures_c", "cpufreq", "firmware", "cpu_temperature_c"} and "gpus" not in state
    assert state["firmware"]["kernel"] == os.uname().release
    assert cpu_temperature({"acpitz": 30.0, "nvme": 60.0}) == 30.0 and cpu_temperature({}) is None


@pytest.fixture
def foreign_busy_process():
    """A busy loop that is not this job's: double-forked, so init adopts it (another tenant)."""
    code = ("import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid:\n    print(pid, flush=True); os._exit(0)\n"
            "null = os.open(os.devnull, os.O_RDWR)\n"
            "os.dup2(null, 1); os.dup2(null, 2)\n"  # let the launcher's pipes close
            "end = time.time() + 20\n"
            "while time.time() < end:\n    pass\n")
    launcher = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    pid = int(launcher.stdout.split()[0])
    yield pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def test_load_before_warns_about_another_tenant_and_strict_refuses(foreign_busy_process):
    record = load_before(interval_s=0.5, busy_cpu_percent=30)
    assert foreign_busy_process in [p["pid"] for p in record["busy_processes"]]
    assert record["warnings"] and "other process(es) using cores" in record["warnings"][0]
    with pytest.raises(LoadRefused, match="refusing to measure on a busy node"):
        # A lower bar than above: on a shared 2-core machine the busy loop may get less than 30 % of a core.
        load_before(interval_s=0.5, busy_cpu_percent=10, strict=True)


def test_load_before_lists_foreign_gpu_processes():
    record = load_before(interval_s=0.05, busy_cpu_percent=101, nvml=RecordedNvml(count=2), handles={0: 0, 1: 1})
    assert record["gpu_processes"] == [{"gpu": 0, "pid": 4242, "used_memory_bytes": 1 << 30}]
    assert any("pid 4242 on GPU 0" in w for w in record["warnings"])


def test_wait_until_cool_returns_once_within_the_band_and_is_bounded():
    clock = {"t": 0.0}
    readings = iter([{"gpu0": 75.0, "cpu": 60.0}, {"gpu0": 58.0, "cpu": 51.0}, {"gpu0": 44.0, "cpu": 41.0}])

    def sleep(seconds):
        clock["t"] += seconds

    out = wait_until_cool({"gpu0": 40.0, "cpu": 40.0}, band=5.0, max_s=60, read=lambda: next(readings),
                          poll_s=10, sleep=sleep, clock=lambda: clock["t"])
    assert out["cooled"] and out["waited_s"] == 20.0
    clock["t"] = 0.0
    stuck = wait_until_cool({"gpu0": 40.0}, band=5.0, max_s=25, read=lambda: {"gpu0": 70.0, "other": 99.0},
                            poll_s=10, sleep=sleep, clock=lambda: clock["t"])
    assert stuck == {"cooled": False, "waited_s": 25.0, "over": {"gpu0": 30.0}, "start_c": {"gpu0": 70.0},
                     "reached_c": {"gpu0": 70.0}}
    assert wait_until_cool(None, 5, 60)["cooled"] is None
    assert wait_until_cool({"gpu0": 40.0}, 5, 60, read=dict) == {
        "cooled": None, "waited_s": 0.0, "over": {}, "reason": "not measurable (no sensor)"}


def test_the_idle_baseline_keeps_its_temperatures_for_the_cooldown(tmp_path):
    state = {"temperatures_c": {"thermal_zone0:x86_pkg_temp": 41.0}, "gpus": [{"index": 0, "temperature_c": 35}]}
    (tmp_path / "idle").mkdir()
    (tmp_path / "idle" / "node-1.json").write_text(json.dumps({"state": state}))
    assert cooldown_baseline(tmp_path, "node-1") == {"thermal_zone0:x86_pkg_temp": 41.0, "gpu0": 35.0}
    assert idle_temperatures(state) == cooldown_baseline(tmp_path, "node-1")
    assert cooldown_baseline(tmp_path, "node-2") is None
    assert temperatures(tmp_path / "nothing") == {}


# --- the cooldown in the job (CellEvidence.cool_down): sensors are a sysfs tree in the kernel's layout and the
# recorded NVML above (a GPU that cools as time passes); no sensor is this machine's own case.

class _Meters:
    """What CellEvidence asks of the meters before the window: their NVML handles and trace probes."""

    def __init__(self, nvml=None, handles=None):
        self._nvml, self._handles = nvml, handles or {}

    def nvml(self):
        return self._nvml, self._handles

    def trace_probes(self):
        return []


def _idle_record(campaign, cpu_c=45.0, gpu_c=40.0):
    state = {"temperatures_c": {"thermal_zone0:x86_pkg_temp": cpu_c}, "gpus": [{"index": 0, "temperature_c": gpu_c}]}
    (campaign / "idle").mkdir(parents=True)
    (campaign / "idle" / f"{socket.gethostname()}.json").write_text(json.dumps({"state": state}))


def _evidence(sysfs, nvml=None, band_c=3, max_s=5.0):
    cell = {"energy": {}, "params": {}, "cooldown": {"band_c": band_c, "max_s": max_s}}
    return CellEvidence(cell, _Meters(nvml, {0: 0} if nvml else {}), sys_root=sysfs)


def _into(evidence, tmp_path):
    result = {"energy": {"domains": {}}, "window": {"start_unix": 0.0, "end_unix": 1.0, "duration_s": 1.0}}
    return evidence.into(result, tmp_path)


def test_cooldown_waits_until_the_node_is_back_near_its_idle_temperatures(sysfs, tmp_path):
    _idle_record(tmp_path / "campaign")  # CPU zone idled at 45 C (47 now: within 3 C), the GPU at 40 C
    gpu = RecordedNvml(count=1, temperature_c={0: lambda t: max(40.0, 70.0 - 60.0 * t)})  # 43 C after 0.45 s
    evidence = _evidence(sysfs, gpu)
    record = evidence.cool_down(tmp_path / "campaign", poll_s=0.05)
    assert record["status"] == "cooled" and record["measurable"]
    assert record["baseline_c"] == {"thermal_zone0:x86_pkg_temp": 45.0, "gpu0": 40.0} and record["band_c"] == 3
    assert record["start_c"]["gpu0"] >= 60 and record["reached_c"]["gpu0"] <= 43
    assert record["reached_c"]["thermal_zone0:x86_pkg_temp"] == 47.0 and record["over_c"] == {}
    assert 0.3 <= record["waited_s"] < 5.0
    result = _into(evidence, tmp_path)
    assert result["cooldown"] == record and result["energy"]["warnings"] == []


def test_cooldown_is_bounded_and_says_the_band_was_not_reached(sysfs, tmp_path):
    _idle_record(tmp_path / "campaign")
    evidence = _evidence(sysfs, RecordedNvml(count=1, temperature_c={0: lambda t: 70.0}), max_s=0.4)
    record = evidence.cool_down(tmp_path / "campaign", poll_s=0.05)
    assert record["status"] == "band not reached" and record["over_c"] == {"gpu0": 30.0}
    assert 0.4 <= record["waited_s"] < 2.0
    energy = _into(evidence, tmp_path)["energy"]
    assert len(energy["warnings"]) == 1 and "band not reached" in energy["warnings"][0]
    assert "gpu0 +30 C" in energy["warnings"][0] and energy["warnings"][0] in energy["notes"]


def test_cooldown_without_a_sensor_or_a_baseline_proceeds_and_says_why(sysfs, tmp_path):
    empty = tmp_path / "no-sensors"
    empty.mkdir()
    _idle_record(tmp_path / "campaign")
    evidence = _evidence(empty)  # no thermal zone, no hwmon, no GPU: this machine's case
    record = evidence.cool_down(tmp_path / "campaign")
    assert record == {"band_c": 3.0, "max_s": 5.0, "status": "not measurable (no sensor)", "measurable": False,
                      "waited_s": 0.0}
    energy = _into(evidence, tmp_path)["energy"]
    assert energy["warnings"] == [] and any(n.startswith("cooldown: not measurable (no sensor)")
                                            for n in energy["notes"])
    first = _evidence(sysfs).cool_down(tmp_path / "no-campaign-yet")  # the first cell on a host measures the baseline
    assert first["status"] == "no idle baseline yet" and first["start_c"]["thermal_zone0:x86_pkg_temp"] == 47.0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "idle").mkdir()
    (tmp_path / "other" / "idle" / f"{socket.gethostname()}.json").write_text(
        json.dumps({"state": {"gpus": [{"index": 0, "temperature_c": 35}]}}))  # the baseline saw a GPU only
    unlike = _evidence(sysfs).cool_down(tmp_path / "other")
    assert unlike["status"] == "not measurable (no sensor in common with the idle baseline)" and not unlike["measurable"]
    not_asked = CellEvidence({"energy": {}, "params": {}}, _Meters(), sys_root=sysfs)
    assert not_asked.cool_down(tmp_path / "campaign") is None and "cooldown" not in _into(not_asked, tmp_path)


@pytest.mark.parametrize("text, line, message", [
    ("cooldown: {band_c: 0, max_s: 60}\n", 5, "cooldown.band_c: must be greater than 0"),
    ("cooldown:\n  band_c: 3\n  max_s: .inf\n", 7, "cooldown.max_s"),
    ("cooldown:\n  band_c: 3\n  wait_s: 10\n", 7, "cooldown.wait_s: unknown key"),
])
def test_the_cooldown_setting_is_validated_with_file_line_and_key(tmp_path, text, line, message):
    from orchestrator.errors import UserError
    from orchestrator.spec import parse_sweep

    path = tmp_path / "sweep.yaml"
    base = "name: c\nmatrix:\n  tests: [mobilenet_v2]\n  node_types: [local]\n"
    with pytest.raises(UserError) as caught:
        parse_sweep(base + text, path)
    assert any(d.startswith(f"{path}:{line}: ") and message in d for d in caught.value.details), caught.value.details
    cell = parse_sweep(base + "cooldown: {band_c: 2.5}\n", path).sweep.cooldown
    assert (cell.band_c, cell.max_s) == (2.5, 300)
