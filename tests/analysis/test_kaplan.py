"""Kaplan-style one-variable laws (analysis.kaplan)."""

import warnings

import numpy as np
import pytest
from run_records import write_run

from analysis import fit_kaplan, fit_kaplan_table, load_runs
from analysis.errors import AnalysisInputError
from analysis.kaplan import prediction_band

TRUE = {"E": 1.7, "A": 400.0, "alpha": 0.34}


def noisy_law(n=15, noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    N = np.geomspace(1e6, 1e9, n)
    L = (TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"]) * np.exp(rng.normal(0, noise, n))
    return N, L


def test_power_law_with_irreducible_term_recovers_the_truth():
    N, L = noisy_law()
    res = fit_kaplan(N, L, name="N")
    assert res.law == "L = E + A N^-alpha" and res.success
    assert res["alpha"] == pytest.approx(TRUE["alpha"], abs=0.02)
    assert res["E"] == pytest.approx(TRUE["E"], abs=0.05)
    assert res.predict(N) == pytest.approx(TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"], rel=0.005)


def test_critical_form_without_e_is_exact_on_a_pure_power_law():
    D = np.geomspace(1e7, 1e10, 8)
    L = (5.4e13 / D) ** 0.095  # Kaplan et al.'s L(D)
    res = fit_kaplan(D, L, irreducible=False, form="critical", name="D")
    assert res["D_c"] == pytest.approx(5.4e13, rel=1e-6) and res["alpha"] == pytest.approx(0.095, rel=1e-9)
    assert "E" not in res.estimates


def test_bootstrap_intervals_cover_the_truth_and_repeat_with_the_seed():
    N, L = noisy_law(seed=1)
    res = fit_kaplan(N, L, name="N", bootstrap=40, seed=3)
    lo, hi = res.interval["alpha"]
    assert lo < TRUE["alpha"] < hi and res.stderr["alpha"] > 0
    again = fit_kaplan(N, L, name="N", bootstrap=40, seed=3)
    assert again.interval == res.interval
    band_lo, band_hi = prediction_band(res, N)
    assert np.all(band_lo <= res.predict(N) + 1e-9) and np.all(res.predict(N) <= band_hi + 1e-9)


def test_huber_resists_an_outlier_that_pulls_least_squares():
    N, L = noisy_law(noise=0.001)
    L[2] *= 1.3  # one bad run
    huber = fit_kaplan(N, L, name="N", objective="huber")
    lsq = fit_kaplan(N, L, name="N", objective="lsq")
    assert abs(huber["alpha"] - TRUE["alpha"]) < 0.003 and abs(lsq["alpha"] - TRUE["alpha"]) > 0.01


def test_bad_input_is_a_one_line_error():
    N, L = noisy_law()
    with pytest.raises(AnalysisInputError, match=r"N: 1 value\(s\) are not positive"):
        fit_kaplan(np.r_[N[:-1], -1.0], L, name="N")
    with pytest.raises(AnalysisInputError, match=r"loss: 1 value\(s\) are NaN"):
        fit_kaplan(N, np.r_[L[:-1], np.nan], name="N")
    with pytest.raises(AnalysisInputError, match="needs at least 4"):
        fit_kaplan(N[:3], L[:3], name="N")
    with pytest.raises(AnalysisInputError, match="form: 'exp' is not one of 'power', 'critical'"):
        fit_kaplan(N, L, form="exp")
    with pytest.raises(AnalysisInputError, match="differ in length"):
        fit_kaplan(N, L[:-1])


def test_laws_of_n_d_and_c_from_a_run_table(tmp_path):
    widths = [32, 48, 64, 96, 128, 192]
    for i, w in enumerate(widths):
        for j, t in enumerate([2e6, 5e6, 1.2e7, 3.2e7]):
            write_run(tmp_path, f"r{i}{j}", width=w, depth=4, tokens=int(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(tmp_path)
    res = fit_kaplan_table(runs)
    assert {"E_N", "A_N", "alpha_N", "alpha_D", "alpha_C"} <= set(res.estimates)
    assert set(res.tables["fits"]) == {"N", "D", "C"}
    assert 0 < res["alpha_N"] < 1 and 0 < res["alpha_C"] < 1
    assert res.to_dict()["estimates"]["alpha_D"] == pytest.approx(res["alpha_D"])
