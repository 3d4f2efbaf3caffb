"""The HTML report: one self-contained file with tables, inline figures and provenance."""
from __future__ import annotations

import math
import re
from html import escape

import pytest

from orchestrator.cli import main
from orchestrator.report import make_report
from tests import synthetic_results as syn


INVALID_CELL = "mobilenet_v2-inference-alpha-2"
INVALID_REASON = "cpu: samples cover 70% of the window (< 95%)"
WINDOW = (1_800_000_000.0, 1_800_000_010.0)


def evidence_campaign(folder):
    """The synthetic campaign (one node type, codecarbon's estimates) with the evidence a real job records:
    a gate verdict per cell (one invalid, with its reason), the sources' systematic term (64 % for the load
    model, 100 % for the RAM model, weighted by joules: 82 %), and the invalid cell's trace.parquet, written
    by the job's own writer in its format (codecarbon's models sampled every 0.1 s, a 3 s gap in the window)."""
    from jobs.meters.trace import Trace

    rows = []
    for (test, phase, node_type), energies in syn.ENERGY.items():
        if node_type != "alpha":
            continue
        for rep, energy in enumerate(energies):
            res = syn.result(test, phase, node_type, rep, energy, syn.SAMPLES[phase], sources=syn.ESTIMATED,
                             hostname="alpha-1")
            cell_id = f"{test}-{phase}-{node_type}-{rep}"
            invalid = cell_id == INVALID_CELL
            res["window"].update(start_unix=WINDOW[0], end_unix=WINDOW[1])
            res["energy"].update(valid=not invalid, invalid_reasons=[INVALID_REASON] if invalid else [],
                                 uncertainty={"systematic_rel": (0.64 + 1.0) / 2, "by_domain": {"cpu": 0.64,
                                                                                                "ram": 1.0}})
            rows.append(syn.row(res, cell_id))
    campaign = syn.write_campaign(folder, rows)
    times = [WINDOW[0] - 1 + 0.1 * i for i in range(121) if not 3.0 <= 0.1 * i - 1 <= 6.0]
    trace = Trace([(t, domain, "cpu0" if domain == "cpu" else "ram", source, watts, float("nan"), float("nan"),
                    None) for t in times for domain, source, watts in (("cpu", "codecarbon-load-model", 7.5),
                                                                      ("ram", "codecarbon-ram-model", 20.0))])
    (campaign / "cells" / INVALID_CELL).mkdir(parents=True)
    trace.write(campaign / "cells" / INVALID_CELL / "trace.parquet")
    return campaign


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return make_report(evidence_campaign(tmp_path_factory.mktemp("rep") / "synthetic"))


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


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</table>", start)]


def test_the_report_shows_each_cells_gate_verdict_and_the_systematic_plus_minus(report):
    from orchestrator.results import load_campaign
    from orchestrator.tables import fmt_ci

    html = report.html.read_text()
    cells = _section(html, "evidence-cells")
    # Every done cell's verdict: the invalid one first, with its reason and a link to its drawn trace.
    assert "Validity gate per cell: 11 valid, 1 invalid, 0 not judged" in cells
    assert cells.count('class="verdict-valid"') == 11 and cells.count('class="verdict-invalid"') == 1
    first = cells.index('class="verdict-')
    assert cells.index('class="verdict-invalid"') == first and escape(INVALID_REASON) in cells
    assert f'href="#fig-trace_{INVALID_CELL}"' in cells and f'id="fig-trace_{INVALID_CELL}"' in html
    assert "(energy invalid)" in html  # the trace figure's title says what the gate found
    # Each cell's own J/sample with its source's systematic 95 % interval (1.96 x 82 %, log scale).
    per_sample = 110.0 / syn.SAMPLES["inference"]  # mobilenet_v2 inference rep 1
    half = 1.959964 * 0.82
    expected = fmt_ci(per_sample, per_sample * math.exp(-half), per_sample * math.exp(half))
    row = cells[cells.index("mobilenet_v2-inference-alpha-1"):]
    assert expected in row[:row.index("</tr>")] and "[" in expected
    # Per group: the invalid cell counted and left out, the ± with the systematic term beside the CI.
    groups = _section(html, "evidence-groups")
    stats = load_campaign(report.html.parent.parent).stats
    vgg = stats[(stats["test"] == "vgg_16") & (stats["phase"] == "inference")].iloc[0]
    metric = "energy_per_sample_j"
    with_systematic = fmt_ci(vgg[f"{metric}_mean"], vgg[f"{metric}_total_low"], vgg[f"{metric}_total_high"], 3)
    statistical = fmt_ci(vgg[f"{metric}_mean"], vgg[f"{metric}_ci95_low"], vgg[f"{metric}_ci95_high"], 3)
    assert vgg[f"{metric}_total_low"] < vgg[f"{metric}_ci95_low"]  # the systematic widens the interval
    assert with_systematic in groups and statistical in groups and with_systematic != statistical
    assert groups.count("±82%") == 4
    mobilenet = groups[groups.index("MobileNet-V2 (1.1) inference"):]
    mobilenet = mobilenet[:mobilenet.index("</tr>")]
    assert "1 left out" in mobilenet and "n &lt; 3: no interval" in mobilenet  # 2 valid cells: no ± at all
    assert "1 cell(s) left out of every table and figure" in html


def test_the_report_keeps_invalid_cells_only_when_asked(tmp_path):
    from orchestrator.report import render_html
    from orchestrator.results import load_campaign

    data = load_campaign(evidence_campaign(tmp_path / "kept"), include_invalid=True)
    html = render_html(data, [], [], include_invalid=True)  # the page alone: figures are checked above
    groups = _section(html, "evidence-groups")
    assert "1 kept (--include-invalid)" in groups and "left out" not in groups
    assert "1 cell(s) kept in the tables and figures (--include-invalid)" in html


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
