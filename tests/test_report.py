"""The HTML report: one self-contained file with tables, inline figures and provenance."""
from __future__ import annotations

import re

import pytest

from orchestrator.cli import main
from orchestrator.report import make_report
from tests import synthetic_results as syn


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rep")
    campaign = syn.campaign(folder / "synthetic", node_types=("alpha",), sources=syn.ESTIMATED)
    return make_report(campaign)


def test_layout(report):
    out = report.html.parent
    assert report.html == out / "report.html" and out.name == "report"
    assert {p.name for p in report.tables} >= {"table2_inference.md", "table3_training.tex", "efficiency.csv"}
    assert {p.name for p in report.figures} >= {"fig1_inference_energy_per_sample.png",
                                                "fig1_inference_energy_per_sample.svg"}
    assert all(p.is_file() for p in report.tables + report.figures)


def test_self_contained(report):
    html = report.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", html)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert html.count("<svg") == sum(1 for p in report.figures if p.suffix == ".svg")
    assert "<?xml" not in html


def test_content_and_provenance(report):
    html = report.html.read_text()
    assert "Benchmark report: synthetic" in html
    assert "Table 2: Inference: EC, CE and D per nominal work" in html and "Table 3: Training" in html
    md = (report.html.parent / "tables" / "table2_inference.md").read_text()
    first = md.splitlines()[4].split(" | ")[6]  # MobileNet-V2 inference EC, as in the Markdown table
    assert first in html
    # real captions, not file names
    assert "<figcaption>Fig. 1: inference energy per sample (PUE excluded), alpha</figcaption>" in html
    assert "<figcaption>fig1_inference_energy_per_sample</figcaption>" not in html
    # energy labels: estimates say so, and nothing claims a measurement
    assert "estimated: codecarbon load model" in html and "estimated: codecarbon RAM model" in html
    assert "measured:" not in html
    # provenance: meters, versions, nodes, manifest, sweep
    assert 'id="meters"' in html and "2.21.0" in html and "3.3.2" in html
    assert "alpha-1" in html and "Test CPU 9000" in html
    assert "sweep_sha256" in html and "tests: [mobilenet_v2, vgg_16]" in html


def test_historical_reference_report(tmp_path, capsys):
    assert main(["report", "chifflet-2022", "--out", str(tmp_path / "c22"), "--include-pue"]) == 0
    html = (tmp_path / "c22" / "report.html").read_text()
    assert 'id="historical-banner"' in html and "PUE 1.58" in html and "CPU+DRAM" in html
    assert "1.18e-3" in html  # Table 2, MobileNet-V2, as printed in the paper
    assert main(["report", "chifflet-2022"]) == 2  # a built-in reference needs --out


def test_filters_and_factors(tmp_path, capsys):
    campaign = syn.campaign(tmp_path / "synthetic")
    assert main(["report", str(campaign), "--out", str(tmp_path / "r"), "--tests", "vgg_16", "--phases",
                 "training", "--node-types", "beta", "--work-samples", "1000"]) == 0
    out = capsys.readouterr().out
    assert "factors: PUE 1.5, carbon intensity 50 g/kWh" in out
    md = (tmp_path / "r" / "tables" / "table3_training.md").read_text()
    assert "VGG-16" in md and "MobileNet-V2" not in md and "| beta |" in md and "| alpha |" not in md
    assert "per 1,000 samples of work" in md
    assert not (tmp_path / "r" / "tables" / "table2_inference.md").exists()
    assert main(["report", str(campaign), "--out", str(tmp_path / "r2"), "--tests", "resnet_v2_50"]) == 2
    assert "has no test resnet_v2_50" in capsys.readouterr().err


def test_report_says_why(tmp_path):
    rows = syn.rows(node_types=("alpha",))
    note = "rapl: no RAPL package zone is readable; fix: `sudo chmod -R a+r /sys/class/powercap/intel-rapl`"
    rows = [{**r, "energy_notes": note} for r in rows]
    html = make_report(syn.write_campaign(tmp_path / "why", rows)).html.read_text()
    assert 'id="campaign-notes"' in html and html.count("chmod -R a+r") == 1 and "(12 cells)" in html


def _damaged(tmp_path, name):
    return syn.campaign(tmp_path / name, node_types=("alpha",))


def test_damaged_campaigns_never_crash_the_report(tmp_path, capsys):
    import os

    garbage = _damaged(tmp_path, "garbage")
    (garbage / "results.parquet").write_bytes(b"PAR1 this is not parquet")
    assert main(["report", str(garbage)]) == 0  # falls back to results.csv, and says so
    assert "results.parquet is unreadable" in capsys.readouterr().err
    bad_manifest = _damaged(tmp_path, "manifest")
    (bad_manifest / "manifest.json").write_text("{oops")
    (bad_manifest / "sweep.yaml").write_bytes(b"\xff\xfe not utf-8")
    assert main(["report", str(bad_manifest)]) == 0
    err = capsys.readouterr().err
    assert "manifest.json is unreadable" in err and "sweep.yaml is unreadable" in err
    no_sweep = _damaged(tmp_path, "nosweep")
    (no_sweep / "sweep.yaml").unlink()
    assert main(["report", str(no_sweep)]) == 0
    assert "sweep.yaml is missing" in capsys.readouterr().err
    loop = _damaged(tmp_path, "loop")
    (loop / "results.parquet").unlink()
    (loop / "results.csv").unlink()
    os.symlink("results.csv", loop / "results.csv")
    assert main(["report", str(loop)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    fifo = _damaged(tmp_path, "fifo")
    (fifo / "results.parquet").unlink()
    os.mkfifo(fifo / "results.parquet")  # would block a plain open(); falls back to the CSV
    assert main(["report", str(fifo)]) == 0
    assert "results.parquet: is a FIFO" in capsys.readouterr().err


def test_report_finds_a_campaign_by_name(tmp_path, monkeypatch, capsys):
    syn.campaign(tmp_path / "results" / "byname", node_types=("alpha",))
    monkeypatch.chdir(tmp_path)
    assert main(["report", "byname"]) == 0
    assert (tmp_path / "results" / "byname" / "report" / "report.html").is_file()
