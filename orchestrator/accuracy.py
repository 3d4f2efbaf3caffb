"""What the energy buys: the fit phase's tables and figures, from the results table only.

- accuracy under budget: per test and budget, validation accuracy reached and energy spent (mean
  ± 95 % Student-t CI over repetitions; no interval from fewer than 3), the stop reasons and the
  meter that enforced the budget;
- dataset size: the same per train_fraction;
- time and energy to target, where a target accuracy was set;
- shallow against deep: each test's best mean accuracy and what it cost;
- figures: accuracy against energy with the Pareto front marked, accuracy-under-budget curves,
  dataset-size curves, and the catalog's reported ImageNet top-1 against inference energy per
  sample (the seed paper's Fig. 1, coloured by reported accuracy) where inference cells exist.

Measured accuracies (validation split of the campaign's dataset) and reported ones (published
ImageNet top-1, jobs.catalog) are never in the same column.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jobs.catalog import TESTS  # noqa: E402
from orchestrator.collect import t_interval  # noqa: E402
from orchestrator.results import source_label  # noqa: E402
from orchestrator.tables import Column, Table  # noqa: E402

MIN_N_FOR_CI = 3
FIT_KEYS = ["test", "node_type", "input_shape", "budget_j", "train_fraction"]
METRICS = {"accuracy": "accuracy_final", "energy": "energy_total_j", "time": "window_s",
           "energy_to_target": "energy_to_target_j", "time_to_target": "time_to_target_s",
           "overshoot": "budget_overshoot_j", "eval_energy": "fit_eval_j"}


def _interval(values: pd.Series) -> dict:
    values = pd.to_numeric(values, errors="coerce").dropna()
    mean, std, low, high = t_interval(values)
    if len(values) < MIN_N_FOR_CI:  # the project's rule: no interval from n < 3
        low = high = math.nan
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": len(values)}


def _joined(values) -> str:
    return "; ".join(sorted({str(v) for v in values if v is not None and v == v and str(v)})) or "–"


def _count_true(values) -> int:
    return 0 if values is None else sum(1 for v in values if v is True or v == 1.0 or str(v) == "True")


def fit_stats(results: pd.DataFrame | None) -> pd.DataFrame:
    """One row per fit group (test, node type, input, budget, train_fraction) of done cells."""
    if results is None or "phase" not in results or "accuracy_final" not in results:
        return pd.DataFrame()
    done = results[(results["phase"] == "fit") & (results["state"] == "done")]
    if done.empty:
        return pd.DataFrame()
    rows = []
    for key, group in done.groupby(FIT_KEYS, dropna=False, sort=True):
        row = dict(zip(FIT_KEYS, key))
        test = TESTS.get(row["test"])
        row["title"] = test.title if test else row["test"]
        row["family"] = test.family if test else _joined(group.get("family", []))
        row["cells"] = len(group)
        for name, column in METRICS.items():
            for part, value in _interval(group[column] if column in group else pd.Series(dtype=float)).items():
                row[f"{name}_{part}"] = value
        sources = []
        for domain in ("cpu", "gpu", "ram"):
            column = f"energy_{domain}_source"
            if column in group:
                sources += [f"{domain} {source_label(s)}" for s in sorted(set(group[column].dropna()))]
        row["energy_source"] = "; ".join(sources) or "unknown source"
        row["energy_kind"] = _joined(group.get("energy_kind", []))
        row["stop_reasons"] = ", ".join(f"{r} ×{n}" for r, n in sorted(group["stop_reason"].value_counts().items()))
        row["enforced_by"] = _joined(group.get("budget_enforced_by", []))
        enforceable = group.get("budget_enforceable", pd.Series(dtype=object)).dropna()
        row["budget_enforceable"] = None if enforceable.empty else bool(enforceable.astype(bool).all())
        row["within_budget"] = _count_true(group.get("budget_within"))
        row["target_reached"] = _count_true(group.get("target_reached"))
        row["skipped_images"] = int(pd.to_numeric(group.get("data_skipped"), errors="coerce").fillna(0).max())
        row["data_in_window"] = _joined(group.get("data_in_window", []))
        row["reported_top1"] = (test.reported or {}).get("top1") if test else None
        rows.append(row)
    return pd.DataFrame(rows)


# --- tables ---------------------------------------------------------------------------------------

def _budget_text(stats: pd.DataFrame) -> pd.DataFrame:
    stats = stats.copy()
    stats["budget"] = [("none" if b != b or b is None else f"{b:g} J") for b in stats["budget_j"]]
    stats["fraction"] = [f"{f:g}" if f == f and f is not None else "–" for f in stats["train_fraction"]]
    stats["enforced"] = [("not enforceable" if e is False else by) for e, by in
                         zip(stats["budget_enforceable"], stats["enforced_by"])]
    return stats


def accuracy_tables(stats: pd.DataFrame, campaign: str = "") -> list:
    if stats.empty:
        return []
    stats = _budget_text(stats)
    tables = []
    note = ("accuracy: measured on the validation split after training stopped; energy: the cell's whole "
            "window (training and evaluations), mean ± 95 % CI half-width (Student-t, none from n < 3)")
    budgeted = stats[stats["budget_j"].notna()]
    if not budgeted.empty:
        tables.append(Table("accuracy_under_budget", f"Accuracy under an energy budget ({campaign})", [
            Column("model", "title"), Column("budget", "budget"), Column("n", "cells"),
            Column("accuracy", "accuracy", True), Column("energy spent (J)", "energy", True),
            Column("overshoot (J)", "overshoot", True), Column("stopped", "stop_reasons"),
            Column("budget enforced by", "enforced"), Column("energy source", "energy_source")],
            budgeted.sort_values(["family", "title", "budget_j"]), [note]))
    fractions = stats[stats["train_fraction"].notna()]
    if fractions["train_fraction"].nunique() > 1:
        tables.append(Table("dataset_size", f"Accuracy and energy against dataset size ({campaign})", [
            Column("model", "title"), Column("train fraction", "fraction"), Column("budget", "budget"),
            Column("n", "cells"), Column("accuracy", "accuracy", True), Column("energy (J)", "energy", True),
            Column("time (s)", "time", True), Column("energy source", "energy_source")],
            fractions.sort_values(["family", "title", "budget_j", "train_fraction"]),
            [note, "the same seed gives nested subsets: each fraction's images include the smaller ones'"]))
    targeted = stats[stats["target_reached"] > 0]
    if not targeted.empty:
        tables.append(Table("time_energy_to_target", f"Time and energy to the target accuracy ({campaign})", [
            Column("model", "title"), Column("budget", "budget"), Column("fraction", "fraction"),
            Column("reached", "target_reached"), Column("of", "cells"),
            Column("time to target (s)", "time_to_target", True),
            Column("energy to target (J)", "energy_to_target", True), Column("energy source", "energy_source")],
            targeted.sort_values(["family", "title"]),
            ["as MLPerf Training: from the window's start to the end of the first evaluation at or above the "
             "target, evaluations included; intervals over the repetitions that reached it"]))
    best = stats.sort_values("accuracy_mean", ascending=False).groupby("test", sort=False).head(1)
    tables.append(Table("shallow_vs_deep", f"Shallow against deep: each model's best setting ({campaign})", [
        Column("family", "family"), Column("model", "title"), Column("budget", "budget"),
        Column("fraction", "fraction"), Column("n", "cells"), Column("accuracy", "accuracy", True),
        Column("energy (J)", "energy", True), Column("time (s)", "time", True),
        Column("reported ImageNet top-1", "reported_top1"), Column("energy source", "energy_source")],
        best.sort_values(["family", "accuracy_mean"], ascending=[True, False]),
        [note, "reported ImageNet top-1: published figure (TF-slim model zoo), not measured here"]))
    return tables


# --- figures --------------------------------------------------------------------------------------

def pareto_front(energy: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (less or equal energy and higher or equal accuracy)."""
    front = []
    for i in range(len(energy)):
        dominated = any((energy[j] <= energy[i] and accuracy[j] >= accuracy[i]) and
                        (energy[j] < energy[i] or accuracy[j] > accuracy[i]) for j in range(len(energy)))
        if not dominated:
            front.append(i)
    return np.array(sorted(front, key=lambda i: energy[i]), dtype=int)


def _yerr(data: pd.DataFrame, metric: str) -> np.ndarray:
    mean = data[f"{metric}_mean"].to_numpy(float)
    return np.vstack([np.nan_to_num(mean - data[f"{metric}_ci95_low"].to_numpy(float)),
                      np.nan_to_num(data[f"{metric}_ci95_high"].to_numpy(float) - mean)])


def _log_x(ax, ticks=None) -> None:
    """A log x axis labelled in plain numbers, without the overlapping minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    if ticks is not None:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _accuracy_axis(ax) -> None:
    ax.set_ylim(0, 1.05)  # an interval from 3 runs can reach past 0 or 1: the axis shows what accuracy can be
    ax.set_ylabel("validation accuracy")


def _footer(fig, stats: pd.DataFrame) -> None:
    fig.text(0.01, 0.01, "Energy: " + " | ".join(sorted(set(stats["energy_source"]))), fontsize=6, color="#555")


def accuracy_vs_energy(stats: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (family, title), group in stats.groupby(["family", "title"]):
        ax.errorbar(group["energy_mean"], group["accuracy_mean"], xerr=_yerr(group, "energy"),
                    yerr=_yerr(group, "accuracy"), fmt="o" if family == "deep" else "s", capsize=2,
                    label=f"{title} ({family})", gid=f"points-{group['test'].iloc[0]}")
    front = pareto_front(stats["energy_mean"].to_numpy(float), stats["accuracy_mean"].to_numpy(float))
    ax.plot(stats["energy_mean"].to_numpy(float)[front], stats["accuracy_mean"].to_numpy(float)[front],
            "k--", lw=1, label="Pareto front", gid="pareto-front")
    _log_x(ax)
    ax.set_xlabel("energy per cell (J, log)")
    _accuracy_axis(ax)
    ax.set_title("Accuracy against energy (95 % CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(bottom=0.16)
    _footer(fig, stats)
    return fig


def curves(stats: pd.DataFrame, x: str, xlabel: str, title: str) -> plt.Figure:
    fig, (acc, energy) = plt.subplots(1, 2, figsize=(9, 4))
    for title_, group in stats.groupby("title"):
        group = group.sort_values(x)
        acc.errorbar(group[x], group["accuracy_mean"], yerr=_yerr(group, "accuracy"), marker="o", capsize=2,
                     label=title_, gid=f"accuracy-{group['test'].iloc[0]}")
        energy.errorbar(group[x], group["energy_mean"], yerr=_yerr(group, "energy"), marker="o", capsize=2,
                        label=title_)
    for ax in (acc, energy):
        ax.set_xlabel(xlabel)
        if x == "budget_j":
            _log_x(ax, sorted(stats[x].dropna().unique()))
        else:
            ax.set_xticks(sorted(stats[x].dropna().unique()))
    _accuracy_axis(acc)
    energy.set_ylabel("energy spent (J)")
    if x == "budget_j":
        limits = sorted(stats[x].dropna().unique())
        energy.plot(limits, limits, "k:", lw=1, label="budget")
    acc.legend(fontsize=7)
    fig.suptitle(title)
    fig.subplots_adjust(bottom=0.18, wspace=0.3)
    _footer(fig, stats)
    return fig


def reported_vs_energy(inference_stats: pd.DataFrame) -> plt.Figure | None:
    """The seed paper's Fig. 1 question: inference energy per sample against published top-1.

    Energy per sample where the cells recorded their samples; otherwise (the historical reference)
    energy per sub-test, said on the axis.
    """
    per_sample = inference_stats["energy_per_sample_j_mean"].notna().any()
    metric, label = (("energy_per_sample_j_mean", "inference energy per sample (J, log)") if per_sample else
                     ("energy_j_mean", "inference energy per sub-test (J, log; samples not recorded)"))
    rows = [(TESTS[t].reported["top1"], e, TESTS[t].title) for t, e in
            zip(inference_stats["test"], inference_stats[metric])
            if t in TESTS and TESTS[t].reported and e == e]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    top1, energy, _ = zip(*rows)
    ax.scatter(energy, top1, c=top1, cmap="viridis", gid="reported")
    for accuracy, joules, name in rows:
        ax.annotate(name, (joules, accuracy), fontsize=7)
    _log_x(ax)
    ax.set_xlabel(label)
    ax.set_ylabel("reported ImageNet top-1 (TF-slim, not measured)")
    ax.set_title("Does a more accurate model cost more energy?")
    labels = sorted(set(inference_stats.get("energy_label", pd.Series(dtype=str)).dropna()))
    fig.text(0.01, 0.01, "Energy: " + " | ".join(labels), fontsize=6, color="#555")
    fig.subplots_adjust(bottom=0.16)
    return fig


def accuracy_figures(stats: pd.DataFrame, model_stats: pd.DataFrame | None = None) -> dict:
    figures = {}
    if not stats.empty:
        figures["accuracy_vs_energy"] = accuracy_vs_energy(stats)
        budgeted = stats[stats["budget_j"].notna()]
        if budgeted["budget_j"].nunique() > 1:
            figures["accuracy_under_budget"] = curves(budgeted, "budget_j", "energy budget (J, log)",
                                                      "Accuracy under an energy budget")
        if stats["train_fraction"].nunique() > 1:
            figures["dataset_size"] = curves(stats, "train_fraction", "fraction of the training split",
                                             "Accuracy and energy against dataset size")
    if model_stats is not None and len(model_stats) and "phase" in model_stats:
        inference = model_stats[model_stats["phase"] == "inference"]
        fig = reported_vs_energy(inference) if len(inference) else None
        if fig is not None:
            figures["reported_accuracy_vs_inference_energy"] = fig
    return figures


def accuracy_section(data, campaign: str = "") -> tuple:
    """(tables, figures) for the report; empty when the campaign has no fit cell."""
    stats = fit_stats(data.results)
    return accuracy_tables(stats, campaign), accuracy_figures(stats, data.stats)
