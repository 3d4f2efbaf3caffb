"""Each scikit-learn estimator of the shallow family, fitted on digits under the real meters."""
from __future__ import annotations

import pytest

from jobs.catalog import TESTS
from tests.test_fit import fit_cell

SHALLOW = [name for name, t in TESTS.items() if t.family == "shallow"]


def test_the_family_has_the_four_required_estimators():
    assert {"logistic_regression", "random_forest", "hist_gradient_boosting", "linear_svm"} <= set(SHALLOW)


@pytest.mark.parametrize("name", SHALLOW)
def test_estimator_fits_digits_under_the_meters(tmp_path, name):
    _, result = fit_cell(tmp_path, name, [8, 8, 1], 64, {"epochs": 2, "estimators_per_epoch": 5})
    fit = result["fit"]
    # a fit cell carries its evidence like any other (#14): trace, gate verdict, uncertainty, machine state
    assert (tmp_path / "camp" / "cells" / name / "trace.parquet").stat().st_size > 0 and result["trace"]
    assert isinstance(result["energy"]["valid"], bool) and "uncertainty" in result["energy"]
    assert result["state"]["start"] and result["state"]["end"]
    assert fit["final_accuracy"] > 0.8  # digits from 64 raw pixels: every one of them does better
    assert result["model"]["family"] == "shallow" and result["model"]["features"].startswith("flattened pixels")
    assert result["energy"]["total_joules"] > 0
    assert all(d["source"] for d in result["energy"]["domains"].values())
    assert fit["curve"][0]["train_loss"] > 0 and fit["curve"][0]["steps"] >= 1
    assert fit["epochs_run"] == (1 if name == "rbf_svm" else 2)
