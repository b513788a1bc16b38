"""predict_branches: WSD cooldowns never trained, predicted from a trunk and one trained branch.

Synthetic curves drawn from a known law are predicted to within a tight tolerance, bad input is a one-line
AnalysisInputError, and a real tiny trunk with two branches trained by scaling-train is read as
load_curves returns it, with each run's exact lr rebuilt from its config."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli
from test_branch_plots import svg_group
from test_isoflop import isoflop_points

from analysis import curve_law, fit_isoflop, load_curves
from analysis.curve_laws.branches import isoflop_rows, predict_branches, split_trunk
from analysis.errors import AnalysisInputError
from analysis.plots import plot_isoflop

PEAK, WARMUP, TRUNK = 3e-3, 20, 600
LAWS = {"tissue": dict(L0=2.0, A=0.5, alpha=0.5, C=1.0, decay=0.99),
        "multipower": dict(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=1.0, beta=0.5, gamma=0.5)}


def trunk_lrs(steps: int = TRUNK) -> np.ndarray:
    s = np.arange(steps + 1, dtype=float)
    return np.where(s < WARMUP, PEAK * s / WARMUP, PEAK)


def branch_lrs(bp: int, cool: int) -> np.ndarray:
    """The trunk's lr to ``bp``, then 1 - sqrt down to 0 over ``cool`` steps (the harness's cooldown)."""
    s = np.arange(bp + 1, bp + cool + 1, dtype=float)
    return np.r_[trunk_lrs(bp), PEAK * (1 - np.sqrt((s - bp) / cool))]


def curve(law, lrs: np.ndarray, start: int = 0, every: int = 10) -> pd.DataFrame:
    """The law's loss along ``lrs``, logged every ``every`` steps after ``start`` (and at the last step)."""
    steps = np.unique(np.r_[np.arange(start + every, lrs.size - 1, every), lrs.size - 1])
    return pd.DataFrame({"step": steps, "lr": lrs[steps], "loss": law.predict(lrs, steps)["loss"].to_numpy()})


@pytest.mark.parametrize("name", ["tissue", "multipower"])
def test_branches_drawn_from_a_known_law_are_predicted(name):
    law = curve_law(name, **LAWS[name])
    trunk = curve(law, trunk_lrs())
    fitted = (480, 120)
    others = [(160, 40), (240, 60), (320, 80), (400, 100)]
    branch = curve(law, branch_lrs(*fitted), start=fitted[0]).assign(branch_step=fitted[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic trunk's lr is logged from step 10 on
        table = predict_branches(trunk, {"b480": branch}, branch_points=[bp for bp, _ in others],
                                 cooldowns=[c for _, c in others], law=name,
                                 schedules={"trunk": trunk_lrs(), "b480": branch_lrs(*fitted)})
    assert set(table["shape"].dropna()) == {"sqrt"}  # read off the trained branch's lr
    for bp, cool in others:
        row = table[table["predicted"] & (table["branch_step"] == bp) & (table["cooldown_steps"] == cool)]
        truth = float(law.predict(branch_lrs(bp, cool), [bp + cool])["loss"].iloc[0])
        assert float(row["loss"].iloc[0]) == pytest.approx(truth, rel=1e-3), (bp, cool)
    trained = table[~table["predicted"]].iloc[0]
    assert trained["run_id"] == "b480" and trained["measured"] == pytest.approx(branch["loss"].iloc[-1])


def test_branch_point_and_lr_read_off_the_logged_lr():
    """Without a branch_step column or schedules: the branch point from the lr logged at every step."""
    law = curve_law("tissue", **LAWS["tissue"])
    trunk = curve(law, trunk_lrs(), every=1)
    branch = curve(law, branch_lrs(400, 100), start=399, every=1)  # from the branch point, at the peak lr
    table = predict_branches(trunk, branch, branch_points=[200], cooldowns=[50], law="tissue")
    trained = table[~table["predicted"]].iloc[0]
    assert (trained["branch_step"], trained["cooldown_steps"]) == (400, 100)
    truth = float(law.predict(branch_lrs(200, 50), [250])["loss"].iloc[0])
    assert float(table[table["predicted"]]["loss"].iloc[0]) == pytest.approx(truth, rel=1e-3)
    assert not table["extrapolated"].any()
    with pytest.warns(UserWarning, match="cooldowns of 150 steps are longer than every trained branch's"):
        longer = predict_branches(trunk, branch, branch_points=[300], cooldowns=[150], law="tissue")
    assert longer[longer["predicted"]]["extrapolated"].all()


def test_the_band_of_a_trunk_and_one_branch_resamples_points_within_each_run():
    """Two runs: a draw of whole runs would often hold the trunk alone, which says nothing of the cooldown;
    blocks of points within each run keep both in every draw, so the band is finite and holds the truth."""
    law = curve_law("tissue", **LAWS["tissue"])
    rng = np.random.default_rng(0)
    trunk = curve(law, trunk_lrs())
    branch = curve(law, branch_lrs(480, 120), start=480).assign(branch_step=480)
    trunk, branch = (f.assign(loss=f["loss"] * np.exp(rng.normal(0, 2e-3, len(f)))) for f in (trunk, branch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, res = predict_branches(trunk, {"b480": branch}, branch_points=[240], cooldowns=[60], law="tissue",
                                      schedules={"trunk": trunk_lrs(), "b480": branch_lrs(480, 120)},
                                      bootstrap=8, return_fit=True)
    assert res.diagnostics["bootstrap_over"] == "blocks of points within each run"
    row = table[table["predicted"]].iloc[0]
    truth = float(law.predict(branch_lrs(240, 60), [300])["loss"].iloc[0])
    assert row["loss_low"] < row["loss"] < row["loss_high"] < row["loss"] * 1.02
    assert row["loss_low"] <= truth <= row["loss_high"]


def _inputs():
    law = curve_law("tissue", **LAWS["tissue"])
    trunk = curve(law, trunk_lrs(), every=1)
    return trunk, {"b": curve(law, branch_lrs(400, 100), start=399, every=1)}


@pytest.mark.parametrize("change, words", [
    (lambda t, b: (None, b, {}), "trunk_curve: missing"),
    (lambda t, b: (t.iloc[:0], b, {}), "trunk_curve: no rows"),
    (lambda t, b: (t, {}, {}), "branch_curves: give at least one"),
    (lambda t, b: (t, b, {"branch_points": [700]}), "branch_points: step 700 is beyond the trunk's last step 600"),
    (lambda t, b: (t, b, {"branch_points": [10]}), "branch_points: step 10 is inside the trunk's 20-step warmup"),
    (lambda t, b: (t, b, {"cooldowns": [0]}), "cooldowns: 0 steps; a cooldown lasts at least 1 step"),
    (lambda t, b: (t, b, {"cooldown_fraction": 1.0}), "cooldown_fraction: 1.0"),
    (lambda t, b: (t, b, {"final": 1.5}), "final: 1.5"),
    (lambda t, b: (t, b, {"shape": "cubic"}), "shape: 'cubic' is not one of"),
    (lambda t, b: (t, b, {"loss_col": "val/loss"}), "run trunk: column 'val/loss' is missing"),
    (lambda t, b: (t, b, {"schedules": {"other": [0.1]}}), "schedules: run(s) other"),
    (lambda t, b: (t, b, {"branch_tokens": [1000]}), "branch_tokens: tokens_per_step is needed"),
    (lambda t, b: (t.assign(lr=np.linspace(PEAK, PEAK / 10, len(t))), b, {}), "not constant after the warmup"),
    (lambda t, b: (t[t["step"] <= 300], b, {}), "run b: branch point: step 400 is beyond the trunk's last step 300"),
    (lambda t, b: (t, {"b": b["b"].iloc[:2]}, {}), "run b: column 'loss': 1 point(s) after its branch point"),
    (lambda t, b: (t, {"trunk": b["b"]}, {}), "a branch has the trunk's id 'trunk'"),
])
def test_bad_input_is_one_line(change, words):
    trunk, branches, kwargs = change(*_inputs())
    with pytest.raises(AnalysisInputError) as err:
        predict_branches(trunk, branches, law="tissue", **{"branch_points": [200], **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_split_trunk_bad_input():
    plain = pd.DataFrame({"run_id": ["a"], "step": [1], "loss": [3.0]})
    with pytest.raises(AnalysisInputError, match="column 'trunk' is missing"):
        split_trunk(plain)
    two = pd.DataFrame({"run_id": ["a", "b", "t1", "t2"], "step": 1, "trunk": ["t1", "t2", None, None]})
    with pytest.raises(AnalysisInputError, match="trunk: None; name the trunk of the branches, one of t1, t2"):
        split_trunk(two)
    assert list(split_trunk(two, "t2")[1]) == ["b"]
    with pytest.raises(AnalysisInputError, match="trunk run t1 of the branches is not in the curves"):
        split_trunk(two[two["run_id"] != "t1"], "t1")


def test_predicted_points_fill_an_isoflop_profile_marked_and_counted_apart(tmp_path):
    law = curve_law("tissue", **LAWS["tissue"])
    trunk = curve(law, trunk_lrs(), every=1).assign(tokens=lambda f: f["step"] * 1000)
    branch = curve(law, branch_lrs(400, 100), start=399, every=1)
    rows = isoflop_rows(predict_branches(trunk, branch, branch_points=[200, 300], cooldowns=[50], law="tissue"), 1e6)
    assert rows["predicted"].tolist() == [True, True] and rows["D"].tolist() == [250_000, 350_000]
    assert rows["C"].tolist() == pytest.approx([6e6 * 250_000, 6e6 * 350_000]) and rows["role"].eq("branch").all()
    with pytest.raises(AnalysisInputError, match="params: -1; must be a number > 0"):
        isoflop_rows(pd.DataFrame({"predicted": [True], "total_tokens": [1.0]}), -1)
    with pytest.raises(AnalysisInputError, match="columns predicted and total_tokens are needed"):
        isoflop_rows(pd.DataFrame({"loss": [2.0]}), 1e6)

    df = isoflop_points(budgets=np.geomspace(1e18, 1e19, 2))  # 2 budgets x 9 sizes, every 4th one predicted
    df["predicted"] = np.arange(len(df)) % 4 == 0
    n_pred = int(df["predicted"].sum())
    res = fit_isoflop(df.N, df.loss, df.C, predicted=df["predicted"])
    assert (res.diagnostics["n_predicted"], res.diagnostics["n_measured"]) == (n_pred, len(df) - n_pred)
    assert res.tables["points"]["predicted"].tolist() == df["predicted"].tolist()
    assert any(f"{n_pred} of {len(df)} points are predicted" in w for w in res.warnings)
    plain = fit_isoflop(df.N, df.loss, df.C)
    assert plain.diagnostics["n_predicted"] == 0 and not any("predicted" in w for w in plain.warnings)
    svg = plot_isoflop(res, tmp_path / "iso", formats=("svg",))[0]
    assert sum(svg_group(svg, "predicted-points")) == n_pred and sum(svg_group(svg, "run-points")) == len(df) - n_pred
    assert "<!-- predicted (never trained) -->" in svg.read_text()
    assert "predicted (never trained)" not in plot_isoflop(plain, tmp_path / "plain", formats=("svg",))[0].read_text()
    with pytest.raises(AnalysisInputError, match="predicted: 3 values for 18 points"):
        fit_isoflop(df.N, df.loss, df.C, predicted=[True, False, True])


TPS = 4 * 32  # tokens per step of the tiny runs
TINY_WSD = ["+sweep=wsd_branches", f"sweep.budgets=[{100 * TPS},{150 * TPS}]", "sweep.branches='trunk,0,1'",
            "sweep.shapes=[{width:16,depth:1}]", "sweep.cooldown_fraction=0.2", "model.head_dim=8", "model.context=32",
            "train.batch_size=4", "data.max_bytes=400000", "logger=none", "train.eval_every=10", "train.log_every=5",
            "train.eval_tokens=4096", "train.final_eval_tokens=4096", "train.threads=1", "train.checkpoint_every=0"]


def test_real_trunk_and_branches_from_run_records(tmp_path):
    runs_dir = tmp_path / "runs"
    proc = run_cli("scaling-train", *TINY_WSD, f"runs_dir={runs_dir}", cwd=tmp_path, env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    curves = load_curves(runs_dir / "wsd", loss="val/loss")
    trunk, branches = split_trunk(curves)
    assert len(branches) == 2 and trunk["role"].iloc[0] == "trunk"
    short, long = sorted(branches, key=lambda r: branches[r]["step"].max())
    table, res = predict_branches(trunk, {long: branches[long]}, branch_points=[80], cooldowns=[20],
                                  law="tissue", return_fit=True)
    lrs = res.tables["model"].schedules  # rebuilt from config.yaml at every step, not only where logged
    s = np.arange(1, 151)
    exact = 3e-3 * np.where(s <= 120, np.minimum(s / 20, 1.0), 1 - np.sqrt(np.clip(s - 120, 0, None) / 30))
    assert lrs[long][1:] == pytest.approx(exact, abs=1e-12)  # warmup 20 steps, 1 - sqrt over the last 30
    assert lrs[trunk["run_id"].iloc[0]][1:121] == pytest.approx(exact[:120], abs=1e-12)
    logged = branches[long].dropna(subset=["lr"])
    assert lrs[long][logged["step"].to_numpy()] == pytest.approx(logged["lr"].to_numpy(), rel=1e-6)
    trained = table[~table["predicted"]].iloc[0]
    assert (trained["branch_step"], trained["cooldown_steps"], trained["total_tokens"]) == (120, 30, 150 * TPS)
    predicted = float(table[table["predicted"]]["loss"].iloc[0])
    measured = float(branches[short]["val/loss"].dropna().iloc[-1])
    assert predicted == pytest.approx(measured, rel=0.03)  # a tiny noisy run: a loose check of the level
