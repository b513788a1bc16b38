"""Approach 2, IsoFLOP profiles (analysis.isoflop), on synthetic data and on Porian et al.'s points."""

import numpy as np
import pandas as pd
import pytest
from run_records import LAW, law_loss

from analysis import fit_isoflop
from analysis.errors import AnalysisInputError

A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
G = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (1 / (LAW["alpha"] + LAW["beta"]))


def isoflop_points(budgets=np.geomspace(1e17, 1e20, 7), spread=1.0, noise=0.002, seed=0, centre=1.0):
    """Nine sizes per budget, log-spaced over +-``spread`` decades around ``centre`` x the true optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt = G * (C / 6) ** A_TRUE * centre
        for N in n_opt * np.logspace(-spread, spread, 9):
            D = C / (6 * N)
            rows.append((N, D, C, float(law_loss(N, D)) * np.exp(rng.normal(0, noise))))
    return pd.DataFrame(rows, columns=["N", "D", "C", "loss"])


def test_synthetic_law_recovers_the_allocation_exponent():
    df = isoflop_points()
    res = fit_isoflop(df.N, df.loss, df.C, bootstrap=50, seed=0)
    assert res["a"] == pytest.approx(A_TRUE, abs=0.02)
    assert res["a"] + res["b"] == pytest.approx(1.0, abs=1e-9)  # D_opt = C / (6 N_opt)
    lo, hi = res.interval["a"]
    assert lo < A_TRUE < hi
    budgets = res.tables["budgets"]
    assert len(budgets) == 7 and budgets["used"].all()
    n_true = G * (budgets["C"] / 6) ** A_TRUE
    assert np.allclose(np.log(budgets["N_opt"]), np.log(n_true), atol=0.15)
    pred = res.predict([1e21])
    assert pred.loc[0, "tokens_per_param"] == pytest.approx(pred.loc[0, "D_opt"] / pred.loc[0, "N_opt"])


def test_given_tokens_give_the_same_vertices_as_c_over_6n():
    df = isoflop_points()
    with_d = fit_isoflop(df.N, df.loss, df.C, D=df.D)
    without = fit_isoflop(df.N, df.loss, df.C)
    assert with_d["b"] == pytest.approx(without["b"], abs=1e-9)
    assert with_d.diagnostics["D_from"] == "data"


def test_budget_with_its_minimum_at_the_edge_is_flagged_and_left_out():
    df = pd.concat([isoflop_points(), isoflop_points(budgets=[3e20], centre=30.0)])  # all sizes too big
    res = fit_isoflop(df.N, df.loss, df.C)
    budgets = res.tables["budgets"]
    edge = budgets[np.isclose(budgets["C"], 3e20)]
    assert edge["status"].item() == "minimum at the smallest size" and not edge["used"].item()
    assert any("left out 1 of 8 budgets" in w for w in res.warnings)
    assert res["a"] == pytest.approx(A_TRUE, abs=0.02)


def test_robust_fit_damps_an_outlying_run():
    df = isoflop_points(noise=0.0005)
    plain_clean = fit_isoflop(df.N, df.loss, df.C)
    bad = df.copy()
    in_budget = bad.index[bad["C"] == bad["C"].max()]
    bad.loc[in_budget[5], "loss"] += 0.08  # one run just right of the optimum went wrong
    plain = fit_isoflop(bad.N, bad.loss, bad.C)
    robust = fit_isoflop(bad.N, bad.loss, bad.C, robust=True)
    assert abs(robust["a"] - plain_clean["a"]) < abs(plain["a"] - plain_clean["a"])


def test_bad_input_is_a_one_line_error():
    df = isoflop_points(budgets=[1e18])
    with pytest.raises(AnalysisInputError, match="every point is at one budget"):
        fit_isoflop(df.N, df.loss, df.C)
    df = isoflop_points()
    with pytest.raises(AnalysisInputError, match="window: 1; must be a factor > 1"):
        fit_isoflop(df.N, df.loss, df.C, window=1)
    with pytest.raises(AnalysisInputError, match=r"C: 1 value\(s\) are not positive"):
        fit_isoflop(df.N, df.loss, np.r_[df.C[:-1], 0.0])
    far = isoflop_points(centre=100.0)
    with pytest.raises(AnalysisInputError, match="only 0 of 7 budgets have an interior minimum"):
        fit_isoflop(far.N, far.loss, far.C)


# Porian et al. 2024, Figure 1 / README table: (dataset, hparams, warmup, decay, param_count, val) -> a.
PUBLISHED = {
    "rw": [("base", "long", "kaplan", "kaplan", "train", 0.835), ("base", "long", "kaplan", "standard", "val", 0.706),
           ("base", "short", "kaplan", "standard", "val", 0.602),
           ("base", "short", "chinchilla", "standard", "val", 0.571),
           ("tuned", "short", "const", "standard", "val", 0.497)],
    "owt2": [("base", "long", "kaplan", "kaplan", "train", 0.864), ("base", "long", "kaplan", "standard", "val", 0.699),
             ("base", "short", "kaplan", "standard", "val", 0.603),
             ("base", "short", "chinchilla", "standard", "val", 0.574),
             ("tuned", "short", "const", "standard", "val", 0.518)],
}


@pytest.mark.parametrize("dataset", ["rw", "owt2"])
def test_porian_exponents_within_004_and_in_the_published_order(shared_data, dataset):
    points = pd.read_csv(shared_data / "porian" / "porian_isoflop_points.csv")
    ours = []
    for hparams, warmup, decay, count, val, published in PUBLISHED[dataset]:
        g = points[(points.dataset == dataset) & (points.hparams == hparams) & (points.warmup == warmup)
                   & (points.decay == decay) & (points.param_count == count) & (points.val == val)]
        assert len(g) > 50
        a = fit_isoflop(g.n, g.loss, g.flops, D=g.t)["a"]
        assert a == pytest.approx(published, abs=0.04), (hparams, warmup, decay, count, val)
        ours.append(a)
    published = [row[-1] for row in PUBLISHED[dataset]]
    assert np.argsort(ours).tolist() == np.argsort(published).tolist()
