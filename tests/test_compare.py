"""compare: comparability before statistics, one log-scale test and interval, labelled sides, exit codes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.compare import compare
from orchestrator.errors import UserError
from orchestrator.intervals import log_ratio_test
from orchestrator.results import load_campaign
from tests import synthetic_results as syn
from tests.conftest import ROOT

ROOT_SWEEPS = ROOT / "sweeps"


def _summary(values):
    values = np.asarray(values, float)
    return values.mean(), values.std(ddof=1), len(values)


def _test(a, b):
    return log_ratio_test(*_summary(a), *_summary(b))


def test_clear_difference_is_significant_and_ci_holds_the_ratio():
    a, b = [100.0, 101.0, 99.0, 100.5], [200.0, 202.0, 198.0, 201.0]
    r = _test(a, b)
    assert r["ratio"] == pytest.approx(np.mean(b) / np.mean(a))
    assert r["low"] < 2.0 < r["high"] and r["high"] - r["low"] < 0.07
    assert r["p"] < 1e-5 and r["t"] > 0


def test_interval_and_test_agree_by_construction():
    # the nightly case of the issue: a ratio CI of [1.05, 3.09] beside "not significant" cannot happen
    rng = np.random.default_rng(7)
    for _ in range(300):
        a = rng.lognormal(0, rng.uniform(0.05, 0.8), rng.integers(3, 6))
        b = rng.lognormal(rng.normal(0, 0.4), rng.uniform(0.05, 0.8), rng.integers(3, 6))
        r = _test(a, b)
        excludes_one = r["low"] > 1 or r["high"] < 1
        assert excludes_one == (r["p"] < 0.05), (a, b, r)


def test_same_distribution_is_not_significant():
    r = _test([100.0, 110.0, 90.0], [101.0, 89.0, 111.0])
    assert r["low"] < 1.0 < r["high"] and r["p"] > 0.5


def test_fewer_than_three_repetitions_give_no_interval_nor_test():
    r = _test([10.0, 11.0], [20.0, 21.0, 22.0])
    assert r["ratio"] == pytest.approx(21 / 10.5) and all(math.isnan(r[k]) for k in ("low", "high", "p"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return syn.campaign(tmp_path_factory.mktemp("cmp") / "synthetic")


def test_two_node_types_of_one_campaign_sorted_by_effect(campaign):
    a, b = load_campaign(campaign, "alpha"), load_campaign(f"{campaign}@beta")
    table = compare(a, b, metrics=["energy_per_sample_j", "throughput", "power_w"])
    assert list(table["effect"]) == sorted(table["effect"], reverse=True)
    mob = table[(table["test"] == "mobilenet_v2") & (table["phase"] == "inference")
                & (table["metric"] == "energy_per_sample_j")].iloc[0]
    assert mob["ratio"] == pytest.approx(0.5) and mob["significant"] and mob["verdict"] == "better"
    assert mob["ratio_ci95_low"] < 0.5 < mob["ratio_ci95_high"]
    assert "measured: RAPL" in mob["energy_source_a"]
    vgg = table[(table["test"] == "vgg_16") & (table["phase"] == "training")
                & (table["metric"] == "energy_per_sample_j")].iloc[0]
    assert not vgg["significant"] and vgg["verdict"] == "not significant"
    assert (table[table["metric"] == "throughput"]["verdict"] == "no difference").all()


def test_window_length_is_a_setting_not_a_result(campaign):
    table = compare(load_campaign(campaign, "alpha"), load_campaign(campaign, "beta"),
                    metrics=["duration_s", "energy_j"])
    duration = table[table["metric"] == "duration_s"]
    assert (duration["verdict"].str.startswith("setting, not a result")).all()
    assert duration["p_value"].isna().all() and not duration["significant"].any()


def test_two_campaigns_worse_energy(tmp_path, campaign):
    slower = syn.campaign(tmp_path / "slower", node_types=("alpha",), energy_scale=1.3)
    table = compare(load_campaign(campaign, "alpha"), load_campaign(slower), metrics=["energy_per_sample_j"])
    assert table["ratio"].to_numpy() == pytest.approx([1.3] * 4)
    assert (table["verdict"] == "worse").all()


def _rows(**changes):
    return [{**r, **changes} for r in syn.rows(node_types=("alpha",))]


def test_different_workload_is_not_comparable_unless_allowed(tmp_path, campaign):
    other = syn.write_campaign(tmp_path / "big", [{**r, "batch_size": 200, "input_shape": "224x224x3"}
                                                  for r in syn.rows(node_types=("alpha",), energy_scale=3)])
    a, b = load_campaign(campaign, "alpha"), load_campaign(other)
    table = compare(a, b, metrics=["energy_per_sample_j"])
    assert (table["verdict"].str.startswith("not comparable: batch_size 8 vs 200, input_shape 32x32x3 vs "
                                            "224x224x3")).all()
    assert table["p_value"].isna().all() and not table["significant"].any()
    allowed = compare(a, b, metrics=["energy_per_sample_j"], allow_different=["batch_size", "input_shape"])
    assert (allowed["verdict"].str.startswith("worse; allowed: batch_size 8 vs 200")).all()
    with pytest.raises(UserError, match="not a workload key"):
        compare(a, b, allow_different=["colour"])


def test_meter_kind_difference_is_in_the_verdict(tmp_path, campaign):
    estimated = syn.campaign(tmp_path / "est", node_types=("alpha",), sources=syn.ESTIMATED, energy_scale=2)
    table = compare(load_campaign(campaign, "alpha"), load_campaign(estimated), metrics=["energy_per_sample_j"])
    assert (table["verdict"] == "worse; meters differ: energy kind measured vs estimated").all()


def test_systematic_uncertainty_overlapping_never_better(tmp_path):
    a = syn.write_campaign(tmp_path / "a", _rows(energy_systematic_rel=0.10))
    b = syn.write_campaign(tmp_path / "b", [{**r, "energy_systematic_rel": 0.10} for r in
                                            syn.rows(node_types=("alpha",), energy_scale=1.15)])
    table = compare(load_campaign(a), load_campaign(b), metrics=["energy_per_sample_j", "throughput"])
    energy = table[table["metric"] == "energy_per_sample_j"]
    mob = energy[(energy["test"] == "mobilenet_v2") & (energy["phase"] == "training")].iloc[0]
    assert mob["p_value"] < 0.05  # statistically different...
    assert mob["verdict"].startswith("within systematic uncertainty")  # ...but not beyond the meter's own
    assert not energy["significant"].any()
    # far beyond the systematic: still called
    c = syn.write_campaign(tmp_path / "c", [{**r, "energy_systematic_rel": 0.10} for r in
                                            syn.rows(node_types=("alpha",), energy_scale=2.0)])
    far = compare(load_campaign(a), load_campaign(c), metrics=["energy_per_sample_j"])
    assert (far["verdict"] == "worse").all()


def test_a_side_of_unknown_systematic_is_named_in_the_verdict(tmp_path):
    # A's meter is known to ±10 %, B's systematic is unknown: B's interval is its spread only, so the
    # verdict must not read as if both were bounded (the old code said a bare "worse").
    a = syn.write_campaign(tmp_path / "a", _rows(energy_systematic_rel=0.10))
    b = syn.write_campaign(tmp_path / "b", syn.rows(node_types=("alpha",), energy_scale=2.0))
    table = compare(load_campaign(a), load_campaign(b), metrics=["energy_per_sample_j"])
    assert (table["verdict"] == "worse; meter systematic unknown on B (its interval is run-to-run spread only)").all()


def test_invalid_cells_are_left_out_and_counted(tmp_path, campaign, capsys):
    rows = syn.rows(node_types=("alpha",))
    rows[0] = {**rows[0], "energy_valid": False, "energy_per_sample_j": 50.0,
               "energy_invalid_reasons": "rapl counter wrapped twice"}
    b = syn.write_campaign(tmp_path / "inv", rows)
    kept = load_campaign(b, include_invalid=True).stats
    left = load_campaign(b).stats
    mob = (left["test"] == "mobilenet_v2") & (left["phase"] == "inference")
    assert left.loc[mob, "n"].iloc[0] == 2 and left.loc[mob, "invalid_cells"].iloc[0] == 1
    assert kept.loc[mob, "energy_per_sample_j_mean"].iloc[0] > 10
    assert main(["compare", str(campaign) + "@alpha", str(b), "--metrics", "energy_per_sample_j"]) == 0
    assert "B: 1 cell(s) with an invalid energy reading left out" in capsys.readouterr().out


def test_against_the_historical_reference(campaign):
    table = compare(load_campaign("chifflet-2022"), load_campaign(campaign, "alpha"))
    assert set(table["test"]) == {"mobilenet_v2", "vgg_16"}
    r = table[(table["test"] == "mobilenet_v2") & (table["phase"] == "inference") & (table["metric"] == "energy_j")]
    assert r["mean_a"].iloc[0] == pytest.approx(0.001176 / 1.58 * 3.6e6)  # PUE divided out
    assert r["verdict"].iloc[0].startswith("not comparable: batch_size 200 vs 8")
    assert r["energy_source_a"].iloc[0].startswith("historical")
    allowed = compare(load_campaign("chifflet-2022"), load_campaign(campaign, "alpha"),
                      metrics=["energy_j"], allow_different=["batch_size", "input_shape"])
    assert (allowed["verdict"].str.startswith("not comparable: window energy")).all()


def test_empty_comparison_is_exit_2_with_the_reason(tmp_path, campaign, capsys):
    failed = syn.write_campaign(tmp_path / "failed", [{**r, "state": "failed"} for r in
                                                      syn.rows(node_types=("alpha",))])
    assert main(["compare", str(campaign) + "@alpha", str(failed)]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    other = syn.write_campaign(tmp_path / "other", [{**r, "test": "srcnn", "subtest": "8.1"}
                                                    for r in syn.rows(node_types=("alpha",))][:3])
    assert main(["compare", str(campaign) + "@alpha", str(other)]) == 2
    assert "no (test, sub-test, phase) in common" in capsys.readouterr().err


def test_cli_labels_sides_by_folder_and_date(campaign, tmp_path, capsys):
    out = tmp_path / "cmp.csv"
    assert main(["compare", str(campaign), "--node-types", "alpha", "beta", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    folder = "/".join(campaign.absolute().parts[-3:])
    assert f"B = synthetic@beta ({folder}, 2026-11-27) vs A = synthetic@alpha ({folder}, 2026-11-27)" in text
    assert out.is_file() and set(pd.read_csv(out)["side_a"]) == {f"synthetic@alpha ({folder}, 2026-11-27)"}
    assert main(["compare", str(campaign)]) == 2
    assert main(["compare", str(campaign), "--node-types", "alpha", "gamma"]) == 2


def test_classification_sweep_offers_the_papers_x4_batches(tmp_path):
    from orchestrator.matrix import expand
    from orchestrator.spec import load_sweep

    text = (ROOT_SWEEPS / "classification.yaml").read_text()
    assert "# batch_scale: 4" in text
    path = tmp_path / "classification.yaml"
    path.write_text(text.replace("# batch_scale: 4", "batch_scale: 4"))
    cells = expand(load_sweep(str(path))).cells
    ours = {(c.params["test"], c.params["subtest"]): c.params["batch_size"] for c in cells}
    paper = load_campaign("chifflet-2022").stats
    for rec in paper[paper["test"].isin({t for t, _ in ours})].to_dict("records"):
        assert ours[(rec["test"], rec["subtest"])] == rec["batch_size"]  # same workload as the paper's
