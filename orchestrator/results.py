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

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from jobs.catalog import TESTS
from orchestrator import safeio
from orchestrator.collect import DEFAULT_BACKEND, DOMAINS, GROUP_KEYS
from orchestrator.errors import UserError
from orchestrator.intervals import MIN_N, t_interval, with_systematic

NOMINAL_ITERATIONS = 22  # AI Benchmark's protocol: 22 iterations per sub-test (without its 30 s cap)

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
    "work_energy_kwh": ("EC per unit of work", "kWh", False),
    "work_facility_energy_kwh": ("EC x PUE per unit of work", "kWh", False),
    "work_co2_kg": ("CE per unit of work", "kgCO2eq", False),
    "work_duration_s": ("D per unit of work", "s", False),
    # The fit phase (issue #13): accuracy is a result, measured on the validation split.
    "accuracy": ("validation accuracy", "fraction", True),
    "energy_to_target_j": ("energy to target accuracy", "J", False),
    "time_to_target_s": ("time to target accuracy", "s", False),
}
# May be negative (idle subtracted): a linear interval; every other metric is positive (log-scale interval).
SIGNED_METRICS = {"net_energy_per_sample_j"}
# Metrics whose uncertainty includes the energy source's systematic part.
ENERGY_METRICS = {"energy_j", "energy_kwh", "facility_energy_kwh", "co2_kg", "energy_per_sample_j", "samples_per_j",
                  "wh_per_1000", "power_w", "work_energy_kwh", "work_facility_energy_kwh", "work_co2_kg"}
# Settings of the sweep, never results: the window length (duration_s windows) and the iteration count.
WINDOW_SETTINGS = ("duration_s", "iterations")

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
    problems: list = field(default_factory=list)
    label: str = ""  # folder and date: two nightly runs named `nightly` stay apart

    def __post_init__(self):
        self.label = self.label or self.name


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


def nominal_work_samples(frame: pd.DataFrame) -> pd.Series:
    """Samples of the original protocol's nominal work per cell: NOMINAL_ITERATIONS x the cell's batch."""
    batch = pd.to_numeric(frame["batch_size"], errors="coerce") if "batch_size" in frame else \
        pd.Series(math.nan, index=frame.index)
    return batch * NOMINAL_ITERATIONS


def derive_metrics(results: pd.DataFrame, work_samples: int | None = None) -> pd.DataFrame:
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
    samples = nominal_work_samples(out) if work_samples is None else pd.Series(float(work_samples), index=out.index)
    out["work_samples"] = samples
    work_j = per_sample * samples
    out["work_energy_kwh"] = work_j / JOULES_PER_KWH
    out["work_facility_energy_kwh"] = work_j / JOULES_PER_KWH * pue
    out["work_co2_kg"] = work_j / JOULES_PER_KWH * pue * col("carbon_intensity_g_per_kwh") / 1000.0
    out["work_duration_s"] = samples / out["throughput"].where(out["throughput"] > 0)
    out["accuracy"] = col("accuracy_final")
    out["energy_to_target_j"] = col("energy_to_target_j")
    out["time_to_target_s"] = col("time_to_target_s")
    return out


def window_kind(frame: pd.DataFrame) -> pd.Series:
    """'duration' (a fixed-length window), 'iterations' (a fixed amount of work) or None, per cell."""
    duration = pd.to_numeric(frame["duration_s"], errors="coerce") if "duration_s" in frame else None
    iterations = pd.to_numeric(frame["iterations"], errors="coerce") if "iterations" in frame else None
    kinds = pd.Series(None, index=frame.index, dtype=object)
    if iterations is not None:
        kinds[iterations.notna()] = "iterations"
    if duration is not None:
        kinds[duration.notna()] = "duration"
    return kinds


def valid_mask(frame: pd.DataFrame) -> pd.Series:
    """False where the energy side said its reading is invalid (result.json energy.valid = false)."""
    if "energy_valid" not in frame:
        return pd.Series(True, index=frame.index)
    return ~frame["energy_valid"].map(lambda v: v is False or (isinstance(v, str) and v.lower() == "false")
                                      or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0))


def _catalog(test: str) -> tuple:
    t = TESTS.get(test)
    return (t.title, t.number, t.total_params) if t else (test, math.inf, math.nan)


def aggregate(results: pd.DataFrame, include_invalid: bool = False, work_samples: int | None = None) -> pd.DataFrame:
    """One row per group of done cells: mean, std, n and 95 % CI of every metric, with source labels.

    Cells whose energy is marked invalid are left out (counted in `invalid_cells`) unless `include_invalid`.
    """
    if results is None or not len(results):
        return pd.DataFrame(columns=GROUP_KEYS + ["n"])
    cells = derive_metrics(results, work_samples)
    if "backend" not in cells:
        cells["backend"] = DEFAULT_BACKEND
    cells["backend"] = cells["backend"].fillna(DEFAULT_BACKEND)
    cells["window_kind"] = window_kind(cells)
    for key in GROUP_KEYS:
        if key not in cells:
            cells[key] = None
    cells["subtest"] = cells["subtest"].map(lambda v: v if v is None or v != v else str(v))
    done = cells[cells["state"] == "done"] if "state" in cells else cells
    valid = valid_mask(done)
    rows = []
    for key, group in cells.groupby(GROUP_KEYS, dropna=False, sort=True):
        row = dict(zip(GROUP_KEYS, key))
        ok = done.loc[done.index.intersection(group.index)]
        invalid = int((~valid.loc[ok.index].astype(bool)).sum())
        if not include_invalid:
            ok = ok.loc[valid.loc[ok.index].astype(bool).to_numpy()]
        row["cells"] = len(group)
        row["cells_done"] = row["n"] = len(ok)
        row["invalid_cells"] = invalid
        systematic = (pd.to_numeric(ok["energy_systematic_rel"], errors="coerce")
                          if len(ok) and "energy_systematic_rel" in ok else None)
        sys_rel = float(systematic.max()) if systematic is not None and systematic.notna().any() else math.nan
        row["energy_systematic_rel"] = sys_rel
        for metric in METRICS:
            values = ok[metric] if len(ok) else pd.Series(dtype=float)
            mean, std, low, high = t_interval(values, positive=metric not in SIGNED_METRICS)
            n = int(values.notna().sum())
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n,
                        f"{metric}_ci95_low": low, f"{metric}_ci95_high": high})
            if metric in ENERGY_METRICS and sys_rel == sys_rel:
                total_low, total_high = with_systematic(mean, std, n, sys_rel)
                row.update({f"{metric}_total_low": total_low, f"{metric}_total_high": total_high})
        kinds = sorted(set(ok["energy_kind"].dropna())) if "energy_kind" in ok else []
        row["energy_kind"] = ";".join(kinds) or None
        windows = sorted(set(ok["window_kind"].dropna()))
        row["window_kind"] = ";".join(windows) or None
        for setting in WINDOW_SETTINGS:
            values = sorted({f"{v:g}" for v in pd.to_numeric(ok.get(setting), errors="coerce").dropna()}) \
                if setting in ok else []
            row[f"{setting}_setting"] = ";".join(values) or None
        row["work_samples"] = _unique(ok, "work_samples")
        row["work_basis"] = "nominal" if work_samples is None else int(work_samples)
        sources = {}
        for domain in DOMAINS:
            column = f"energy_{domain}_source"
            sources[domain] = ";".join(sorted(set(ok[column].dropna()))) if column in ok else ""
            row[column] = sources[domain] or None
        row["energy_label"] = energy_label(row["energy_kind"], sources)
        flags = ok["low_confidence"].dropna() if "low_confidence" in ok else []
        row["low_confidence_cells"] = int(sum(1 for f in flags if str(f)))
        row["small_n"] = 0 < len(ok) < MIN_N
        row["pue_in_energy"] = "excluded"
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


def read_results(root: Path, problems: list | None = None) -> pd.DataFrame:
    """results.parquet, else results.csv; a damaged Parquet file falls back to the CSV (and says so)."""
    root = Path(root)
    problems = [] if problems is None else problems
    for name in ("results.parquet", "results.csv"):
        path = root / name
        try:
            data = safeio.read_bytes(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{name}: {safeio.describe(exc)}")
            continue
        try:
            import io

            if name.endswith(".parquet"):
                return pd.read_parquet(io.BytesIO(data))
            return pd.read_csv(io.BytesIO(data), dtype={"subtest": str, "input_shape": str})
        except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise many kinds for a damaged file
            problems.append(f"{name} is unreadable ({type(exc).__name__}: {str(exc)[:120]})"
                            + ("; read results.csv instead" if name.endswith(".parquet") else ""))
    raise UserError(f"{root} has no readable results table (results.parquet or results.csv)"
                    + (f": {'; '.join(problems)}" if problems else ""),
                    [f"run `benchmark-tracker collect {root}` first"])


def _read_manifest(root: Path, problems: list) -> dict:
    try:
        manifest = safeio.read_json(root / "manifest.json")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        problems.append(f"manifest.json is unreadable: {safeio.describe(exc)}")
        return {}
    if not isinstance(manifest, dict):
        problems.append("manifest.json is not a JSON object")
        return {}
    return manifest


def _read_sweep(root: Path, problems: list) -> str | None:
    try:
        text = safeio.read_text(root / "sweep.yaml")
    except FileNotFoundError:
        problems.append("the frozen sweep.yaml is missing: provenance incomplete")
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"the frozen sweep.yaml is unreadable: {safeio.describe(exc)}")
        return None
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        problems.append("the frozen sweep.yaml is not valid YAML (shown as text)")
    return text


def campaign_label(name: str, root: Path | None, manifest: dict) -> str:
    """'nightly (runs/20261201T0100Z/nightly, 2026-12-01)': the folder and the date tell runs apart."""
    if root is None:
        return name
    folder = "/".join(Path(root).absolute().parts[-3:])
    date = str(manifest.get("updated_at") or manifest.get("created_at") or "")[:10]
    return f"{name} ({folder}{', ' + date if date else ''})"


def load_campaign(ref: str | Path, node_type: str | None = None, include_invalid: bool = False,
                  work_samples: int | None = None) -> CampaignData:
    """A campaign folder, or the name of a built-in historical reference (e.g. 'chifflet-2022').

    `ref` may end in '@<node type>' to keep one node type only. A damaged file never raises past a
    UserError: what cannot be read is listed in `problems`.
    """
    ref = str(ref)
    if node_type is None and "@" in ref and not Path(ref).exists():
        ref, node_type = ref.rsplit("@", 1)
    from orchestrator import historical

    if ref in historical.REFERENCES and not Path(ref).exists():
        data = historical.load(ref)
    else:
        root = Path(ref)
        if not root.is_dir():
            raise UserError(f"no campaign folder {root}", ["give a campaign folder (e.g. results/smoke) or "
                                                           f"one of: {', '.join(historical.REFERENCES)}"])
        problems = []
        results = read_results(root, problems)
        manifest = _read_manifest(root, problems)
        sweep = _read_sweep(root, problems)
        name = manifest.get("campaign") if isinstance(manifest.get("campaign"), str) else root.name
        data = CampaignData(name=name, stats=aggregate(results, include_invalid, work_samples), results=results,
                            manifest=manifest, sweep_text=sweep, root=root, problems=problems,
                            label=campaign_label(name, root, manifest))
    if node_type is not None:
        if node_type not in set(data.stats.get("node_type", [])):
            raise UserError(f"{ref} has no results for node type {node_type!r}; it has: "
                            f"{', '.join(sorted(set(data.stats.get('node_type', [])))) or 'none'}")
        data.stats = data.stats[data.stats["node_type"] == node_type].reset_index(drop=True)
        if data.results is not None:
            data.results = data.results[data.results["node_type"] == node_type].reset_index(drop=True)
        data.name = f"{data.name}@{node_type}"
        data.label = f"{data.name}" + (data.label[data.label.index(" ("):] if " (" in data.label else "")
    return data


def select(data: CampaignData, tests=None, phases=None, node_types=None) -> CampaignData:
    """Keep some tests, phases, node types (report --tests/--phases/--node-types); unknown values are an error."""
    for column, wanted in (("test", tests), ("phase", phases), ("node_type", node_types)):
        if not wanted:
            continue
        present = set(data.stats.get(column, pd.Series(dtype=object)).dropna())
        missing = [w for w in wanted if w not in present]
        if missing:
            raise UserError(f"{data.name} has no {column} {', '.join(missing)}; it has: "
                            f"{', '.join(sorted(map(str, present))) or 'none'}")
        data.stats = data.stats[data.stats[column].isin(wanted)].reset_index(drop=True)
        if data.results is not None and column in data.results:
            data.results = data.results[data.results[column].isin(wanted)].reset_index(drop=True)
    return data
