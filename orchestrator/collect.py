"""Read every cell of a campaign into one tidy table, and summarise it with confidence intervals.

The table (results.csv / results.parquet) is the only interface between
running and reporting. A corrupt or partial file never stops collection:
the cell gets a row saying so, and the problem is listed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats

from jobs.records import RESULT_FILE, atomic_write, atomic_write_text, read_json
from orchestrator.store import Campaign

GROUP_KEYS = ["test", "subtest", "phase", "node_type", "backend", "precision", "execution", "batch_size",
              "input_shape"]
SUMMARY_METRICS = ["window_s", "throughput_samples_per_s", "energy_total_j", "energy_per_sample_j",
                   "energy_net_per_sample_j", "co2_g"]
PARAM_COLUMNS = ["test", "subtest", "phase", "node_type", "backend", "repetition", "task", "batch_size", "input_shape",
                 "precision", "execution", "warmup_iterations", "duration_s", "iterations", "seed"]
DOMAINS = ("cpu", "gpu", "ram")
EXTERNAL = ("wattmeter", "pdu", "bmc")


@dataclass
class Collected:
    results: pd.DataFrame
    summary: pd.DataFrame
    problems: list = field(default_factory=list)


def _param_values(params: dict) -> dict:
    row = {key: params.get(key) for key in PARAM_COLUMNS}
    row["backend"] = row["backend"] or "tensorflow"  # results from before the backend axis ran TensorFlow
    if isinstance(row["input_shape"], list):
        row["input_shape"] = "x".join(map(str, row["input_shape"]))
    return row


def result_row(result: dict) -> dict:
    """Flatten one result.json into a table row; missing parts become empty cells."""
    row = _param_values(result.get("params", {}))
    host = result.get("host", {})
    software = result.get("software", {})
    window = result.get("window", {})
    latency = window.get("latency_s", {})
    energy = result.get("energy", {})
    co2 = energy.get("co2", {})
    row.update({
        "result_status": result.get("status"),
        "error": (result.get("error") or {}).get("message"),
        "hostname": host.get("hostname"),
        "cpu_model": host.get("cpu_model"),
        "gpu_models": ";".join(g.get("name", "") for g in host.get("gpus", [])) or None,
        "gpu_driver": host.get("gpu_driver"),
        "tensorflow": software.get("tensorflow"),
        "keras": software.get("keras"),
        "codecarbon": software.get("codecarbon"),
        "compute_device": result.get("devices", {}).get("compute_device"),
        "trainable_params": result.get("model", {}).get("trainable_params"),
        "window_s": window.get("duration_s"),
        "iterations_measured": window.get("iterations"),
        "samples": window.get("samples"),
        "throughput_samples_per_s": window.get("throughput_samples_per_s"),
        "latency_mean_s": latency.get("mean"),
        "latency_std_s": latency.get("std"),
        "latency_p50_s": latency.get("p50"),
        "latency_p95_s": latency.get("p95"),
        "energy_total_j": energy.get("total_joules"),
        "energy_kind": energy.get("total_kind"),
        "energy_per_sample_j": energy.get("joules_per_sample"),
        "energy_net_j": energy.get("total_net_joules"),
        "energy_net_per_sample_j": energy.get("net_joules_per_sample"),
        "idle_power_w": sum((energy.get("idle") or {}).get("power_w", {}).values()) if energy.get("idle") else None,
        "low_confidence": "; ".join(energy.get("low_confidence") or []) or None,
        "co2_g": co2.get("grams"),
        "carbon_intensity_g_per_kwh": co2.get("carbon_intensity_g_per_kwh"),
        "pue": co2.get("pue"),
        "factor_source": co2.get("factor_source"),
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),
    })
    for name in DOMAINS:
        domain = energy.get("domains", {}).get(name, {})
        row[f"energy_{name}_j"] = domain.get("joules")
        row[f"energy_{name}_source"] = domain.get("source")
    # Node-level ground truth added after the job (Grid'5000 Kwollect: wall or BMC power).
    for label in EXTERNAL:
        external = (energy.get("external") or {}).get(label) or {}
        row[f"external_{label}_j"] = external.get("joules")
        row[f"external_{label}_ratio"] = external.get("ratio_to_software")
        row[f"external_{label}_complete"] = external.get("complete")
    return row


def _cell_row(campaign: Campaign, entry: dict, problems: list) -> dict:
    cell_id = entry["id"]
    status = campaign.status(cell_id)
    row = {"cell_id": cell_id, "state": status["state"], "reason": status.get("reason"),
           "attempts": status.get("attempts", 0)}
    path = campaign.cell_dir(cell_id) / RESULT_FILE
    try:
        result = read_json(path)
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
        row.update(result_row(result))
    except FileNotFoundError:
        row.update(_param_values(entry))
        if status["state"] == "done":
            problems.append(f"{cell_id}: status is done but {RESULT_FILE} is missing")
            row["state"] = "corrupt"
    except (ValueError, TypeError, AttributeError) as exc:
        problems.append(f"{cell_id}: unreadable {RESULT_FILE}: {exc}")
        row.update(_param_values(entry))
        row["state"], row["reason"] = "corrupt", f"unreadable {RESULT_FILE}: {exc}"
    if row["state"] == "done" and not isinstance(row.get("throughput_samples_per_s"), (int, float)):
        problems.append(f"{cell_id}: {RESULT_FILE} lacks its measurements")
        row["state"] = "corrupt"
    return row


def t_interval(values: pd.Series) -> tuple:
    """Mean, sample std and Student-t 95 % CI; the CI needs two values at least."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = values.mean()
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    std = values.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    done = results[results["state"] == "done"] if "state" in results else results.iloc[0:0]
    rows = []
    for key, group in done.groupby(GROUP_KEYS, dropna=False, sort=True):
        row = dict(zip(GROUP_KEYS, key))
        row["n"] = len(group)
        for metric in SUMMARY_METRICS:
            mean, std, low, high = t_interval(group[metric])
            row.update({f"{metric}_mean": mean, f"{metric}_std": std,
                        f"{metric}_ci95_low": low, f"{metric}_ci95_high": high})
        # Sources travel with the numbers, so estimates are never read as measurements.
        row["energy_kind"] = ";".join(sorted(set(group["energy_kind"].dropna())))
        for name in DOMAINS:
            row[f"energy_{name}_source"] = ";".join(sorted(set(group[f"energy_{name}_source"].dropna())))
        rows.append(row)
    return pd.DataFrame(rows, columns=GROUP_KEYS + ["n"] + [
        f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "ci95_low", "ci95_high")] + [
        "energy_kind"] + [f"energy_{d}_source" for d in DOMAINS])


def apply_factors(results: pd.DataFrame, pue: float | None = None,
                  carbon_intensity_g_per_kwh: float | None = None) -> pd.DataFrame:
    """CO2 from raw energy, with the recorded factors or new ones: no rerun needed to change them."""
    if not len(results) or "energy_total_j" not in results:
        return results
    results = results.copy()
    if pue is not None:
        results["pue"] = float(pue)
    if carbon_intensity_g_per_kwh is not None:
        results["carbon_intensity_g_per_kwh"] = float(carbon_intensity_g_per_kwh)
    if pue is not None or carbon_intensity_g_per_kwh is not None:
        results["factor_source"] = "given to collect"
    results["co2_g"] = results["energy_total_j"] / 3.6e6 * results["pue"] * results["carbon_intensity_g_per_kwh"]
    return results


def collect(campaign_root: Path, pue: float | None = None,
            carbon_intensity_g_per_kwh: float | None = None) -> Collected:
    campaign = Campaign(campaign_root)
    problems = []
    rows = [_cell_row(campaign, entry, problems) for entry in campaign.manifest()["cells"]]
    results = apply_factors(pd.DataFrame(rows), pue, carbon_intensity_g_per_kwh)
    summary = summarise(results)
    atomic_write(campaign.root / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(campaign.root / "results.parquet", lambda p: results.to_parquet(p, index=False))
    atomic_write(campaign.root / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write_text(campaign.root / "problems.json", json.dumps(problems, indent=2))
    return Collected(results, summary, problems)
