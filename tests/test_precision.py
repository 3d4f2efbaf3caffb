"""Repetitions driven by precision: the stopping rule on seeded streams, and the sweep's rounds.

The sweep-level tests replace the job by a launcher that writes results drawn from a seeded
stream: what is under test is the scheduling rule, not the measurement (tested elsewhere).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from jobs.records import RESULT_FILE, atomic_write_json, update_status
from orchestrator import launchers
from orchestrator.launchers import JobState, Launcher
from orchestrator.precision import needs_more, order_round, relative_half_width
from orchestrator.spec import Repetitions
from orchestrator.sweep import run_sweep


def test_relative_half_width_is_the_student_t_interval():
    values = [98.0, 101.0, 103.0, 99.0]
    n, mean, std = 4, np.mean(values), np.std(values, ddof=1)
    assert relative_half_width(values) == pytest.approx(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) / mean)
    assert relative_half_width([5.0]) == math.inf and relative_half_width([0.0, 0.0]) == math.inf


def test_stopping_rule_on_a_seeded_stream():
    policy = Repetitions(min=3, max=50, target_ci=0.02)
    stream = np.random.default_rng(7).normal(100.0, 5.0, 50).tolist()
    n = next(k for k in range(1, 51) if not needs_more(stream[:k], policy))
    assert n >= 3
    assert relative_half_width(stream[:n]) <= 0.02  # it stopped because the CI was tight enough...
    assert all(relative_half_width(stream[:k]) > 0.02 for k in range(3, n))  # ...and not before
    noisy = np.random.default_rng(7).normal(100.0, 60.0, 50).tolist()
    capped = Repetitions(min=3, max=8, target_ci=0.02)
    assert [needs_more(noisy[:k], capped) for k in (2, 7, 8)] == [True, True, False]  # the cap wins


def test_order_is_shuffled_reproducibly():
    cells = list(range(20))
    first = order_round(cells, True, 1, 0)
    assert first == order_round(cells, True, 1, 0) and sorted(first) == cells and first != cells
    assert order_round(cells, True, 1, 1) != first and order_round(cells, True, 2, 0) != first
    assert order_round(cells, False, 1, 0) == cells


class StreamLauncher(Launcher):
    """Stands in for the job: each cell's metric comes from a seeded stream per test."""

    name = "local"
    blocking = True
    spread = {"mobilenet_v2": 0.5, "vgg_16": 40.0}  # % of the mean: one precise test, one noisy
    launched = []

    def check(self, cells):
        pass

    def submit(self, campaign, cells, progress):
        for cell in cells:
            rng = np.random.default_rng(cell.repetition * 1000 + len(cell.test))
            value = 100.0 * (1 + self.spread[cell.test] / 100 * rng.standard_normal())
            atomic_write_json(campaign.cell_dir(cell.id) / RESULT_FILE,
                              {"energy": {"joules_per_sample": value}})
            update_status(campaign.cell_dir(cell.id), "done")
            StreamLauncher.launched.append((cell.test, cell.repetition))
        return {cell.id: f"stream-{cell.id}" for cell in cells}

    def query(self, campaign, job_ids):
        return {job_id: JobState(alive=False) for job_id in job_ids}

    def cancel(self, campaign, job_ids):
        pass


def test_sweep_repeats_each_group_until_precise_enough(sweep_file, tmp_path, monkeypatch):
    known = launchers.registry()
    monkeypatch.setattr(launchers, "registry", lambda: {**known, "local": "tests.test_precision:StreamLauncher"})
    StreamLauncher.launched = []
    text = """
name: adaptive
matrix:
  tests: [mobilenet_v2, vgg_16]
  phases: [inference]
  repetitions: {min: 3, max: 6, target_ci: 0.05}
launcher: local
"""
    outcome = run_sweep(str(sweep_file(text)), output=str(tmp_path / "out"))
    runs = {t: sorted(r for tt, r in StreamLauncher.launched if tt == t) for t in ("mobilenet_v2", "vgg_16")}
    assert runs["mobilenet_v2"] == [0, 1, 2]  # precise after the minimum
    assert runs["vgg_16"] == [0, 1, 2, 3, 4, 5]  # noisy: up to the cap
    states = {}
    for cell_dir in (tmp_path / "out" / "adaptive" / "cells").iterdir():
        status = (cell_dir / "status.json").read_text()
        states.setdefault("skipped" if '"skipped"' in status else "done", []).append(cell_dir.name)
    assert len(states["done"]) == 9 and len(states["skipped"]) == 3
    assert outcome.exit_code == 0

    StreamLauncher.launched = []
    run_sweep(str(sweep_file(text)), output=str(tmp_path / "out"))  # rerun: nothing more is needed
    assert StreamLauncher.launched == []
