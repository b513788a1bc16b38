"""Near-optimal minima of a curve fit (``minima=True``): the distinct minima within the likelihood-ratio
bound, and the range of a prediction over them, which holds a truth the best minimum alone can miss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import chi2
from test_curve_branches import branch_lrs, curve, trunk_lrs

from analysis import curve_law, fit_loss_curve
from analysis.curve_laws.branches import predict_branches
from analysis.curve_laws.minima import near_minima
from analysis.errors import AnalysisInputError

TRUTH = dict(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=1.0, beta=0.5, gamma=0.5)


def test_near_minima_keeps_the_distinct_minima_within_the_bound_best_first():
    p = np.array([1.0, 2.0])
    refined = [(1.05, p + 1), (1.0, p), (1.0, p.copy()), (1.001, p + 0.5), (np.nan, p), (1.5, p + 2)]
    near = near_minima(refined, ["a", "b"], n_points=102, n_free=2, level=0.95)
    # scores: 0, 0.1 and 5.0 (= 0.05 x 100) within chi2(0.95, 2) = 5.99; 50 beyond; the repeat counted once
    assert near["objective"].tolist() == [1.0, 1.001, 1.05]
    assert near["delta_chi2"].tolist() == pytest.approx([0.0, 0.1, 5.0])
    assert near[["a", "b"]].to_numpy().tolist() == [[1.0, 2.0], [1.5, 2.5], [2.0, 3.0]]
    assert len(near_minima(refined, ["a", "b"], n_points=102, n_free=2, level=0.5)) == 2  # 5.0 > chi2(0.5, 2)


def test_a_trunk_alone_leaves_the_drop_unidentified_and_the_range_says_so():
    """At constant lr the drop term is not seen: many minima fit the trunk equally well and predict a
    cooldown differently; their range holds the truth, which the best minimum alone misses."""
    law = curve_law("multipower", **TRUTH)
    rng = np.random.default_rng(0)
    trunk = curve(law, trunk_lrs()).assign(run_id="trunk")
    trunk = trunk.assign(loss=trunk["loss"] * np.exp(rng.normal(0, 1e-3, len(trunk))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_loss_curve(trunk, "multipower", minima=True, schedules={"trunk": trunk_lrs()})
    near = res.tables["minima"]
    assert res.diagnostics["n_minima"] == len(near) >= 2
    assert near["delta_chi2"].is_monotonic_increasing and near["delta_chi2"].max() <= chi2.ppf(0.95, len(TRUTH))
    assert near.iloc[0][list(TRUTH)].to_dict() == pytest.approx(res.estimates)  # the best first
    row = res.predict(branch_lrs(240, 60), [300]).iloc[0]
    truth = float(law.predict(branch_lrs(240, 60), [300])["loss"].iloc[0])
    assert abs(row["loss"] / truth - 1) > 0.01  # the best minimum's cooldown is off
    assert row["loss_minima_low"] <= truth <= row["loss_minima_high"]


def test_a_trained_cooldown_pins_the_drop_and_the_range_closes_on_the_truth():
    law = curve_law("multipower", **TRUTH)
    trunk = curve(law, trunk_lrs())
    branch = curve(law, branch_lrs(480, 120), start=480).assign(branch_step=480)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = predict_branches(trunk, {"b480": branch}, branch_points=[160, 320], cooldowns=[40, 80],
                                 law="multipower", minima=True,
                                 schedules={"trunk": trunk_lrs(), "b480": branch_lrs(480, 120)})
    for _, row in table[table["predicted"]].iterrows():
        bp, cool = int(row["branch_step"]), int(row["cooldown_steps"])
        truth = float(law.predict(branch_lrs(bp, cool), [bp + cool])["loss"].iloc[0])
        assert row["loss_minima_low"] <= row["loss"] <= row["loss_minima_high"]
        assert row["loss_minima_low"] == pytest.approx(truth, rel=1e-3)
        assert row["loss_minima_high"] == pytest.approx(truth, rel=1e-3)
    plain = predict_branches(trunk, {"b480": branch}, branch_points=[160], cooldowns=[40], law="multipower",
                             schedules={"trunk": trunk_lrs(), "b480": branch_lrs(480, 120)})
    assert "loss_minima_low" not in plain.columns  # only when asked for


def test_minima_need_the_lsq_method():
    law = curve_law("multipower", **TRUTH)
    frame = curve(law, trunk_lrs()).assign(run_id="trunk")
    with pytest.raises(AnalysisInputError, match="minima=True with method='paper'"):
        fit_loss_curve(frame, "multipower", method="paper", minima=True, schedules={"trunk": trunk_lrs()})
