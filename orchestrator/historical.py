"""Built-in, read-only historical reference campaigns (the seed paper's published results).

`chifflet-2022` is the seed paper's Grid'5000 chifflet data: 10-run means and
SDs per sub-test, CPU+DRAM energy only (the GPUs were idle), with PUE 1.58
folded into every printed energy. It loads as a stats frame of the same
shape as a campaign's (orchestrator.results), so tables, figures and
`compare` accept it, with these conversions, all stated in its labels:

- `facility_energy_kwh` is the printed value (PUE 1.58 included);
- `energy_kwh` / `energy_j` divide the PUE out, so they compare with our
  campaigns, whose energies never include PUE;
- throughput and per-sample metrics are missing: images processed were
  never recorded.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml
from scipy import stats as st

from jobs.catalog import TESTS
from orchestrator.results import JOULES_PER_KWH, METRICS, CampaignData

DATA_DIR = Path(__file__).resolve().parent / "reference_data"
REFERENCES = ("chifflet-2022",)

HISTORICAL_LABEL = ("historical: measured RAPL CPU+DRAM only (process-attributed, experiment-impact-tracker), "
                    "PUE {pue} in the published values")


def meta(name: str) -> dict:
    return yaml.safe_load((DATA_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _stat(mean: float, sd: float, n: int) -> dict:
    if any(map(lambda v: v is None or (isinstance(v, float) and math.isnan(v)), (mean, sd))):
        return {"mean": mean, "std": sd, "n": n if mean == mean else 0, "ci95_low": math.nan, "ci95_high": math.nan}
    half = st.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "n": n, "ci95_low": mean - half, "ci95_high": mean + half}


def load(name: str) -> CampaignData:
    info = meta(name)
    table = pd.read_csv(DATA_DIR / f"{name}.csv", comment="#", dtype={"subtest": str})
    by_title = {t.title: t for t in TESTS.values()}
    pue = float(info["pue"])
    label = HISTORICAL_LABEL.format(pue=pue)
    rows = []
    for rec in table.to_dict("records"):
        test = by_title[rec["model"]]
        sub = next(s for s in test.subtests if s.id == rec["subtest"])
        n = int(rec["runs"])
        facility, facility_sd = rec["energy_kwh_mean"], rec["energy_kwh_sd"]
        kwh, kwh_sd = facility / pue, facility_sd / pue
        co2_sd = facility_sd * rec["co2_kg_mean"] / facility  # CO2 is proportional to energy
        values = {
            "duration_s": (rec["duration_s_mean"], rec["duration_s_sd"]),
            "energy_kwh": (kwh, kwh_sd),
            "facility_energy_kwh": (facility, facility_sd),
            "energy_j": (kwh * JOULES_PER_KWH, kwh_sd * JOULES_PER_KWH),
            "co2_kg": (rec["co2_kg_mean"], co2_sd),
            "power_w": (kwh * JOULES_PER_KWH / rec["duration_s_mean"], math.nan),
        }
        row = {"test": test.name, "subtest": sub.id, "phase": rec["phase"], "node_type": info["node_type"],
               "backend": "tensorflow", "precision": "fp32", "execution": "graph", "batch_size": sub.batch * int(info["batch_scale"]),
               "input_shape": "x".join(map(str, sub.input_shape)), "cells": n, "cells_done": n}
        for metric in METRICS:
            mean, sd = values.get(metric, (math.nan, math.nan))
            row.update({f"{metric}_{k}": v for k, v in _stat(mean, sd, n).items()})
        row.update({"energy_kind": "historical", "energy_cpu_source": "historical-rapl", "energy_gpu_source": None,
                    "energy_ram_source": "historical-rapl", "energy_label": label, "pue": pue,
                    "carbon_intensity_g_per_kwh": float(info["carbon_intensity_g_per_kwh"]),
                    "title": test.title, "test_number": test.number, "params": float(test.total_params)})
        rows.append(row)
    stats = pd.DataFrame(rows).sort_values(["phase", "test_number", "subtest"], kind="stable").reset_index(drop=True)
    manifest = {"campaign": name, "historical": True, "source": info["source"], "hardware": info["hardware"],
                "meter": info["meter"]}
    return CampaignData(name=name, stats=stats, results=None, manifest=manifest, historical=True,
                        notes=[label] + list(info.get("caveats", [])))
