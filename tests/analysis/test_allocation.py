"""Compute-optimal allocation and loss prediction from a parametric fit."""

import numpy as np
import pandas as pd
import pytest

from analysis.allocation import optimal_allocation, predict_loss
from analysis.errors import AnalysisInputError
from analysis.parametric import fit_parametric
from analysis.result import FitResult


def law_result(samples=None, **est):
    return FitResult("parametric", "L", estimates=est, samples=samples or {})


REPLICATION = {"E": 1.8169, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def test_replication_optimum_at_chinchilla_budget():
    # README: N_opt = 7.3e10, D_opt = 1.34e12 at C = 5.88e23 from the replication's estimates
    row = optimal_allocation(law_result(**REPLICATION), 5.88e23).iloc[0]
    assert row["N_opt"] == pytest.approx(7.3e10, rel=0.02)
    assert row["D_opt"] == pytest.approx(1.34e12, rel=0.02)
    assert row["N_opt"] * row["D_opt"] * 6 == pytest.approx(5.88e23)
    assert row["tokens_per_param"] == pytest.approx(row["D_opt"] / row["N_opt"])


def test_optimum_minimises_loss_along_the_budget():
    res = law_result(**REPLICATION)
    C = 1e22
    row = optimal_allocation(res, C).iloc[0]
    N = row["N_opt"] * np.geomspace(0.5, 2, 41)
    loss = predict_loss(res, N, C / (6 * N))["loss"].to_numpy()
    assert np.argmin(loss) == 20
    assert loss[20] == pytest.approx(row["loss_opt"])


def test_array_of_budgets_and_exponent():
    C = np.geomspace(1e20, 1e24, 5)
    table = optimal_allocation(law_result(**REPLICATION), C)
    assert list(table.columns) == ["C", "N_opt", "D_opt", "tokens_per_param", "loss_opt"]
    slope = np.polyfit(np.log(C), np.log(table["N_opt"]), 1)[0]
    assert slope == pytest.approx(REPLICATION["beta"] / (REPLICATION["alpha"] + REPLICATION["beta"]))


def test_intervals_from_bootstrap_samples_bracket_the_estimate():
    rng = np.random.default_rng(0)
    N, C = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e18, 1e22, 6)))
    D = C / (6 * N)
    L = (1.7 + 400 * N**-0.34 + 1200 * D**-0.3) * np.exp(rng.normal(0, 0.01, N.size))
    grid = {"a": [3.0, 9.0], "b": [3.0, 12.0], "e": [-0.5, 1.0], "alpha": [0.2, 0.6], "beta": [0.2, 0.6]}
    res = fit_parametric(N, D, L, objective="lsq", grid=grid, bootstrap=100)
    table = optimal_allocation(res, [1e21, 1e23])
    for name in ("N_opt", "D_opt", "loss_opt"):
        assert (table[f"{name}_low"] <= table[name]).all() and (table[name] <= table[f"{name}_high"]).all()
    pred = predict_loss(res, [1e8, 1e9], [1e9, 1e10])
    assert (pred["loss_low"] < pred["loss"]).all() and (pred["loss"] < pred["loss_high"]).all()
    assert isinstance(pred, pd.DataFrame)


@pytest.mark.parametrize("C", [0, -1e20, np.nan, []])
def test_bad_budget_raises(C):
    with pytest.raises(AnalysisInputError, match="C"):
        optimal_allocation(law_result(**REPLICATION), C)


def test_non_parametric_result_raises():
    with pytest.raises(AnalysisInputError, match="alpha"):
        optimal_allocation(law_result(E=1.0, A=1.0), 1e21)
