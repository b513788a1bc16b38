"""Approach 1, the envelope of training curves (analysis.envelope)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from run_records import LAW, law_loss, write_run

from analysis import fit_envelope, load_curves
from analysis.errors import AnalysisInputError

A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])


def synthetic_curves(sizes=np.geomspace(1e6, 1e9, 25), steps=60):
    """Each run logs L(N, D) = E + A/N^alpha + B/D^beta along its training, C = 6 N D."""
    rows = []
    for N in sizes:
        for D in np.geomspace(1e7, 200 * N, steps):
            rows.append((f"n{N:.0f}", N, D, 6 * N * D, float(law_loss(N, D))))
    return pd.DataFrame(rows, columns=["run_id", "N", "D", "C", "loss"])


def test_envelope_of_a_known_law_recovers_the_exponents():
    res = fit_envelope(synthetic_curves(), bootstrap=30, seed=0)
    assert res["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert res["b"] == pytest.approx(1 - A_TRUE, abs=0.02)
    lo, hi = res.interval["a"]
    assert lo <= res["a"] <= hi and hi - lo < 0.1
    env = res.tables["envelope"]
    assert env["edge"].any() and not env.loc[env["used"], "edge"].any()
    assert any("won by the smallest or largest size" in w for w in res.warnings)
    N_opt = res.predict([1e20])["N_opt"].item()
    assert 1e8 < N_opt < 1e9


def test_envelope_from_run_records(tmp_path):
    for i, w in enumerate([16, 24, 32, 48, 64, 96, 128, 192, 256]):
        write_run(tmp_path, f"r{i}", width=w, depth=2, tokens=60_000_000, n_steps=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curves = load_curves(tmp_path)
    res = fit_envelope(curves, n_points=30)
    assert 0.2 < res["a"] < 0.8  # nine sizes only: the winner moves in coarse steps
    assert set(res.tables["envelope"]["run_id"].dropna()) <= set(curves["run_id"])


def test_bad_input_is_a_one_line_error():
    cur = synthetic_curves()
    with pytest.raises(AnalysisInputError, match="curves: missing column"):
        fit_envelope(cur.drop(columns="D"))
    with pytest.raises(AnalysisInputError, match="the envelope needs at least 4 runs"):
        fit_envelope(cur[cur["run_id"].isin(cur["run_id"].unique()[:3])])
    with pytest.raises(AnalysisInputError, match="n_points: 2"):
        fit_envelope(cur, n_points=2)
    bad = cur.copy()
    bad.loc[3, "C"] = -1.0
    with pytest.raises(AnalysisInputError, match=r"curves.C: 1 value\(s\) are not positive"):
        fit_envelope(bad)
