"""Per-node energy merge and scaling results, on records in the job's own result format.

These records are hand-written (in the layout jobs/runner.py writes) because a second host cannot
exist on this machine; the real multi-worker runs are in test_scaling_workers.py.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from jobs.workers import merge, merge_energy
from orchestrator.collect import campaign_notes
from orchestrator.results import aggregate
from orchestrator.scaling import format_table, scaling_figures, scaling_table


def _node(host, joules, source="rapl", worker=0):
    return {"host": host, "worker": worker, "domains": {"cpu": {"joules": joules, "source": source,
                                                                "measured": source == "rapl", "via": "rapl"}},
            "total_joules": joules, "total_kind": "measured" if source == "rapl" else "estimated", "idle": None,
            "total_net_joules": None, "low_confidence": [], "notes": [], "valid": True, "invalid_reasons": []}


CO2 = {"pue": 1.0, "carbon_intensity_g_per_kwh": 100.0, "grams": 1.0}


def test_energy_of_every_node_summed_with_sources():
    energy = merge_energy([_node("a", 10.0), _node("b", 30.0, "codecarbon-load-model")], 20, CO2, ["a", "b"])
    assert energy["total_joules"] == 40.0 and energy["joules_per_sample"] == 2.0
    assert energy["domains"]["cpu"]["source"] == "codecarbon-load-model;rapl"
    assert energy["total_kind"] == "mixed" and energy["complete"] is True
    assert energy["co2"]["grams"] == pytest.approx(40.0 / 3.6e6 * 100.0)


def test_missing_node_makes_the_total_incomplete_never_a_partial_sum():
    empty = {**_node("b", 0.0), "domains": {}, "total_joules": 0.0}
    energy = merge_energy([_node("a", 10.0), empty], 20, CO2, ["a", "b"])
    assert energy["total_kind"] == "incomplete" and energy["complete"] is False
    assert energy["total_joules"] is None and energy["joules_per_sample"] is None and energy["co2"]["grams"] is None
    assert energy["missing_hosts"] == ["b"] and "no energy reading from host(s) b" in energy["notes"][-1]


def _result(joules, start, meters=True):
    return {"window": {"start_unix": start, "end_unix": start + 2.0, "duration_s": 2.0, "samples": 8},
            "energy": {"domains": {"cpu": {"joules": joules, "source": "rapl", "measured": True, "via": "rapl"}}
                       if meters else {}, "total_joules": joules if meters else 0.0, "total_kind": "measured",
                       "notes": [], "low_confidence": []}, "parallel": {"replicas_in_sync": 2}}


def test_workers_sharing_a_host_meter_it_once():
    workers = [{"index": 0, "host": "h", "meters": True}, {"index": 1, "host": "h", "meters": True}]  # both claim it
    merged = merge(workers, [_result(50.0, 100.0), _result(50.0, 100.3)])
    assert [n["worker"] for n in merged["energy"]["nodes"]] == [0] and merged["energy"]["total_joules"] == 50.0
    assert merged["window"]["start_skew_s"] == pytest.approx(0.3) and merged["parallel"]["hosts"] == 1


def test_two_hosts_each_read_by_their_first_worker():
    workers = [{"index": 0, "host": "h1", "meters": True}, {"index": 1, "host": "h1", "meters": False},
               {"index": 2, "host": "h2", "meters": True}, {"index": 3, "host": "h2", "meters": False}]
    results = [_result(40.0, 0.0), _result(0.0, 0.0, False), _result(60.0, 0.1), _result(0.0, 0.1, False)]
    energy = merge(workers, results)["energy"]
    assert [n["host"] for n in energy["nodes"]] == ["h1", "h2"] and energy["total_joules"] == 100.0


def _rows():
    rows = []
    for devices, nodes, throughputs, per_sample in ((1, 1, (10.0, 10.5, 9.5), (2.0, 2.1, 1.9)),
                                                    (1, 2, (18.0, 18.5, 17.5), (2.4, 2.5, 2.3))):
        for rep, (t, j) in enumerate(zip(throughputs, per_sample)):
            rows.append({"test": "srcnn", "subtest": "8.3", "phase": "training", "node_type": "local",
                         "precision": "fp32", "execution": "graph", "input_shape": "32x32x3", "backend": "tensorflow",
                         "batch_scaling": "weak", "per_device_batch": 8, "batch_size": 8 * devices * nodes,
                         "devices_per_node": devices, "nodes": nodes, "repetition": rep, "state": "done",
                         "window_s": 2.0, "throughput_samples_per_s": t, "energy_per_sample_j": j,
                         "energy_total_j": j * 2.0 * t, "energy_kind": "measured", "hosts": 1,
                         "trainable_params": 69251,
                         "energy_nodes_json": '[{"host": "h", "joules": 5.0, "sources": {"cpu": "rapl"}}]'})
    return rows


def test_scaling_efficiency_and_energy_efficiency_with_intervals():
    table = scaling_table(pd.DataFrame(_rows()))
    one, two = table.iloc[0], table.iloc[1]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["scaling_efficiency"] == pytest.approx(1.0)
    assert two["speedup"] == pytest.approx(18.0 / 10.0) and two["scaling_efficiency"] == pytest.approx(0.9)
    assert two["energy_efficiency"] == pytest.approx(2.4 / 2.0)
    assert two["scaling_efficiency_ci95_low"] < 0.9 < two["scaling_efficiency_ci95_high"]
    assert two["energy_per_node"] == "h: 5 J (cpu rapl)"
    assert "scaling_efficiency" in format_table(table)
    figures = scaling_figures(pd.DataFrame(_rows()))
    assert list(figures) == ["scaling"]


def test_cells_whose_energy_is_all_invalid_give_an_empty_table_not_a_crash():
    """A fast cell on an idle node can close its window before the meters' first sample (energy_valid false):
    `sweep` collected such a campaign into a KeyError traceback."""
    frame = pd.DataFrame([dict(r, energy_valid=False) for r in _rows()])
    assert scaling_table(frame).empty


def test_no_interval_below_three_repetitions():
    rows = [r for r in _rows() if r["repetition"] < 2]
    two = scaling_table(pd.DataFrame(rows)).iloc[1]
    assert two["scaling_efficiency"] == pytest.approx(18.25 / 10.25 / 2)
    assert math.isnan(two["scaling_efficiency_ci95_low"]) and two["scaling_note"] == "n = 2: no interval"


def test_incomplete_cells_count_in_no_energy_statistic():
    rows = _rows()
    rows[3].update(energy_kind="incomplete", energy_total_j=None, energy_per_sample_j=None)
    frame = pd.DataFrame(rows)
    two = scaling_table(frame).iloc[1]
    assert two["energy_per_sample_j_n"] == 2 and "incomplete" in two["energy_kind"]
    summary = aggregate(frame)
    row = summary[summary["nodes"] == 2].iloc[0]
    assert row["energy_per_sample_j_n"] == 2 and row["throughput_n"] == 3 and "incomplete" in row["energy_kind"]
    assert any(note.startswith("incomplete energy: 1 multi-node cell") for note in campaign_notes(frame))


def test_per_node_columns_carry_each_hosts_scheduler_readings_and_say_which_is_missing():
    from orchestrator.scaling import parallel_columns

    hosts = [{**_node("n1", 10.0), "external": {"bmc": {"joules": 20.0, "source": "bmc"}},
              "other_sources": {"slurm": {"joules": 30.0, "source": "slurm-consumed-energy"}}},
             {**_node("n2", 12.0), "external": {"bmc": {"joules": None, "error": "no sample"}}}]
    columns = parallel_columns({"parallel": {"hosts": 2}, "energy": {"nodes": hosts}})
    assert columns["energy_per_node"] == "n1: 10 J (cpu rapl; bmc 20 J; slurm 30 J); n2: 12 J (cpu rapl; bmc no reading)"
    assert '"scheduler": {"bmc": 20.0, "slurm": 30.0}' in columns["energy_nodes_json"]
