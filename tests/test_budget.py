"""Energy budgets: training stops at the first step boundary past the budget, and says which meter enforced it."""
from __future__ import annotations

from tests.test_fit import fit_cell


def _within_one_step(budget: dict, joules: float) -> None:
    assert budget["stopped_by_budget"] is True
    assert budget["last_reading_under_budget_joules"] < joules <= budget["spent_at_stop_joules"]
    assert budget["overshoot_joules"] == budget["spent_at_stop_joules"] - joules >= 0


def test_a_deep_budget_cell_stops_within_one_step(tmp_path):
    # 80 J: several steps even on a loaded machine (codecarbon's load model counts the whole node's load).
    _, result = fit_cell(tmp_path, "mobilenet_v2", [32, 32, 3], 32, {"epochs": 20}, budget={"joules": 80})
    fit = result["fit"]
    assert fit["stop_reason"] == "budget" and fit["epochs_run"] < 20
    _within_one_step(fit["budget"], 80)
    # On this VM nothing better than codecarbon exists: the enforcing meter says it is an estimate.
    assert "codecarbon" in fit["budget"]["enforced_by"] and "estimated" in fit["budget"]["enforced_by"]
    assert fit["curve"][-1]["partial"] is True  # stopped mid-epoch, then evaluated


def test_a_shallow_budget_cell_stops_within_one_mini_batch(tmp_path):
    # One run, and a budget that is reached whatever the machine's load: codecarbon's RAM model alone
    # adds ~18 W on this VM whatever the CPU does, so 30 J comes within ~2 s, long before 200 epochs
    # (18,000 mini-batches) end, and ~0.5 s after the window opens at the least, far beyond one
    # mini-batch of 16. (It was two runs, the budget a third of what the first spent: a second run on
    # a machine less loaded than the first never reached it, one more loaded passed it at the first step.)
    joules, epochs = 30.0, 200
    _, result = fit_cell(tmp_path, "logistic_regression", [8, 8, 1], 16, {"epochs": epochs},
                         budget={"joules": joules})
    fit = result["fit"]
    assert fit["stop_reason"] == "budget"
    _within_one_step(fit["budget"], joules)
    per_epoch = -(-result["data"]["train_samples"] // 16)  # mini-batches of 16, the last one partial
    assert fit["budget"]["steps"] == sum(e["steps"] for e in fit["curve"]) < epochs * per_epoch
    assert fit["curve"][-1]["partial"] is True


def test_a_one_shot_estimator_marks_the_budget_not_enforceable(tmp_path):
    _, result = fit_cell(tmp_path, "rbf_svm", [8, 8, 1], 64, {"epochs": 5}, budget={"joules": 1e6})
    budget = result["fit"]["budget"]
    assert budget["enforceable"] is False and "not enforceable" in budget["note"]
    assert budget["within_budget"] is True and budget["spent_joules"] > 0
    assert result["fit"]["stop_reason"] == "fitted" and result["fit"]["epochs_run"] == 1


def test_live_reading_prefers_rapl_counters_and_fills_the_rest_from_codecarbon(tmp_path):
    """RAPL cannot exist on this VM: a powercap tree in the kernel's layout stands in (as in
    test_meters); codecarbon is the real one and covers ram, which this package has no dram zone for."""
    from jobs.budget import Budget, LiveEnergy
    from jobs.meters import MeterSet
    from jobs.meters.codecarbon_meter import CodecarbonMeter
    from jobs.meters.rapl import RaplMeter
    from tests.test_meters import set_uj, zone

    root = tmp_path / "powercap"
    root.mkdir()
    package = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    meters = MeterSet([RaplMeter(root), CodecarbonMeter(tmp_path, "p", "e", "FRA", 56.039)])
    meters.start()
    try:
        live = LiveEnergy(meters)
        budget = Budget(live, joules=5.0)
        set_uj(package, 1_000_000 + 3_000_000)  # +3 J
        assert budget.step() is False  # 3 J of cpu plus milliseconds of the ram model: under 5 J
        reading = live.read()
        assert reading["cpu"] == {"joules": 3.0, "source": "rapl", "measured": True, "via": "rapl"}
        assert reading["ram"]["source"] == "codecarbon-ram-model" and reading["ram"]["measured"] is False
        set_uj(package, 1_000_000 + 9_000_000)  # +9 J: past the budget whatever ram adds
        assert budget.step() is True and budget.stopped
        record = budget.record()
        assert record["spent_at_stop_joules"] >= 9.0 and record["overshoot_joules"] >= 4.0
        assert record["enforced_by"].startswith("cpu: rapl (measured, via rapl); ram: codecarbon-ram-model (estimated")
    finally:
        meters.stop()
        meters.close()


def test_live_reading_uses_each_meters_public_read_and_skips_an_estimate_it_does_not_need(tmp_path, monkeypatch):
    """NVML cannot exist here: tests.test_meters' stand-in (nvidia-ml-py's calls, a counter GPU at 100 W)
    and a powercap tree in the kernel's layout with a dram zone. With cpu, ram and gpu all covered by
    counters, codecarbon's estimate is never asked for a live reading."""
    import time

    from jobs.budget import LiveEnergy
    from jobs.meters import MeterSet
    from jobs.meters.nvml import NvmlMeter
    from jobs.meters.rapl import RaplMeter
    from tests.test_meters import StandInNvml, set_uj, zone

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    root = tmp_path / "powercap"
    root.mkdir()
    package = zone(root, "intel-rapl:0", "package-0", 1_000_000)
    dram = zone(root, "intel-rapl:0:0", "dram", 2_000_000, parent=package)

    class Estimate:  # stands in for codecarbon's meter only to count calls: it must not be read
        name, domains, reads = "codecarbon", {"cpu", "ram"}, 0

        def start(self):
            pass

        def read_so_far(self):
            Estimate.reads += 1
            return {}

        def stop(self):
            raise AssertionError("not stopped in this test")

    nvml = NvmlMeter(StandInNvml(), poll_hz=20)
    meters = MeterSet([RaplMeter(root), nvml, Estimate()])
    meters.start()
    try:
        set_uj(package, 1_000_000 + 4_000_000)
        set_uj(dram, 2_000_000 + 1_000_000)
        time.sleep(0.2)
        reading = LiveEnergy(meters).read()
        assert reading["cpu"]["joules"] == 4.0 and reading["ram"]["joules"] == 1.0
        assert reading["gpu"]["source"] == "nvml-counter" and reading["gpu"]["measured"] is True
        assert 0.2 * 100 * 0.9 < reading["gpu"]["joules"] < 1.0 * 100  # 100 W since start
        assert Estimate.reads == 0
        assert nvml.read_so_far()["gpu"].joules >= reading["gpu"]["joules"]  # still running: it grows
    finally:
        for meter in meters.meters[:2]:
            meter.stop()
