"""Collect: the tidy table, Student-t intervals, and corrupt files that never crash it."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from jobs.records import atomic_write_json, update_status
from orchestrator.cli import main
from orchestrator.collect import collect, t_interval
from orchestrator.matrix import Cell
from orchestrator.store import Campaign

PARAMS = {"test": "mobilenet_v2", "subtest": "1.1", "phase": "inference", "node_type": "local",
          "task": "classification", "batch_size": 2, "input_shape": [32, 32, 3], "precision": "fp32",
          "execution": "eager", "warmup_iterations": 1, "duration_s": None, "iterations": 3, "seed": 42}


def fake_result(cell_id: str, repetition: int, throughput: float, joules: float) -> dict:
    """The result.json layout the job writes (see docs/result-schema.md), with chosen numbers."""
    return {
        "schema_version": 1, "cell_id": cell_id, "status": "done", "error": None,
        "params": {**PARAMS, "repetition": repetition},
        "window": {"duration_s": 6 / throughput, "iterations": 3, "samples": 6,
                   "throughput_samples_per_s": throughput,
                   "latency_s": {"mean": 0.1, "std": 0.01, "p50": 0.1, "p95": 0.12}},
        "energy": {"domains": {"cpu": {"joules": joules * 0.25, "source": "codecarbon-load-model", "measured": False},
                               "ram": {"joules": joules * 0.75, "source": "codecarbon-ram-model", "measured": False}},
                   "total_joules": joules, "total_kind": "estimated", "joules_per_sample": joules / 6,
                   "co2": {"grams": joules / 3.6e6 * 50, "carbon_intensity_g_per_kwh": 50, "pue": 1.0}},
    }


def make_campaign(tmp_path, results: dict) -> Campaign:
    """results: cell id -> result dict, raw text (written as is), or None (no result file)."""
    campaign = Campaign(tmp_path / "camp")
    cells = [Cell(cid, {**PARAMS, "repetition": i}) for i, cid in enumerate(results)]
    campaign.root.mkdir(parents=True)
    campaign.write_manifest("camp", "name: camp\n", "local", cells)
    for cell in cells:
        folder = campaign.cell_dir(cell.id)
        folder.mkdir(parents=True)
        content = results[cell.id]
        if isinstance(content, dict):
            atomic_write_json(folder / "result.json", content)
            update_status(folder, "done")
        elif isinstance(content, str):
            (folder / "result.json").write_text(content)
            update_status(folder, "done")
        else:
            update_status(folder, "failed", reason="killed by SIGKILL before writing a result")
    return campaign


def test_t_interval_matches_the_textbook():
    mean, std, low, high = t_interval(pd.Series([1.0, 2.0, 3.0]))
    assert mean == 2.0 and std == 1.0
    assert high - mean == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2) = 4.3027
    assert low == pytest.approx(2 * mean - high)
    single = t_interval(pd.Series([5.0]))
    assert single[0] == 5.0 and all(math.isnan(v) for v in single[1:])


def test_no_interval_below_three_values_and_none_below_zero():
    # n = 2: the old Student-t interval went below zero (-190 samples/s); now there is none
    mean, std, low, high = t_interval(pd.Series([10.0, 400.0]), positive=True)
    assert mean == 205.0 and math.isnan(low) and math.isnan(high)
    # n = 3, very noisy positive values: the log-scale interval stays above zero, around the mean
    mean, _, low, high = t_interval(pd.Series([1.0, 10.0, 100.0]), positive=True)
    assert 0 < low < mean < high
    assert t_interval(pd.Series([1.0, 10.0, 100.0]))[2] < 0  # the linear one would not


def test_table_and_summary(tmp_path):
    with_wattmeter = fake_result("a", 0, 10.0, 100.0)
    with_wattmeter["energy"]["external"] = {"wattmeter": {"joules": 250.0, "ratio_to_software": 2.5,
                                                          "complete": True, "source": "wattmeter"}}
    campaign = make_campaign(tmp_path, {"a": with_wattmeter,
                                        "b": fake_result("b", 1, 20.0, 200.0),
                                        "c": fake_result("c", 2, 30.0, 300.0),
                                        "d": None})
    collected = collect(campaign.root)
    table = pd.read_csv(campaign.root / "results.csv")
    assert list(table["cell_id"]) == ["a", "b", "c", "d"]
    assert list(table["state"]) == ["done", "done", "done", "failed"]
    assert table.loc[3, "reason"].startswith("killed by SIGKILL")
    assert table.loc[0, "energy_cpu_source"] == "codecarbon-load-model"
    assert table.loc[0, "input_shape"] == "32x32x3"
    assert table.loc[0, "external_wattmeter_j"] == 250.0 and table.loc[0, "external_wattmeter_ratio"] == 2.5
    assert pd.isna(table.loc[1, "external_wattmeter_j"]) and pd.isna(table.loc[0, "external_bmc_j"])
    assert pd.read_parquet(campaign.root / "results.parquet").shape == table.shape

    summary = pd.read_csv(campaign.root / "summary.csv")
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["n"] == 3  # the failed cell is not averaged in
    assert row["throughput_mean"] == pytest.approx(20.0)
    half = 4.302652729911275 * (100 / 200) / math.sqrt(3)  # log scale: t x CV / sqrt(n)
    assert row["energy_j_ci95_high"] == pytest.approx(200 * math.exp(half))
    assert row["energy_j_ci95_low"] == pytest.approx(200 * math.exp(-half))
    assert row["energy_kind"] == "estimated" and row["energy_ram_source"] == "codecarbon-ram-model"
    assert collected.problems == []


def test_summary_csv_is_the_report_statistics(tmp_path):
    from orchestrator.results import load_campaign

    campaign = make_campaign(tmp_path, {c: fake_result(c, i, 10.0 * (i + 1), 100.0 * (i + 1))
                                        for i, c in enumerate("abc")})
    collect(campaign.root)
    summary = pd.read_csv(campaign.root / "summary.csv")
    stats = load_campaign(campaign.root).stats
    for column in ("energy_per_sample_j_mean", "energy_per_sample_j_ci95_low", "throughput_ci95_high"):
        assert summary[column].iloc[0] == pytest.approx(stats[column].iloc[0])


def test_corrupt_and_partial_results_are_listed_not_fatal(tmp_path, capsys):
    good = fake_result("a", 0, 10.0, 100.0)
    campaign = make_campaign(tmp_path, {"a": good, "b": json.dumps(good)[:80], "c": "[1, 2]",
                                        "d": json.dumps({"status": "done"})})
    collected = collect(campaign.root)
    states = dict(zip(collected.results["cell_id"], collected.results["state"]))
    assert states == {"a": "done", "b": "corrupt", "c": "corrupt", "d": "corrupt"}
    assert len(collected.problems) == 3 and any(p.startswith("b: unreadable") for p in collected.problems)
    assert json.loads((campaign.root / "problems.json").read_text()) == collected.problems
    assert collected.summary.iloc[0]["n"] == 1

    assert main(["collect", str(campaign.root)]) == 1  # some cells are unusable: exit 1, every one named
    captured = capsys.readouterr()
    assert "3 corrupt, 1 done" in captured.out and "problem: b: unreadable" in captured.err


def test_collect_of_a_missing_campaign_is_a_user_error(tmp_path, capsys):
    assert main(["collect", str(tmp_path / "nothing")]) == 2
    assert "no campaign" in capsys.readouterr().err


# ---------------------------------------------------------------- factors: validated and kept


def test_factors_are_validated_like_the_sweep(tmp_path, capsys):
    campaign = make_campaign(tmp_path, {"a": fake_result("a", 0, 10.0, 100.0)})
    assert main(["collect", str(campaign.root), "--carbon-intensity", "-3"]) == 2
    assert "carbon intensity is >= 0" in capsys.readouterr().err
    assert main(["collect", str(campaign.root), "--pue", "0.5"]) == 2
    assert "PUE is at least 1" in capsys.readouterr().err
    assert not (campaign.root / "results.csv").exists()  # nothing written with bad factors


def test_factors_are_kept_by_later_collects_and_printed(tmp_path, capsys):
    campaign = make_campaign(tmp_path, {"a": fake_result("a", 0, 10.0, 3.6e6)})  # 1 kWh
    assert main(["collect", str(campaign.root), "--pue", "1.5", "--carbon-intensity", "100"]) == 0
    assert "factors: PUE 1.5, carbon intensity 100 g/kWh (given to collect)" in capsys.readouterr().out
    assert main(["collect", str(campaign.root)]) == 0  # a resumed sweep's plain collect
    out = capsys.readouterr().out
    assert "factors: PUE 1.5, carbon intensity 100" in out
    table = pd.read_csv(campaign.root / "results.csv")
    assert table.loc[0, "co2_g"] == pytest.approx(150.0) and table.loc[0, "pue"] == 1.5
    assert main(["collect", str(campaign.root), "--pue", "1.2"]) == 0  # changed: the intensity is kept
    table = pd.read_csv(campaign.root / "results.csv")
    assert table.loc[0, "co2_g"] == pytest.approx(120.0)


# ---------------------------------------------------------------- say why, once per campaign


RAPL_NOTE = ("rapl: no RAPL package zone is readable (permission denied); fix: make the counters readable, "
             "e.g. `sudo chmod -R a+r /sys/class/powercap/intel-rapl`")


def test_meter_notes_once_per_campaign(tmp_path, capsys):
    results = {}
    for i, c in enumerate("abc"):
        r = fake_result(c, i, 10.0, 100.0)
        r["energy"]["notes"] = [RAPL_NOTE, "nvml: no NVIDIA driver (NVML not found)"]
        r["energy"]["low_confidence"] = ["cpu: window of 5.0 s is shorter than the 60 s a rapl reading needs"]
        results[c] = r
    campaign = make_campaign(tmp_path, results)
    collected = collect(campaign.root)
    assert sum(RAPL_NOTE in n for n in collected.notes) == 1 and f"{RAPL_NOTE} (3 cells)" in collected.notes
    assert any(n.startswith("nvml: no NVIDIA driver") for n in collected.notes)
    assert any(n.startswith("low confidence: 3 cell(s)") for n in collected.notes)
    assert main(["collect", str(campaign.root)]) == 0
    out = capsys.readouterr().out
    assert out.count("chmod -R a+r") == 1 and "note: low confidence" in out


def test_n_too_small_is_said(tmp_path):
    campaign = make_campaign(tmp_path, {c: fake_result(c, i, 10.0, 100.0) for i, c in enumerate("ab")})
    notes = collect(campaign.root).notes
    assert any(n.startswith("n too small: 1 group(s)") for n in notes)


# ---------------------------------------------------------------- corrupt campaigns: named, never a crash or hang


def _broken(tmp_path):
    good = {c: fake_result(c, i, 10.0, 100.0) for i, c in enumerate("abcdefgh")}
    return make_campaign(tmp_path, good)


def test_damaged_files_are_problems_not_crashes(tmp_path):
    import os

    campaign = _broken(tmp_path)
    cells = campaign.root / "cells"
    (cells / "a" / "result.json").unlink()
    os.symlink("result.json", cells / "a" / "result.json")  # a symlink loop
    (cells / "b" / "result.json").unlink()
    (cells / "b" / "result.json").mkdir()  # a directory instead of a file
    (cells / "c" / "status.json").unlink()
    os.mkfifo(cells / "c" / "status.json")  # a FIFO: a plain open() would block forever
    (cells / "d" / "status.json").unlink()
    os.symlink("status.json", cells / "d" / "status.json")
    nan = fake_result("e", 4, 10.0, 100.0)
    nan["energy"]["total_joules"] = float("nan")
    atomic_write_json(cells / "e" / "result.json", nan)
    negative = fake_result("f", 5, 10.0, -5.0)
    atomic_write_json(cells / "f" / "result.json", negative)
    foreign = {**fake_result("g", 6, 10.0, 100.0), "schema_version": 99}
    atomic_write_json(cells / "g" / "result.json", foreign)
    collected = collect(campaign.root)
    states = dict(zip(collected.results["cell_id"], collected.results["state"]))
    assert states["h"] == "done" and all(states[c] != "done" for c in "abcdefg")
    text = "\n".join(collected.problems)
    assert "a: unreadable result.json: is a symbolic link" in text
    assert "b: unreadable result.json: is a directory" in text
    assert "c: unreadable status.json: is a FIFO" in text
    assert "d: unreadable status.json: is a symbolic link" in text
    assert "e: result.json has an impossible energy" in text and "f: result.json has an impossible energy" in text
    assert "g: result.json has schema_version 99" in text
    assert collected.summary["n"].tolist() == [1]  # only the good cell is summarised


def test_damaged_manifest_is_exit_2_with_the_reason(tmp_path, capsys):
    campaign = _broken(tmp_path)
    manifest = campaign.root / "manifest.json"
    manifest.write_text("{not json")
    assert main(["collect", str(campaign.root)]) == 2
    assert "manifest.json is unreadable: not valid JSON" in capsys.readouterr().err
    manifest.write_text(json.dumps({"cells": [{"id": "a"}, 7, {"no": "id"}, {"id": ["x"]}]}))
    collected = collect(campaign.root)
    assert list(collected.results["cell_id"]) == ["a"]
    assert sum("no valid id" in p for p in collected.problems) == 3
    manifest.write_text(json.dumps({"cells": "nope"}))
    assert main(["collect", str(campaign.root)]) == 2
    assert "not a campaign manifest" in capsys.readouterr().err


def test_collect_finds_a_campaign_by_name(tmp_path, monkeypatch, capsys):
    campaign = make_campaign(tmp_path / "results", {"a": fake_result("a", 0, 10.0, 100.0)})
    monkeypatch.chdir(tmp_path)
    assert main(["collect", campaign.root.name]) == 0
    assert "next: benchmark-tracker report" in capsys.readouterr().out
    assert main(["collect", "cmap"]) == 2
    assert "did you mean results/camp" in capsys.readouterr().err
