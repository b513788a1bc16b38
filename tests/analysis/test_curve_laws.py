"""Loss-curve laws (analysis.curve_laws): the arithmetic against a step-by-step loop of each formula, the
compressed sum, fits recovering known parameters, prediction along built-in schedules, the harness's own
schedule rebuilt from a config, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import curve_law, fit_loss_curve
from analysis.curve_laws import published as pub
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.data import prepare
from analysis.errors import AnalysisInputError

MPL = dict(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=2.0, beta=0.6, gamma=0.6)
TISSUE = dict(L0=2.0, A=0.5, alpha=0.5, C=1.0, decay=0.9)
SHORT = {  # 45-step schedules with a 5-step warmup: a cosine, a WSD cooldown, a step drop
    "cosine": sch.cosine(45, 1e-3, final=0.1, warmup=5),
    "wsd": sch.wsd(45, 1e-3, cooldown=12, shape="sqrt", final=0.05, warmup=5),
    "step": sch.step_drops(45, 1e-3, drops=[(20, 0.3), (35, 0.1)], warmup=5),
}


def first_drop_term(lrs: np.ndarray, warmup: str) -> int:
    """The first step k of the drop sum: 1 (released code), or the step after the first at the peak (paper)."""
    return 1 if warmup == "code" else int(np.argmax(lrs >= lrs.max())) + 1


def loop_multipower(p: dict, lrs: np.ndarray, t: int, warmup: str) -> float:
    """L(t) = L0 + A S1(t)^-alpha - LD(t), LD(t) = B sum_k (lr_(k-1) - lr_k) G(lr_k^-gamma S_k(t)), G(x) = 1 - (C x + 1)^-beta."""
    S1 = sum(lrs[: t + 1])
    LD = 0.0
    for k in range(first_drop_term(lrs, warmup), t + 1):
        S_k = sum(lrs[k: t + 1])
        LD += p["B"] * (lrs[k - 1] - lrs[k]) * (1.0 - (p["C"] * lrs[k] ** -p["gamma"] * S_k + 1.0) ** -p["beta"])
    return p["L0"] + p["A"] * S1 ** -p["alpha"] - LD


def loop_tissue(p: dict, lrs: np.ndarray, t: int, warmup: str) -> float:
    """L(t) = L0 + A S1(t)^-alpha - C S2(t), S2 = sum_i m_i, m_i = decay m_(i-1) + (lr_(i-1) - lr_i)."""
    first = first_drop_term(lrs, warmup)
    m = S2 = 0.0
    for i in range(1, t + 1):
        m = p["decay"] * m + ((lrs[i - 1] - lrs[i]) if i >= first else 0.0)
        S2 += m
    return p["L0"] + p["A"] * sum(lrs[: t + 1]) ** -p["alpha"] - p["C"] * S2


@pytest.mark.parametrize("warmup", ["code", "paper"])
@pytest.mark.parametrize("law, params, loop", [("multipower", MPL, loop_multipower), ("tissue", TISSUE, loop_tissue)])
@pytest.mark.parametrize("name", list(SHORT))
def test_law_equals_a_step_by_step_loop_of_its_formula(name, law, params, loop, warmup):
    lrs = SHORT[name]
    model = curve_law(law, warmup=warmup, **params)
    steps = np.arange(1, lrs.size)
    expected = [loop(params, lrs, int(t), warmup) for t in steps]
    exact = model.predict(lrs, steps, exact=True)
    np.testing.assert_allclose(exact["loss"], expected, rtol=1e-12)
    np.testing.assert_allclose(exact["lr"], lrs[steps])
    sparse = [6, 19, 21, 33, 36, 45]  # the compressed sum groups the terms between evaluated steps
    np.testing.assert_allclose(model.predict(lrs, sparse)["loss"], [expected[t - 1] for t in sparse], atol=1e-6)


def test_the_warmup_conventions_differ_by_the_ramp_inside_the_drop_term():
    lrs = SHORT["cosine"]
    code = curve_law("multipower", warmup="code", **MPL).predict(lrs, [45])["loss"].iloc[0]
    paper = curve_law("multipower", warmup="paper", **MPL).predict(lrs, [45])["loss"].iloc[0]
    assert code > paper  # the rising ramp (d_k > 0) adds to the loss under the released code's convention
    assert curve_law("multipower", warmup="code", **MPL).diagnostics["warmup_convention"] == "code"
    assert "literal paper" in curve_law("multipower", warmup="paper", **MPL).diagnostics["warmup"]


@pytest.mark.parametrize("name", ["cosine_72000", "wsd_20000_24000", "wsdcon_3"])
def test_the_compressed_sum_matches_every_step_on_long_schedules(name):
    lrs = pub.SCHEDULES[name]()
    model = curve_law("multipower", **pub.PARAMS[400])
    steps = np.unique(np.linspace(2200, lrs.size - 1, 150).round().astype(int))
    fast, exact = model.predict(lrs, steps)["loss"], model.predict(lrs, steps, exact=True)["loss"]
    assert np.max(np.abs(fast - exact)) < 1e-5


def synthetic(truth, noise: float, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """40 points of each of the paper's three training schedules, from ``truth`` with log-normal noise."""
    rng = np.random.default_rng(seed)
    frames, schedules = [], {}
    for name in pub.TRAIN:
        lrs = pub.SCHEDULES[name]()
        steps = np.unique(np.linspace(2200, lrs.size - 1, 40).round().astype(int))
        y = truth.predict(lrs, steps)["loss"].to_numpy() * np.exp(rng.normal(0.0, noise, steps.size))
        frames.append(pd.DataFrame({"run_id": name, "step": steps, "loss": y}))
        schedules[name] = lrs
    return pd.concat(frames, ignore_index=True), schedules


TRUE_TISSUE = dict(L0=3.0, A=0.5, alpha=0.5, C=1.0, decay=0.999)


@pytest.fixture(scope="module")
def tissue_fit():
    curves, schedules = synthetic(curve_law("tissue", **TRUE_TISSUE), noise=1e-4)
    return fit_loss_curve(curves, "tissue", schedules=schedules)


def test_tissue_fit_recovers_the_parameters_of_its_own_curves(tissue_fit):
    est = tissue_fit.estimates
    for name, value in TRUE_TISSUE.items():
        assert est[name] == pytest.approx(value, rel=0.01 if name != "decay" else 1e-4), name
    assert tissue_fit.diagnostics["rmse"] < 1e-3 and tissue_fit.diagnostics["lr_interpolated"] == []
    assert set(tissue_fit.tables["metrics"]["run_id"]) == set(pub.TRAIN)


def test_multipower_fit_recovers_its_curves_and_predicts_unseen_schedules():
    truth = curve_law("multipower", **pub.PARAMS[25])
    curves, schedules = synthetic(truth, noise=2e-4)
    res = fit_loss_curve(curves, "multipower", schedules=schedules)
    est = res.estimates
    for name in ("L0", "A", "alpha"):  # C, beta and gamma trade off against each other on three curves
        assert est[name] == pytest.approx(pub.PARAMS[25][name], rel=0.01), name
    assert est["B"] == pytest.approx(pub.PARAMS[25]["B"], rel=0.05)
    for name in pub.TEST:
        lrs = pub.SCHEDULES[name]()
        last = [lrs.size - 1]
        assert abs(res.predict(lrs, last)["loss"].iloc[0] - truth.predict(lrs, last)["loss"].iloc[0]) < 1.5e-3, name


def test_predict_with_built_in_schedule_specs(tissue_fit):
    d = tissue_fit.diagnostics
    peak, warm = d["peak_lr"], d["warmup_steps"]
    cases = {
        "cosine:steps=72000,final=0.1": sch.cosine(72000, peak, final=0.1, warmup=warm),
        "linear:steps=30000,final=0": sch.linear(30000, peak, final=0.0, warmup=warm),
        "constant:steps=30000,peak=2e-4,warmup=1000": sch.constant(30000, 2e-4, warmup=1000),
        "wsd:steps=30000,cooldown=0.2,shape=sqrt": sch.wsd(30000, peak, cooldown=0.2, shape="sqrt", warmup=warm),
        "step:steps=16000,at=8000/12000,to=0.3/0.1": sch.step_drops(16000, peak, drops=[(8000, 0.3), (12000, 0.1)],
                                                                     warmup=warm),
    }
    for spec, lrs in cases.items():
        steps = [5000, lrs.size - 1]
        by_spec, by_array = tissue_fit.predict(spec, steps), tissue_fit.predict(lrs, steps)
        assert list(by_spec.columns) == ["step", "lr", "loss", "loss_low", "loss_high"]
        pd.testing.assert_frame_equal(by_spec, by_array, check_exact=False, rtol=1e-12)
    assert tissue_fit.predict("cosine_24000", [24000])["loss"].iloc[0] == pytest.approx(
        tissue_fit.tables["metrics"].set_index("run_id").loc["cosine_24000", "final_fitted"], rel=1e-9)
    default = tissue_fit.predict("cosine:steps=72000")
    assert len(default) == 400 and default["step"].iloc[-1] == 72000 and default["loss"].is_monotonic_decreasing


def test_a_spec_prediction_has_the_fitted_runs_warmup_ramp(tissue_fit):
    """The warmup a spec inherits rebuilds the fitted runs' ramp exactly (not one step shorter)."""
    fitted = pub.SCHEDULES["cosine_72000"]()
    rebuilt = sch.cosine(72000, tissue_fit.diagnostics["peak_lr"], final=0.1,
                         warmup=tissue_fit.diagnostics["warmup_steps"])
    assert np.array_equal(rebuilt, fitted)
    steps = [1000, 2159, 2160]
    pd.testing.assert_frame_equal(tissue_fit.predict("cosine:steps=72000,final=0.1", steps),
                                  tissue_fit.predict(fitted, steps))


def test_predicting_beyond_ten_times_the_longest_fitted_curve_warns(tissue_fit):
    horizon = tissue_fit.diagnostics["horizon"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tissue_fit.predict(f"constant:steps={10 * horizon}", [10 * horizon])
    with pytest.warns(UserWarning, match=rf"beyond 10x the longest fitted curve \({horizon} steps\)"):
        tissue_fit.predict(f"constant:steps={10 * horizon + 1}", [10 * horizon + 1])


# ----------------------------------------------------------------------------- schedules


def test_built_in_schedules_have_their_shape():
    cos = sch.cosine(1000, 1e-3, final=0.1, warmup=100)
    assert cos.size == 1001 and cos[0] == 0 and cos[99] == cos[100] == 1e-3 and cos[1000] == pytest.approx(1e-4)
    assert cos[550] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way through the decay: half way down
    lin = sch.linear(1000, 1e-3, final=0.0)
    assert lin[0] == 1e-3 and lin[500] == pytest.approx(5e-4) and lin[1000] == 0.0
    w = sch.wsd(1000, 1e-3, cooldown=0.2, shape="linear", final=0.1)
    assert np.all(w[:800] == 1e-3) and w[900] == pytest.approx(5.5e-4) and w[1000] == pytest.approx(1e-4)
    g = sch.wsd(1000, 1e-3, cooldown=200, shape="geometric", final=0.1)
    assert g[900] == pytest.approx(1e-3 * 0.1 ** 0.5)
    s = sch.wsd(1000, 1e-3, cooldown=200, shape="sqrt", final=0.0)
    assert s[850] == pytest.approx(1e-3 * (1 - 0.25 ** 0.5))
    drops = sch.step_drops(1000, 1e-3, drops=[(0.5, 0.3), (750, 0.1)])
    assert drops[499] == 1e-3 and drops[500] == pytest.approx(3e-4) and drops[750] == pytest.approx(1e-4)
    assert np.all(sch.constant(10, 2e-3) == 2e-3)


def test_the_published_schedules_are_rebuilt_from_their_logged_lr(shared_data):
    for name, build in pub.SCHEDULES.items():
        table = pd.read_csv(shared_data / "multipower" / "csv_100" / f"{name}.csv")
        lrs = build()
        np.testing.assert_allclose(lrs[table["step"]], table["lr"], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("spec, message", [
    ("", "expected KIND:key=value"),
    ("exp:steps=10", "'exp' is not one of 'constant', 'cosine', 'linear', 'wsd', 'step'"),
    ("cosine:final=0.1", "give steps=N"),
    ("cosine:steps=ten", "steps='ten' is not a number"),
    ("cosine:steps=100,peak=0", "peak: 0.0; must be a positive learning rate"),
    ("cosine:steps=100,final=2", "final: 2.0; must be a number in [0, 1]"),
    ("cosine:steps=100,cooldown=0.2", "cooldown does not apply to cosine"),
    ("cosine:steps=100,colour=red", "'colour=red' is not key=value"),
    ("constant:steps=100,final=0.1", "final= does not apply to constant"),
    ("wsd:steps=100,shape=exp", "shape: 'exp' is not one of 'linear', 'sqrt', 'geometric', 'cosine'"),
    ("wsd:steps=100,cooldown=200", "cooldown: 200.0 is 200 steps, more than the schedule's 100"),
    ("step:steps=100,at=20/40,to=0.5/0.2/0.1", "at= and to= give 2 and 3 values"),
    ("step:steps=100,at=200", "drops: step 200 is outside 1..100"),
    ("cosine:steps=100,warmup=100", "warmup: 100.0 is 100 steps, not below the schedule's 100 steps"),
    ("cosine:steps=2.5", "steps: 2.5; must be a whole number of steps > 0"),
])
def test_bad_schedule_specs_are_one_line_errors(spec, message):
    with pytest.raises(AnalysisInputError, match="^[^\n]*$") as err:
        sch.parse_schedule(spec, {"peak": 1e-3})
    assert message in str(err.value)


def test_a_spec_without_peak_needs_one():
    with pytest.raises(AnalysisInputError, match="give peak=LR"):
        sch.parse_schedule("cosine:steps=100")
    assert sch.parse_schedule("cosine:steps=100,lr=1e-3")[1][0] == 1e-3


HARNESS = [
    dict(schedule="cosine"),
    dict(schedule="cosine", warmup_steps=0, final_lr_fraction=0.0),
    dict(schedule="linear", warmup_fraction=0.1),
    dict(schedule="constant", warmup_steps=7),
    dict(schedule="wsd", warmup_steps=5, cooldown_fraction=0.25, final_lr_fraction=0.0),
    dict(schedule="wsd", cooldown_fraction=0.3, cooldown_shape="sqrt", final_lr_fraction=0.05),
    dict(schedule="wsd", warmup_fraction=0.5, cooldown_fraction=0.7),  # the cooldown starts inside the warmup
    dict(schedule="cosine", warmup_steps=500),  # a warmup longer than the run
]


@pytest.mark.parametrize("optim", HARNESS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("tokens", [40000, 123456])
def test_schedule_from_config_is_the_harness_schedule_at_every_step(optim, tokens):
    from scaling.config import OptimConfig
    from scaling.run.schedule import lr_multiplier

    cfg = OptimConfig(lr=2e-3, **optim)
    config = {"optim": {"lr": 2e-3, "weight_decay": 0.1, **optim},
              "train": {"tokens": tokens, "batch_size": 8}, "model": {"context": 64}}
    steps = max(1, round(tokens / (8 * 64)))
    lrs = sch.schedule_from_config(config)
    assert lrs.size == steps + 1 and lrs[0] == 0.0
    # step s of a curve is logged after s optimizer steps; the loop gave step s - 1 the lr lr * multiplier(s - 1)
    harness = [cfg.lr * lr_multiplier(s - 1, steps, cfg) for s in range(1, steps + 1)]
    np.testing.assert_allclose(lrs[1:], harness, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(sch.schedule_from_config(config, steps=steps), lrs)


@pytest.mark.parametrize("config, message", [
    ([], "config: expected a mapping"),
    ({"train": {}}, "config: no optim section"),
    ({"optim": {"schedule": "exp"}, "train": {"tokens": 10, "batch_size": 1}, "model": {"context": 1}},
     "optim.schedule: 'exp' is not one of"),
    ({"optim": {"lr": -1}}, "peak: -1; must be a positive learning rate"),
    ({"optim": {"schedule": "cosine"}}, "train.tokens, train.batch_size and model.context are needed"),
    ({"optim": {"schedule": "wsd", "cooldown_shape": "cubic"}, "train": {"tokens": 100, "batch_size": 1},
      "model": {"context": 1}}, "optim.cooldown_shape: 'cubic' is not one of 'linear', 'sqrt'"),
])
def test_schedule_from_a_bad_config_is_a_one_line_error(config, message):
    with pytest.raises(AnalysisInputError) as err:
        sch.schedule_from_config(config)
    assert message in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- curves in: checks and interpolation


def frame(steps, loss=None, lr=1e-3, run="r1", **extra) -> pd.DataFrame:
    steps = np.asarray(steps)
    loss = 4.0 - 0.01 * np.arange(steps.size) if loss is None else loss
    out = pd.DataFrame({"run_id": run, "step": steps, "loss": loss, **extra})
    return out.assign(lr=lr) if lr is not None else out


STEPS = np.arange(10, 210, 10)


@pytest.mark.parametrize("curves, message", [
    (frame(STEPS, lr=None), "run r1: column 'lr' is missing or empty and no schedule was given"),
    (frame(STEPS, lr=np.full(20, np.nan)), "run r1: column 'lr' is missing or empty"),
    (frame(STEPS, lr=np.r_[1e-3, -1e-3, np.full(18, 1e-3)]), "run r1: column 'lr' is not positive at step 20 (-0.001)"),
    (frame(STEPS, lr=np.r_[np.full(5, 1e-3), 0.0, np.full(14, 1e-3)]), "run r1: column 'lr' is not positive at step 60 (0)"),
    (frame([10]), "run r1: column 'step': a single point (step 10)"),
    (frame([0, 10]), "run r1: column 'step': a single point (step 10)"),
    (frame(np.r_[10, 30, 20, STEPS[3:]]), "run r1: column 'step' is not increasing (step 20 comes after 30)"),
    (frame(np.r_[10, 20, 20, STEPS[3:]]), "run r1: column 'step' is not increasing (step 20 is repeated)"),
    (frame(np.r_[10, -5, STEPS[2:]]), "run r1: column 'step': -5 is not a whole step >= 1"),
    (frame(STEPS + 0.5), "run r1: column 'step': 10.5 is not a whole step >= 1"),
    (frame(STEPS, loss=np.r_[4.0, np.nan, np.full(18, 3.9)]), "run r1: column 'loss' is NaN or infinite at 1 step(s) "
                                                              "(first: step 20)"),
    (frame(STEPS, loss=np.r_[4.0, -1.0, np.full(18, 3.9)]), "run r1: column 'loss' is not positive at step 20"),
    (frame(STEPS, loss=["x"] + [3.9] * 19), "run r1: column 'loss' has 1 value(s) that are not numbers (first: 'x')"),
    (frame(STEPS).drop(columns="loss"), "run r1: column 'loss' is missing (columns: run_id, step, lr)"),
    (pd.DataFrame(), "curves: no rows"),
    ([1, 2, 3], "curves: expected a DataFrame"),
])
def test_bad_curves_are_one_line_errors_naming_run_and_column(curves, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AnalysisInputError) as err:
            fit_loss_curve(curves, "tissue")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_schedules_are_one_line_errors():
    curves = frame(STEPS)
    with pytest.raises(AnalysisInputError, match=r"schedules: run\(s\) other are not in the curves \(runs: r1\)"):
        prepare(curves, {"other": np.full(300, 1e-3)})
    with pytest.raises(AnalysisInputError, match=r"run r1: schedule: 100 steps \(0..99\); the curve goes to step 200"):
        prepare(curves, {"r1": np.full(100, 1e-3)})
    with pytest.raises(AnalysisInputError, match=r"run r1: schedule: lr -0.001 at step 3"):
        prepare(curves, {"r1": np.r_[0, 1, 1, -1, np.ones(300)] * 1e-3})
    with pytest.raises(AnalysisInputError, match="run r1: schedule 'cosine:steps=100,peak=1e-3,shape=sqrt': shape does not apply"):
        prepare(curves, {"r1": "cosine:steps=100,peak=1e-3,shape=sqrt"})


def test_lr_logged_every_k_steps_is_interpolated_and_a_missing_warmup_warns():
    ramp = np.minimum(1.0, STEPS / 50) * 1e-3  # logged every 10 steps through a 50-step warmup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (c,) = prepare(frame(STEPS, lr=ramp))
    assert c.lr_source == "interpolated" and c.lrs.size == 201
    np.testing.assert_allclose(c.lrs[:51], np.arange(51) / 50 * 1e-3)  # linear between logged steps, 0 at step 0
    sparse = frame(STEPS, lr=np.where(np.arange(20) % 3 == 0, ramp, np.nan))  # every 3rd row only
    np.testing.assert_allclose(prepare(sparse)[0].lrs[:31], np.arange(31) / 50 * 1e-3)
    with pytest.warns(UserWarning, match=r"run r1: column 'lr': no lr after step 190; the last logged lr is held to "
                                         r"step 200"):
        (c,) = prepare(frame(STEPS, lr=np.r_[ramp[:-1], np.nan]))
    assert c.lrs.size == 201 and c.lrs[-1] == 1e-3
    with pytest.warns(UserWarning, match=r"run r1: column 'lr': the lr is logged from step 100 on, already at its peak "
                                         r"0.001: the warmup is missing, a linear ramp from 0 over steps 0..100"):
        (c,) = prepare(frame(STEPS[9:]))
    assert c.lrs[50] == pytest.approx(5e-4)
    decayed = np.r_[np.full(15, 1e-3), np.linspace(8e-4, 2e-4, 4), 0.0]  # a decay that ends at lr 0 is fine
    assert prepare(frame(STEPS, lr=decayed))[0].lrs[-1] == 0.0


def test_step_zero_rows_are_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="run r1: column 'step': the row"):
        (c,) = prepare(frame(np.r_[0, STEPS], lr=np.r_[0.0, STEPS / 200 * 1e-3]))
    assert c.steps[0] == 10 and c.loss.size == 20


def test_a_schedule_that_disagrees_with_the_logged_lr_warns():
    lrs = sch.constant(200, 1e-3, warmup=50)
    logged = lrs[STEPS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (c,) = prepare(frame(STEPS, lr=logged), {"r1": lrs})
    assert c.lr_source == "schedule" and c.lrs is not None
    shifted = sch.constant(200, 1e-3, warmup=60)  # another warmup than the run had
    with pytest.warns(UserWarning, match=r"run r1: column 'lr': the logged lr differs from the given schedule at 5 "
                                         r"step\(s\) \(first: step 10, logged 0.0002041, schedule 0.0001695\)"):
        prepare(frame(STEPS, lr=logged), {"r1": shifted})


def test_several_input_forms_give_the_same_curves():
    long = pd.concat([frame(STEPS, run="a"), frame(STEPS, run="b", loss=3.0 - 0.01 * np.arange(20))])
    by_map = {"a": long[long.run_id == "a"].drop(columns="run_id"), "b": long[long.run_id == "b"]}
    for got in (prepare(long), prepare(by_map)):
        assert [c.run_id for c in got] == ["a", "b"]
        np.testing.assert_array_equal(got[1].loss, 3.0 - 0.01 * np.arange(20))
    (single,) = prepare(frame(STEPS).drop(columns="run_id"))
    assert single.run_id == "run"
    renamed = frame(STEPS).rename(columns={"step": "iter", "loss": "val", "lr": "eta"})
    assert prepare(renamed, step_col="iter", loss_col="val", lr_col="eta")[0].horizon == 200


MPEXP = dict(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=0.5, gamma=0.5, p=0.7)  # near the 400M fit


def loop_mpexp(p: dict, lrs: np.ndarray, t: int, warmup: str) -> float:
    """L(t) = L0 + A S1p(t)^-alpha - B sum_k (lr_(k-1) - lr_k) (1 - exp(-C lr_k^-gamma S_k(t))),
    S1p(t) = peak sum_(i<=t) (lr_i / peak)^p (an lr of 0 counted as 1e-9 peak)."""
    peak = max(lrs)
    S1p = peak * sum(max(lr / peak, 1e-9) ** p["p"] for lr in lrs[: t + 1])
    LD = 0.0
    for k in range(first_drop_term(lrs, warmup), t + 1):
        S_k = sum(lrs[k: t + 1])
        LD += p["B"] * (lrs[k - 1] - lrs[k]) * (1.0 - np.exp(-p["C"] * lrs[k] ** -p["gamma"] * S_k))
    return p["L0"] + p["A"] * S1p ** -p["alpha"] - LD


@pytest.mark.parametrize("warmup", ["code", "paper"])
@pytest.mark.parametrize("name", list(SHORT))
def test_exp_drop_law_equals_a_step_by_step_loop_of_its_formula(name, warmup):
    test_law_equals_a_step_by_step_loop_of_its_formula(name, "mpexp", MPEXP, loop_mpexp, warmup)


def test_exp_drop_law_jacobian_matches_finite_differences():
    from analysis.curve_laws.laws import LAWS, Design
    law, design = LAWS["mpexp"], Design(SHORT["wsd"], np.arange(1, 45), exact=True)
    p = np.array([MPEXP[n] for n in law.params])
    _, J = law.jacobian(p, design)
    for i in range(p.size):
        h = 1e-6 * max(abs(p[i]), 1.0)
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        numeric = (law.predict(up, design) - law.predict(down, design)) / (2 * h)
        np.testing.assert_allclose(J[:, i], numeric, rtol=1e-5, atol=1e-7, err_msg=law.params[i])
    assert curve_law("exp-drop", **MPEXP).predict(SHORT["wsd"], [45])["loss"].iloc[0] == pytest.approx(
        loop_mpexp(MPEXP, SHORT["wsd"], 45, "code"), rel=1e-6)


def test_exp_drop_law_compressed_sum_matches_every_step_on_a_wsd_cooldown():
    lrs = pub.SCHEDULES["wsd_20000_24000"]()
    model = curve_law("mpexp", L0=2.44, A=0.63, alpha=0.5, B=453.0, C=0.44, gamma=0.49, p=0.58)  # the 400M fit
    steps = np.unique(np.linspace(2200, lrs.size - 1, 150).round().astype(int))
    fast, exact = model.predict(lrs, steps)["loss"], model.predict(lrs, steps, exact=True)["loss"]
    assert np.max(np.abs(fast - exact)) < 1e-5
