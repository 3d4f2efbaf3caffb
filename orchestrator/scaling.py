"""Scaling results: throughput and energy per sample against devices and workers, from the results table.

A scaled campaign's cells differ in `devices_per_node` x `nodes` (their *workers*: data-parallel
replicas) and agree on the workload otherwise (test, sub-test, phase, node type, precision,
execution, input, backend, batch scaling and per-device batch). Each point is compared with its
workload's 1-worker point (1 device x 1 node):

- speed-up = throughput(N) / throughput(1); **scaling efficiency** = speed-up / N
  (1: perfect; a strong- and a weak-scaling curve are never mixed: batch_scaling is part of the workload);
- **energy efficiency** = J/sample(N) / J/sample(1) (1: each sample costs what it did on one worker;
  above 1: scaling out costs energy per sample).

Intervals (95 %, log scale) only where both points have n >= 3; the energy of a multi-node cell
is the sum of one reading per host (jobs/workers.py), and an `incomplete` one (a host missing)
counts in no energy statistic. Reads the results table only (benchopt's rule), as the report does.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from orchestrator.intervals import MIN_N, log_ratio_test, no_interval_reason, t_interval

SCALE_KEYS = ("devices_per_node", "nodes")
WORKLOAD_KEYS = ("test", "subtest", "phase", "node_type", "precision", "execution", "input_shape", "backend",
                 "batch_scaling", "per_device_batch")
SCALING_FILE = "scaling.csv"


# --- collect: the columns of one multi-device / multi-node result ---------------------------------------------

def _sources(domains: dict) -> str:
    return ", ".join(f"{name} {d.get('source')}" for name, d in sorted(domains.items()) if isinstance(d, dict))


def _scheduler_readings(node: dict) -> dict:
    """A host's own readings from the schedulers' side (#15): {Kwollect label or `slurm`: joules or None}."""
    found = {label: e.get("joules") for label, e in sorted((node.get("external") or {}).items()) if isinstance(e, dict)}
    slurm = (node.get("other_sources") or {}).get("slurm")
    if isinstance(slurm, dict):
        found["slurm"] = slurm.get("joules")
    return found


def _node_text(node: dict) -> str:
    """`vm: 12.3 J (cpu rapl, ram ram-model; bmc 20.1 J)`: the host's meters with their sources, then its own
    scheduler-side readings."""
    total = node.get("total_joules")
    head = f"{total:.4g} J" if isinstance(total, (int, float)) else "no reading"
    parts = [_sources(node.get("domains") or {})] if isinstance(total, (int, float)) else []
    parts += [f"{label} {j:.4g} J" if isinstance(j, (int, float)) else f"{label} no reading"
              for label, j in _scheduler_readings(node).items()]
    parts = [p for p in parts if p]
    return f"{node.get('host')}: {head}" + (f" ({'; '.join(parts)})" if parts else "")


def parallel_columns(result: dict) -> dict:
    """results.csv columns of a scaled cell: workers, hosts, window skew, per-node energy with sources."""
    parallel = result.get("parallel") or {}
    window = result.get("window") or {}
    energy = result.get("energy") or {}
    nodes = energy.get("nodes")
    if nodes is None and energy.get("domains"):  # one worker: the cell's own reading is its one node's
        nodes = [{"host": (result.get("host") or {}).get("hostname"), "domains": energy["domains"],
                  "total_joules": energy.get("total_joules")}]
    nodes = [n for n in nodes or [] if isinstance(n, dict)]
    return {
        "workers": parallel.get("replicas_in_sync"),
        "hosts": parallel.get("hosts", 1),
        "data_parallel_strategy": parallel.get("strategy"),
        "window_start_skew_s": window.get("start_skew_s", 0.0 if window else None),
        "window_end_skew_s": window.get("end_skew_s", 0.0 if window else None),
        "energy_complete": energy.get("complete", bool(energy.get("domains"))) if energy else None,
        "energy_missing_hosts": ";".join(energy.get("missing_hosts") or []) or None,
        "energy_nodes": len(nodes),
        "energy_per_node": "; ".join(
            _node_text(n) for n in nodes) or None,
        "energy_nodes_json": json.dumps([{"host": n.get("host"), "joules": n.get("total_joules"),
                                          "sources": {k: d.get("source") for k, d in (n.get("domains") or {}).items()
                                                      if isinstance(d, dict)},
                                          "scheduler": _scheduler_readings(n)} for n in nodes]),
    }


# --- the scaling table ---------------------------------------------------------------------------------------

def _per_node(group: pd.DataFrame) -> str | None:
    """Mean energy per host over the group's cells, with each host's sources."""
    per_host, sources = {}, {}
    for text in group.get("energy_nodes_json", pd.Series(dtype=object)).dropna():
        try:
            nodes = json.loads(text)
        except (TypeError, ValueError):
            continue
        for node in nodes:
            if isinstance(node.get("joules"), (int, float)):
                per_host.setdefault(node["host"], []).append(node["joules"])
                sources.setdefault(node["host"], set()).update(f"{k} {v}" for k, v in node["sources"].items())
    if not per_host:
        return None
    return "; ".join(f"{host}: {sum(v) / len(v):.4g} J ({', '.join(sorted(sources[host]))})"
                     for host, v in sorted(per_host.items()))


def scaling_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (workload, devices_per_node, nodes) of done, valid, scaled cells, with its efficiencies."""
    from orchestrator.results import derive_metrics, valid_mask

    if results is None or not len(results) or "devices_per_node" not in results:
        return pd.DataFrame()
    cells = results[results["devices_per_node"].notna()]
    if "state" in cells:
        cells = cells[cells["state"] == "done"]
    cells = cells[valid_mask(cells).to_numpy()]
    if not len(cells):  # none done, or every one's energy reading invalid: nothing to scale
        return pd.DataFrame()
    cells = derive_metrics(cells)
    keys = [k for k in WORKLOAD_KEYS if k in cells]
    cells = cells.assign(**{k: cells[k].astype(str) for k in keys})
    for key in SCALE_KEYS:
        cells[key] = pd.to_numeric(cells[key], errors="coerce").astype(int)
    rows = []
    for _, workload in cells.groupby(keys, dropna=False, sort=True):
        points = {}
        for (devices, nodes), group in workload.groupby(list(SCALE_KEYS), sort=True):
            energy = group["energy_per_sample_j"].where(group["energy_kind"] != "incomplete") \
                if "energy_kind" in group else group["energy_per_sample_j"]
            points[(devices, nodes)] = (group, group["throughput"], energy)
        base = points.get((1, 1))
        for (devices, nodes), (group, throughput, energy) in points.items():
            row = {k: group[k].iloc[0] for k in keys}
            workers = devices * nodes
            row.update(devices_per_node=devices, nodes=nodes, workers=workers, n=len(group),
                       hosts=_first(group, "hosts"), batch_size=_first(group, "batch_size"))
            for name, values in (("throughput", throughput), ("energy_per_sample_j", energy)):
                mean, std, low, high = t_interval(values, positive=True)
                row.update({f"{name}_mean": mean, f"{name}_std": std, f"{name}_n": int(values.notna().sum()),
                            f"{name}_ci95_low": low, f"{name}_ci95_high": high})
            row["energy_kind"] = ";".join(sorted(set(group["energy_kind"].dropna()))) if "energy_kind" in group \
                else None
            row["energy_per_node"] = _per_node(group)
            row["window_skew_max_s"] = max(pd.to_numeric(group.get(c), errors="coerce").max()
                                           for c in ("window_start_skew_s", "window_end_skew_s")) \
                if "window_start_skew_s" in group else math.nan
            row.update(_efficiencies(base, throughput, energy, workers))
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values([*keys, "workers", "nodes"], kind="stable").reset_index(drop=True)


def _first(group: pd.DataFrame, column: str):
    values = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else pd.Series(dtype=float)
    return int(values.iloc[0]) if len(values) else None


def _stats(values: pd.Series) -> tuple:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return (float(values.mean()) if len(values) else math.nan,
            float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values))


def _efficiencies(base, throughput: pd.Series, energy: pd.Series, workers: int) -> dict:
    """Speed-up, scaling efficiency and energy efficiency against the 1-worker point, with log-scale CIs."""
    out = {}
    if base is None:
        note = "no 1-worker point (devices_per_node 1, nodes 1) of this workload to compare with"
        return {"speedup": math.nan, "scaling_efficiency": math.nan, "energy_efficiency": math.nan,
                "scaling_note": note}
    _, base_throughput, base_energy = base
    if throughput is base_throughput:  # the reference itself: 1 by definition, no interval
        return {"speedup": 1.0, "scaling_efficiency": 1.0, "energy_efficiency": 1.0, "scaling_note": "reference"}
    speed = log_ratio_test(*_stats(base_throughput), *_stats(throughput))
    out.update(speedup=speed["ratio"], speedup_ci95_low=speed["low"], speedup_ci95_high=speed["high"],
               scaling_efficiency=speed["ratio"] / workers, scaling_efficiency_ci95_low=speed["low"] / workers,
               scaling_efficiency_ci95_high=speed["high"] / workers)
    cost = log_ratio_test(*_stats(base_energy), *_stats(energy))
    out.update(energy_efficiency=cost["ratio"], energy_efficiency_ci95_low=cost["low"],
               energy_efficiency_ci95_high=cost["high"])
    n = min(_stats(base_throughput)[2], _stats(throughput)[2])
    out["scaling_note"] = no_interval_reason(n) if n < MIN_N else None
    return out


TABLE_COLUMNS = ("test", "phase", "backend", "devices_per_node", "nodes", "workers", "n", "batch_size",
                 "throughput_mean", "speedup", "scaling_efficiency", "scaling_efficiency_ci95_low",
                 "scaling_efficiency_ci95_high", "energy_per_sample_j_mean", "energy_efficiency",
                 "energy_kind", "window_skew_max_s", "energy_per_node")


def format_table(table: pd.DataFrame) -> str:
    """The scaling table as text, for the sweep's and collect's closing lines."""
    columns = [c for c in TABLE_COLUMNS if c in table]
    with pd.option_context("display.max_colwidth", 120, "display.width", 250):
        return table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}")


# --- the report's scaling figure -----------------------------------------------------------------------------

def scaling_figures(results: pd.DataFrame | None) -> dict:
    """{name: Figure}: scaling and energy efficiency against workers, one line per workload (none unscaled).

    Error bars only where both points have n >= 3; a point without a 1-worker reference is not drawn.
    """
    table = scaling_table(results)
    if not len(table) or table["scaling_efficiency"].isna().all():
        return {}
    from orchestrator.figures import FOOTNOTE_PT, plt as pyplot  # matplotlib, set up (Agg) by figures

    fig, (left, right) = pyplot.subplots(1, 2, figsize=(7.0, 3.0), layout="constrained")
    keys = [k for k in ("test", "phase", "node_type", "backend", "batch_scaling", "per_device_batch") if k in table]
    series = []
    workloads = table.groupby(keys, sort=True)
    for label, workload in workloads:
        name = " ".join(str(v) for v in (label if isinstance(label, tuple) else (label,))) if len(workloads) > 1 \
            else ""
        # Devices on one node, and workers over nodes: two curves, both from the 1 x 1 point.
        series.append((f"{name} devices (1 node)".strip(), workload[workload["nodes"] == 1]))
        if (workload["nodes"] > 1).any():
            series.append((f"{name} nodes (1 device each)".strip(), workload[workload["devices_per_node"] == 1]))
    for name, group in series:
        group = group.sort_values("workers")
        for ax, metric in ((left, "scaling_efficiency"), (right, "energy_efficiency")):
            low, high = group.get(f"{metric}_ci95_low"), group.get(f"{metric}_ci95_high")
            errors = None
            if low is not None and low.notna().any():
                errors = [(group[metric] - low).fillna(0).to_numpy(), (high - group[metric]).fillna(0).to_numpy()]
            ax.errorbar(group["workers"], group[metric], yerr=errors, marker="o", capsize=3, label=name)
    for ax, title in ((left, "scaling efficiency\n(speed-up / workers)"),
                      (right, "energy efficiency\n(J/sample at N / at 1)")):
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("workers (devices per node x nodes)")
        ax.set_title(title)
        ax.set_xticks(sorted(table["workers"].unique()))
    fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=FOOTNOTE_PT)
    kinds = ", ".join(sorted(set(";".join(table["energy_kind"].dropna()).split(";")) - {""})) or "unknown"
    fig.supxlabel(f"energy: {kinds}, one reading per host; error bars: 95 % CI where n >= 3", fontsize=FOOTNOTE_PT)
    if len(workloads) == 1:
        fig.suptitle(" ".join(str(v) for v in next(iter(workloads))[0]), fontsize=FOOTNOTE_PT)
    fig.caption = "Scaling: efficiency of data-parallel workers against the same workload on one worker"
    return {"scaling": fig}
