"""The systematic-uncertainty table: the code and docs/uncertainty.md agree value by value and reference by
reference; per-domain terms, the joule-weighted total, GPU generations and the combination with a CI."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from jobs.meters import uncertainty
from jobs.meters.uncertainty import TABLE, TABLE_VERSION, energy_uncertainty, gpu_generation, systematic_rel

DOC = Path(__file__).resolve().parent.parent / "docs" / "uncertainty.md"


def documented() -> dict:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \| (\d+(?:\.\d+)?) % \| .* \| ([^|]+) \|$", line)
        if match:
            rows[match.group(1)] = (float(match.group(2)) / 100, match.group(3).strip())
    return rows


def test_the_documented_table_is_the_code_table():
    doc = documented()
    assert set(doc) == set(TABLE)
    for key, (value, _, refs) in TABLE.items():
        assert doc[key][0] == pytest.approx(value), key
        assert doc[key][1] == refs, key
    assert f"Table version: `{TABLE_VERSION}`" in DOC.read_text()


def test_every_reference_key_is_listed_in_the_references():
    text = DOC.read_text().split("## References", 1)[1]
    for _, _, refs in TABLE.values():
        for ref in refs.split(", "):
            assert f"**{ref}**" in text, ref


def test_every_source_a_meter_can_label_has_a_term():
    from jobs.meters import MEASURED_SOURCES

    labels = MEASURED_SOURCES | {"codecarbon-load-model", "codecarbon-constant", "codecarbon-ram-model"}
    labels |= {"wattmeter", "pdu", "bmc", "slurm-acct"}
    for label in labels:
        assert systematic_rel(label, 60.0, "Tesla V100-SXM2-32GB") is not None, label


@pytest.mark.parametrize("model, generation", [
    ("NVIDIA A100-SXM4-40GB", "ampere"), ("NVIDIA H100 80GB HBM3", "hopper"), ("NVIDIA GH200 480GB", "hopper"),
    ("Tesla V100-SXM2-32GB", "volta"), ("Tesla T4", "volta"), ("NVIDIA GeForce GTX 1080 Ti", "pre-volta"),
    ("Tesla P100-PCIE-16GB", "pre-volta"), ("NVIDIA L40S", "ampere"), ("Mystery GPU", "unknown"), (None, "unknown")])
def test_gpu_generations(model, generation):
    assert gpu_generation(model) == generation


def test_nvml_power_depends_on_the_generation_and_counters_on_the_window():
    assert systematic_rel("nvml-power", 60, "NVIDIA A100-SXM4-40GB") == TABLE["nvml-power:ampere"][0]
    assert systematic_rel("nvml-power", 60, "NVIDIA GeForce GTX 1080 Ti") == TABLE["nvml-power:pre-volta"][0]
    long, short = systematic_rel("nvml-counter", 100.0), systematic_rel("nvml-counter", 1.0)
    assert long == pytest.approx(math.hypot(0.05, 0.001)) and short == pytest.approx(math.hypot(0.05, 0.1))
    assert systematic_rel("rapl", 1.0) == systematic_rel("rapl", 1000.0) == 0.10
    assert systematic_rel("no-such-source") is None


def test_the_cell_total_is_weighted_by_joules_and_unknown_sources_make_it_unknown():
    out = energy_uncertainty({"cpu": {"joules": 300.0, "source": "rapl"},
                              "gpu": {"joules": 700.0, "source": "nvml-counter"}}, 1000.0, "NVIDIA A100-SXM4-40GB")
    gpu = math.hypot(0.05, 0.1 / 1000)
    assert out["by_domain"] == {"cpu": 0.10, "gpu": pytest.approx(gpu)}
    assert out["systematic_rel"] == pytest.approx((0.10 * 300 + gpu * 700) / 1000)
    assert out["table_version"] == TABLE_VERSION and out["keys"]["gpu"] == "nvml-counter"
    here = energy_uncertainty({"cpu": {"joules": 8.0, "source": "codecarbon-load-model"},
                               "ram": {"joules": 20.0, "source": "codecarbon-ram-model"}}, 1.0)
    assert here["systematic_rel"] == pytest.approx((0.64 * 8 + 1.0 * 20) / 28)
    assert energy_uncertainty({"cpu": {"joules": 1.0, "source": "what"}}, 1.0)["systematic_rel"] is None


def test_the_documented_combination_is_the_one_the_summaries_use():
    """docs/uncertainty.md: 1 sigma terms; the 95 % ± is t CV/sqrt(n) and 1.96 x systematic in quadrature, log scale."""
    from scipy import stats

    from orchestrator.intervals import with_systematic

    mean, std, n, sys_rel = 10.0, 1.0, 4, 0.10
    low, high = with_systematic(mean, std, n, sys_rel)
    half = math.hypot(stats.t.ppf(0.975, n - 1) * std / mean / math.sqrt(n), 1.96 * sys_rel)
    assert math.log(high / mean) == pytest.approx(half, rel=1e-3) and math.log(mean / low) == pytest.approx(half, rel=1e-3)
    assert math.isnan(with_systematic(mean, std, 2, sys_rel)[0])  # no interval from n < 3
    assert "one standard uncertainty (1 σ" in DOC.read_text() and "1.96 × `systematic_rel`" in DOC.read_text()
    assert uncertainty.COUNTER_UPDATE_S["nvml-counter"] == 0.1
