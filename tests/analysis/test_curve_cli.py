"""``scaling-fit CURVES --approach curve``: on real run folders trained by ``scaling-train`` and on CSV tables,
with the plot, the report section, and one-line errors for bad flags and bad curves."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TINY, read_metrics, run_cli, run_dirs

from analysis import curve_law, fit_loss_curve, load_curves
from analysis.cli import main
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.data import prepare, read_curves
from analysis.errors import AnalysisInputError

CLI = [sys.executable, "-m", "analysis.cli"]
SCHEDULES = ("cosine", "constant", "wsd")


def fit(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real tiny runs of one model (39 steps), one per schedule, in one multirun."""
    root = tmp_path_factory.mktemp("curve-runs")
    run_cli("scaling-train", "--multirun", *TINY, "train.tokens=20000", "train.log_every=1", "train.checkpoint_every=0",
            "train.final_eval_tokens=4096", "optim.warmup_steps=5", "optim.cooldown_fraction=0.3",
            f"optim.schedule={','.join(SCHEDULES)}", f"runs_dir={root}", "group=curves", cwd=root, check=True)
    assert len(run_dirs(root)) == 3
    return root


def test_the_lr_of_real_runs_is_rebuilt_from_their_configs_exactly(runs):
    curves, schedules, notes = read_curves(runs)
    assert notes == [] and set(schedules) == set(curves["run_id"]) and len(schedules) == 3
    for run_dir in run_dirs(runs):
        logged = [(row["step"], row["lr"]) for row in read_metrics(run_dir) if "lr" in row]
        lrs = schedules[run_dir.name]
        assert lrs.size == 40 and lrs[0] == 0.0
        np.testing.assert_allclose(lrs[[s for s, _ in logged]], [lr for _, lr in logged], rtol=1e-12)


def test_load_curves_of_real_runs_fit_with_their_rebuilt_lr_and_one_size_only(runs):
    curves = load_curves(runs, loss="train/loss")
    _, schedules, _ = read_curves(runs)
    for curve in prepare(curves):  # the Python API: fit_loss_curve(load_curves(...)) rebuilds the lr too
        assert curve.lr_source == "schedule"
        np.testing.assert_array_equal(curve.lrs, schedules[curve.run_id])
    mixed = curves.assign(N=np.where(curves["run_id"] == curves["run_id"].iloc[0], 1e6, curves["N"]))
    with pytest.raises(AnalysisInputError, match=r"curves: column 'N' holds 2 model sizes \(2.474e\+04, 1e\+06\); a "
                                                 r"curve law describes one model: keep one size, e.g. curves\[curves.N"):
        fit_loss_curve(mixed, "tissue")


def test_a_wsd_branch_runs_its_trunks_lr_up_to_its_branch_point(tmp_path):
    """A trunk and a cooldown branch (their warmups differ: 10% of 80 and of 60 steps): the branch's lr is
    the trunk's up to the branch point and its own config's after, as the loop ran them."""
    from scaling.run.training import run_training
    from scaling.sweep.expand import compose_run_config

    mine = ("train.batch_size", "train.tokens", "train.final_eval_tokens")  # 256 tokens a step, a short final eval
    small = [o for o in TINY if not o.startswith(mine)] + [
        "train.batch_size=4", "train.final_eval_tokens=1024", "train.checkpoint_every=0", "train.log_every=1",
        "optim.warmup_fraction=0.1", "optim.cooldown_fraction=0.25"]
    trunk, branch = tmp_path / "trunk", tmp_path / "branch"
    run_training(compose_run_config([*small, "optim.schedule=constant", "train.tokens=20480",
                                     "train.keep_at_tokens=[10240]"]), trunk)
    run_training(compose_run_config([*small, "optim.schedule=wsd", "train.tokens=15360", f"train.branch_from={trunk}",
                                     "train.branch_tokens=10240"]), branch)
    curves, schedules, notes = read_curves(tmp_path)
    assert notes == [] and schedules["trunk"].size == 81 and schedules["branch"].size == 61
    np.testing.assert_array_equal(schedules["branch"][:41], schedules["trunk"][:41])
    own = sch.schedule_from_config(yaml.safe_load((branch / "config.yaml").read_text()))
    assert not np.array_equal(own[:41], schedules["trunk"][:41])  # a warmup of 6 steps, not the trunk's 8
    np.testing.assert_array_equal(schedules["branch"][41:], own[41:])
    logged = [(row["step"], row["lr"]) for row in read_metrics(branch)]
    assert logged[0][0] == 41
    np.testing.assert_allclose(schedules["branch"][[s for s, _ in logged]], [lr for _, lr in logged], rtol=1e-12)


def test_fit_real_run_folders_and_write_the_plot_and_the_report(runs, tmp_path):
    out = tmp_path / "fit"
    p = fit(runs, "--approach", "curve", "--law", "tissue", "--predict", "wsd:steps=78,cooldown=0.2,shape=sqrt",
            "--out", out)
    assert p.returncode == 0, p.stderr
    assert "curve fit: L = L0 + A S1^-alpha - C S2" in p.stdout and "fit per run:" in p.stdout
    assert "predicted final loss:" in p.stdout and "wsd:steps=78,cooldown=0.2,shape=sqrt    78" in p.stdout
    assert "interpolated" not in p.stderr  # every lr came from its run's config
    saved = json.loads((out / "fit.json").read_text())["curve"]
    assert set(saved["estimates"]) == {"L0", "A", "alpha", "C", "decay"}
    assert saved["diagnostics"]["n_runs"] == 3 and saved["diagnostics"]["lr_interpolated"] == []
    report = (out / "report.md").read_text()
    assert "## Loss curves" in report and "warmup convention code" in report
    assert "Predicted loss at the end of each schedule (no band: run with --bootstrap N)" in report
    for run_dir in run_dirs(runs):
        assert f"| {run_dir.name} |" in report
    assert "![curve_fit](curve_fit.png)" in report
    assert (out / "curve_fit.png").stat().st_size > 10_000 and (out / "curve_fit.svg").stat().st_size > 10_000


@pytest.fixture(scope="module")
def table(tmp_path_factory, shared_data):
    """The paper's three 100M training curves in one CSV, every 4th logged row (lr logged every 512 steps)."""
    frames = [pd.read_csv(shared_data / "multipower" / "csv_100" / f"{name}.csv").iloc[::4].assign(run_id=name)
              for name in ("cosine_24000", "constant_24000", "wsdcon_9")]
    path = tmp_path_factory.mktemp("curve-csv") / "curves_100m.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def fit_here(capsys, *args) -> tuple[dict, str]:
    """``scaling-fit ARGS --json`` in this process: (the JSON of the curve fit, stderr)."""
    assert main([*map(str, args), "--json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out)["curve"], err


def test_fit_a_csv_table_of_curves_to_json(table, capsys):
    res, err = fit_here(capsys, table, "--approach", "curve", "--law", "multipower", "--predict",
                        "cosine:steps=72000,final=0.1", "--predict", "constant:steps=72000", "--predict", "wsdcon_9")
    assert err.count("the warmup is missing, a linear ramp from 0") == 3  # the CSVs start at step 2160
    assert set(res["estimates"]) == {"L0", "A", "alpha", "B", "C", "beta", "gamma"}
    assert sorted(res["diagnostics"]["lr_interpolated"]) == ["constant_24000", "cosine_24000", "wsdcon_9"]
    assert res["diagnostics"]["rmse"] < 0.005 and res["diagnostics"]["warmup_convention"] == "code"
    final = {row["schedule"]: row for row in res["predictions"]}
    assert set(final) == {"cosine:steps=72000,final=0.1", "constant:steps=72000", "wsdcon_9"}
    fitted = {row["run_id"]: row for row in res["metrics"]}["wsdcon_9"]  # a fitted run's id: its own schedule
    assert final["wsdcon_9"]["step"] == fitted["final_step"]
    assert final["wsdcon_9"]["loss"] == pytest.approx(fitted["final_fitted"], rel=1e-8)  # JSON keeps 10 digits
    cos, const = final["cosine:steps=72000,final=0.1"], final["constant:steps=72000"]
    assert cos["step"] == const["step"] == 72000 and cos["lr"] == pytest.approx(3e-5)
    assert 2.7 < cos["loss"] < const["loss"] < 3.0  # the cooldown pays at the same length
    assert {row["run_id"] for row in res["metrics"]} == {"constant_24000", "cosine_24000", "wsdcon_9"}


def law_table(path, runs=("a", "b"), lr=True):
    """A CSV of two curves of a known Tissue et al. law (cosine and constant, 2000 steps, every 50 steps)."""
    truth = curve_law("tissue", L0=3.0, A=0.5, alpha=0.5, C=1.0, decay=0.99)
    frames = []
    for run, lrs in zip(runs, (sch.cosine(2000, 1e-3, warmup=100), sch.constant(2000, 1e-3, warmup=100))):
        steps = np.arange(50, 2001, 50)
        pred = truth.predict(lrs, steps)
        frames.append(pred[["step", "lr", "loss"]].assign(run_id=run))
    table = pd.concat(frames)
    table.drop(columns=[] if lr else ["lr"]).to_csv(path, index=False)
    return path


def test_a_table_with_bootstrap_gives_a_band_and_an_extrapolation_warning(tmp_path, capsys):
    csv = law_table(tmp_path / "law.csv")
    res, err = fit_here(capsys, csv, "--approach", "curve", "--law", "tissue", "--bootstrap", "4", "--predict",
                        "cosine:steps=25000")
    assert "predicting to step 25000, beyond 10x the longest fitted curve (2000 steps)" in err
    assert res["estimates"]["L0"] == pytest.approx(3.0, rel=0.01)
    (row,) = res["predictions"]
    assert row["loss_low"] <= row["loss"] <= row["loss_high"] and row["loss_high"] > row["loss_low"]
    assert set(res["interval"]) == {"L0", "A", "alpha", "C", "decay"}


def test_minima_give_each_prediction_its_range_in_the_json_and_the_report(tmp_path, capsys):
    csv = law_table(tmp_path / "law.csv")
    res, _ = fit_here(capsys, csv, "--approach", "curve", "--law", "tissue", "--minima", "--predict",
                      "wsd:steps=4000,cooldown=0.2", "--out", tmp_path / "out")
    assert res["diagnostics"]["n_minima"] >= 1
    (row,) = res["predictions"]
    assert row["loss_minima_low"] <= row["loss"] <= row["loss_minima_high"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"the range over the {res['diagnostics']['n_minima']} near-optimal minima" in report
    assert "loss_minima_low" in report


@pytest.mark.parametrize("args, message", [
    (["{csv}", "--approach", "isoflop", "--minima"], "error: --minima: only with --approach curve"),
    (["{csv}", "--law", "tissue"], "error: --law: only with --approach curve (got --approach all)"),
    (["{csv}", "--approach", "isoflop", "--predict", "cosine:steps=10"], "error: --predict: only with --approach curve"),
    (["{csv}", "--approach", "curve", "--law", "power"], "error: argument --law: invalid choice: 'power'"),
    (["{csv}", "--approach", "curve", "--warmup", "late"], "error: argument --warmup: invalid choice: 'late'"),
    (["{csv}", "--approach", "curve", "--predict", "cosine:steps=x"],
     "error: --predict: schedule 'cosine:steps=x': steps='x' is not a number"),
    (["{csv}", "--approach", "curve", "--predict", "exp:steps=100"], "error: --predict: schedule 'exp:steps=100': 'exp'"),
    (["{csv}", "--approach", "curve", "--predict", "wsd:steps=100,shape=cubic"],
     "error: --predict: shape: 'cubic' is not one of 'linear', 'sqrt', 'geometric', 'cosine'"),
    (["{csv}", "--approach", "curve", "--predict", "cosine:steps=1000,warmup=5000"],
     "error: --predict: warmup: 5000.0 is 5000 steps, not below the schedule's 1000 steps"),
    (["{csv}", "--approach", "curve", "--drop-highest", "1"], "error: --drop-highest: not used by --approach curve"),
    (["{csv}", "--approach", "curve", "--lr-rule", "rule.json"], "error: --lr-rule: not used by --approach curve"),
    (["{csv}", "--approach", "curve", "--filter", "run_id == 'zzz'"], "error: --filter \"run_id == 'zzz'\": no curve row"),
    (["{csv}", "--approach", "curve", "--loss-col", "val"], "error: loss_col: 'val' is not a column"),
    (["{nolr}", "--approach", "curve"], "error: run a: column 'lr' is missing or empty and no schedule was given"),
    (["{dir}/missing.csv", "--approach", "curve"], "error: source: '{dir}/missing.csv' does not exist"),
    (["{dir}/notes.txt", "--approach", "curve"], "error: source: '{dir}/notes.txt'; a file must end in .csv, .tsv"),
])
def test_bad_flags_and_bad_curves_exit_2_with_one_line(tmp_path, capsys, args, message):
    csv, nolr = law_table(tmp_path / "law.csv"), law_table(tmp_path / "nolr.csv", lr=False)
    (tmp_path / "notes.txt").write_text("step,loss\n")
    paths = {"csv": csv, "nolr": nolr, "dir": tmp_path}
    try:
        code = main([a.format(**paths) for a in args])
    except SystemExit as stop:  # argparse's own errors (invalid choice) exit from the parser
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message.format(**paths)) and "\n" not in err, err
