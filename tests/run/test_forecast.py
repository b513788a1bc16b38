"""The estimated final loss while a run trains (``pred/final_loss``, scaling.study.forecast): a real small
run logs it with its band to metrics.jsonl, W&B (offline files read back) and the progress bar; off when
``train.forecast_every=0``; no run id moves; a failing fit never breaks a run; the time budget holds."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.wandb_source import read_offline_runs
from scaling.config import RunConfig, typed_config
from scaling.errors import ConfigError
from scaling.run import identity
from scaling.run.hooks import ConsoleHook, HookContext, pred_postfix
from scaling.run.loop import StepEvent
from scaling.run.training import run_training
from scaling.study import forecast
from scaling.study.forecast import KEYS, ForecastHook, forecast_hooks
from scaling.sweep.expand import compose_run_config

# 240 steps of 512 tokens, an evaluation every 20 steps on the same windows as the final one (so the final
# val/loss is the quantity the forecast estimates).
RUN = ["model=tiny", "train.batch_size=8", "train.tokens=122880", "train.eval_every=20", "train.eval_tokens=4096",
       "train.final_eval_tokens=4096", "train.threads=1", "train.device=cpu", "train.checkpoint_every=0",
       "data.max_bytes=2000000"]
# Shorter runs for the tests that need evaluations but no real fit: 60 steps, an evaluation every 4.
SHORT = ["logger=none", "train.tokens=30720", "train.eval_every=4", "train.log_every=2", "train.eval_tokens=2048",
         "train.final_eval_tokens=2048", "train.forecast_max_share=1"]
TOLERANCE = 0.05  # |last estimate - final val/loss|, nats; observed 0.015 (seed 0) and 0.006 (seed 1), docs/forecast.md


def run_overrides(*overrides: str) -> list[str]:
    """``RUN`` with some of its settings changed or added (Hydra refuses one key given twice)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in RUN if o.split("=", 1)[0] not in keys] + list(overrides)


def train_cli(tmp: Path, *overrides: str) -> tuple[Path, str]:
    """``scaling-train`` in a subprocess (the console script wires the forecast): the run folder, the output."""
    cmd = [sys.executable, "-m", "scaling.cli.train", *run_overrides(*overrides), f"runs_dir={tmp / 'runs'}"]
    env = {"WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp / "wb-config"), "WANDB_CACHE_DIR": str(tmp / "wb"),
           "WANDB_DATA_DIR": str(tmp / "wb"), "NETRC": str(tmp / "no-netrc")}
    import os

    done = subprocess.run(cmd, env={**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp / "runs").rglob("result.json")]
    return run_dir, done.stdout + done.stderr


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@pytest.mark.slow
def test_a_real_run_logs_its_estimated_final_loss_with_a_band(tmp_path):
    # a share of 100: the estimates whatever the machine's speed (the run trains in under 2 s on a quiet
    # machine, below the first fit's expected cost); the budget has tests of its own, with a given clock
    run_dir, output = train_cli(tmp_path, "logger.wandb.mode=offline", "logger.wandb.project=test",
                        "train.forecast_every=1", "train.forecast_max_share=100")
    rows = rows_of(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    evals = [r for r in rows if "val/loss" in r and r["step"] < result["steps"]]
    predicted = [r for r in rows if KEYS[0] in r]
    assert predicted, "no pred/final_loss row"
    # only after enough points past warmup, only on evaluation rows
    first = next(i for i, r in enumerate(evals) if KEYS[0] in r)
    assert first + 1 >= forecast.MIN_POINTS and all("val/loss" in r for r in predicted)
    assert all(KEYS[0] not in r for r in rows if r["step"] == result["steps"])
    for r in predicted:
        assert r[KEYS[1]] <= r[KEYS[0]] <= r[KEYS[2]], r
        assert 0 < r[KEYS[0]] < evals[0]["val/loss"]
    last = predicted[-1][KEYS[0]]
    assert abs(last - result["val_loss"]) <= TOLERANCE, (last, result["val_loss"])
    # the W&B mirror holds the same estimates, at the same steps
    (wb,) = read_offline_runs(run_dir)
    mirrored = {h["step"]: {k: h[k] for k in KEYS if k in h} for h in wb.history if KEYS[0] in h}
    assert mirrored == {r["step"]: {k: r[k] for k in KEYS if k in r} for r in predicted}
    # the console (a log line every 100 steps without a terminal) shows the latest estimate and its band
    latest = [r for r in predicted if r["step"] <= 200][-1]
    assert f"final_loss {latest[KEYS[0]]:.4f} [{latest[KEYS[1]]:.4f}, {latest[KEYS[2]]:.4f}]" in output


def test_off_when_forecast_every_is_zero(tmp_path):
    assert forecast_hooks(compose_run_config([])) == [ForecastHook.from_context]  # on by default
    cfg = compose_run_config(run_overrides(*SHORT, "train.forecast_every=0"))
    assert forecast_hooks(cfg) == []
    run_training(cfg, tmp_path / "run", extra_hooks=forecast_hooks(cfg))  # as scaling-train's task does
    rows = rows_of(tmp_path / "run")
    assert sum("val/loss" in r for r in rows) > forecast.MIN_POINTS + 2  # enough points: it would have run
    assert not any(k.startswith("pred/") for r in rows for k in r)


def test_the_forecast_settings_move_no_run_id():
    cfg = compose_run_config(["model=tiny", "train.tokens=4096"])
    before = identity.run_key(cfg)
    for overrides in (["train.forecast_every=0"], ["train.forecast_every=3", "train.forecast_max_share=0.5"]):
        assert identity.run_key(compose_run_config(["model=tiny", "train.tokens=4096", *overrides])) == before
    older = OmegaConf.to_container(cfg, resolve=True)  # a config written before the fields existed
    for key in ("forecast_every", "forecast_max_share"):
        del older["train"][key]
    assert identity.run_key(OmegaConf.create(older)) == before


@pytest.mark.parametrize("key, value", [("forecast_every", -1), ("forecast_max_share", 0.0),
                                        ("forecast_max_share", -0.5)])
def test_bad_forecast_settings_are_one_line_errors(key, value):
    cfg = OmegaConf.structured(RunConfig)
    cfg.train[key] = value
    with pytest.raises(ConfigError, match=f"train.{key}={value!r} is invalid"):
        RunConfig.validate(cfg)


def test_a_failing_fit_never_breaks_the_run(tmp_path, caplog):
    calls = []

    def broken(steps, losses, lrs, previous):
        calls.append(len(steps))
        if len(calls) % 2:
            raise RuntimeError("the fit broke")
        return math.nan, math.nan, math.nan, {}

    def factory(context: HookContext) -> ForecastHook:
        return ForecastHook(context.steps, context.lrs, 1, 1.0, history=context.history(), fit=broken,
                            first_cost=0.0)

    cfg = compose_run_config(run_overrides(*SHORT))
    with caplog.at_level(logging.DEBUG, logger="scaling.forecast"):
        result = run_training(cfg, tmp_path / "run", extra_hooks=[factory])
    assert result["status"] == "completed" and len(calls) >= 2
    assert not any(k.startswith("pred/") for r in rows_of(tmp_path / "run") for k in r)
    assert "the fit broke" in caplog.text and "implausible estimate nan" in caplog.text


def test_the_hook_gets_the_exact_schedule_and_a_resumed_run_its_earlier_rows(tmp_path):
    seen = []

    def factory(context: HookContext) -> None:
        seen.append((context, ForecastHook.from_context(context)))
        return None  # a factory may decline

    cfg = compose_run_config(run_overrides(*SHORT, "train.checkpoint_every=20", "train.keep_checkpoints=3"))
    run_dir = tmp_path / "run"
    run_training(cfg, run_dir, extra_hooks=[factory])
    ctx = seen[0][0]
    logged = {r["step"]: r["lr"] for r in rows_of(run_dir)}
    assert len(ctx.lrs) == ctx.steps + 1 == 61 and ctx.lrs[0] == 0.0 and ctx.start_step == 0 and ctx.is_main
    assert all(ctx.lrs[s] == pytest.approx(lr, rel=1e-12) for s, lr in logged.items())
    # resumed from its step-40 checkpoint: the hook starts with the evaluations the record already holds
    (run_dir / "result.json").unlink()
    (run_dir / "checkpoints" / "step_00000060.pt").unlink()
    run_training(cfg, run_dir, extra_hooks=[factory])
    ctx, hook = seen[1]
    assert ctx.start_step == 40 and ctx.lrs == seen[0][0].lrs
    assert hook.points == [(r["step"], r["val/loss"]) for r in rows_of(run_dir) if "val/loss" in r and r["step"] <= 40]
    assert len(hook.points) == 10


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_time_budget_and_the_warm_start():
    clock, calls = Clock(), []

    def fit(steps, losses, lrs, previous):
        calls.append(previous)
        clock.now += 1.0  # each fit costs one second
        return losses[-1] - 0.01, losses[-1] - 0.02, losses[-1], {"alpha": 0.5}

    hook = ForecastHook(1000, [0.0] + [1e-3] * 1000, every=1, max_share=0.1, warmup=30, fit=fit, clock=clock,
                        first_cost=0.0)
    logged = []
    for step in range(20, 1000, 20):
        clock.now += 2.0  # two seconds of training between evaluations
        ev = StepEvent(step=step, lr=1e-3, loss=None, is_last=False,
                       row={"step": step, "val/loss": 3.0 - step / 1000, "train/loss": 3.0, "tokens_per_s": 1.0})
        hook.after_step(ev)
        if KEYS[0] in ev.row:
            logged.append(step)
    assert logged[0] == 20 * (forecast.MIN_POINTS + 1)  # MIN_POINTS points after the warmup (step 20 is in it)
    assert hook.spent <= 0.1 * clock.now + 1e-9  # the fits never took more than their share
    assert 5 <= len(logged) < 40  # about a tenth of the run's time: ~10 of the 49 evaluations
    assert calls[0] is None and calls[1] == {"alpha": 0.5}  # warm start from the previous fit


def test_progress_bar_shows_the_latest_estimate(capsys):
    row = {"train/loss": 2.5, "tokens_per_s": 100.0, KEYS[0]: 2.3012, KEYS[1]: 2.29, KEYS[2]: 2.31}
    assert pred_postfix(row) == {"final_loss": "2.3012 [2.2900, 2.3100]"}
    assert pred_postfix({KEYS[0]: 2.3}) == {"final_loss": "2.3000"}
    run = typed_config(compose_run_config([]))
    assert run.train.forecast_every == 1
    from scaling.run.distributed import DistContext

    console = ConsoleHook(True, 10, 0, 1, 1, DistContext())
    for step, r in ((1, row), (2, {"train/loss": 2.4, "tokens_per_s": 100.0})):
        console.after_step(StepEvent(step=step, lr=1e-3, loss=None, is_last=False, row=r))
    console.close()
    assert "final_loss=2.3012 [2.2900, 2.3100]" in capsys.readouterr().err  # kept on the later row


def test_only_the_writing_rank_of_a_run_from_its_first_step_forecasts():
    def context(*overrides: str, is_main: bool = True) -> HookContext:
        run = typed_config(compose_run_config(["model=tiny", "train.tokens=20480", *overrides]))
        return HookContext(run=run, run_dir=Path("unused"), steps=40, start_step=0, lrs=[0.0] + [1e-3] * 40,
                           is_main=is_main, history=list)

    assert isinstance(ForecastHook.from_context(context()), ForecastHook)
    assert ForecastHook.from_context(context(is_main=False)) is None  # other ranks never fit
    assert ForecastHook.from_context(context("train.forecast_every=0")) is None
    branch = context("optim=wsd", "train.branch_from=/trunk", "train.branch_tokens=10240")
    assert ForecastHook.from_context(branch) is None  # a branch's record starts at its branch point
