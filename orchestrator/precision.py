"""Repetitions driven by precision, and the execution order of a round.

A group is a cell without its repetition index. With adaptive repetitions,
a group runs `min` repetitions, then one more at a time until the 95 %
Student-t CI half-width of its metric, divided by the mean, is at or below
the target, or `max` is reached. Cells a group turns out not to need are
marked skipped, with the reason.
"""
from __future__ import annotations

import math
import random

from scipy import stats

from jobs.records import RESULT_FILE, read_json

# Where each metric lives in result.json.
METRIC_PATHS = {
    "energy_per_sample_j": ("energy", "joules_per_sample"),
    "energy_total_j": ("energy", "total_joules"),
    "throughput_samples_per_s": ("window", "throughput_samples_per_s"),
    "window_s": ("window", "duration_s"),
}


def relative_half_width(values: list) -> float:
    """95 % CI half-width / |mean|; infinite below two values or at a zero mean."""
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    if mean == 0:
        return math.inf
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) / abs(mean)


def needs_more(values: list, policy) -> bool:
    """The stopping rule: below `min` always; at `max` never; in between until precise enough."""
    if len(values) < policy.min:
        return True
    if len(values) >= policy.max:
        return False
    return relative_half_width(values) > policy.target_ci


def group_key(cell) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in cell.params.items() if k != "repetition"))


def metric_value(campaign, cell, metric: str):
    section, key = METRIC_PATHS[metric]
    try:
        return float(read_json(campaign.cell_dir(cell.id) / RESULT_FILE)[section][key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def order_round(cells: list, shuffle: bool, seed: int, round_index: int) -> list:
    """Interleave tests and node types; the seed makes the order reproducible."""
    if not shuffle:
        return list(cells)
    shuffled = list(cells)
    random.Random(f"{seed}:{round_index}").shuffle(shuffled)
    return shuffled
