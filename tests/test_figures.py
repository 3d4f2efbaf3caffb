"""Figures from a synthetic result set: bar heights, CI error bars, colours, files."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from orchestrator.figures import bar_chart, bar_heights, build_figures, close_all, node_type_chart, write_figures
from orchestrator.results import load_campaign
from tests import synthetic_results as syn


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_campaign(syn.campaign(tmp_path_factory.mktemp("fig") / "synthetic"))


@pytest.fixture
def alpha(data):
    return data.stats[data.stats["node_type"] == "alpha"]


def test_inference_energy_per_sample_bars(alpha):
    fig = bar_chart(alpha, "inference", "energy_per_sample_j", "Fig. 1")
    try:
        assert bar_heights(fig) == pytest.approx([0.11, 0.44])  # MobileNet-V2, VGG-16: mean J / 1000 samples
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["MobileNet-V2", "VGG-16"]
        # the error bar of MobileNet-V2 spans the Student-t 95 % CI of (0.100, 0.110, 0.120)
        half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
        segments = [c for c in ax.collections if hasattr(c, "get_segments")][0].get_segments()
        low, high = sorted(segments[0][:, 1])
        assert (low, high) == pytest.approx((0.11 - half, 0.11 + half))
        # coloured by parameter count: the larger model gets the brighter viridis end
        colours = [p.get_facecolor() for p in ax.patches[:2]]
        assert colours[0] != colours[1]
        assert np.allclose(colours[1][:3], plt.get_cmap("viridis")(1.0)[:3], atol=0.02)
        assert fig.axes[1].get_ylabel() == "parameters"  # the colour bar
        assert any("measured: RAPL" in t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)


def test_training_energy_and_duration(alpha):
    energy = bar_chart(alpha, "training", "energy_kwh", "Fig. 2")
    duration = bar_chart(alpha, "training", "duration_s", "Fig. 3")
    try:
        assert bar_heights(energy) == pytest.approx([210 / 3.6e6, 810 / 3.6e6])
        assert bar_heights(duration) == pytest.approx([10.0, 10.0])
    finally:
        plt.close(energy)
        plt.close(duration)


def test_node_type_comparison(data):
    fig = node_type_chart(data.stats, "inference", "energy_per_sample_j")
    try:
        assert bar_heights(fig, "bars-alpha") == pytest.approx([0.11, 0.44])
        assert bar_heights(fig, "bars-beta") == pytest.approx([0.055, 1315 / 3 / 1000])
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["alpha", "beta"]
    finally:
        plt.close(fig)
    assert node_type_chart(data.stats[data.stats["node_type"] == "alpha"], "inference", "throughput") is None


def test_files_png_and_svg(data, tmp_path):
    figures = build_figures(data.stats)
    try:
        assert {"fig1_inference_energy_per_sample_alpha", "fig2_training_energy_alpha", "fig3_training_duration_beta",
                "energy_vs_params_beta", "node_types_inference_energy_per_sample_j",
                "node_types_training_throughput"} <= set(figures)
        chosen = {k: figures[k] for k in ("fig1_inference_energy_per_sample_alpha", "energy_vs_params_beta",
                                          "node_types_training_throughput")}  # drawing is slow: write a few
        paths = write_figures(chosen, tmp_path)
    finally:
        close_all(figures)
    assert len(paths) == 2 * len(chosen)
    for path in paths:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in head or b"<?xml" in head
    svg = (tmp_path / "fig1_inference_energy_per_sample_alpha.svg").read_text()
    assert "MobileNet-V2" in svg and "measured: RAPL" in svg  # text kept as text (svg.fonttype none)
