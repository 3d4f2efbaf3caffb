"""Systematic uncertainty per energy source: how far a figure from that source may sit from the truth.

The table (TABLE, version TABLE_VERSION) is documented with its references in
docs/uncertainty.md; a test keeps the two equal. Each value is a relative
standard uncertainty (1 sigma: 0.10 = 10 %) for the domain the source reads,
not for what it cannot see (RAPL sees no fans, PSU losses or GPUs: that is a
boundary, stated by the domain, not an error of the reading).

Window-dependent terms are added in quadrature: a counter that updates every
`update_s` (NVML: ~0.1 s) quantises a window of T seconds by update_s / T.

A cell's total combines domains weighted by joules, linearly (the same
node, the same minute: errors of its domains are not independent, so the
conservative sum, not quadrature). The statistical interval of a group of
repetitions combines with it where groups are formed, on the orchestrator side
(`orchestrator.intervals.with_systematic`: 1.96 x this term, in quadrature).
"""
from __future__ import annotations

import math
import re

TABLE_VERSION = "2026-12-01"

# source -> relative systematic, the short basis and reference keys of docs/uncertainty.md
TABLE = {
    "rapl": (0.10, "on-chip model of package/DRAM energy vs a meter", "N2, N3"),
    "nvml-counter": (0.05, "Volta+ energy counter, updates every ~100 ms", "N1, ME4"),
    "nvml-power:pre-volta": (0.10, "~1 s averaged power polled at >= 10 Hz, integrated", "N1, N6"),
    "nvml-power:volta": (0.10, "averaged power polled and integrated (V100, Turing)", "N1"),
    "nvml-power:ampere": (0.35, "A100-class sensor samples ~25 % of runtime", "N1"),
    "nvml-power:hopper": (0.35, "H100-class sensor samples ~25 % of runtime", "N1"),
    "nvml-power:unknown": (0.35, "generation not recognised: the worst measured case", "N1"),
    "codecarbon-load-model": (0.64, "TDP x load model; TDP calculators -20 % to +64 %", "N3, N4"),
    "codecarbon-constant": (0.64, "a TDP constant, no measurement", "N3, N4"),
    "codecarbon-ram-model": (1.00, "5 W per guessed DIMM: an assumption, nothing measured", "CC-RAM"),
    "wattmeter": (0.02, "Omegawatt wall meter, 50 Hz, sub-watt resolution", "G5K1, ML1"),
    "pdu": (0.05, "PDU outlet, SNMP, 1 s; MLPerf's meter admission bound", "G5K2, ML1"),
    "bmc": (0.10, "BMC node power, 5 s, highly averaged; wall = 1.047 BMC + 80 W", "G5K2, N3"),
    "slurm-acct": (0.15, "sacct ConsumedEnergy: node level from the plugin, sampled at EnergyIPMIFrequency",
                   "SL1"),
}
COUNTER_UPDATE_S = {"nvml-counter": 0.1}

# GPU model names -> generation, for NVML power polling (first match wins).
_GENERATIONS = [
    (r"H100|H200|GH200|H800", "hopper"),
    (r"A100|A800|A30\b|A40\b|A10\b|A16|A2\b|A[456]000|RTX A|L40|L4\b|RTX 6000 Ada|RTX PRO|RTX 30|RTX 40|\bB200",
     "ampere"),
    (r"V100|TITAN V|T4\b|RTX 20|RTX 8000|RTX 6000\b|Quadro RTX|2080|GV100", "volta"),
    (r"P100|P40|P6000|P4\b|1080|1070|TITAN X|TITAN Xp|M2075|K80|K40|Maxwell|Kepler", "pre-volta"),
]


def gpu_generation(model: str | None) -> str:
    for pattern, generation in _GENERATIONS:
        if model and re.search(pattern, model):
            return generation
    return "unknown"


def source_key(source: str, gpu_model: str | None = None) -> str:
    return f"nvml-power:{gpu_generation(gpu_model)}" if source == "nvml-power" else source


def systematic_rel(source: str, window_s: float | None = None, gpu_model: str | None = None) -> float | None:
    """The relative systematic of one domain's figure; None for a source the table does not know."""
    entry = TABLE.get(source_key(source, gpu_model))
    if entry is None:
        return None
    rel = entry[0]
    update = COUNTER_UPDATE_S.get(source)
    if update and window_s:
        rel = math.hypot(rel, update / window_s)
    return rel


def energy_uncertainty(domains: dict, window_s: float | None, gpu_model: str | None = None) -> dict:
    """`energy.uncertainty`: per domain, and the total weighted by joules (linear sum).

    `domains`: {name: {"joules", "source"}}. A source the table does not know makes the total
    unknown (null), never zero.
    """
    by_domain = {name: systematic_rel(d["source"], window_s, gpu_model) for name, d in sorted(domains.items())}
    total_j = sum(abs(d["joules"]) for d in domains.values())
    if not domains or any(v is None for v in by_domain.values()) or total_j == 0:
        total = None
    else:
        total = sum(by_domain[n] * abs(d["joules"]) for n, d in domains.items()) / total_j
    return {"systematic_rel": total, "by_domain": by_domain, "table_version": TABLE_VERSION,
            "keys": {name: source_key(d["source"], gpu_model) for name, d in sorted(domains.items())},
            "combination": "joule-weighted linear sum over domains; window quantisation in quadrature"}
