"""Nightly: references, history, sanity vs performance, JUnit/Markdown outputs, exit codes 0 / 1 / 2."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.regress import (EXIT_BROKEN, EXIT_OK, EXIT_REGRESSION, Reference, classify, evaluate,
                                  load_references, nightly, promote, read_history)
from tests import synthetic_results as syn


def test_reference_bounds_are_fractions_and_none_is_unbounded():
    ref = Reference(100.0, -0.01, 0.02)
    assert ref.bounds() == pytest.approx((99.0, 102.0))
    assert classify(99.0, ref, True) == "pass" and classify(102.0, ref, True) == "pass"
    assert classify(98.9, ref, True) == "regression" and classify(102.1, ref, True) == "improvement"
    assert classify(98.9, ref, False) == "improvement" and classify(102.1, ref, False) == "regression"
    assert Reference(100.0, None, 0.1).bounds() == (-math.inf, pytest.approx(110.0))
    assert classify(1e9, Reference(100.0, -0.1, None), True) == "pass"
    assert Reference(0.0, -0.5, 0.5).bounds() == (-0.5, 0.5)  # absolute when the value is 0


def test_references_file(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump({"references": {"alpha": {
        "mobilenet_v2": {"inference": {"throughput": [100.0, -0.1, None]}},
        "srcnn/8.2": {"inference": {"energy_j": {"value": 5.0, "lower": None, "upper": 0.2}}}}},
        "history": {"runs": 5}}))
    refs = load_references(path)
    assert refs.find("alpha", "mobilenet_v2", "1.1", "inference", "throughput") == Reference(100.0, -0.1, None)
    assert refs.find("alpha", "srcnn", "8.2", "inference", "energy_j") == Reference(5.0, None, 0.2)
    assert refs.find("alpha", "srcnn", "8.1", "inference", "energy_j") is None
    assert refs.history["runs"] == 5 and refs.history["min_runs"] == 3
    path.write_text(yaml.safe_dump({"references": {"alpha": {"mobilenet_v2": {"inference": {"throughput": [1, 0.1, 0.2]}}}}}))
    with pytest.raises(UserError, match="lower must be <= 0"):
        load_references(path)
    path.write_text(yaml.safe_dump({"references": {"alpha": {"mobilenet_v2": {"inference": {"speed": [1]}}}}}))
    with pytest.raises(UserError, match="unknown metric 'speed'"):
        load_references(path)


@pytest.fixture
def setup(tmp_path):
    """A good campaign promoted to references, and an output folder for the nightly."""
    good = syn.campaign(tmp_path / "good", node_types=("alpha",))
    refs = tmp_path / "refs.yaml"
    added = promote(good, refs)
    assert len(added) == 8  # 4 groups x (throughput, energy_per_sample_j)
    return tmp_path, good, refs


def _junit(path):
    root = ET.parse(path).getroot()
    return {s.get("name"): s for s in root.iter("testsuite")}


def test_promote_writes_bands_never_tighter_than_the_ci(setup):
    _, _, refs = setup
    doc = yaml.safe_load(refs.read_text())
    [entry] = doc["references"]["alpha"]["mobilenet_v2"]["inference"]
    assert entry["workload"] == {"batch_size": 8, "input_shape": "32x32x3", "precision": "fp32",
                                 "execution": "graph", "backend": "tensorflow"}
    value, lower, upper = entry["energy_per_sample_j"]
    assert value == pytest.approx(0.11)
    # energies 100/110/120 J: 2 SDs are 18.2 % of the mean, wider than the 15 % default
    assert upper == pytest.approx(0.1818, abs=1e-3) and lower == -upper
    value, lower, upper = entry["throughput"]
    assert (value, lower, upper) == (pytest.approx(100.0), -0.1, 0.1)


def test_ok_run(setup):
    out, good, refs = setup
    verdict, junit, summary = nightly("unused", refs, out / "nightly", campaign=good)
    assert verdict.exit_code == EXIT_OK
    assert (out / "nightly" / "nightly-trend.png").is_file()  # the trend figure from the history
    suites = _junit(junit)
    assert suites["sanity"].get("tests") == "12" and suites["sanity"].get("errors") == "0"
    assert suites["references"].get("failures") == "0" and suites["references"].get("tests") == "8"
    assert "ok (exit 0)" in summary.read_text()


def test_regression(setup):
    out, _, refs = setup
    slow = syn.campaign(out / "slow", node_types=("alpha",), samples_scale=0.7)  # 30 % fewer samples per window
    verdict, junit, summary = nightly("unused", refs, out / "nightly", campaign=slow)
    assert verdict.exit_code == EXIT_REGRESSION
    failures = [c for s in _junit(junit).values() for c in s.iter("testcase") if c.find("failure") is not None]
    assert {c.get("name") for c in failures} >= {"alpha mobilenet_v2 1.1 inference throughput",
                                                 "alpha vgg_16 7.2 training throughput"}
    messages = " ".join(f.find("failure").get("message") for f in failures)
    assert "failed to meet reference: throughput=70 samples/s, expected 100 (l=90, u=110)" in messages
    text = summary.read_text()
    assert "regression (exit 1)" in text and "REGRESSION" in text and "all 12 cell(s) completed" in text
    assert main(["nightly", "--campaign", str(slow), "--references", str(refs), "--output",
                 str(out / "cli")]) == EXIT_REGRESSION


def test_low_confidence_is_a_warning_not_a_failure(setup):
    out, _, refs = setup
    rows = syn.rows(node_types=("alpha",))
    rows[0] = {**rows[0], "low_confidence": "cpu: window of 10.0 s is shorter than the 60 s a rapl reading needs"}
    verdict, junit, summary = nightly("unused", refs, out / "nightly", campaign=syn.write_campaign(out / "lc", rows))
    assert verdict.exit_code == EXIT_OK
    assert "1 cell(s) with a low-confidence energy reading" in summary.read_text()
    assert "shorter than the 60 s" in junit.read_text()


def test_improvement_is_reported_but_passes(setup):
    out, _, refs = setup
    fast = syn.campaign(out / "fast", node_types=("alpha",), samples_scale=1.5)
    verdict, junit, summary = nightly("unused", refs, out / "nightly", campaign=fast)
    assert verdict.exit_code == EXIT_OK
    assert any(c.status == "improvement" for c in verdict.checks)
    assert "improvement" in summary.read_text()
    assert _junit(junit)["references"].get("failures") == "0"


def test_broken_run_failed_cell(setup):
    out, _, refs = setup
    rows = syn.rows(node_types=("alpha",), samples_scale=0.5)  # also slower: must not be judged
    rows[3] = {**rows[3], "state": "failed", "reason": "exit code 137 (killed)"}
    broken = syn.write_campaign(out / "broken", rows)
    verdict, junit, summary = nightly("unused", refs, out / "nightly", campaign=broken)
    assert verdict.exit_code == EXIT_BROKEN
    suites = _junit(junit)
    assert suites["sanity"].get("errors") == "1" and suites["references"].get("tests") == "0"
    text = summary.read_text()
    assert "broken (exit 2)" in text and "exit code 137" in text and "performance is not judged" in text


def test_broken_run_invalid_meter(setup):
    out, _, refs = setup
    rows = syn.rows(node_types=("alpha",))
    rows[0] = {**rows[0], "energy_total_j": 0.0}
    rows[1] = {**rows[1], "energy_cpu_source": None, "energy_ram_source": None}
    verdict = evaluate(syn.write_campaign(out / "meter", rows), refs, None)
    assert verdict.exit_code == EXIT_BROKEN
    messages = [c.message for c in verdict.of("sanity") if c.status == "broken"]
    assert any("no valid energy" in m for m in messages) and any("meter produced nothing" in m for m in messages)


def test_require_measured_makes_estimates_broken(setup):
    out, _, refs = setup
    doc = yaml.safe_load(refs.read_text())
    doc["sanity"]["require_measured"] = True
    refs.write_text(yaml.safe_dump(doc))
    estimated = syn.campaign(out / "est", node_types=("alpha",), sources=syn.ESTIMATED)
    assert evaluate(estimated, refs, None).exit_code == EXIT_BROKEN


def test_sweep_that_cannot_run_is_broken(tmp_path):
    code = main(["nightly", "--sweep", str(tmp_path / "missing.yaml"), "--output", str(tmp_path / "n")])
    assert code == EXIT_BROKEN
    assert "the sweep did not run" in (tmp_path / "n" / "nightly-summary.md").read_text()
    assert _junit(tmp_path / "n" / "nightly-junit.xml")["sanity"].get("errors") == "1"


def test_history_median_and_append_only(tmp_path):
    history = tmp_path / "history"
    no_refs = tmp_path / "refs.yaml"
    promote(syn.campaign(tmp_path / "ref", node_types=("alpha",)), no_refs, band=0.3)
    for night, scale in enumerate((1.0, 1.02, 0.98)):
        camp = syn.campaign(tmp_path / f"n{night}", node_types=("alpha",), samples_scale=scale)
        verdict = evaluate(camp, no_refs, history, run_id=f"2026010{night}T000000Z")
        assert verdict.exit_code == EXIT_OK
    files = sorted(history.glob("*.parquet"))
    first = files[0].read_bytes()
    assert len(files) == 3 and len(read_history(history)) == 3 * 8
    # tonight: 25 % slower than the median of the last 3 -> regression against history alone
    slow = syn.campaign(tmp_path / "slow", node_types=("alpha",), samples_scale=0.75)
    verdict = evaluate(slow, no_refs, history, run_id="20260104T000000Z")
    assert verdict.exit_code == EXIT_REGRESSION
    bad = [c for c in verdict.of("history") if c.status == "regression"]
    assert bad and "median" in bad[0].message and "-25.0%" in bad[0].message
    assert len(list(history.glob("*.parquet"))) == 4 and files[0].read_bytes() == first
    with pytest.raises(UserError, match="append-only"):  # another campaign under an existing run id
        evaluate(syn.campaign(tmp_path / "other", node_types=("alpha",)), no_refs, history,
                 run_id="20260104T000000Z")
    # a broken run is recorded but never enters the median
    rows = syn.rows(node_types=("alpha",), samples_scale=0.1)
    rows[0] = {**rows[0], "state": "failed"}
    assert evaluate(syn.write_campaign(tmp_path / "b", rows), no_refs, history,
                    run_id="20260105T000000Z").exit_code == EXIT_BROKEN
    assert set(read_history(history)["sanity"]) == {"ok", "broken"}
    again = evaluate(syn.campaign(tmp_path / "n5", node_types=("alpha",)), no_refs, history, run_id="20260106T000000Z")
    assert again.exit_code == EXIT_OK


def test_a_campaign_is_recorded_once_and_never_its_own_history(tmp_path):
    history, refs = tmp_path / "history", tmp_path / "refs.yaml"
    camp = syn.campaign(tmp_path / "c", node_types=("alpha",))
    promote(camp, refs)
    for night in range(4):  # judging the same campaign again and again
        verdict = evaluate(camp, refs, history, run_id=f"2026010{night}T000000Z")
    assert len(list(history.glob("*.parquet"))) == 1
    assert any("already in the history" in n for n in verdict.notes)
    assert {c.status for c in verdict.of("history")} == {"skipped"}  # its own run is not history: 0 earlier runs
    assert "0 earlier valid run(s)" in verdict.of("history")[0].message


def test_baseline_cli_merges(setup, capsys):
    out, good, refs = setup
    beta = syn.campaign(out / "beta", node_types=("beta",))
    before = refs.read_text()
    # energies 50/55/60 J: 2 SDs are ±18 %; a ±5 % band would fail the campaign it came from
    assert main(["baseline", str(beta), "--references", str(refs), "--metrics", "energy_j", "--band", "0.05"]) == 2
    assert "tighter than this campaign's own run-to-run spread" in capsys.readouterr().err
    assert refs.read_text() == before  # nothing written
    assert main(["baseline", str(beta), "--references", str(refs), "--metrics", "energy_j", "--band", "0.25",
                 "--unbounded-good"]) == 0
    doc = yaml.safe_load(refs.read_text())
    assert set(doc["references"]) == {"alpha", "beta"}  # alpha kept, beta added
    value, lower, upper = doc["references"]["beta"]["mobilenet_v2"]["inference"][0]["energy_j"]
    assert value == pytest.approx(55.0) and lower is None and upper == 0.25  # the band asked for
    assert "wrote 4 reference(s)" in capsys.readouterr().out


def test_missing_references_stop_the_nightly_before_it_runs(tmp_path, capsys):
    out = tmp_path / "n"
    code = main(["nightly", "--sweep", "nightly", "--references", str(tmp_path / "nonexistent.yaml"),
                 "--output", str(out)])
    assert code == EXIT_BROKEN
    assert not (out / "runs").exists()  # nothing ran
    assert "does not exist" in (out / "nightly-summary.md").read_text()
    (tmp_path / "garbled.yaml").write_bytes(b"references: [\xff")
    assert main(["nightly", "--references", str(tmp_path / "garbled.yaml"), "--output", str(out)]) == EXIT_BROKEN
    assert not (out / "runs").exists()


def test_references_are_keyed_by_workload(setup):
    out, _, refs = setup
    bigger = syn.write_campaign(out / "96", [{**r, "input_shape": "96x96x3"} for r in syn.rows(node_types=("alpha",))])
    verdict = evaluate(bigger, refs, None)
    assert verdict.exit_code == EXIT_BROKEN and verdict.word == "no reference"  # never "ok"
    missing = [c for c in verdict.of("references") if c.status == "no reference"]
    assert len(missing) == 8 and "input_shape 32x32x3 in the reference, 96x96x3 here" in missing[0].message


def test_no_reference_is_not_ok(setup):
    out, good, _ = setup
    empty = out / "empty.yaml"
    empty.write_text("references: {}\n")
    verdict, junit, summary = nightly("unused", empty, out / "nightly", campaign=good)
    assert verdict.exit_code == EXIT_BROKEN
    assert "no reference (exit 2)" in summary.read_text()
    assert _junit(junit)["references"].get("errors") == "8"


def test_old_references_without_workload_match_nothing(setup):
    out, good, _ = setup
    old = out / "old.yaml"
    old.write_text(yaml.safe_dump({"references": {"alpha": {"mobilenet_v2": {"inference": {
        "throughput": [100.0, -0.1, 0.1]}}}}}))
    verdict = evaluate(good, old, None)
    messages = [c.message for c in verdict.of("references") if "mobilenet_v2 1.1 inference throughput" in c.name]
    assert verdict.exit_code == EXIT_BROKEN and "re-baseline" in messages[0]


def test_invalid_cells_are_left_out_of_the_nightly_and_counted(setup):
    out, _, refs = setup
    rows = syn.rows(node_types=("alpha",))
    rows[0] = {**rows[0], "energy_valid": False, "energy_per_sample_j": 99.0}
    verdict = evaluate(syn.write_campaign(out / "inv", rows), refs, None)
    assert verdict.exit_code == EXIT_OK
    assert any("1 cell(s) with an invalid energy reading left out" in c.message for c in verdict.of("sanity"))
    assert evaluate(syn.write_campaign(out / "inv2", rows), refs, None, include_invalid=True).exit_code \
        == EXIT_REGRESSION
