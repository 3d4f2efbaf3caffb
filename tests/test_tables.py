"""Tables from a synthetic result set with known values, and from the historical reference."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from orchestrator.historical import load as load_historical
from orchestrator.results import aggregate, load_campaign
from orchestrator.tables import build_tables, efficiency_table, fmt, fmt_ci, paper_table, write_tables
from tests import synthetic_results as syn

T2 = stats.t.ppf(0.975, 2)  # 3 repetitions


@pytest.fixture
def data(tmp_path):
    return load_campaign(syn.campaign(tmp_path / "synthetic"))


def _row(table, **where):
    frame = table.numeric()
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


def _log_ci(values):
    values = pd.Series(values, dtype=float)
    mean, half = values.mean(), T2 * values.std() / values.mean() / math.sqrt(len(values))
    return mean, mean * math.exp(-half), mean * math.exp(half)


WORK = 22 * 8  # nominal work: 22 iterations x batch 8


def test_paper_table_is_normalised_to_work(data):
    table = paper_table(data.stats, "inference")
    r = _row(table, **{"Model": "MobileNet-V2", "Node type": "alpha"})
    # 100, 110, 120 J over 1000 samples each: J/sample 0.10, 0.11, 0.12, times 176 samples of nominal work
    mean, low, high = _log_ci([0.10 * WORK, 0.11 * WORK, 0.12 * WORK])
    assert r["EC (kWh) mean"] == pytest.approx(mean / 3.6e6)
    assert r["EC (kWh) ci95_low"] == pytest.approx(low / 3.6e6)
    assert r["EC (kWh) ci95_high"] == pytest.approx(high / 3.6e6)
    assert r["CE (kgCO2eq) mean"] == pytest.approx(mean / 3.6e6 * syn.PUE * syn.INTENSITY / 1000)
    assert r["D (s) mean"] == pytest.approx(WORK / 100.0)  # 176 samples at 100 samples/s
    assert r["n"] == 3 and r["Work (samples)"] == WORK
    assert "measured: RAPL" in r["Energy source"]
    assert table.title.startswith("Table 2: Inference: EC, CE and D per nominal work of each sub-test")
    assert set(table.numeric()["Sub-test"]) == {"1.1", "7.1"}


def test_bigger_models_cost_more_with_fixed_windows(tmp_path):
    # Observation 2: equal 10 s windows gave equal EC and D for every model; per unit of work they differ.
    rows = [{**r, "energy_total_j": 100.0, "energy_per_sample_j": 100.0 / (1000 if r["test"] == "mobilenet_v2"
                                                                        else 50)} for r in
            syn.rows(node_types=("alpha",))]
    for r in rows:
        r["throughput_samples_per_s"] = 100.0 if r["test"] == "mobilenet_v2" else 5.0
    stats = aggregate(pd.DataFrame(rows))
    table = paper_table(stats, "training").numeric().set_index("Model")
    assert table.loc["VGG-16", "EC (kWh) mean"] == pytest.approx(20 * table.loc["MobileNet-V2", "EC (kWh) mean"])
    assert table.loc["VGG-16", "D (s) mean"] == pytest.approx(20 * table.loc["MobileNet-V2", "D (s) mean"])


def test_work_samples_option(tmp_path):
    stats = load_campaign(syn.campaign(tmp_path / "w"), work_samples=1000).stats
    table = paper_table(stats, "inference")
    r = _row(table, **{"Model": "MobileNet-V2", "Node type": "alpha"})
    assert r["EC (kWh) mean"] == pytest.approx(110 / 3.6e6) and r["D (s) mean"] == pytest.approx(10.0)
    assert "per 1,000 samples of work" in table.title


def test_paper_table_with_pue(data):
    r = _row(paper_table(data.stats, "training", include_pue=True), **{"Model": "VGG-16", "Node type": "beta"})
    assert r["EC (kWh) mean"] == pytest.approx(sum([810, 800, 830]) / 3 / 200 * WORK / 3.6e6 * syn.PUE)


def test_efficiency_table_values(data):
    r = _row(efficiency_table(data.stats), **{"Model": "MobileNet-V2", "Node type": "alpha", "Phase": "inference"})
    assert r["Throughput (samples/s) mean"] == pytest.approx(100.0)
    assert r["Energy per sample (J) mean"] == pytest.approx(0.11)
    per_j = [1000 / e for e in (100, 110, 120)]
    mean, _, high = _log_ci(per_j)
    assert r["Samples per J mean"] == pytest.approx(mean)
    assert r["Samples per J ci95_high"] == pytest.approx(high)
    assert r["Wh per 1,000 samples mean"] == pytest.approx(0.11 * 1000 / 3600)
    assert r["Mean power (W) mean"] == pytest.approx(11.0)
    assert r["Net energy per sample (J, idle subtracted) mean"] == pytest.approx(0.105)


def test_small_n_has_no_interval_and_nothing_below_zero(tmp_path):
    # Observation 3: with n = 2 the old tables printed negative lower bounds
    rows = [r for r in syn.rows(node_types=("alpha",)) if r["repetition"] < 2]
    rows[0] = {**rows[0], "throughput_samples_per_s": 10.0, "energy_per_sample_j": 0.001}
    stats = aggregate(pd.DataFrame(rows))
    table = efficiency_table(stats)
    assert stats["throughput_ci95_low"].isna().all() and stats["energy_per_sample_j_ci95_low"].isna().all()
    md = table.markdown()
    assert "(n = 2: no interval)" in md and "n = 2: no interval" in table.numeric()["Flags"].iloc[0]
    full = aggregate(pd.DataFrame(syn.rows()))
    lows = full[[c for c in full if c.endswith("_ci95_low") and not c.startswith("net_")]]
    assert (lows.fillna(1) > 0).all().all()


def test_markdown_latex_csv_files(data, tmp_path):
    tables = build_tables(data.stats, "synthetic")
    assert [t.name for t in tables] == ["table2_inference", "table3_training", "efficiency"]
    paths = write_tables(tables, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{t.name}.{e}" for t in tables for e in ("md", "tex", "csv"))
    md = (tmp_path / "out" / "table2_inference.md").read_text()
    mean, low, high = (v / 3.6e6 for v in _log_ci([0.10 * WORK, 0.11 * WORK, 0.12 * WORK]))
    assert f"| MobileNet-V2 | 1.1 | alpha | 8 | 176 | 3 | {fmt(mean)} [{fmt(low)}, {fmt(high)}] |" in md
    tex = (tmp_path / "out" / "table2_inference.tex").read_text()
    assert "\\begin{tabular}" in tex and f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]" in tex and "\\end{table}" in tex
    # LaTeX numbers the table itself: the caption must not say "Table 2:" again ("Table 1: Table 2: ...")
    assert "\\caption{Inference: EC, CE and D per nominal work" in tex and "Table 2" not in tex
    csv = pd.read_csv(tmp_path / "out" / "table2_inference.csv", dtype={"Sub-test": str})
    assert len(csv) == 4 and csv["EC (kWh) mean"].iloc[0] == pytest.approx(mean)


def test_estimates_are_labelled_as_estimates(tmp_path):
    data = load_campaign(syn.campaign(tmp_path / "est", node_types=("alpha",), sources=syn.ESTIMATED))
    md = build_tables(data.stats)[0].markdown()
    assert "estimated: codecarbon load model" in md and "estimated: codecarbon RAM model" in md
    assert "measured" not in md.replace("estimated", "")


def test_failed_cells_are_left_out(tmp_path):
    rows = syn.rows(node_types=("alpha",))
    rows[0] = {**rows[0], "state": "failed", "energy_total_j": 1e9}
    stats = aggregate(pd.DataFrame(rows))
    r = stats[(stats["test"] == "mobilenet_v2") & (stats["phase"] == "inference")].iloc[0]
    assert r["cells"] == 3 and r["cells_done"] == 2
    assert r["energy_j_mean"] == pytest.approx(115.0)


def test_formatting():
    assert fmt(1.176e-3) == "1.18e-3" and fmt(32.11) == "32.1" and fmt(0.5) == "0.5" and fmt(math.nan) == "–"
    assert fmt_ci(10.0, 9.0, 11.0) == "10 ± 1"
    assert fmt_ci(10.0, 9.0, 12.0) == "10 [9, 12]"
    assert fmt_ci(10.0, math.nan, math.nan) == "10"
    assert fmt_ci(10.0, math.nan, math.nan, 2) == "10 (n = 2: no interval)"


# The seed paper's Tables 2 and 3 as printed (shared/notes/seed-paper-results.md §3): EC kWh, CE kg, D s.
PRINTED = {
    ("MobileNet-V2", "inference"): (1.18e-3, 0.66e-4, 32.11), ("VGG-16", "inference"): (2.96e-3, 1.66e-4, 33.63),
    ("Inception-V4", "inference"): (2.60e-3, 1.45e-4, 32.41), ("ResNet-V2-50", "training"): (2.29e-3, 1.28e-4, 40.01),
    ("Inception-ResNet-V2", "training"): (4.06e-3, 2.27e-4, 59.98), ("VGG-16", "training"): (1.83e-3, 1.02e-4, 35.19),
}


def test_chifflet_reference_reproduces_the_paper():
    data = load_historical("chifflet-2022")
    assert data.historical and len(data.stats) == 37
    for (model, phase), (ec, ce, d) in PRINTED.items():
        r = _row(paper_table(data.stats, phase, include_pue=True), Model=model)
        assert r["EC (kWh) mean"] == pytest.approx(ec, rel=6e-3)
        assert r["CE (kgCO2eq) mean"] == pytest.approx(ce, rel=8e-3)
        assert r["D (s) mean"] == pytest.approx(d, abs=0.011)
        assert r["Energy source"].startswith("historical")
    # Without --include-pue the PUE 1.58 is divided out, to compare with campaigns that never include it.
    r = _row(paper_table(data.stats, "inference"), Model="MobileNet-V2")
    assert r["EC (kWh) mean"] == pytest.approx(0.001176 / 1.58)
    assert data.stats["energy_per_sample_j_mean"].isna().all()  # samples were never recorded
    table = build_tables(data.stats, "chifflet-2022", include_pue=True, notes=data.notes)[0]
    md = table.markdown()
    assert "PUE 1.58" in md and "CPU+DRAM" in md
    assert "window energy of the tracker" in table.title and "not normalisable to work" in table.title
