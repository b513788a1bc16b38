"""The Multi-Power Law paper's numbers (shared/data/multipower): the published parameters give the README's
test metrics to the printed digits; the authors' fitting procedure (``method="paper"``), rerun on the three
training curves, gives the published parameters back and the published held-out PredE at 400M; and what
our fits reach on the end-of-run target (|predicted - measured| final loss <= 0.010 on every held-out
schedule, mean curve RMSE <= 0.0075), which no law or variant meets at every size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import curve_law, fit_loss_curve
from analysis.curve_laws import evaluate
from analysis.curve_laws import published as pub
from analysis.errors import AnalysisInputError

METRICS = ("R2", "MAE", "RMSE", "PredE", "WorstE")


@pytest.fixture(scope="module")
def root(shared_data: Path) -> Path:
    folder = shared_data / "multipower"
    if not folder.is_dir():
        pytest.skip(f"the Multi-Power Law curves are not at {folder}")
    return folder


@pytest.fixture(scope="module")
def sizes(root: Path) -> dict:
    """size -> (curves, schedules), read once."""
    return {size: pub.read_size(root, size) for size in pub.SIZES}


def held_out(result, curves, schedules):
    """The per-run table of the six held-out schedules, and its mean row."""
    table = evaluate(result, curves[curves.run_id.isin(pub.TEST)], schedules).set_index("run_id")
    return table.drop("mean"), table.loc["mean"]


@pytest.fixture(scope="module")
def paper_fits(sizes: dict) -> dict:
    """size -> the authors' procedure refitted on the three training curves (bootstrap off)."""
    out = {}
    for size, (curves, schedules) in sizes.items():
        train = curves[curves.run_id.isin(pub.TRAIN)]
        out[size] = fit_loss_curve(train, law="multipower", schedules=schedules, method="paper")
    return out


@pytest.mark.parametrize("size", pub.SIZES)
def test_published_parameters_give_the_readme_metrics(sizes, size):
    curves, schedules = sizes[size]
    _, mean = held_out(curve_law("multipower", **pub.PARAMS[size]), curves, schedules)
    for name in METRICS:
        printed = pub.METRICS[size][name]
        assert f"{mean[name]:.{len(printed.split('.')[1])}f}" == printed, (size, name, mean[name])


def test_paper_method_refit_gives_the_published_parameters_and_predE(sizes, paper_fits):
    for size, res in paper_fits.items():
        for name, value in pub.PARAMS[size].items():
            assert res.estimates[name] == pytest.approx(value, rel=1e-4), (size, name)
        assert res.diagnostics["method"] == "paper" and res.warnings == []
    curves, schedules = sizes[400]
    _, mean = held_out(paper_fits[400], curves, schedules)
    assert mean["PredE"] <= float(pub.METRICS[400]["PredE"])


def test_lsq_fits_the_training_curves_better_and_the_held_out_ones_worse(sizes, paper_fits):
    """The converged minimum (default method) overfits the three curves at 400M: a lower training
    objective than the authors' early-stopped fit, a higher held-out PredE (cosine_72000 ends 0.025 low)."""
    curves, schedules = sizes[400]
    lsq = fit_loss_curve(curves[curves.run_id.isin(pub.TRAIN)], schedules=schedules,
                         starts=[{"alpha": 0.4, "C": 1.0, "beta": 0.5, "gamma": 0.5}], n_refine=1)
    assert lsq.diagnostics["objective"] < 0.25 * paper_fits[400].diagnostics["objective"]
    rows, mean = held_out(lsq, curves, schedules)
    assert mean["PredE"] > 0.002 and rows.loc["cosine_72000", "final_error"] < -0.02


def test_end_of_run_target_what_the_paper_method_reaches(sizes, paper_fits):
    """Target: |final error| <= 0.010 on every held-out schedule and mean RMSE <= 0.0075, at every size.
    The authors' procedure meets the RMSE bound everywhere and the final-error bound on all but the WSD
    cooldowns (25M: wsdld 0.0102; 100M: 0.017; 400M: 0.024): not met."""
    reached = {25: 0.0105, 100: 0.0175, 400: 0.0245}
    for size, res in paper_fits.items():
        curves, schedules = sizes[size]
        rows, mean = held_out(res, curves, schedules)
        assert mean["RMSE"] <= 0.0075, size
        worst = rows["final_error"].abs()
        assert worst.max() <= reached[size], (size, worst.to_dict())
        assert worst.drop(["wsd_20000_24000", "wsdld_20000_24000"]).max() <= 0.010, (size, worst.to_dict())


def test_method_bad_input():
    lrs = np.full(201, 1e-3)
    frame = pd.DataFrame({"step": np.arange(10, 201, 10), "loss": 3.0 + 10.0 / np.arange(10, 201, 10)})
    with pytest.raises(AnalysisInputError, match="method: 'adam' is not one of 'lsq', 'paper'"):
        fit_loss_curve(frame, schedules={"run": lrs}, method="adam")
    for kwargs in ({"law": "tissue"}, {"fix": {"beta": 0.5}}, {"starts": [{"alpha": 0.5}]}):
        with pytest.raises(AnalysisInputError, match="method: 'paper'"):
            fit_loss_curve(frame, schedules={"run": lrs}, method="paper", **kwargs)


def test_end_of_run_target_what_the_exp_drop_law_reaches(sizes):
    """The exponential-drop law (``mpexp``), fitted on the three training curves: the target is met at 25M
    and 100M (largest |final error| 0.0096, 0.0068) and at 400M on all but the WSD cooldown (0.0126; the
    Multi-Power Law's fits 0.025, Tissue's 0.032), with mean RMSE <= 0.0060 everywhere."""
    reached = {25: 0.010, 100: 0.010, 400: 0.0130}
    for size in pub.SIZES:
        curves, schedules = sizes[size]
        res = fit_loss_curve(curves[curves.run_id.isin(pub.TRAIN)], law="mpexp", schedules=schedules,
                             starts=[{"alpha": 0.5, "gamma": 0.5, "C": 0.5, "p": 0.7}], n_refine=1)
        rows, mean = held_out(res, curves, schedules)
        worst = rows["final_error"].abs()
        assert mean["RMSE"] <= 0.0060 and worst.max() <= reached[size], (size, mean["RMSE"], worst.to_dict())
        assert worst.drop("wsd_20000_24000").max() <= 0.010, (size, worst.to_dict())
