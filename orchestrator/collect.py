"""Read every cell of a campaign into one tidy table, and summarise it with confidence intervals.

The table (results.csv / results.parquet) is the only interface between
running and reporting. A corrupt or partial file never stops collection:
the cell gets a row saying so, and the problem is listed. Files are read
through orchestrator.safeio (no links followed, no blocking on a FIFO).

The summary (summary.csv) is orchestrator.results.aggregate, the same
function every report uses, so the numbers on disk and in a report agree.
The emission factors (PUE, carbon intensity) given to `collect` are kept in
the campaign (factors.json) and reused by later collects until changed.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.backends import DEFAULT_BACKEND  # results written before the backend column existed ran it
from jobs.records import RESULT_FILE, RESULT_SCHEMA_VERSION, STATES, STATUS_FILE, atomic_write, atomic_write_text
from orchestrator import safeio
from orchestrator.errors import UserError
from orchestrator.intervals import t_interval  # noqa: F401  (re-exported: older callers import it from here)

GROUP_KEYS = ["test", "subtest", "phase", "node_type", "precision", "execution", "batch_size", "input_shape",
              "backend", "budget_j", "train_fraction",  # these two: fit cells only (empty elsewhere)
              "devices_per_node", "nodes"]  # scale (#15): scaled sweeps only (empty elsewhere)
PARAM_COLUMNS = ["test", "subtest", "phase", "node_type", "backend", "repetition", "task", "batch_size", "input_shape",
                 "precision", "execution", "warmup_iterations", "duration_s", "iterations", "seed"]
SCALE_COLUMNS = ("devices_per_node", "nodes", "batch_scaling", "per_device_batch")  # scale (#15)
DOMAINS = ("cpu", "gpu", "ram")
EXTERNAL = ("wattmeter", "pdu", "bmc")
MANIFEST_FILE = "manifest.json"
FACTORS_FILE = "factors.json"


@dataclass
class Collected:
    results: pd.DataFrame
    summary: pd.DataFrame
    problems: list = field(default_factory=list)
    factors: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    scaling: pd.DataFrame | None = None  # scale (#15): scaling.csv, for scaled campaigns only


def _param_values(params: dict) -> dict:
    params = params if isinstance(params, dict) else {}
    row = {key: params.get(key) for key in PARAM_COLUMNS}
    row["backend"] = row["backend"] or DEFAULT_BACKEND
    if isinstance(row["input_shape"], list):
        row["input_shape"] = "x".join(map(str, row["input_shape"]))
    row.update(fit_param_values(params))
    row.update({key: params.get(key) for key in SCALE_COLUMNS})  # scale (#15)
    return row


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def fit_param_values(params: dict) -> dict:
    """The fit phase's axes (budget, train_fraction) and dataset, empty for other phases."""
    budget = params.get("budget") or {}
    dataset = params.get("dataset") or {}
    return {"budget_j": budget.get("joules"), "train_fraction": params.get("train_fraction"),
            "dataset_kind": dataset.get("kind"), "dataset_path": dataset.get("path")}


def fit_columns(result: dict) -> dict:
    """Accuracy is a result: the fit phase's outcome, budget record and data report, flattened."""
    fit = result.get("fit") or {}
    data = result.get("data") or {}
    budget = fit.get("budget") or {}
    curve = fit.get("curve") or []
    live = curve[-1] if curve else {}
    return {
        "family": (result.get("model") or {}).get("family"),
        "accuracy_final": fit.get("final_accuracy"),
        "accuracy_best": fit.get("best_accuracy"),
        "accuracy_kind": fit.get("accuracy_kind"),
        "stop_reason": fit.get("stop_reason"),
        "epochs_run": fit.get("epochs_run"),
        "target_accuracy": fit.get("target_accuracy"),
        "target_reached": fit.get("target_reached"),
        "time_to_target_s": fit.get("time_to_target_s"),
        "energy_to_target_j": fit.get("energy_to_target_j"),
        "fit_train_s": fit.get("train_s"),
        "fit_eval_s": fit.get("eval_s"),
        "fit_eval_j": fit.get("eval_joules"),
        "live_energy_j": live.get("energy_total_j"),
        "live_energy_source": fit.get("live_meter"),
        "budget_enforceable": budget.get("enforceable"),
        "budget_enforced_by": budget.get("enforced_by"),
        "budget_stopped": budget.get("stopped_by_budget"),
        "budget_overshoot_j": budget.get("overshoot_joules"),
        "budget_within": budget.get("within_budget"),
        "data_in_window": data.get("in_window"),
        "data_train_samples": data.get("train_samples"),
        "data_val_samples": data.get("val_samples"),
        "data_skipped": data.get("skipped_count"),
        "data_skipped_files": ";".join(s.get("path", "") for s in data.get("skipped") or []) or None,
    }


def result_row(result: dict) -> dict:
    """Flatten one result.json into a table row; missing parts become empty cells."""
    row = _param_values(result.get("params", {}))
    host = _dict(result.get("host"))
    software = _dict(result.get("software"))
    window = _dict(result.get("window"))
    latency = _dict(window.get("latency_s"))
    energy = _dict(result.get("energy"))
    co2 = _dict(energy.get("co2"))
    uncertainty = _dict(energy.get("uncertainty"))
    gpus = host.get("gpus") if isinstance(host.get("gpus"), list) else []
    row.update({
        "result_status": result.get("status"),
        "result_schema_version": result.get("schema_version"),
        "error": _dict(result.get("error")).get("message"),
        "hostname": host.get("hostname"),
        "cpu_model": host.get("cpu_model"),
        "gpu_models": ";".join(_dict(g).get("name", "") for g in gpus) or None,
        "gpu_driver": host.get("gpu_driver"),
        "tensorflow": software.get("tensorflow"),
        "keras": software.get("keras"),
        "codecarbon": software.get("codecarbon"),
        "compute_device": _dict(result.get("devices")).get("compute_device"),
        "trainable_params": _dict(result.get("model")).get("trainable_params"),
        "window_s": window.get("duration_s"),
        "window_start_unix": window.get("start_unix"),
        "window_end_unix": window.get("end_unix"),
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
        "idle_power_w": sum(_dict(_dict(energy.get("idle")).get("power_w")).values()) if energy.get("idle") else None,
        "low_confidence": "; ".join(energy.get("low_confidence") or []) or None,
        # Why a number is an estimate (a meter that could not run, and how to fix it): shown once per campaign.
        "energy_notes": " | ".join(map(str, energy.get("notes") or [])) or None,
        "energy_systematic_rel": uncertainty.get("systematic_rel"),
        "energy_valid": energy.get("valid"),
        "energy_invalid_reasons": "; ".join(map(str, energy.get("invalid_reasons") or [])) or None,
        "co2_g": co2.get("grams"),
        "carbon_intensity_g_per_kwh": co2.get("carbon_intensity_g_per_kwh"),
        "pue": co2.get("pue"),
        "factor_source": co2.get("factor_source"),
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),
    })
    if result.get("fit") is not None or result.get("data") is not None:
        row.update(fit_columns(result))
    if result.get("parallel") is not None:  # scale (#15): workers, hosts, per-node energy, window skew
        from orchestrator.scaling import parallel_columns

        row.update(parallel_columns(result))
    for name in DOMAINS:
        domain = _dict(_dict(energy.get("domains")).get(name))
        row[f"energy_{name}_j"] = domain.get("joules")
        row[f"energy_{name}_source"] = domain.get("source")
    # Node-level ground truth added after the job (Grid'5000 Kwollect: wall or BMC power).
    for label in EXTERNAL:
        external = _dict(_dict(energy.get("external")).get(label))
        row[f"external_{label}_j"] = external.get("joules")
        row[f"external_{label}_ratio"] = external.get("ratio_to_software")
        row[f"external_{label}_complete"] = external.get("complete")
    return row


# ---------------------------------------------------------------- reading a campaign without trusting it


def read_manifest(root: Path) -> dict:
    """The manifest, checked: a dict whose `cells` is a list; a missing or damaged one is a UserError (exit 2)."""
    path = Path(root) / MANIFEST_FILE
    try:
        manifest = safeio.read_json(path)
    except FileNotFoundError:
        raise UserError(f"no campaign at {root} (no {MANIFEST_FILE}); run a sweep first") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable: {safeio.describe(exc)}",
                        ["rerun the sweep to rewrite it (results already measured are kept)"]) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), list):
        raise UserError(f"{path} is not a campaign manifest (no list of cells)",
                        ["rerun the sweep to rewrite it (results already measured are kept)"])
    return manifest


def manifest_cells(manifest: dict, problems: list) -> list:
    """The manifest's cell entries that have a usable id; the others are listed as problems."""
    cells, seen = [], set()
    for index, entry in enumerate(manifest.get("cells", [])):
        cell_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(cell_id, str) or not cell_id or "/" in cell_id or cell_id in (".", ".."):
            problems.append(f"manifest cell #{index}: no valid id ({str(entry)[:60]})")
            continue
        if cell_id in seen:
            problems.append(f"manifest cell #{index}: id {cell_id} listed twice")
            continue
        seen.add(cell_id)
        cells.append(entry)
    return cells


def read_cell_status(cell_dir: Path) -> dict:
    """A cell's status.json read safely; a damaged one is a failed status with the reason."""
    try:
        status = safeio.read_json(Path(cell_dir) / STATUS_FILE)
    except FileNotFoundError:
        return {"state": "pending", "attempts": 0}
    except (OSError, ValueError) as exc:
        return {"state": "failed", "reason": f"unreadable {STATUS_FILE}: {safeio.describe(exc)}", "attempts": 0,
                "damaged": True}
    if not isinstance(status, dict) or status.get("state") not in STATES:
        return {"state": "failed", "reason": f"{STATUS_FILE} is not a valid status record", "attempts": 0,
                "damaged": True}
    return status


def _cell_row(root: Path, entry: dict, problems: list) -> dict:
    cell_id = entry["id"]
    cell_dir = Path(root) / "cells" / cell_id
    status = read_cell_status(cell_dir)
    if status.get("damaged"):
        problems.append(f"{cell_id}: {status['reason']}")
    row = {"cell_id": cell_id, "state": status["state"], "reason": status.get("reason"),
           "attempts": status.get("attempts", 0)}
    path = cell_dir / RESULT_FILE
    try:
        result = safeio.read_json(path)
        if not isinstance(result, dict):
            raise ValueError("not a JSON object")
        row.update(result_row(result))
    except FileNotFoundError:
        row.update(_param_values(entry))
        if status["state"] == "done":
            problems.append(f"{cell_id}: status is done but {RESULT_FILE} is missing")
            row["state"] = "corrupt"
        return row
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        reason = f"unreadable {RESULT_FILE}: {safeio.describe(exc)}"
        problems.append(f"{cell_id}: {reason}")
        row.update(_param_values(entry))
        row["state"], row["reason"] = "corrupt", reason
        return row
    if row["state"] == "done":
        reason = _invalid_result(row)
        if reason:
            problems.append(f"{cell_id}: {reason}")
            row["state"], row["reason"] = "corrupt", reason
    return row


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _invalid_result(row: dict) -> str:
    """Why a done cell's numbers cannot be used (kept out of every summary), or ''."""
    version = row.get("result_schema_version")
    if version is not None and version != RESULT_SCHEMA_VERSION:
        return f"{RESULT_FILE} has schema_version {version!r}; this tool reads {RESULT_SCHEMA_VERSION}"
    throughput = _number(row.get("throughput_samples_per_s"))
    if throughput is None:
        return f"{RESULT_FILE} lacks its measurements"
    if not math.isfinite(throughput) or throughput <= 0:
        return f"{RESULT_FILE} has an impossible throughput ({row.get('throughput_samples_per_s')})"
    energy = row.get("energy_total_j")
    if energy is not None:
        value = _number(energy)
        if value is None or not math.isfinite(value) or value < 0:
            return f"{RESULT_FILE} has an impossible energy ({energy!r} J)"
    for name in DOMAINS:
        joules = row.get(f"energy_{name}_j")
        if joules is not None and (_number(joules) is None or not math.isfinite(joules) or joules < 0):
            return f"{RESULT_FILE} has an impossible {name} energy ({joules!r} J)"
    return ""


# ---------------------------------------------------------------- emission factors


def check_factors(pue=None, carbon_intensity_g_per_kwh=None) -> None:
    """The sweep's rules for the factors: PUE >= 1 (a data centre cannot use less than its IT), intensity >= 0."""
    if pue is not None and not (isinstance(pue, (int, float)) and math.isfinite(pue) and pue >= 1):
        raise UserError(f"--pue {pue}: a PUE is at least 1 (facility energy / IT energy)")
    if carbon_intensity_g_per_kwh is not None and not (
            isinstance(carbon_intensity_g_per_kwh, (int, float)) and math.isfinite(carbon_intensity_g_per_kwh)
            and carbon_intensity_g_per_kwh >= 0):
        raise UserError(f"--carbon-intensity {carbon_intensity_g_per_kwh}: a carbon intensity is >= 0 g/kWh")


def stored_factors(root: Path) -> dict:
    """The factors an earlier `collect --pue/--carbon-intensity` kept in the campaign ({} when none)."""
    try:
        factors = safeio.read_json(Path(root) / FACTORS_FILE)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return factors if isinstance(factors, dict) else {}


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
    energy = pd.to_numeric(results["energy_total_j"], errors="coerce")
    results["co2_g"] = (energy / 3.6e6 * pd.to_numeric(results.get("pue"), errors="coerce")
                        * pd.to_numeric(results.get("carbon_intensity_g_per_kwh"), errors="coerce"))
    return results


def factors_in_use(results: pd.DataFrame) -> dict:
    """{'pue': '1.2', 'carbon_intensity_g_per_kwh': '56', 'source': ...} as used by the done cells."""
    done = results[results["state"] == "done"] if "state" in results else results
    out = {}
    for column in ("pue", "carbon_intensity_g_per_kwh", "factor_source"):
        values = sorted({str(v if not isinstance(v, float) else f"{v:g}") for v in done.get(column, [])
                         if v is not None and v == v})
        out[column] = ", ".join(values) or "unknown"
    return out


# ---------------------------------------------------------------- why a number is what it is


def campaign_notes(results: pd.DataFrame) -> list:
    """Meter notes and fixes, confidence and validity, once per campaign (with how many cells each concerns)."""
    if results is None or not len(results):
        return []
    done = results[results["state"] == "done"] if "state" in results else results
    notes = []
    counts = Counter()
    for text in done.get("energy_notes", pd.Series(dtype=object)).dropna():
        for note in str(text).split(" | "):
            if note:
                counts[note] += 1
    notes += [f"{note} ({n} cell{'s' if n != 1 else ''})" for note, n in sorted(counts.items())]
    low = done.get("low_confidence", pd.Series(dtype=object)).dropna()
    low = low[low.astype(str) != ""]
    if len(low):
        notes.append(f"low confidence: {len(low)} cell(s) have a window shorter than their meter needs, e.g. "
                     f"{low.iloc[0]}; lengthen duration_s")
    invalid = done[done.get("energy_valid", pd.Series(dtype=object)).astype(object).eq(False)] \
        if "energy_valid" in done else done.iloc[0:0]
    if len(invalid):
        reasons = sorted(set(invalid["energy_invalid_reasons"].dropna())) if "energy_invalid_reasons" in invalid \
            else []
        notes.append(f"invalid energy: {len(invalid)} cell(s) left out of summaries (--include-invalid keeps "
                     f"them)" + (f": {'; '.join(reasons[:3])}" if reasons else ""))
    incomplete = done[done["energy_kind"] == "incomplete"] if "energy_kind" in done else done.iloc[0:0]
    if len(incomplete):  # scale (#15): never a silent partial sum
        notes.append(f"incomplete energy: {len(incomplete)} multi-node cell(s) miss a node's reading; they have "
                     "no energy total and count in no energy statistic")
    keys = [k for k in GROUP_KEYS if k in done]
    if len(done) and keys:
        sizes = done.fillna({k: "" for k in keys}).groupby(keys, dropna=False).size()
        small = sizes[sizes < 3]
        if len(small):
            notes.append(f"n too small: {len(small)} group(s) have fewer than 3 repetitions (no interval); "
                         "raise matrix.repetitions to 3 or more")
    return notes


# ---------------------------------------------------------------- collect


def parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns that mix types (a damaged file's '2' beside 1) as text, so Parquet can store them."""
    out = frame.copy()
    for column in out.columns[out.dtypes == object]:
        kinds = {type(v) for v in out[column] if v is not None and v == v}
        if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
            out[column] = out[column].map(lambda v: v if v is None or v != v else str(v))
    return out


def summarise(results: pd.DataFrame, include_invalid: bool = False) -> pd.DataFrame:
    """summary.csv: the report's own statistics (orchestrator.results.aggregate), one row per group."""
    from orchestrator.results import aggregate

    stats = aggregate(results, include_invalid=include_invalid)
    keep = (stats["n"] > 0) | (stats["invalid_cells"] > 0)  # a group left out entirely still says how many
    return stats[keep].reset_index(drop=True) if len(stats) else stats


def collect(campaign_root: Path, pue: float | None = None, carbon_intensity_g_per_kwh: float | None = None,
            include_invalid: bool = False) -> Collected:
    root = Path(campaign_root).absolute()
    check_factors(pue, carbon_intensity_g_per_kwh)
    manifest = read_manifest(root)
    problems = []
    stored = stored_factors(root)
    if pue is not None or carbon_intensity_g_per_kwh is not None:
        stored = {**stored, **{k: v for k, v in (("pue", pue), ("carbon_intensity_g_per_kwh",
                                                                 carbon_intensity_g_per_kwh)) if v is not None}}
        atomic_write_text(root / FACTORS_FILE, json.dumps(stored, indent=2) + "\n")
    pue, intensity = stored.get("pue"), stored.get("carbon_intensity_g_per_kwh")
    try:
        check_factors(pue, intensity)
    except UserError as exc:
        problems.append(f"{FACTORS_FILE}: ignored ({exc})")
        pue = intensity = None
    rows = [_cell_row(root, entry, problems) for entry in manifest_cells(manifest, problems)]
    results = apply_factors(pd.DataFrame(rows), pue, intensity)
    summary = summarise(results, include_invalid)
    atomic_write(root / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(root / "results.parquet", lambda p: parquet_safe(results).to_parquet(p, index=False))
    atomic_write(root / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write_text(root / "problems.json", json.dumps(problems, indent=2))
    from orchestrator.scaling import SCALING_FILE, scaling_table  # scale (#15)

    scaling = scaling_table(results)
    if len(scaling):
        atomic_write(root / SCALING_FILE, lambda p: scaling.to_csv(p, index=False))
    return Collected(results, summary, problems, factors_in_use(results) if len(results) else {},
                     campaign_notes(results), scaling if len(scaling) else None)
