"""LR rules: the best learning rate per size is recovered from a synthetic sweep and its power law fitted."""

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisInputError
from analysis.lr_rules import best_per_group, fit_batch_rule, fit_lr_rule
from run_records import synthetic_sweep


def test_parabola_finds_best_lr_between_grid_points():
    best = best_per_group(synthetic_sweep())
    want = 0.5 * best["N"] ** -0.3
    np.testing.assert_allclose(best["lr_star"], want, rtol=1e-6)  # exact for a quadratic in log lr
    assert not best["edge"].any()


def test_power_law_recovered_with_interval_and_predict():
    fit = fit_lr_rule(synthetic_sweep(noise=0.002))
    assert fit["k"] == pytest.approx(-0.3, abs=0.02)
    assert fit["c"] == pytest.approx(0.5, rel=0.3)
    lo, hi = fit.interval["k"]
    assert lo < fit["k"] < hi
    assert fit.predict(1e8) == pytest.approx(0.5 * 1e8 ** -0.3, rel=0.1)


def test_best_on_the_grid_edge_is_flagged():
    df = synthetic_sweep(c=5.0, k=0.0)  # lr* = 5 lies above the grid's top 0.5
    fit = fit_lr_rule(df)
    assert fit.tables["best"]["edge"].all() and fit.warnings


def test_batch_rule_and_bad_input():
    rows = [{"C": c, "batch_size": b, "loss": 2 + (np.log2(b) - np.log2(8 * (c / 1e15) ** 0.5)) ** 2}
            for c in (1e15, 4e15, 1.6e16) for b in (2, 4, 8, 16, 32, 64, 128)]
    assert fit_batch_rule(rows)["k"] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(AnalysisInputError, match="no 'lr' column"):
        fit_lr_rule(pd.DataFrame({"N": [1.0], "loss": [1.0]}))
    with pytest.raises(AnalysisInputError, match="at least 2"):
        fit_lr_rule(synthetic_sweep(sizes=(1e6,)))
