"""A synthetic campaign with known values, for the reporting tests (no TensorFlow run).

Rows are built from result.json-shaped dicts through collect.result_row, so
the table has exactly the columns `collect` writes; the campaign folder
holds what reporting may read: results.parquet, results.csv, manifest.json
and sweep.yaml.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from orchestrator.collect import result_row

PUE = 1.5
IDLE_J = 5.0  # idle energy over each window, subtracted for net energy
INTENSITY = 50.0
SWEEP_TEXT = "name: synthetic\nmatrix:\n  tests: [mobilenet_v2, vgg_16]\n"

MEASURED = {"cpu": "rapl", "ram": "rapl"}
ESTIMATED = {"cpu": "codecarbon-load-model", "ram": "codecarbon-ram-model"}
SUBTESTS = {("mobilenet_v2", "inference"): "1.1", ("mobilenet_v2", "training"): "1.2",
            ("vgg_16", "inference"): "7.1", ("vgg_16", "training"): "7.2"}
PARAMS = {"mobilenet_v2": 3_506_153, "vgg_16": 138_357_544}


def result(test, phase, node_type, rep, energy_j, samples, window_s=10.0, sources=None, batch=8,
           duration_s=10.0, hostname="host-a") -> dict:
    sources = MEASURED if sources is None else sources
    per_domain = energy_j / len(sources)
    domains = {d: {"joules": per_domain, "source": s, "measured": s == "rapl", "via": "codecarbon"}
               for d, s in sources.items()}
    measured = [d["measured"] for d in domains.values()]
    kind = "measured" if measured and all(measured) else ("estimated" if not any(measured) else "mixed")
    return {
        "status": "done",
        "params": {"test": test, "subtest": SUBTESTS[(test, phase)], "phase": phase, "node_type": node_type,
                   "repetition": rep, "task": "classification", "batch_size": batch, "input_shape": [32, 32, 3],
                   "precision": "fp32", "execution": "graph", "warmup_iterations": 1, "duration_s": duration_s,
                   "iterations": None, "seed": 42},
        "host": {"hostname": hostname, "cpu_model": "Test CPU 9000", "gpus": []},
        "software": {"tensorflow": "2.21.0", "keras": "3.15.1", "codecarbon": "3.3.2"},
        "devices": {"compute_device": "/device:CPU:0"},
        "model": {"trainable_params": PARAMS[test]},
        "window": {"duration_s": window_s, "iterations": samples // batch, "samples": samples,
                   "throughput_samples_per_s": samples / window_s,
                   "latency_s": {"mean": 0.1, "std": 0.01, "p50": 0.1, "p95": 0.12}},
        "energy": {"domains": domains, "total_joules": energy_j, "total_kind": kind,
                   "joules_per_sample": energy_j / samples,
                   "total_net_joules": energy_j - IDLE_J, "net_joules_per_sample": (energy_j - IDLE_J) / samples,
                   "low_confidence": [],
                   "co2": {"grams": energy_j / 3.6e6 * PUE * INTENSITY, "carbon_intensity_g_per_kwh": INTENSITY,
                           "pue": PUE}},
    }


def row(res: dict, cell_id: str, state: str = "done", reason: str | None = None) -> dict:
    return {"cell_id": cell_id, "state": state, "reason": reason, "attempts": 1, **result_row(res)}


# Known values: energies per (test, phase, node type) over 3 repetitions, and samples per cell.
ENERGY = {
    ("mobilenet_v2", "inference", "alpha"): [100.0, 110.0, 120.0],
    ("mobilenet_v2", "training", "alpha"): [200.0, 210.0, 220.0],
    ("vgg_16", "inference", "alpha"): [400.0, 440.0, 480.0],
    ("vgg_16", "training", "alpha"): [800.0, 800.0, 830.0],
    ("mobilenet_v2", "inference", "beta"): [50.0, 55.0, 60.0],
    ("mobilenet_v2", "training", "beta"): [100.0, 105.0, 110.0],
    ("vgg_16", "inference", "beta"): [400.0, 445.0, 470.0],
    ("vgg_16", "training", "beta"): [810.0, 800.0, 830.0],
}
SAMPLES = {"inference": 1000, "training": 200}


def rows(node_types=("alpha", "beta"), energy_scale=1.0, samples_scale=1.0, sources=None) -> list:
    out = []
    for (test, phase, node_type), energies in ENERGY.items():
        if node_type not in node_types:
            continue
        for rep, energy in enumerate(energies):
            res = result(test, phase, node_type, rep, energy * energy_scale, int(SAMPLES[phase] * samples_scale),
                         sources=sources, hostname=f"{node_type}-1")
            out.append(row(res, f"{test}-{phase}-{node_type}-{rep}"))
    return out


def write_campaign(folder: Path, table_rows: list, name: str = "synthetic") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(table_rows)
    frame.to_parquet(folder / "results.parquet", index=False)
    frame.to_csv(folder / "results.csv", index=False)
    (folder / "sweep.yaml").write_text(SWEEP_TEXT)
    (folder / "manifest.json").write_text(json.dumps({
        "campaign": name, "created_at": "2026-11-27T00:00:00+00:00", "launcher": "local", "tool_version": "0.1.0",
        "sweep_sha256": "0" * 64, "result_schema_version": 1,
        "cells": [{"id": r["cell_id"]} for r in table_rows]}))
    return folder


def campaign(folder: Path, **kwargs) -> Path:
    return write_campaign(folder, rows(**kwargs))
