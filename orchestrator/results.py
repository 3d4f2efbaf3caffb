"""The reporting side's only input: a campaign's results table, reduced to per-group statistics.

Every report (tables, figures, HTML, compare, nightly) starts here. A
campaign is read from results.parquet (or results.csv) written by
`collect`, plus its manifest and frozen sweep for provenance; nothing else
in the campaign folder is looked at. The historical reference campaign
`chifflet-2022` (orchestrator.historical) yields a frame of the same shape.

A "stats frame" has one row per group (GROUP_KEYS) and, for every metric
in METRICS, the columns `<metric>_mean`, `_std`, `_n`, `_ci95_low`,
`_ci95_high` (Student-t over repetitions), plus the energy source label.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.catalog import TESTS
from orchestrator.collect import DOMAINS, GROUP_KEYS, t_interval
from orchestrator.errors import UserError

JOULES_PER_KWH = 3.6e6
MEASURED_SOURCES = {"rapl", "nvml-counter", "nvml-power"}

# name -> (label, unit, higher_is_better); computed per cell, then averaged over repetitions.
METRICS = {
    "duration_s": ("D (window)", "s", False),
    "throughput": ("throughput", "samples/s", True),
    "energy_j": ("energy", "J", False),
    "energy_kwh": ("EC", "kWh", False),
    "facility_energy_kwh": ("EC x PUE", "kWh", False),
    "co2_kg": ("CE", "kgCO2eq", False),
    "energy_per_sample_j": ("energy per sample", "J/sample", False),
    "net_energy_per_sample_j": ("energy per sample, idle subtracted", "J/sample", False),
    "samples_per_j": ("samples per joule", "samples/J", True),
    "wh_per_1000": ("energy per 1,000 samples", "Wh", False),
    "power_w": ("mean power", "W", False),
    # The fit phase (issue #13): accuracy is a result, measured on the validation split.
    "accuracy": ("validation accuracy", "fraction", True),
    "energy_to_target_j": ("energy to target accuracy", "J", False),
    "time_to_target_s": ("time to target accuracy", "s", False),
}

SOURCE_NAMES = {
    "rapl": "RAPL",
    "nvml-counter": "NVML energy counter",
    "nvml-power": "NVML power polling",
    "codecarbon-load-model": "codecarbon load model",
    "codecarbon-constant": "codecarbon constant TDP",
    "codecarbon-ram-model": "codecarbon RAM model",
}


@dataclass
class CampaignData:
    """What a report may use: the per-group statistics, the raw table, and provenance."""

    name: str
    stats: pd.DataFrame
    results: pd.DataFrame | None = None  # None for the historical reference
    manifest: dict = field(default_factory=dict)
    sweep_text: str | None = None
    historical: bool = False
    notes: list = field(default_factory=list)
    root: Path | None = None


def source_label(source: str | None) -> str:
    """'measured: RAPL' or 'estimated: codecarbon load model'; never a bare number's source left implicit."""
    if not source:
        return "unknown source"
    if source.startswith("historical"):
        return source
    kind = "measured" if source in MEASURED_SOURCES else "estimated"
    return f"{kind}: {SOURCE_NAMES.get(source, source)}"


def energy_label(kind: str | None, domain_sources: dict) -> str:
    """One line per group, e.g. 'estimated (cpu estimated: codecarbon load model; ram estimated: ...)'."""
    parts = []
    for domain in DOMAINS:
        sources = [s for s in str(domain_sources.get(domain) or "").split(";") if s]
        if sources:
            parts.append(f"{domain} " + " / ".join(source_label(s) for s in sources))
    kind = kind or "unknown"
    return f"{kind} ({'; '.join(parts)})" if parts else kind


def derive_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Per-cell metrics used by every report, from collect's columns."""
    out = results.copy()

    def col(name):
        return pd.to_numeric(out[name], errors="coerce") if name in out else pd.Series(math.nan, index=out.index)

    energy = col("energy_total_j")
    per_sample = col("energy_per_sample_j")
    pue = col("pue")
    out["duration_s"] = col("window_s")
    out["throughput"] = col("throughput_samples_per_s")
    out["energy_j"] = energy
    out["energy_kwh"] = energy / JOULES_PER_KWH
    out["facility_energy_kwh"] = energy / JOULES_PER_KWH * pue
    out["co2_kg"] = col("co2_g") / 1000.0
    out["energy_per_sample_j"] = per_sample
    out["net_energy_per_sample_j"] = col("energy_net_per_sample_j")
    out["samples_per_j"] = 1.0 / per_sample.where(per_sample > 0)
    out["wh_per_1000"] = per_sample * 1000.0 / 3600.0
    out["power_w"] = energy / out["duration_s"].where(out["duration_s"] > 0)
    out["accuracy"] = col("accuracy_final")
    out["energy_to_target_j"] = col("energy_to_target_j")
    out["time_to_target_s"] = col("time_to_target_s")
    return out


def _catalog(test: str) -> tuple:
    t = TESTS.get(test)
    return (t.title, t.number, t.total_params) if t else (test, math.inf, math.nan)


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """One row per group of done cells: mean, std, n and 95 % CI of every metric, with source labels."""
    if results is None or not len(results):
        return pd.DataFrame(columns=GROUP_KEYS)
    cells = derive_metrics(results)
    done = cells[cells["state"] == "done"] if "state" in cells else cells
    rows = []
    for key, group in cells.groupby(GROUP_KEYS, dropna=False, sort=True):
        row = dict(zip(GROUP_KEYS, key))
        ok = done.loc[done.index.intersection(group.index)]
        row["cells"] = len(group)
        row["cells_done"] = len(ok)
        for metric in METRICS:
            mean, std, low, high = t_interval(ok[metric]) if len(ok) else (math.nan,) * 4
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": int(ok[metric].notna().sum()),
                        f"{metric}_ci95_low": low, f"{metric}_ci95_high": high})
        kinds = sorted(set(ok["energy_kind"].dropna())) if "energy_kind" in ok else []
        row["energy_kind"] = ";".join(kinds) or None
        sources = {}
        for domain in DOMAINS:
            column = f"energy_{domain}_source"
            sources[domain] = ";".join(sorted(set(ok[column].dropna()))) if column in ok else ""
            row[column] = sources[domain] or None
        row["energy_label"] = energy_label(row["energy_kind"], sources)
        flags = ok["low_confidence"].dropna() if "low_confidence" in ok else []
        row["low_confidence_cells"] = int(len(flags))
        row["pue"] = _unique(ok, "pue")
        row["carbon_intensity_g_per_kwh"] = _unique(ok, "carbon_intensity_g_per_kwh")
        measured_params = pd.to_numeric(ok.get("trainable_params"), errors="coerce") if len(ok) else None
        title, number, total = _catalog(row["test"])
        row["title"], row["test_number"] = title, number
        row["params"] = (float(measured_params.dropna().iloc[0]) if measured_params is not None
                         and measured_params.notna().any() else total)
        rows.append(row)
    stats = pd.DataFrame(rows)
    return stats.sort_values(["phase", "test_number", "subtest", "node_type"], kind="stable").reset_index(drop=True)


def _unique(frame: pd.DataFrame, column: str):
    if column not in frame:
        return None
    values = pd.to_numeric(frame[column], errors="coerce").dropna().unique()
    return float(values[0]) if len(values) == 1 else (None if not len(values) else float("nan"))


def read_results(root: Path) -> pd.DataFrame:
    root = Path(root)
    if (root / "results.parquet").is_file():
        return pd.read_parquet(root / "results.parquet")
    if (root / "results.csv").is_file():
        return pd.read_csv(root / "results.csv", dtype={"subtest": str, "input_shape": str})
    raise UserError(f"{root} has no results table (results.parquet or results.csv)",
                    [f"run `benchmark-tracker collect {root}` first"])


def load_campaign(ref: str | Path, node_type: str | None = None) -> CampaignData:
    """A campaign folder, or the name of a built-in historical reference (e.g. 'chifflet-2022').

    `ref` may end in '@<node type>' to keep one node type only.
    """
    ref = str(ref)
    if node_type is None and "@" in ref:
        ref, node_type = ref.rsplit("@", 1)
    from orchestrator import historical

    if ref in historical.REFERENCES and not Path(ref).exists():
        data = historical.load(ref)
    else:
        root = Path(ref)
        results = read_results(root)
        manifest = {}
        if (root / "manifest.json").is_file():
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        sweep = (root / "sweep.yaml").read_text(encoding="utf-8") if (root / "sweep.yaml").is_file() else None
        data = CampaignData(name=manifest.get("campaign", root.name), stats=aggregate(results), results=results,
                            manifest=manifest, sweep_text=sweep, root=root)
    if node_type is not None:
        if node_type not in set(data.stats.get("node_type", [])):
            raise UserError(f"{ref} has no results for node type {node_type!r}; it has: "
                            f"{', '.join(sorted(set(data.stats.get('node_type', [])))) or 'none'}")
        data.stats = data.stats[data.stats["node_type"] == node_type].reset_index(drop=True)
        if data.results is not None:
            data.results = data.results[data.results["node_type"] == node_type].reset_index(drop=True)
        data.name = f"{data.name}@{node_type}"
    return data
