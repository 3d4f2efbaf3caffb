"""The accuracy report from a real campaign: real cells through the CLI, a failing one among them."""
from __future__ import annotations

import json

import numpy as np

from jobs.records import read_json
from orchestrator.accuracy import accuracy_figures, fit_stats, pareto_front
from orchestrator.results import read_results
from tests.conftest import run_cli

SWEEP = """
name: acc
matrix:
  tests: [logistic_regression, random_forest]
  phases: [fit]
  budgets: [{{joules: 2}}, {{joules: 6}}]
  repetitions: 3
exclude:
  - {{test: random_forest, budget: {{joules: 6}}}}
dataset:
  kind: folder
  path: {path}
fit:
  epochs: 3
overrides:
  random_forest:
    batch_size: 5000   # more than digits' training split: each of its cells must fail, alone
launcher: local
timeout_s: 300
energy:
  idle_s: 0
"""


def test_pareto_front_keeps_the_non_dominated_points():
    energy, accuracy = np.array([1.0, 2.0, 3.0, 2.5, 0.5]), np.array([0.5, 0.8, 0.9, 0.7, 0.2])
    assert list(pareto_front(energy, accuracy)) == [4, 0, 1, 2]  # 3 costs more than 1 for less


def test_report_from_a_real_campaign_with_a_failing_cell(tmp_path, sweep_file):
    digits = tmp_path / "digits"
    assert run_cli("dataset", "digits", digits, timeout=120).returncode == 0
    path = sweep_file(SWEEP.format(path=digits))
    done = run_cli("sweep", path, "--output", tmp_path / "results", timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr  # some cells failed, the others ran
    campaign = tmp_path / "results" / "acc"
    results = read_results(campaign)
    failed = results[results["state"] == "failed"]
    assert set(failed["test"]) == {"random_forest"} and len(failed) == 3
    assert failed["reason"].str.contains("fewer than one batch of 5000").all()
    fits = results[results["state"] == "done"]
    assert len(fits) == 6 and fits["accuracy_final"].between(0.3, 1).all()
    assert set(fits["budget_j"]) == {2.0, 6.0} and fits["budget_enforced_by"].str.contains("codecarbon").all()
    result = read_json(campaign / "cells" / fits["cell_id"].iloc[0] / "result.json")
    assert result["data"]["kind"] == "folder" and result["data"]["skipped_count"] == 0

    report = run_cli("report", campaign, timeout=300)
    assert report.returncode == 0, report.stderr
    table = (campaign / "report" / "tables" / "accuracy_under_budget.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| Logistic")]
    assert len(rows) == 2 and all(line.count("±") >= 2 for line in rows)  # accuracy and energy, n = 3
    assert "estimated: codecarbon" in table and "via codecarbon" in table
    html = (campaign / "report" / "report.html").read_text()
    assert "Accuracy under an energy budget" in html and "Shallow against deep" in html
    assert (campaign / "report" / "figures" / "accuracy_vs_energy.svg").is_file()

    stats = fit_stats(results)
    figures = accuracy_figures(stats)
    assert {"accuracy_vs_energy", "accuracy_under_budget"} <= set(figures)
    front = [line for ax in figures["accuracy_vs_energy"].axes for line in ax.lines
             if line.get_gid() == "pareto-front"]
    assert front and len(front[0].get_xdata()) >= 1
    json.dumps(stats.to_dict("records"), default=str)


def test_reported_accuracy_against_the_historical_inference_energy():
    """The seed paper's own measurements (chifflet-2022, recorded) against the catalog's reported top-1."""
    from jobs.catalog import TESTS
    from orchestrator.results import load_campaign

    figures = accuracy_figures(fit_stats(None), load_campaign("chifflet-2022").stats)
    fig = figures["reported_accuracy_vs_inference_energy"]
    points = fig.axes[0].collections[0].get_offsets()
    reported = sorted(t.reported["top1"] for t in TESTS.values() if t.reported)
    assert sorted(points[:, 1].tolist()) == reported and len(reported) == 7
    assert "samples not recorded" in fig.axes[0].get_xlabel() and "not measured" in fig.axes[0].get_ylabel()
    assert all(t.reported["kind"] == "reported" and "TF-slim" in t.reported["source"]
               for t in TESTS.values() if t.reported)


def test_compare_treats_accuracy_as_a_result_and_never_matches_two_budgets():
    import pandas as pd

    from orchestrator.compare import compare
    from orchestrator.results import CampaignData, aggregate

    def campaign(name, accuracy):
        rows = [{"test": "logistic_regression", "subtest": "101.1", "phase": "fit", "node_type": "local",
                 "precision": "fp32", "execution": "graph", "batch_size": 64, "input_shape": "8x8x1",
                 "budget_j": budget, "train_fraction": 1.0, "state": "done", "window_s": 2.0,
                 "energy_total_j": budget, "trainable_params": None,
                 "accuracy_final": accuracy[budget] + 0.01 * rep}
                for budget in (20.0, 60.0) for rep in range(3)]
        return CampaignData(name, aggregate(pd.DataFrame(rows)))

    table = compare(campaign("a", {20.0: 0.90, 60.0: 0.93}), campaign("b", {20.0: 0.80, 60.0: 0.93}),
                    metrics=("accuracy", "energy_j"))
    assert len(table) == 4  # 2 budgets x 2 metrics: 20 J against 20 J, 60 J against 60 J
    energy = table[table["metric"] == "energy_j"]
    assert (energy["ratio"] == 1.0).all()
    worse = table[(table["metric"] == "accuracy") & (table["mean_a"] > 0.9) & (table["mean_a"] < 0.92)]
    assert worse["verdict"].tolist() == ["worse"]  # lower accuracy: higher is better
