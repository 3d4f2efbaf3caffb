"""End to end, once: a tiny real sweep (one real MobileNet-V2 cell through the CLI and the local launcher);
every done cell has a trace, a gate verdict and a systematic uncertainty. Plus the knob axes' expansion
and the refusal a knob gets on this machine (no GPU), recorded as the cell's failure reason."""
from __future__ import annotations

import json
import math

import pyarrow.parquet as pq

from jobs.meters.state import node_temperatures
from tests.conftest import run_cli, tiny_sweep


def test_every_done_cell_of_a_tiny_sweep_carries_its_evidence(sweep_file, tmp_path):
    # The temperature-gated cooldown runs in the job: here, with no sensor, it says so and proceeds.
    sweep = sweep_file(tiny_sweep("evidence", phases="[inference]") + "cooldown: {band_c: 3, max_s: 5}\n")
    run = run_cli("sweep", sweep, "--output", tmp_path / "results")
    assert run.returncode == 0, run.stderr
    cells = [c for c in (tmp_path / "results" / "evidence" / "cells").iterdir()
             if json.loads((c / "status.json").read_text())["state"] == "done"]
    assert cells
    for cell in cells:
        result = json.loads((cell / "result.json").read_text())
        energy, window = result["energy"], result["window"]
        # The trace: the contract's columns, the window plus its margin, the codecarbon models sampled here.
        table = pq.read_table(cell / result["trace"]["file"]).to_pydict()
        assert list(table)[:6] == ["t_unix", "domain", "device", "source", "power_w", "energy_j"]
        assert result["trace"]["samples"] == len(table["t_unix"]) > 0 and result["trace"]["margin_s"] == 1.0
        assert min(table["t_unix"]) < window["start_unix"] and max(table["t_unix"]) > window["end_unix"]
        assert set(table["domain"]) == set(energy["domains"]) == {"cpu", "ram"}
        assert {s for s, d in zip(table["source"], table["domain"]) if d == "ram"} == {"codecarbon-ram-model"}
        assert all(math.isnan(e) for e in table["energy_j"])  # no counter on this machine
        # The verdict, per domain, with its reasons.
        assert isinstance(energy["valid"], bool) and isinstance(energy["invalid_reasons"], list)
        assert energy["valid"] == (not energy["invalid_reasons"])
        for domain in ("cpu", "ram"):
            gate = energy["gate"][domain]
            assert {"coverage", "longest_gap_s", "wraps", "backwards", "missing_devices", "throttle_reasons",
                    "temperature_drift_c"} <= set(gate)
            assert gate["samples"] > 0 and 0 < gate["coverage"] <= 1
        # The systematic term: estimated sources carry large ones, weighted by joules.
        unc = energy["uncertainty"]
        assert unc["by_domain"] == {"cpu": 0.64, "ram": 1.0}  # load model or constant: both 64 %
        total = sum(d["joules"] for d in energy["domains"].values())
        expected = sum(unc["by_domain"][n] * d["joules"] for n, d in energy["domains"].items()) / total
        assert math.isclose(unc["systematic_rel"], expected) and unc["table_version"]
        # The machine state at both edges and the load before.
        assert {"start", "end", "load_before"} <= set(result["state"])
        assert result["state"]["start"]["at_unix"] <= window["start_unix"] <= window["end_unix"] \
            <= result["state"]["end"]["at_unix"]
        assert result["knobs"] == {}
        # The cooldown: asked by the sweep, run by the job before its idle baseline.
        cooldown = result["cooldown"]
        assert cooldown["band_c"] == 3 and cooldown["max_s"] == 5
        if node_temperatures():  # a machine with sensors: the first cell on a host has no baseline to wait for
            assert cooldown["status"] == "no idle baseline yet" and cooldown["start_c"]
        else:
            assert cooldown == {"band_c": 3.0, "max_s": 5.0, "status": "not measurable (no sensor)",
                                "measurable": False, "waited_s": 0.0}
            assert any(n.startswith("cooldown: not measurable (no sensor)") for n in energy["notes"])
        assert energy["warnings"] == []
    # collect exports the traces of every done cell in one table.
    from orchestrator.cli import main

    assert main(["collect", str(tmp_path / "results" / "evidence"), "--traces"]) == 0
    exported = pq.read_table(tmp_path / "results" / "evidence" / "traces.parquet").to_pydict()
    assert set(exported["cell_id"]) == {c.name for c in cells} and any(exported["in_window"])


def test_knob_axes_expand_and_a_refused_knob_fails_its_cell_with_the_reason(sweep_file, tmp_path):
    text = tiny_sweep("knobs", phases="[inference]", idle_s=0).replace(
        "  node_types: [local]\n", "  node_types: [local]\n  gpu_power_limit_w: [null, 150]\n")
    sweep = sweep_file(text)
    listed = run_cli("expand", sweep)
    assert listed.returncode == 0 and listed.stdout.count("mobilenet_v2") >= 2, listed.stdout + listed.stderr
    run = run_cli("sweep", sweep, "--output", tmp_path / "results")
    assert run.returncode == 1  # one cell failed, with its reason
    states = {}
    for cell in (tmp_path / "results" / "knobs" / "cells").iterdir():
        params = json.loads((cell / "cell.json").read_text())["params"]
        states[params.get("gpu_power_limit_w")] = json.loads((cell / "status.json").read_text())
    assert states[None]["state"] == "done"
    assert states[150]["state"] == "failed"
    assert "KnobRefused" in states[150]["reason"] and "no NVIDIA GPU" in states[150]["reason"]
