"""Figures from a stats frame (orchestrator.results), as in the seed paper's Figures 1-3, PNG and SVG.

- inference energy per sample (Fig. 1), training energy (Fig. 2) and
  training duration (Fig. 3): one bar per model, 95 % CI error bars
  (Student-t over repetitions), coloured by parameter count;
- energy per sample against parameter count (log-log);
- node-type comparison: grouped bars, one bar per node type.

Each figure states its energy source under the plot. Builders return
matplotlib Figures (tests read the bars back); `write_figures` saves them.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import cm, colors  # noqa: E402

from orchestrator.results import METRICS  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "benchmark-tracker", "figure.dpi": 100, "font.size": 9}


def _label(rec: dict, several_subtests: bool) -> str:
    return f"{rec['title']} ({rec['subtest']})" if several_subtests else str(rec["title"])


def _errors(data: pd.DataFrame, metric: str) -> np.ndarray:
    mean = data[f"{metric}_mean"].to_numpy(float)
    low = np.nan_to_num(mean - data[f"{metric}_ci95_low"].to_numpy(float), nan=0.0)
    high = np.nan_to_num(data[f"{metric}_ci95_high"].to_numpy(float) - mean, nan=0.0)
    return np.vstack([low, high])


def _sources(data: pd.DataFrame) -> str:
    labels = sorted(set(data["energy_label"].dropna()))
    return "Energy: " + " | ".join(labels) if labels else "Energy source unknown"


def _param_norm(params: pd.Series):
    values = params.dropna().astype(float)
    values = values[values > 0]
    if values.empty:
        return colors.LogNorm(1e6, 1e8)
    low, high = values.min(), values.max()
    if low == high:
        low, high = low / 2, high * 2
    return colors.LogNorm(low, high)


def _layout(fig: plt.Figure, labels=(), rotated: bool = True, right: float = 0.97) -> None:
    """Fixed margins sized from the tick labels (a tight layout costs seconds per figure)."""
    longest = max((len(str(label)) for label in labels), default=0)
    bottom = min(0.45, 0.12 + (0.0075 * longest if rotated else 0.0)) + 0.04
    fig.subplots_adjust(left=0.12, right=right, top=0.9, bottom=bottom)


def bar_chart(stats: pd.DataFrame, phase: str, metric: str, title: str) -> plt.Figure | None:
    """One bar per model (rows of `phase`, one node type), CI error bars, coloured by parameter count."""
    data = stats[(stats["phase"] == phase) & stats[f"{metric}_mean"].notna()].reset_index(drop=True)
    if data.empty:
        return None
    several = data.groupby("test")["subtest"].nunique().max() > 1
    label, unit, _ = METRICS[metric]
    norm = _param_norm(data["params"])
    cmap = matplotlib.colormaps["viridis"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(data) + 2), 4.8))
        x = np.arange(len(data))
        bar_colors = [cmap(norm(p)) if p == p and p > 0 else "grey" for p in data["params"]]
        ax.bar(x, data[f"{metric}_mean"], yerr=_errors(data, metric), color=bar_colors, capsize=3,
               edgecolor="black", linewidth=0.5, gid=f"bars-{metric}")
        labels = [_label(r, several) for r in data.to_dict("records")]
        ax.set_xticks(x, labels, rotation=35, ha="right")
        _layout(fig, labels, right=0.86 if len(labels) < 8 else 0.93)
        ax.set_ylabel(f"{label} ({unit})")
        ax.set_title(title)
        mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(mappable, ax=ax, label="parameters", fraction=0.04, pad=0.02)
        fig.text(0.01, 0.01, _sources(data) + ". Error bars: 95 % CI.", fontsize=6, wrap=True)
    return fig


def energy_vs_params(stats: pd.DataFrame, node_type: str) -> plt.Figure | None:
    metric = "energy_per_sample_j"
    data = stats[stats[f"{metric}_mean"].notna() & (stats["params"] > 0)]
    if data.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for marker, (phase, group) in zip("os^", data.groupby("phase")):
            ax.errorbar(group["params"], group[f"{metric}_mean"], yerr=_errors(group, metric), fmt=marker,
                        capsize=3, label=phase)
            for rec in group.to_dict("records"):
                ax.annotate(str(rec["title"]), (rec["params"], rec[f"{metric}_mean"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("energy per sample (J)")
        ax.set_title(f"Energy per sample vs parameter count, {node_type}")
        ax.legend()
        _layout(fig, rotated=False)
        fig.text(0.01, 0.01, _sources(data) + ". Error bars: 95 % CI.", fontsize=6, wrap=True)
    return fig


def node_type_chart(stats: pd.DataFrame, phase: str, metric: str) -> plt.Figure | None:
    """Grouped bars: one group per model, one bar per node type."""
    data = stats[(stats["phase"] == phase) & stats[f"{metric}_mean"].notna()]
    node_types = sorted(data["node_type"].unique())
    if len(node_types) < 2:
        return None
    data = data.assign(key=[_label(r, True) for r in data.to_dict("records")])
    keys = list(dict.fromkeys(data.sort_values(["test_number", "subtest"])["key"]))
    label, unit, _ = METRICS[metric]
    width = 0.8 / len(node_types)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(keys) + 2), 4.8))
        for i, node_type in enumerate(node_types):
            rows = data[data["node_type"] == node_type].set_index("key").reindex(keys)
            ax.bar(np.arange(len(keys)) + (i - (len(node_types) - 1) / 2) * width, rows[f"{metric}_mean"],
                   width, yerr=_errors(rows, metric), capsize=2, label=node_type, gid=f"bars-{node_type}")
        ax.set_xticks(np.arange(len(keys)), keys, rotation=35, ha="right")
        _layout(fig, keys)
        ax.set_ylabel(f"{label} ({unit})")
        ax.set_title(f"{label.capitalize()} by node type, {phase}")
        ax.legend(title="node type")
        fig.text(0.01, 0.01, _sources(data) + ". Error bars: 95 % CI.", fontsize=6, wrap=True)
    return fig


def build_figures(stats: pd.DataFrame) -> dict:
    """name -> Figure, for whatever the data supports (missing metrics give no figure)."""
    figures = {}
    if stats is None or stats.empty:
        return figures
    node_types = sorted(stats["node_type"].dropna().unique())
    for node_type in node_types:
        data = stats[stats["node_type"] == node_type]
        suffix = f"_{node_type}" if len(node_types) > 1 else ""
        where = f", {node_type}"
        candidates = {
            f"fig1_inference_energy_per_sample{suffix}":
                bar_chart(data, "inference", "energy_per_sample_j", f"Inference: energy per sample{where}"),
            f"fig2_training_energy{suffix}":
                bar_chart(data, "training", "energy_kwh", f"Training: energy (PUE excluded){where}"),
            f"fig3_training_duration{suffix}":
                bar_chart(data, "training", "duration_s", f"Training: duration{where}"),
            f"energy_vs_params{suffix}": energy_vs_params(data, node_type),
        }
        if data["energy_per_sample_j_mean"].isna().all():  # historical data: no samples recorded
            candidates[f"fig1_inference_energy{suffix}"] = bar_chart(
                data, "inference", "energy_kwh", f"Inference: energy (PUE excluded){where}")
        figures.update({k: v for k, v in candidates.items() if v is not None})
    for phase in ("inference", "training"):
        for metric in ("energy_per_sample_j", "throughput"):
            fig = node_type_chart(stats, phase, metric)
            if fig is not None:
                figures[f"node_types_{phase}_{metric}"] = fig
    return figures


def write_figures(figures: dict, folder: Path, formats=("png", "svg")) -> list:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        for name, fig in figures.items():
            for ext in formats:
                path = folder / f"{name}.{ext}"
                fig.savefig(path, format=ext, metadata={"Date": None} if ext == "svg" else None)
                paths.append(path)
    return paths


def close_all(figures: dict) -> None:
    for fig in figures.values():
        plt.close(fig)


def bar_heights(fig: plt.Figure, gid: str | None = None) -> list:
    """The bars' heights, read back from a figure (for tests and checks); `gid` picks one series."""
    heights = []
    for ax in fig.axes:
        for container in ax.containers:
            if isinstance(container, matplotlib.container.BarContainer) and container.patches and (
                    gid is None or container.patches[0].get_gid() == gid):
                heights.extend(float(p.get_height()) for p in container.patches)
    return heights
