"""Sweeps on repeated data: the data-constrained grid, sweep.unique_tokens in the IsoFLOP sweep, the
skip rules against U and its epoch ceiling, and what scaling-plan shows."""

from __future__ import annotations

import pytest

from scaling.cli import plan as plan_cli
from scaling.run import identity
from scaling.sweep import pricing
from scaling.sweep.expand import expand


def _plan(*overrides):
    runs, _ = pricing.plan_sweep(list(overrides), tokens_per_sec=50_000.0)
    return runs


def test_the_grid_is_shapes_x_unique_tokens_x_epochs(tmp_path):
    runs = _plan("+sweep=data_constrained", "sweep.shapes=[{width:64,depth:2},{width:128,depth:2}]",
                 "sweep.unique_grid=[250000,1000000]", "sweep.epoch_grid=[1,4,40]", f"runs_dir={tmp_path}")
    assert len(runs) == 2 * 2 * 3
    for r in runs:
        job = dict(o.split("=", 1) for o in r.overrides)
        u = r.unique_tokens
        assert u == (int(job["sweep.unique_tokens"]) - 1) // 128 * 128  # U as the run's windows count it
        epochs = float(job["sweep.epochs"])
        assert abs(r.tokens - epochs * u) <= 16 * 128 / 2 + 1  # D = epochs x U, to whole steps
        assert r.epochs == pytest.approx(r.tokens / u)
        assert r.repeated_share == pytest.approx(max(0.0, 1 - u / r.tokens))
    assert all(r.skip_reason is None for r in runs if r.epochs <= 100)


def test_isoflop_with_unique_tokens_repeats_and_keeps_its_ids_without(tmp_path):
    base = ["+sweep=isoflop", "sweep.budgets=[1e13]", f"runs_dir={tmp_path}"]
    plain, repeated = _plan(*base), _plan(*base, "sweep.unique_tokens=250000")
    assert all(r.unique_tokens is None for r in plain)
    assert [r.train_tokens for r in repeated] == [r.train_tokens for r in plain]  # the same budgets
    assert {r.unique_tokens for r in repeated} == {(250000 - 1) // 128 * 128}
    assert [r.run_id for r in plain] != [r.run_id for r in repeated]
    jobs = expand(["+sweep=isoflop"])
    assert jobs[0][1].data.unique_tokens is None
    assert "unique_tokens" not in str(identity.identity(jobs[0][1]))  # at its default: not in the run id


def test_skip_rules_use_u_and_its_ceiling(tmp_path):
    base = ["+sweep=data_constrained", "sweep.shapes=[{width:64,depth:2}]", f"runs_dir={tmp_path}"]
    over = _plan(*base, "sweep.unique_grid=[250000]", "sweep.epoch_grid=[40]", "sweep.max_unique_epochs=30")
    assert over[0].skip_reason.startswith("beyond the repeat ceiling: ") and "sweep.max_unique_epochs=30" in \
        over[0].skip_reason
    beyond = _plan(*base, "sweep.unique_grid=[50000000]", "sweep.epoch_grid=[1]")
    assert beyond[0].skip_reason.startswith("beyond the data: data.unique_tokens=50,000,000 > the train split")
    within = _plan(*base, "sweep.unique_grid=[250000]", "sweep.epoch_grid=[40]")  # 40 epochs, over one corpus pass
    assert within[0].skip_reason is None


def test_plan_shows_u_epochs_and_the_repeated_share(capsys, tmp_path):
    args = ["+sweep=data_constrained", "sweep.shapes=[{width:64,depth:2}]", "sweep.unique_grid=[250000]",
            "sweep.epoch_grid=[1,4]", f"runs_dir={tmp_path}", "--tokens-per-sec", "1e5"]
    assert plan_cli.main(args) == 0
    table = capsys.readouterr().out
    head = table.splitlines()[1].split()
    assert head[head.index("budget") + 1:head.index("budget") + 4] == ["U", "epochs", "repeated"]
    assert "250k" in table and "75%" in table
    assert plan_cli.main(args + ["--csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert {"unique_tokens", "epochs", "repeated_share"} <= set(header)
    assert plan_cli.main(["+sweep=isoflop", "sweep.budgets=[1e13]", f"runs_dir={tmp_path}", "--tokens-per-sec",
                          "1e5"]) == 0
    assert "repeated" not in capsys.readouterr().out  # no column for a sweep without repeated data


def test_u_smaller_than_a_batch_is_a_one_line_plan_error(capsys, tmp_path):
    code = plan_cli.main(["+sweep=data_constrained", "sweep.unique_grid=[1000]", "sweep.epoch_grid=[4]",
                          "sweep.min_steps=1", f"runs_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: data.unique_tokens=1,000 is smaller than one batch: allowed at least 2,049")
