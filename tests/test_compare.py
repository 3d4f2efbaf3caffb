"""compare: ratios with CIs and Welch's test on constructed cases; campaigns, node types, the reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.cli import main
from orchestrator.compare import compare, ratio_ci, welch
from orchestrator.results import load_campaign
from tests import synthetic_results as syn


def _summary(values):
    values = np.asarray(values, float)
    return values.mean(), values.std(ddof=1), len(values)


def test_welch_matches_scipy_on_raw_samples():
    a = [10.0, 10.5, 9.8, 10.2, 10.1]
    b = [12.0, 11.0, 13.5]
    t, p = welch(*_summary(a), *_summary(b))
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))


def test_clear_difference_is_significant_and_ci_holds_the_ratio():
    a, b = [100.0, 101.0, 99.0, 100.5], [200.0, 202.0, 198.0, 201.0]
    ratio, low, high, df = ratio_ci(*_summary(a), *_summary(b))
    assert ratio == pytest.approx(np.mean(b) / np.mean(a))
    assert low < 2.0 < high and high - low < 0.07
    t, p = welch(*_summary(a), *_summary(b))
    assert p < 1e-5 and t > 0


def test_same_distribution_is_not_significant():
    a, b = [100.0, 110.0, 90.0], [101.0, 89.0, 111.0]
    ratio, low, high, _ = ratio_ci(*_summary(a), *_summary(b))
    assert low < 1.0 < high
    assert welch(*_summary(a), *_summary(b))[1] > 0.5


def test_overlapping_noisy_difference_is_not_significant():
    # a 10 % difference buried in 20 % noise with 3 repetitions
    a, b = [80.0, 100.0, 120.0], [88.0, 110.0, 132.0]
    assert welch(*_summary(a), *_summary(b))[1] > 0.05


def test_single_repetition_has_no_ci_nor_test():
    ratio, low, high, _ = ratio_ci(10.0, math.nan, 1, 20.0, math.nan, 1)
    assert ratio == 2.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in welch(10.0, math.nan, 1, 20.0, math.nan, 1))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return syn.campaign(tmp_path_factory.mktemp("cmp") / "synthetic")


def test_two_node_types_of_one_campaign_sorted_by_effect(campaign):
    a, b = load_campaign(campaign, "alpha"), load_campaign(f"{campaign}@beta")
    table = compare(a, b, metrics=["energy_j", "energy_per_sample_j", "throughput"])
    assert list(table["effect"]) == sorted(table["effect"], reverse=True)
    mob = table[(table["test"] == "mobilenet_v2") & (table["phase"] == "inference") & (table["metric"] == "energy_j")]
    r = mob.iloc[0]
    assert r["ratio"] == pytest.approx(0.5) and r["significant"] and r["verdict"] == "better"
    assert r["ratio_ci95_low"] < 0.5 < r["ratio_ci95_high"]
    assert "measured: RAPL" in r["energy_source_a"]
    vgg = table[(table["test"] == "vgg_16") & (table["phase"] == "training") & (table["metric"] == "energy_j")].iloc[0]
    assert not vgg["significant"] and vgg["verdict"] == "not significant"
    thr = table[table["metric"] == "throughput"]
    assert (thr["verdict"] == "no difference").all()  # identical windows and samples on both sides


def test_two_campaigns_worse_energy(tmp_path, campaign):
    slower = syn.campaign(tmp_path / "slower", node_types=("alpha",), energy_scale=1.3)
    table = compare(load_campaign(campaign, "alpha"), load_campaign(slower), metrics=["energy_per_sample_j"])
    assert table["ratio"].to_numpy() == pytest.approx([1.3] * 4)
    assert (table["verdict"] == "worse").all()


def test_against_the_historical_reference(campaign):
    table = compare(load_campaign("chifflet-2022"), load_campaign(campaign, "alpha"))
    assert set(table["test"]) == {"mobilenet_v2", "vgg_16"}
    assert set(table["metric"]) == {"duration_s", "energy_j"}  # the reference has no per-sample numbers
    r = table[(table["test"] == "mobilenet_v2") & (table["phase"] == "inference") & (table["metric"] == "energy_j")]
    assert r["mean_a"].iloc[0] == pytest.approx(0.001176 / 1.58 * 3.6e6)  # PUE divided out
    assert "historical" in r["notes"].iloc[0] and "batch_size 200 vs 8" in r["notes"].iloc[0]
    assert r["energy_source_a"].iloc[0].startswith("historical")


def test_cli(campaign, tmp_path, capsys):
    out = tmp_path / "cmp.csv"
    assert main(["compare", str(campaign), "--node-types", "alpha", "beta", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "B = synthetic@beta vs A = synthetic@alpha" in text and out.is_file()
    assert main(["compare", str(campaign)]) == 2
    assert main(["compare", str(campaign), "--node-types", "alpha", "gamma"]) == 2
