"""scaling-study --predict-branches: which branches train, the worker commands that train only them, the
predicted points of a trunk, their merge with the measured runs, and how they are marked (fits, report,
summary, plots). Synthetic planned runs and curves drawn from a known curve law: no training, seconds."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import curve_law
from analysis.plots import plot_loss_vs_compute
from scaling.cli.study import main
from scaling.study.fits import fit_laws, merge_points
from scaling.study.predicted import (_trunk_points, budget_override, choose_trained, flops_saved, predicted_summary,
                                     worker_commands)
from scaling.study.report import markdown

PER = 512  # tokens per step
F = 0.2  # cooldown fraction
PEAK, WARMUP = 3e-3, 20
MULTIPOWER = dict(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=1.0, beta=0.5, gamma=0.5)  # the study's law


def planned(width, role, budget=None, steps=600, skip=None, n=10_000):
    """A planned run as ``scaling.study.launch.plan`` returns it (the fields the study reads)."""
    tokens = steps * PER
    own = tokens if role == "trunk" else tokens - int((1 - F) * steps) * PER
    trunk = f"w{width}-d2-trunk"
    return SimpleNamespace(
        run_id=trunk if role == "trunk" else f"w{width}-d2-branch-{budget:g}", run_dir=f"/runs/{width}/{role}-{budget}",
        role=role, trunk=None if role == "trunk" else trunk, budget=budget, shape={"width": width, "depth": 2},
        tokens=tokens, own_tokens=own, steps=steps, skip_reason=skip, to_train=skip is None, convention="6nd_total",
        params={"total": n}, compute=6.0 * n * tokens, own_compute=6.0 * n * own, flops={"chinchilla": 6.0 * n * tokens})


def sweep(skip_smallest_of=None):
    """Two widths, three budgets each (steps 250, 500, 1000), the trunks to 800 steps."""
    runs = []
    for width in (8, 16):
        runs.append(planned(width, "trunk", steps=800))
        for budget, steps in ((1e10, 250), (2e10, 500), (4e10, 1000)):
            skip = "below the floor" if width == skip_smallest_of and budget == 1e10 else None
            runs.append(planned(width, "branch", budget, steps, skip))
    return runs


@pytest.mark.parametrize("k, kept", [(1, {4e10}), (2, {1e10, 4e10})])
def test_each_trunk_trains_its_longest_branch_and_with_two_its_shortest(k, kept):
    runs = sweep(skip_smallest_of=16)
    trained, predicted = choose_trained(runs, k)
    assert {r.run_dir for r in trained} | {r.run_dir for r in predicted} == {r.run_dir for r in runs}
    assert all(r.role == "trunk" for r in runs if r.role == "trunk" and r in trained)
    for width in (8, 16):
        branches = [r for r in trained if r.shape["width"] == width and r.role == "branch" and not r.skip_reason]
        expect = kept if width == 8 or k == 1 else {2e10, 4e10}  # width 16's shortest that trains is 2e10
        assert {r.budget for r in branches} == expect
    assert not any(r.skip_reason for r in predicted)  # a point its rules skip is neither trained nor predicted
    assert all(r.role == "branch" for r in predicted)


def test_workers_are_told_to_train_only_the_chosen_branches():
    trained, predicted = choose_trained(sweep(skip_smallest_of=16), 2)
    cmds = worker_commands(trained, 2, ["train.threads=1"])
    seen = {}
    for _, args in cmds:
        shapes = next(a for a in args if a.startswith("sweep.shapes="))
        roles = next(a for a in args if a.startswith("sweep.budget="))
        for width in (8, 16):
            if f"width:{width}," in shapes:
                seen[width] = roles
        assert "train.threads=1" in args and "hydra/launcher=worker" in args
    assert seen == {8: budget_override([1e10, 4e10]), 16: budget_override([2e10, 4e10])}
    assert seen[8] == "sweep.budget=trunk,40000000000.0,10000000000.0"
    saved = flops_saved(trained, predicted)
    assert saved["saved_flops"] == pytest.approx(sum(r.own_compute for r in predicted))
    assert saved["all_branches_flops"] == pytest.approx(sum(r.own_compute for r in sweep(16) if not r.skip_reason))


def lrs_of(bp, total):
    s = np.arange(total + 1, dtype=float)
    lr = np.where(s < WARMUP, PEAK * s / WARMUP, PEAK)
    tail = s > bp
    lr[tail] = PEAK * (1 - np.sqrt((s[tail] - bp) / (total - bp)))
    return lr


def synthetic_curves(law, trunk_steps, trained):
    """load_curves-like rows of a trunk and its trained branches (lr and loss at every step)."""
    frames = []
    lrs = lrs_of(trunk_steps, trunk_steps)
    steps = np.arange(1, trunk_steps + 1)
    frames.append(pd.DataFrame({"run_id": "w8-d2-trunk", "trunk": None, "step": steps, "lr": lrs[steps],
                                "tokens": steps * PER, "loss": law.predict(lrs, steps)["loss"].to_numpy()}))
    for r in trained:
        bp = int((1 - F) * r.steps)
        lrs = lrs_of(bp, r.steps)
        steps = np.arange(bp + 1, r.steps + 1)
        frames.append(pd.DataFrame({"run_id": r.run_id, "trunk": "w8-d2-trunk", "step": steps, "lr": lrs[steps],
                                    "tokens": steps * PER, "branch_tokens": bp * PER,
                                    "loss": law.predict(lrs, steps)["loss"].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def test_a_trunks_untrained_branches_are_predicted_as_isoflop_points():
    law = curve_law("multipower", **MULTIPOWER)
    runs = [r for r in sweep() if r.shape["width"] == 8]
    trained, predicted = choose_trained(runs, 1)
    curves = synthetic_curves(law, 800, [r for r in trained if r.role == "branch"])
    points = _trunk_points(curves, "w8-d2-trunk", predicted)
    assert list(points["run_id"]) == [r.run_id for r in predicted]
    assert points["predicted"].all() and (points["role"] == "branch").all()
    for r, (_, p) in zip(predicted, points.iterrows()):
        bp = int((1 - F) * r.steps)
        truth = float(law.predict(lrs_of(bp, r.steps), [r.steps])["loss"].iloc[0])
        assert p["loss"] == pytest.approx(truth, rel=1e-3)
        assert (p["N"], p["D"], p["C"], p["budget"]) == (10_000, r.tokens, pytest.approx(r.compute), r.budget)
        assert not p["extrapolated"]  # shorter than the trained cooldown


def chinchilla(N, D):
    return 1.7 + 400 / N ** 0.34 + 410 / D ** 0.28


def measured_and_predicted():
    """A load_runs-like table of three budgets x five sizes; the smallest budget's points are predicted."""
    rows = []
    for C in (1e15, 2e15, 4e15):
        n_opt = 0.1 * C ** 0.5
        for N in n_opt * np.geomspace(0.25, 4, 5):
            rows.append({"run_id": f"r{C:g}-{N:.0f}", "N": N, "D": C / (6 * N), "C": C, "role": "branch",
                         "loss": chinchilla(N, C / (6 * N))})
    table = pd.DataFrame(rows)
    small = table["C"] == 1e15
    pred = table[small].assign(predicted=True, loss_low=np.nan, loss_high=np.nan)
    return table[~small].reset_index(drop=True), pred.reset_index(drop=True)


def test_predicted_points_are_merged_marked_and_counted_apart_by_the_fits():
    measured, pred = measured_and_predicted()
    merged = merge_points(measured, pred)
    assert len(merged) == 15 and merged["predicted"].sum() == 5
    assert set(merged.loc[merged["predicted"], "run_id"]) == set(pred["run_id"])
    results = fit_laws(merged, 0, notes := [])
    iso = results["isoflop"]
    assert (iso.diagnostics["n_measured"], iso.diagnostics["n_predicted"]) == (10, 5)
    assert iso.tables["points"]["predicted"].sum() == 5
    assert any("5 of 15 points are predicted" in w for w in iso.warnings)
    alone = fit_laws(merged[~merged["predicted"]], 0, [], required=False, kaplan=False)
    assert alone["isoflop"].diagnostics["n_predicted"] == 0 and "kaplan" not in alone
    assert merge_points(measured, None)["predicted"].eq(False).all()


def svg_ids(path):
    return [g.get("id") for g in ET.parse(path).iter("{http://www.w3.org/2000/svg}g") if g.get("id")]


def test_predicted_points_have_their_own_marker_in_the_plots(tmp_path):
    measured, pred = measured_and_predicted()
    merged = merge_points(measured, pred)
    svg = [p for p in plot_loss_vs_compute(merged, tmp_path / "lc", formats=("svg",)) if p.suffix == ".svg"][0]
    assert "predicted-points" in svg_ids(svg)
    svg = [p for p in plot_loss_vs_compute(measured, tmp_path / "lc2", formats=("svg",)) if p.suffix == ".svg"][0]
    assert "predicted-points" not in svg_ids(svg)


def study_of(summary, runs_table):
    """The smallest ``study.json`` object ``markdown`` reads, with --predict-branches' parts."""
    est = {"estimate": 0.5, "interval": [0.4, 0.6]}
    return {
        "sweep": "study_wsd_quick", "data": "stdlib", "budgets": [1e10, 2e10, 4e10], "sizes": [8], "wall_time": 100.0,
        "finished": "today", "bootstrap": 0, "settings": "s", "phases": {"predict": 1.0},
        "runs": {"total": 3, "trunks": 1, "branches": 1, "predicted": 2, "trained_now": 2, "reused": 0},
        "exponents": {"parametric": {k: est for k in ("a", "b", "alpha", "beta", "E")}},
        "holdout": {"level": 0.95, "C": 1.6e11, "factor": 4, "N_opt": 1e4, "shape": {"width": 8, "depth": 2},
                    "N": 10_000, "D": 10**6, "predicted": 2.1, "predicted_low": 2.0, "predicted_high": 2.2,
                    "measured": 2.0, "rel_error": 0.05, "within_target": False,
                    "measured_only": {"fitted": True, "predicted": 2.02, "predicted_low": 1.9, "predicted_high": 2.1,
                                      "n_points": 1, "rel_error": 0.01, "within_target": True, "inside_interval": True}},
        "costs": {"convention": "6nd_total", "sweep_flops": 1e12, "holdout_flops": 1e12, "fixed_sweep": "study_wsd_quick",
                  "separate_flops": 1e12},
        "predicted_branches": summary}


def test_the_report_and_summary_mark_each_predicted_point_and_say_what_it_saved():
    runs = [r for r in sweep() if r.shape["width"] == 8]
    trained, predicted = choose_trained(runs, 1)
    points = pd.DataFrame({"run_id": [r.run_id for r in predicted], "trunk": "w8-d2-trunk",
                           "budget": [r.budget for r in predicted], "width": 8, "depth": 2, "N": 10_000.0,
                           "D": [float(r.tokens) for r in predicted], "C": [r.compute for r in predicted],
                           "loss": [2.5, 2.4], "loss_low": np.nan, "loss_high": np.nan, "extrapolated": False})
    summary = predicted_summary(1, 20, trained, predicted, points, {"results": {}, "notes": ["Approach 2 not fitted"]})
    assert json.loads(json.dumps(summary))["n_predicted"] == 2  # plain JSON
    assert (summary["n_measured"], summary["trained_per_trunk"]) == (1, 1)
    assert summary["saved_share"] == pytest.approx(summary["saved_flops"] / summary["all_branches_flops"])
    assert [p["run_id"] for p in summary["points"]] == [r.run_id for r in predicted]
    rows = [{"budget": r.budget, "width": 8, "depth": 2, "role": r.role, "N": 10_000, "D": r.tokens, "own_D": r.own_tokens,
             "steps": r.steps, "val_loss": loss, "wall_time": None, "status": status, "reused": False,
             "predicted": status == "predicted"}
            for r, loss, status in [(trained[1], 2.3, "completed"), (predicted[0], 2.5, "predicted")]]
    text = markdown(study_of(summary, rows), rows, "")
    assert "## Predicted branch points" in text and "and 2 more predicted from them, never trained" in text
    assert f"**{100 * summary['saved_share']:.1f}% saved**" in text
    assert "| 2.5 (predicted) |" in text and "predicted, not trained" in text
    assert "| 2.3 |" in text  # a measured loss is not marked
    assert "on the measured points alone (1 points) | 2.02" in text and "+1.00%" in text
    assert "- Approach 2 not fitted" in text


@pytest.mark.parametrize("args, words", [
    (["--predict-branches", "3"], "--predict-branches='3' is invalid"),
    (["--predict-branches=0"], "choose 1 or 2"),
    (["--predict-branches", "1", "--design", "cosine"], "need the wsd design"),
    (["--predict-branches", "2", "--adaptive"], "with --adaptive is invalid"),
])
def test_bad_predict_branches_is_a_one_line_error(tmp_path, capsys, args, words):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
