"""Figures from a synthetic result set: bar heights, intervals only where they exist, captions, paper-ready files."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.figures import (FOOTNOTE_PT, bar_chart, bar_heights, build_figures, close_all, node_type_chart,
                                  trace_figure, trend_figure, write_figures)
from orchestrator.results import aggregate, load_campaign
from tests import synthetic_results as syn


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_campaign(syn.campaign(tmp_path_factory.mktemp("fig") / "synthetic"))


@pytest.fixture
def alpha(data):
    return data.stats[data.stats["node_type"] == "alpha"]


def _error_segments(fig):
    return [seg for ax in fig.axes for c in ax.collections if hasattr(c, "get_segments") for seg in c.get_segments()]


def test_inference_energy_per_sample_bars(alpha):
    fig = bar_chart(alpha, "inference", "energy_per_sample_j", "Fig. 1", "Fig. 1: inference energy per sample")
    try:
        assert bar_heights(fig) == pytest.approx([0.11, 0.44])  # MobileNet-V2, VGG-16: mean J / 1000 samples
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["MobileNet-V2", "VGG-16"]
        # the error bar of MobileNet-V2 spans the log-scale 95 % CI of (0.100, 0.110, 0.120)
        half = stats.t.ppf(0.975, 2) * (0.01 / 0.11) / math.sqrt(3)
        low, high = sorted(_error_segments(fig)[0][:, 1])
        assert (low, high) == pytest.approx((0.11 * math.exp(-half), 0.11 * math.exp(half)))
        colours = [p.get_facecolor() for p in ax.patches[:2]]
        assert colours[0] != colours[1]
        assert np.allclose(colours[1][:3], plt.get_cmap("viridis")(1.0)[:3], atol=0.02)
        assert fig.axes[1].get_ylabel() == "parameters"  # the colour bar
        footnote = fig._supxlabel
        assert "measured: RAPL" in footnote.get_text() and footnote.get_fontsize() >= 8
        assert fig.caption == "Fig. 1: inference energy per sample"
    finally:
        plt.close(fig)


def test_one_model_has_no_colour_bar(alpha):
    fig = bar_chart(alpha[alpha["test"] == "vgg_16"], "inference", "energy_per_sample_j", "one")
    try:
        assert len(fig.axes) == 1
    finally:
        plt.close(fig)


def test_no_bar_without_an_interval_and_weak_rows_marked(tmp_path):
    # n = 1 (MobileNet-V2) and n = 2 (VGG-16): no error bar at all (not even a zero-length cap), hatched bars
    rows = [r for r in syn.rows(node_types=("alpha",)) if (r["test"] == "mobilenet_v2" and r["repetition"] == 0)
            or (r["test"] == "vgg_16" and r["repetition"] < 2)]
    fig = bar_chart(aggregate(pd.DataFrame(rows)), "inference", "energy_per_sample_j", "small n")
    try:
        assert len(bar_heights(fig)) == 2 and _error_segments(fig) == []
        assert all(p.get_hatch() for p in fig.axes[0].patches)
        assert "Hatched: n < 3" in fig._supxlabel.get_text()
    finally:
        plt.close(fig)


def test_training_energy_and_duration_per_unit_of_work(alpha):
    figures = build_figures(alpha)
    try:
        work = 22 * 8
        assert bar_heights(figures["fig2_training_energy"]) == pytest.approx(
            [210 / 200 * work / 3.6e6, 810 / 200 * work / 3.6e6])
        assert bar_heights(figures["fig3_training_duration"]) == pytest.approx([work / 20.0, work / 20.0])
        assert "per nominal work of each sub-test" in figures["fig2_training_energy"].caption
        assert "PUE excluded" in figures["fig2_training_energy"].caption
    finally:
        close_all(figures)
    with_pue = build_figures(alpha, include_pue=True)
    try:
        assert bar_heights(with_pue["fig2_training_energy"])[0] == pytest.approx(210 / 200 * 176 / 3.6e6 * syn.PUE)
        assert "PUE included" in with_pue["fig2_training_energy"].caption
    finally:
        close_all(with_pue)


def test_node_type_comparison(data):
    fig = node_type_chart(data.stats, "inference", "energy_per_sample_j")
    try:
        assert bar_heights(fig, "bars-alpha") == pytest.approx([0.11, 0.44])
        assert bar_heights(fig, "bars-beta") == pytest.approx([0.055, 1315 / 3 / 1000])
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["alpha", "beta"]
    finally:
        plt.close(fig)
    assert node_type_chart(data.stats[data.stats["node_type"] == "alpha"], "inference", "throughput") is None


def test_trend_figure_from_history():
    history = pd.DataFrame([{"run_id": f"2026010{i}T000000Z", "node_type": "local", "test": "mobilenet_v2",
                             "subtest": "1.1", "phase": "inference", "metric": "throughput", "value": v,
                             "sanity": s} for i, (v, s) in enumerate([(100, "ok"), (101, "ok"), (5, "broken"),
                                                                       (99, "ok")])])
    fig = trend_figure(history)
    try:
        line = fig.axes[0].get_lines()[0]
        assert list(line.get_ydata()) == [100, 101, 99]  # the broken run is left out
        assert "Nightly trend" in fig.caption
    finally:
        plt.close(fig)
    assert trend_figure(history.iloc[0:0]) is None


def test_trace_figure_when_samples_exist():
    trace = pd.DataFrame({"t_unix": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], "domain": ["cpu"] * 3 + ["gpu"] * 3,
                          "device": ["package-0"] * 3 + ["0"] * 3, "power_w": [50, 60, 55, 100, 250, 240],
                          "energy_j": [0, 55, 112, 0, 175, 420]})
    fig = trace_figure(trace, "mobilenet_v2 1.1 inference", (0.5, 2.0), "rapl; nvml-counter")
    try:
        assert len(fig.axes[0].get_lines()) == 2 and fig.caption.startswith("Power trace")
    finally:
        plt.close(fig)
    assert trace_figure(pd.DataFrame({"x": [1]}), "none") is None


def test_files_png_300_dpi_svg_and_nothing_clipped(data, tmp_path):
    from PIL import Image

    figures = build_figures(data.stats)
    try:
        assert {"fig1_inference_energy_per_sample_alpha", "fig2_training_energy_alpha", "fig3_training_duration_beta",
                "energy_vs_params_beta", "node_types_inference_energy_per_sample_j",
                "node_types_training_throughput"} <= set(figures)
        chosen = {k: figures[k] for k in ("fig1_inference_energy_per_sample_alpha", "energy_vs_params_beta",
                                          "node_types_training_throughput")}  # drawing is slow: write a few
        paths = write_figures(chosen, tmp_path)
        for fig in chosen.values():  # everything drawn lies inside the figure: no clipped axis, label or note
            fig.canvas.draw()
            drawn = fig.get_tightbbox(fig.canvas.get_renderer())
            page = fig.bbox_inches
            assert drawn.x0 >= page.x0 - 0.01 and drawn.y0 >= page.y0 - 0.01, (drawn, page)
            assert drawn.x1 <= page.x1 + 0.01 and drawn.y1 <= page.y1 + 0.01, (drawn, page)
    finally:
        close_all(figures)
    assert len(paths) == 2 * len(chosen)
    for path in paths:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head or b"<?xml" in head
        if path.suffix == ".png":
            assert Image.open(path).info["dpi"][0] == pytest.approx(300, abs=1)
    svg = (tmp_path / "fig1_inference_energy_per_sample_alpha.svg").read_text()
    assert "MobileNet-V2" in svg and "measured: RAPL" in svg  # text kept as text (svg.fonttype none)
    assert FOOTNOTE_PT >= 8
