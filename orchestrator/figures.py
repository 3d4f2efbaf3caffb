"""Figures from a stats frame (orchestrator.results), as in the seed paper's Figures 1-3, PNG and SVG.

- inference energy per sample (Fig. 1), training energy (Fig. 2) and
  training duration (Fig. 3), both per unit of work as in Tables 2/3: one
  bar per model, 95 % CI error bars only where an interval exists (n >= 3),
  hatched bars for small-n or low-confidence rows, coloured by parameter
  count when there are several models;
- energy per sample against parameter count (log-log);
- node-type comparison: grouped bars, one bar per node type;
- a nightly trend (one line per metric over the history's runs) and, where
  a cell recorded meter samples (trace.parquet), its power trace.

Each figure carries a caption (`fig.caption`, used by the report) and states
its energy source under the plot in FOOTNOTE_PT type. PNG files are written
at PNG_DPI; the layout is constrained, so nothing is clipped.
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
PNG_DPI = 300
FOOTNOTE_PT = 8
HATCH = "//"


def _label(rec: dict, several_subtests: bool) -> str:
    return f"{rec['title']} ({rec['subtest']})" if several_subtests else str(rec["title"])


def _errors(data: pd.DataFrame, metric: str) -> np.ndarray:
    """Error bar lengths; NaN (no bar at all, not a zero-length cap) where there is no interval."""
    mean = data[f"{metric}_mean"].to_numpy(float)
    low = mean - data[f"{metric}_ci95_low"].to_numpy(float)
    high = data[f"{metric}_ci95_high"].to_numpy(float) - mean
    return np.vstack([low, high])


def _error_bars(ax, x, data: pd.DataFrame, metric: str, capsize: float = 3) -> None:
    """Draw error bars only for the rows that have an interval."""
    errors = _errors(data, metric)
    has = ~np.isnan(errors).any(axis=0)
    if has.any():
        ax.errorbar(np.asarray(x)[has], data[f"{metric}_mean"].to_numpy(float)[has], yerr=errors[:, has],
                    fmt="none", ecolor="black", capsize=capsize, linewidth=0.8, gid=f"errors-{metric}")


def _weak(data: pd.DataFrame) -> list:
    """Rows to mark: fewer than 3 repetitions (no interval) or a low-confidence energy reading."""
    small = data.get("small_n", pd.Series(False, index=data.index)).fillna(False).astype(bool)
    low = data.get("low_confidence_cells", pd.Series(0, index=data.index)).fillna(0) > 0
    return list(small | low)


def _footnote(fig, data: pd.DataFrame, marked: bool) -> None:
    text = _sources(data) + ". Error bars: 95 % CI (log scale), only where n >= 3."
    if marked:
        text += " Hatched: n < 3 (no interval) or low-confidence energy."
    fig.supxlabel(text, fontsize=FOOTNOTE_PT, x=0.01, ha="left", wrap=True)


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


def _figure(width: float, height: float):
    return plt.subplots(figsize=(width, height), layout="constrained")


def bar_chart(stats: pd.DataFrame, phase: str, metric: str, title: str, caption: str = "") -> plt.Figure | None:
    """One bar per model (rows of `phase`, one node type), CI error bars, coloured by parameter count."""
    data = stats[(stats["phase"] == phase) & stats[f"{metric}_mean"].notna()].reset_index(drop=True)
    if data.empty:
        return None
    several = data.groupby("test")["subtest"].nunique().max() > 1
    label, unit, _ = METRICS[metric]
    params = data["params"].dropna()
    coloured = params[params > 0].nunique() > 1  # one model: a colour bar would explain nothing
    norm = _param_norm(data["params"])
    cmap = matplotlib.colormaps["viridis"]
    weak = _weak(data)
    with plt.rc_context(STYLE):
        fig, ax = _figure(max(5.0, 0.7 * len(data) + 2), 4.8)
        x = np.arange(len(data))
        bar_colors = [cmap(norm(p)) if coloured and p == p and p > 0 else "#4c72b0" for p in data["params"]]
        bars = ax.bar(x, data[f"{metric}_mean"], color=bar_colors, edgecolor="black", linewidth=0.5,
                      gid=f"bars-{metric}")
        for bar, mark in zip(bars, weak):
            if mark:
                bar.set_hatch(HATCH)
        _error_bars(ax, x, data, metric)
        labels = [_label(r, several) for r in data.to_dict("records")]
        ax.set_xticks(x, labels, rotation=35, ha="right")
        ax.set_ylabel(f"{label} ({unit})")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        if coloured:
            mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(mappable, ax=ax, label="parameters", fraction=0.04, pad=0.02)
        _footnote(fig, data, any(weak))
    fig.caption = caption or title
    return fig


def energy_vs_params(stats: pd.DataFrame, node_type: str) -> plt.Figure | None:
    metric = "energy_per_sample_j"
    data = stats[stats[f"{metric}_mean"].notna() & (stats["params"] > 0)]
    if data.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = _figure(5.5, 4.4)
        for marker, (phase, group) in zip("os^", data.groupby("phase")):
            x = group["params"].to_numpy(float)
            ax.plot(x, group[f"{metric}_mean"], marker, label=phase)
            _error_bars(ax, x, group, metric)
            for rec in group.to_dict("records"):
                ax.annotate(str(rec["title"]), (rec["params"], rec[f"{metric}_mean"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("energy per sample (J)")
        ax.set_title(f"Energy per sample vs parameter count, {node_type}")
        ax.legend()
        _footnote(fig, data, False)
    fig.caption = f"Energy per sample against parameter count (log-log), {node_type}"
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
    marked = False
    with plt.rc_context(STYLE):
        fig, ax = _figure(max(5.0, 0.9 * len(keys) + 2), 4.8)
        for i, node_type in enumerate(node_types):
            rows = data[data["node_type"] == node_type].set_index("key").reindex(keys)
            x = np.arange(len(keys)) + (i - (len(node_types) - 1) / 2) * width
            bars = ax.bar(x, rows[f"{metric}_mean"], width, label=node_type, gid=f"bars-{node_type}")
            weak = _weak(rows.reset_index())
            for bar, mark in zip(bars, weak):
                if mark:
                    bar.set_hatch(HATCH)
            marked |= any(weak)
            _error_bars(ax, x, rows.reset_index(), metric, capsize=2)
        ax.set_xticks(np.arange(len(keys)), keys, rotation=35, ha="right")
        ax.set_ylabel(f"{label} ({unit})")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{label.capitalize()} by node type, {phase}")
        ax.legend(title="node type")
        _footnote(fig, data, marked)
    fig.caption = f"{label.capitalize()} ({unit}) by node type, {phase}"
    return fig


def trend_figure(history: pd.DataFrame, metrics=None) -> plt.Figure | None:
    """Nightly trend: each (node type, test, sub-test, phase) series of valid runs over time, one panel per metric."""
    if history is None or not len(history):
        return None
    valid = history[history["sanity"] == "ok"] if "sanity" in history else history
    metrics = [m for m in (metrics or sorted(valid["metric"].unique())) if (valid["metric"] == m).any()]
    if not metrics:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(metrics), 1, figsize=(7.0, 2.6 * len(metrics) + 0.6), layout="constrained",
                                 squeeze=False)
        for ax, metric in zip(axes[:, 0], metrics):
            rows = valid[valid["metric"] == metric]
            runs = sorted(rows["run_id"].unique())
            position = {r: i for i, r in enumerate(runs)}
            for key, series in rows.groupby(["node_type", "test", "subtest", "phase"]):
                series = series.sort_values("run_id")
                ax.plot([position[r] for r in series["run_id"]], series["value"], marker="o", markersize=3,
                        label=" ".join(map(str, key)), gid=f"trend-{metric}-{'-'.join(map(str, key))}")
            label, unit, _ = METRICS.get(metric, (metric, "", False))
            ax.set_ylabel(f"{label} ({unit})")
            ax.set_xticks(range(len(runs)), runs, rotation=35, ha="right", fontsize=7)
            ax.legend(fontsize=7)
        axes[0, 0].set_title("Nightly trend (valid runs)")
        fig.supxlabel("Sanity-broken runs are left out; one point per distinct campaign.", fontsize=FOOTNOTE_PT,
                      x=0.01, ha="left")
    fig.caption = "Nightly trend of " + ", ".join(metrics) + " over the recorded runs"
    return fig


def trace_figure(trace: pd.DataFrame, title: str, window: tuple | None = None, source: str = "") -> plt.Figure | None:
    """A cell's power samples per domain (trace.parquet: t_unix, domain, device, power_w), window edges shaded."""
    needed = {"t_unix", "domain", "power_w"}
    if trace is None or not len(trace) or not needed <= set(trace.columns):
        return None
    t0 = float(trace["t_unix"].min())
    with plt.rc_context(STYLE):
        fig, ax = _figure(7.0, 3.6)
        group_keys = ["domain", "device"] if "device" in trace else ["domain"]
        for key, series in trace.sort_values("t_unix").groupby(group_keys, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            name = " ".join(str(k) for k in key if k is not None and k == k)
            ax.plot(series["t_unix"] - t0, series["power_w"], linewidth=0.8, label=name, gid=f"trace-{name}")
        if window and all(isinstance(v, (int, float)) and v == v for v in window):
            ax.axvspan(window[0] - t0, window[1] - t0, color="0.9", zorder=0, label="measurement window")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (W)")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.supxlabel(f"Meter samples{': ' + source if source else ''}.", fontsize=FOOTNOTE_PT, x=0.01, ha="left")
    fig.caption = f"Power trace: {title}"
    return fig


def build_figures(stats: pd.DataFrame, include_pue: bool = False) -> dict:
    """name -> Figure, for whatever the data supports (missing metrics give no figure).

    Fig. 2 and 3 use the same work and the same PUE choice as Tables 2/3.
    """
    from orchestrator.tables import work_caption

    figures = {}
    if stats is None or stats.empty:
        return figures
    node_types = sorted(stats["node_type"].dropna().unique())
    pue = "PUE included" if include_pue else "PUE excluded"
    for node_type in node_types:
        data = stats[stats["node_type"] == node_type]
        suffix = f"_{node_type}" if len(node_types) > 1 else ""
        where = f", {node_type}"
        historical = bool(len(data)) and (data["energy_kind"] == "historical").all()
        work = work_caption(data)
        if historical:
            energy_metric = "facility_energy_kwh" if include_pue else "energy_kwh"
            fig2 = bar_chart(data, "training", energy_metric, f"Training: window energy ({pue}){where}",
                             f"Fig. 2: training energy of the tracker's window ({pue}; not normalisable to work){where}")
            fig3 = bar_chart(data, "training", "duration_s", f"Training: window duration{where}",
                             f"Fig. 3: training duration of the tracker's window{where}")
        else:
            energy_metric = "work_facility_energy_kwh" if include_pue else "work_energy_kwh"
            fig2 = bar_chart(data, "training", energy_metric, f"Training: energy {work} ({pue}){where}",
                             f"Fig. 2: training energy {work} ({pue}){where}")
            fig3 = bar_chart(data, "training", "work_duration_s", f"Training: duration {work}{where}",
                             f"Fig. 3: training duration {work}{where}")
        candidates = {
            f"fig1_inference_energy_per_sample{suffix}":
                bar_chart(data, "inference", "energy_per_sample_j", f"Inference: energy per sample{where}",
                          f"Fig. 1: inference energy per sample (PUE excluded){where}"),
            f"fig2_training_energy{suffix}": fig2,
            f"fig3_training_duration{suffix}": fig3,
            f"energy_vs_params{suffix}": energy_vs_params(data, node_type),
        }
        if data["energy_per_sample_j_mean"].isna().all():  # historical data: no samples recorded
            metric = "facility_energy_kwh" if include_pue else "energy_kwh"
            candidates[f"fig1_inference_energy{suffix}"] = bar_chart(
                data, "inference", metric, f"Inference: window energy ({pue}){where}",
                f"Fig. 1: inference energy of the tracker's window ({pue}; not normalisable to work){where}")
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
                fig.savefig(path, format=ext, metadata={"Date": None} if ext == "svg" else None,
                            dpi=PNG_DPI if ext == "png" else None)
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
