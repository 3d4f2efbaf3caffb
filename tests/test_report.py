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
    assert "Table 2: inference, synthetic" in html and "Table 3: training, synthetic" in html
    assert "3.06e-5 ± 6.90e-6" in html  # MobileNet-V2 inference EC, as in the Markdown table
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
