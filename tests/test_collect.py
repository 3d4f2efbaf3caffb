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
    assert row["throughput_samples_per_s_mean"] == pytest.approx(20.0)
    assert row["energy_total_j_ci95_high"] - 200 == pytest.approx(4.302652729911275 * 100 / math.sqrt(3))
    assert row["energy_kind"] == "estimated" and row["energy_ram_source"] == "codecarbon-ram-model"
    assert collected.problems == []


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

    assert main(["collect", str(campaign.root)]) == 0
    captured = capsys.readouterr()
    assert "3 corrupt, 1 done" in captured.out and "problem: b: unreadable" in captured.err


def test_collect_of_a_missing_campaign_is_a_user_error(tmp_path, capsys):
    assert main(["collect", str(tmp_path / "nothing")]) == 2
    assert "no campaign" in capsys.readouterr().err
