"""Held-out validation: fit below a compute threshold, predict above it."""

import numpy as np
import pytest

from analysis.errors import AnalysisInputError
from analysis.holdout import holdout_validation

GRID = {"a": [3.0, 9.0], "b": [3.0, 12.0], "e": [-0.5, 1.0], "alpha": [0.2, 0.6], "beta": [0.2, 0.6]}


def points(sigma=0.005, seed=0):
    rng = np.random.default_rng(seed)
    N, C = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 8), np.geomspace(1e18, 1e22, 7)))
    D = C / (6 * N)
    L = (1.7 + 400 * N**-0.34 + 1200 * D**-0.3) * np.exp(rng.normal(0, sigma, N.size))
    return N, D, L, C


def test_predicts_held_out_points_of_a_true_law():
    N, D, L, C = points()
    res, table = holdout_validation(N, D, L, C, 1e21, grid=GRID, bootstrap=100)
    held = C >= 1e21
    assert len(table) == held.sum() and (table["C"] >= 1e21).all()
    assert res.diagnostics["n_points"] == (~held).sum()
    assert np.abs(table["rel_error"]).max() < 0.03
    np.testing.assert_allclose(table["error"], table["predicted"] - table["measured"])
    # the band is for the law, not for a noisy measurement: check it is the band's verdict
    inside = (table["predicted_low"] <= table["measured"]) & (table["measured"] <= table["predicted_high"])
    assert (table["inside"] == inside).all() and inside.any()
    assert (table["predicted_low"] <= table["predicted"]).all() and (table["predicted"] <= table["predicted_high"]).all()
    assert res.diagnostics["holdout_mean_abs_rel_error"] == pytest.approx(np.abs(table["rel_error"]).mean())


def test_without_bootstrap_has_no_interval_columns():
    N, D, L, C = points()
    _, table = holdout_validation(N, D, L, C, 1e21, grid=GRID)
    assert "inside" not in table and "predicted_low" not in table


@pytest.mark.parametrize("threshold", [1e30, 1e10])
def test_threshold_leaving_one_side_empty_raises(threshold):
    N, D, L, C = points()
    with pytest.raises(AnalysisInputError, match="threshold"):
        holdout_validation(N, D, L, C, threshold, grid=GRID)
