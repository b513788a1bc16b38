"""The data-constrained law (Muennighoff et al. 2023): published check on their 182 runs, recovery of a
known law, the valley beyond the paper's point, intervals, allocation, plots, CLI and bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import (MUENNIGHOFF_C4_BASE, AnalysisInputError, constrained_allocation, effective_tokens, epoch_table,
                      epoch_value, extra_epoch_value, fit_data_constrained, predict_data_constrained)
from analysis.cli import main
from analysis.data_constrained_plots import plot_iso_loss, plot_loss_vs_epochs

# The notebook's printed result (utils/parametric_fit.ipynb, see shared/data/datablations/README.md).
PUBLISHED = {"R_D_star": 15.387756, "R_N_star": 5.309743}
PUBLISHED_OBJECTIVE = 0.015825936570763588  # "Min Loss" as printed; the README rounds it to 0.0158259
PUBLISHED_R2, PUBLISHED_R2_BASE = 0.7722, 0.4452


def huber_sum(pred, loss, delta=1e-3):
    r = np.abs(np.log(pred) - np.log(loss))
    return float(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum())


def r2(pred, loss):
    return 1 - ((loss - pred) ** 2).sum() / ((loss - loss.mean()) ** 2).sum()


@pytest.fixture(scope="module")
def runs(shared_data):
    df = pd.read_csv(shared_data / "datablations" / "runs.csv")
    return df.rename(columns={"params": "N", "tokens": "D", "unique_tokens": "U"})


@pytest.fixture(scope="module")
def valley(runs):
    """The harness's default two-stage fit on the paper's base law, with a small bootstrap."""
    return fit_data_constrained(runs.N, runs.D, runs.U, runs.loss, base=MUENNIGHOFF_C4_BASE, bootstrap=40, seed=1)


def test_effective_tokens_and_the_value_of_epochs():
    assert effective_tokens(1e9, 0.5, 15.0) == pytest.approx(5e8)  # under one epoch every token is fresh
    assert effective_tokens(1e9, 1.0, 15.0) == pytest.approx(1e9)
    assert effective_tokens(1e9, 1e6, 15.0) == pytest.approx(16e9, rel=1e-9)  # saturates at U (1 + R_D*)
    assert effective_tokens(1e9, 5.0, np.inf) == pytest.approx(5e9)  # R_D* = inf: repeats as good as fresh
    # the paper's reading of R_D* = 15.4: 4 epochs worth about 93% of fresh data, 40 epochs about 38%
    assert epoch_value(4, PUBLISHED["R_D_star"]) == pytest.approx(0.93, abs=0.005)
    assert epoch_value(40, PUBLISHED["R_D_star"]) == pytest.approx(0.38, abs=0.005)
    extra = extra_epoch_value(np.array([1.0, 4.0, 40.0]), PUBLISHED["R_D_star"])
    assert np.all(np.diff(extra) < 0) and extra[0] < 1


def test_the_published_point_gives_the_published_objective_and_r2(runs):
    pred = predict_data_constrained(runs.N, runs.D, runs.U, **PUBLISHED, base=MUENNIGHOFF_C4_BASE)
    assert huber_sum(pred, runs.loss) == pytest.approx(PUBLISHED_OBJECTIVE, rel=1e-6)
    assert r2(pred, runs.loss) == pytest.approx(PUBLISHED_R2, abs=5e-5)
    # R* = inf: a repeated token or an excess parameter is worth a fresh one, the base law on (N, D)
    fresh = predict_data_constrained(runs.N, runs.D, runs.U, R_D_star=np.inf, R_N_star=np.inf, base=MUENNIGHOFF_C4_BASE)
    assert r2(fresh, runs.loss) == pytest.approx(PUBLISHED_R2_BASE, abs=5e-5)


def test_the_paper_procedure_lands_on_the_published_point_from_its_grid(runs):
    res = fit_data_constrained(runs.N, runs.D, runs.U, runs.loss, base=MUENNIGHOFF_C4_BASE, method="paper",
                               profile=False)
    starts = res.tables["starts"]
    assert len(starts) == 16 and res.diagnostics["n_starts_failed"] == 7  # starts at R* = 0 are NaN, as there
    ended = starts.dropna()
    at_published = ended[(abs(ended.R_D_star - PUBLISHED["R_D_star"]) < 0.05)
                         & (abs(ended.R_N_star - PUBLISHED["R_N_star"]) < 0.05)]
    assert len(at_published) >= 6, starts
    assert np.allclose(at_published.objective, PUBLISHED_OBJECTIVE, rtol=1e-6)
    # one start of the paper's own grid, run to convergence in float64, ends lower than the published point
    assert res.diagnostics["objective"] <= PUBLISHED_OBJECTIVE * (1 + 1e-6)
    assert res.diagnostics["r2_without_repetition"] == pytest.approx(PUBLISHED_R2_BASE, abs=5e-5)


def test_the_default_fit_finds_a_lower_objective_and_intervals_contain_the_published_point(valley):
    d = valley.diagnostics
    assert d["method"] == "valley" and d["fit"] == "two-stage" and set(valley.estimates) >= {"R_D_star", "R_N_star"}
    assert d["objective"] < 0.0158259 and d["objective"] < PUBLISHED_OBJECTIVE * (1 - 1e-4)
    assert d["objective"] <= d["profile_lowest"] * (1 + 1e-9)  # nothing the profile saw is lower
    assert d["r2"] > PUBLISHED_R2
    for name, value in PUBLISHED.items():
        lo, hi = d["profile_interval"][name]
        assert lo < value < hi and lo < valley[name] < hi, name
        blo, bhi = valley.interval[name]
        assert blo < valley[name] < bhi
    table = valley.tables["profile_R_D_star"]
    assert len(table) > 100 and d["profile_lowest"] <= table["objective"].min() < d["profile_lowest"] * (1 + 1e-4)


def test_epoch_values_carry_profile_and_bootstrap_intervals(valley):
    table = epoch_table(valley)
    assert list(table["epochs"]) == [4, 16, 40]
    assert np.all((table.profile_low <= table.value) & (table.value <= table.profile_high))
    assert np.all((table.bootstrap_low <= table.value + 1e-12) & (table.value <= table.bootstrap_high + 1e-12))
    assert np.all(np.diff(table.value) < 0)
    published = epoch_value(np.array([4.0, 16.0, 40.0]), PUBLISHED["R_D_star"])
    assert np.all((table.profile_low < published) & (published < table.profile_high))
    assert valley["epoch_value_4"] == pytest.approx(table.value[0])


def test_a_known_law_is_recovered():
    rng = np.random.default_rng(0)
    N, U, ep = (a.ravel() for a in np.meshgrid([2e7, 1e8, 5e8, 2e9], [1e8, 1e9, 1e10], [1, 2, 4, 8, 16, 40, 100]))
    true = {"R_D_star": 8.0, "R_N_star": 3.0}
    L = predict_data_constrained(N, U * ep, U, **true) * np.exp(rng.normal(0, 0.002, N.size))
    res = fit_data_constrained(N, U * ep, U, L, base=MUENNIGHOFF_C4_BASE)
    for name, value in true.items():
        assert res[name] == pytest.approx(value, rel=0.1), name
        lo, hi = res.diagnostics["profile_interval"][name]
        assert lo < value < hi
    assert res.success


@pytest.mark.slow  # about 8 s alone, 25 s on a loaded machine
def test_the_joint_fit_frees_the_base_law_and_fits_better(runs, valley):
    res = fit_data_constrained(runs.N, runs.D, runs.U, runs.loss, profile=False)
    assert res.diagnostics["fit"] == "joint"
    assert {"A", "B", "E", "alpha", "beta", "R_D_star", "R_N_star"} <= set(res.estimates)
    assert res.diagnostics["objective"] < valley.diagnostics["objective"]  # the two-stage law is one of its points
    assert 0 < res["alpha"] < 1 and 0 < res["beta"] < 1


def test_compute_optimal_allocation_for_scarce_data(valley):
    out = constrained_allocation(valley, [1e9, 1e9], [1e19, 1e22])
    assert np.allclose(6 * out.N_opt * out.D_opt, out.C) and np.allclose(out.epochs, out.D_opt / out.U)
    assert out.epochs[1] > out.epochs[0] > 0  # more compute on the same data: more epochs
    for row in out.itertuples():  # a minimum: nudging N either way (at the same C) does not lower the loss
        for f in (0.9, 1.1):
            n = row.N_opt * f
            assert valley.predict(n, row.C / (6 * n), row.U) >= row.loss_opt - 1e-12


def test_plots_are_written(valley, tmp_path):
    paths = plot_loss_vs_epochs(valley, tmp_path / "epochs", formats=["png"])
    paths += plot_iso_loss(valley, tmp_path / "iso", N=1.465e8, formats=["png"])
    assert sorted(p.name for p in paths) == ["epochs.png", "iso.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_the_report_has_the_section_and_the_plots(valley, tmp_path):
    from analysis.report import write_report

    written = write_report(tmp_path, {"data-constrained": valley})
    assert {"loss_vs_epochs.png", "iso_loss_epochs.png", "fit.json", "report.md"} <= set(written)
    text = (tmp_path / "report.md").read_text()
    assert "## Value of repeated data" in text and "| 40 |" in text
    assert json.loads((tmp_path / "fit.json").read_text())["data-constrained"]["estimates"]["R_D_star"] > 0


def test_cli_fits_and_prints_json(shared_data, capsys):
    table = shared_data / "datablations" / "runs.csv"
    code = main([str(table), "--params-col", "params", "--tokens-col", "tokens", "--loss-col", "loss",
                 "--approach", "data-constrained", "--unique-tokens-col", "unique_tokens", "--base-law", "c4",
                 "--dc-method", "paper", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)["data-constrained"]
    assert out["diagnostics"]["method"] == "paper" and out["estimates"]["R_D_star"] > 0
    assert out["diagnostics"]["profile_interval"]["R_D_star"][1] is None  # open above: JSON null, not inf


def test_cli_without_the_unique_tokens_column_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": [1e7, 2e7, 4e7], "D": [1e9, 2e9, 4e9], "loss": [4.0, 3.5, 3.2]}).to_csv(path, index=False)
    assert main([str(path), "--approach", "data-constrained", "--unique-tokens-col", "U"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --unique-tokens-col: 'U' is not a column") and "\n" not in err


@pytest.mark.parametrize("change, field", [
    ({"U": [2e9, 1e9, 1e9, 1e9]}, "U:"),  # more unique tokens than tokens trained
    ({"U": [1e9, 2e9, 4e9, 8e9], "D": [1e9, 2e9, 4e9, 8e9]}, "U:"),  # no run repeats data
    ({"N": [0.0, 1e8, 1e8, 1e8]}, "N:"),
    ({"L": [3.0, -1.0, 3.0, 3.0]}, "L:"),
    ({"U": [1e9, np.nan, 1e9, 1e9]}, "U:"),
])
def test_bad_input_is_a_one_line_error(change, field):
    kw = {"N": [1e8] * 4, "D": [1e9, 2e9, 4e9, 8e9], "U": [1e9] * 4, "L": [3.0, 2.9, 2.85, 2.84], **change}
    with pytest.raises(AnalysisInputError) as err:
        fit_data_constrained(kw["N"], kw["D"], kw["U"], kw["L"], base=MUENNIGHOFF_C4_BASE)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_bad_options_are_one_line_errors():
    args = ([1e8] * 3, [1e9, 2e9, 4e9], [1e9] * 3, [3.0, 2.9, 2.85])
    for kw, field in (({"method": "paper"}, "method:"), ({}, "points:"), ({"base": {"A": 1.0}}, "base:"),
                      ({"base": {**MUENNIGHOFF_C4_BASE, "beta": -1.0}}, "base:"),
                      ({"base": MUENNIGHOFF_C4_BASE, "method": "grid"}, "method:"),
                      ({"base": MUENNIGHOFF_C4_BASE, "level": 1.5}, "level:")):
        with pytest.raises(AnalysisInputError, match=f"^{field}"):
            fit_data_constrained(*args, **kw)
    assert math.isfinite(epoch_value(4, 1e-300))
