"""Approach-3 parametric fit: Epoch's Chinchilla replication numbers, bootstrap errors, synthetic recovery
and coverage, bad input, and honest diagnostics."""

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.parametric import HOFFMANN_GRID, fit_parametric

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
SMALL_GRID = {"a": [3.0, 9.0], "b": [3.0, 12.0], "e": [-0.5, 1.0], "alpha": [0.2, 0.6], "beta": [0.2, 0.6]}


@pytest.fixture(scope="module")
def epoch(shared_data):
    """Epoch's 245 points minus the 5 highest losses; D = C / (6N)."""
    df = pd.read_csv(shared_data / "chinchilla_epoch" / "svg_extracted_data.csv")
    df = df.sort_values("loss").iloc[:-5]
    N, C, L = (df[c].to_numpy() for c in ("Model Size", "Training FLOP", "loss"))
    return N, C / (6 * N), L, C


@pytest.fixture(scope="module")
def epoch_fit(epoch):
    N, D, L, _ = epoch
    return fit_parametric(N, D, L, bootstrap=4000, seed=0)


def synthetic(rng, sigma=0.01, sizes=10, budgets=8):
    """Points from TRUE on a grid of model sizes and budgets, multiplicative log-normal noise."""
    N, C = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, sizes), np.geomspace(1e18, 1e22, budgets)))
    D = C / (6 * N)
    L = TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]
    return N, D, L * np.exp(rng.normal(0, sigma, L.size))


def test_hoffmann_grid_has_4500_starts():
    assert np.prod([len(v) for v in HOFFMANN_GRID.values()]) == 4500


def test_epoch_huber_fit_matches_replication(epoch_fit):
    est, diag = epoch_fit.estimates, epoch_fit.diagnostics
    assert est["A"] == pytest.approx(477.8, rel=0.01)
    assert est["B"] == pytest.approx(2143, rel=0.03)
    assert est["E"] == pytest.approx(1.8172, abs=1e-3)
    assert est["alpha"] == pytest.approx(0.3473, abs=1e-3)
    assert est["beta"] == pytest.approx(0.3672, abs=1e-3)
    assert diag["objective"] == pytest.approx(1.01827e-3, rel=1e-5)
    assert est["a"] == pytest.approx(est["beta"] / (est["alpha"] + est["beta"]))
    assert diag["converged"] and diag["bound_hit"] == [] and diag["n_starts"] == 4500 and diag["n_points"] == 240
    assert epoch_fit.success and not epoch_fit.warnings


def test_epoch_bootstrap_errors_match_replication(epoch_fit):
    # a warm-started refit that stops early gives errors ~10x too small; each refit must converge
    se = epoch_fit.stderr
    assert se["alpha"] == pytest.approx(0.0154, rel=0.2)
    assert se["beta"] == pytest.approx(0.0206, rel=0.2)
    assert se["E"] == pytest.approx(0.0257, rel=0.2)
    assert epoch_fit.diagnostics["bootstrap_unconverged"] == 0
    assert set(epoch_fit.samples) >= {"E", "A", "B", "alpha", "beta", "a", "b", "G"}
    assert all(len(v) == 4000 for v in epoch_fit.samples.values())
    lo, hi = epoch_fit.interval["alpha"]
    assert lo < epoch_fit["alpha"] < hi


def test_bootstrap_is_reproducible_with_seed(epoch):
    N, D, L, _ = epoch
    runs = [fit_parametric(N, D, L, grid=SMALL_GRID, bootstrap=50, seed=s) for s in (3, 3, 4)]
    assert np.array_equal(runs[0].samples["alpha"], runs[1].samples["alpha"])
    assert not np.array_equal(runs[0].samples["alpha"], runs[2].samples["alpha"])


@pytest.mark.parametrize("method", ["lbfgs", "varpro"])
def test_epoch_least_squares_matches_variable_projection_reference(epoch, method):
    N, D, L, C = epoch
    m = C < 1e21
    assert m.sum() == 217
    res = fit_parametric(N[m] / 1e6, D[m] / 1e9, L[m], objective="lsq", method=method)
    est = res.estimates
    assert est["E"] == pytest.approx(1.9051, abs=1e-3)
    assert est["alpha"] == pytest.approx(0.3511, abs=1e-3)
    assert est["beta"] == pytest.approx(0.4587, abs=1e-3)
    assert est["A"] == pytest.approx(4.0005, rel=0.01)
    assert est["B"] == pytest.approx(1.0509, rel=0.01)
    assert res.diagnostics["objective"] == pytest.approx(0.062414, rel=1e-4)
    assert res.diagnostics["converged"]


def test_predict_evaluates_the_fitted_law(epoch_fit):
    e = epoch_fit.estimates
    N, D = np.array([1e9, 7e10]), np.array([2e10, 1.4e12])
    expected = e["E"] + e["A"] / N ** e["alpha"] + e["B"] / D ** e["beta"]
    np.testing.assert_allclose(epoch_fit.predict(N, D), expected)


def test_synthetic_huber_recovers_truth():
    N, D, L = synthetic(np.random.default_rng(0), sigma=0.003)
    res = fit_parametric(N, D, L, grid=SMALL_GRID)
    assert res.success
    assert res["alpha"] == pytest.approx(TRUE["alpha"], abs=0.02)
    assert res["beta"] == pytest.approx(TRUE["beta"], abs=0.02)
    assert res["E"] == pytest.approx(TRUE["E"], abs=0.03)


def test_synthetic_bootstrap_intervals_cover_truth_at_nominal_rate():
    rng = np.random.default_rng(1)
    draws, hits = 40, {"alpha": 0, "beta": 0, "E": 0}
    for i in range(draws):
        N, D, L = synthetic(rng, sigma=0.01, sizes=8, budgets=6)
        res = fit_parametric(N, D, L, objective="lsq", grid=SMALL_GRID, bootstrap=150, seed=i, level=0.9)
        for k in hits:
            lo, hi = res.interval[k]
            hits[k] += lo <= TRUE[k] <= hi
    coverage = {k: v / draws for k, v in hits.items()}
    # 90% intervals; with 40 draws a binomial band of about +-2 sd
    assert all(0.75 <= c <= 0.98 for c in coverage.values()), coverage


@pytest.mark.parametrize(
    "N, D, L, field",
    [
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 4, [3.0] * 5, "lengths"),
        ([1e8, -2e8, 3e8, 4e8, 5e8], [1e9, 2e9, 3e9, 4e9, 5e9], [3.0] * 5, "N"),
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9, 2e9, 0, 4e9, 5e9], [3.0] * 5, "D"),
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9, 2e9, 3e9, 4e9, 5e9], [3.0, 3.0, np.nan, 3.0, 3.0], "L"),
        ([1e8, 2e8, 3e8, 4e8], [1e9, 2e9, 3e9, 4e9], [3.0] * 4, "too few"),
        ([1e8, 2e8, 4e8, 5e8, 1e9], [1e10, 5e9, 2.5e9, 2e9, 1e9], [3.0, 2.9, 2.8, 2.9, 3.0], "same compute"),
    ],
)
def test_bad_input_raises_one_line_error(N, D, L, field):
    with pytest.raises(AnalysisInputError) as err:
        fit_parametric(N, D, L)
    msg = str(err.value)
    assert "\n" not in msg and field in msg


@pytest.mark.parametrize("kwargs", [{"objective": "mse"}, {"method": "varpro"}, {"grid": {"c": [1]}}, {"delta": 0}])
def test_bad_options_raise(kwargs):
    N, D, L = synthetic(np.random.default_rng(0))
    with pytest.raises(AnalysisInputError):
        fit_parametric(N, D, L, **kwargs)


def test_fit_outside_the_grid_is_flagged_in_diagnostics_and_summary():
    N, D, L = synthetic(np.random.default_rng(0), sigma=0.003)
    res = fit_parametric(N, D, L, grid={**SMALL_GRID, "alpha": [0.1, 0.2]})  # true alpha 0.34
    assert "alpha" in res.diagnostics["bound_hit"]
    assert not res.success
    assert "warning: alpha" in res.summary()


def test_law_without_a_finite_optimum_is_not_reported_as_clean():
    # loss does not depend on D at all: B -> 0 or beta -> 0, so the fit runs off the grid
    N, D, _ = synthetic(np.random.default_rng(0))
    L = 1.7 + 400.0 * N**-0.34
    res = fit_parametric(N, D, L, grid=SMALL_GRID)
    assert not res.success
    assert res.warnings and "warning:" in res.summary()


def test_named_grids_are_accepted_as_the_cli_accepts_them():
    rng = np.random.default_rng(0)
    N = np.repeat([1e6, 4e6, 1.6e7, 6.4e7], 4)
    D = np.tile([2e7, 8e7, 3.2e8, 1.3e9], 4)
    L = 1.7 + 400 * N ** -0.34 + 1000 * D ** -0.28 + rng.normal(0, 1e-3, N.size)
    coarse = fit_parametric(N, D, L, grid="coarse")
    assert coarse.diagnostics["n_starts"] == 243
    assert coarse["alpha"] == pytest.approx(fit_parametric(N, D, L)["alpha"], rel=0.05)
    with pytest.raises(AnalysisInputError, match="grid: 'fine' is not a named grid"):
        fit_parametric(N, D, L, grid="fine")
