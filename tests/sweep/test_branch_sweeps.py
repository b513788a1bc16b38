"""WSD branching inside the IsoFLOP and ladder sweeps: per shape one trunk and one cooldown branch per point,
planned with each trunk counted once, and a real tiny IsoFLOP-with-branching multirun through scaling-train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from scaling.sweep import pricing
from scaling.sweep.branch_plan import sweep_flops

TPS = 4 * 32  # tokens per optimizer step of the tiny runs
TINY_SWEEP = ["model.head_dim=8", "model.context=32", "train.batch_size=4", "data.max_bytes=400000", "logger=none",
              "train.eval_every=0", "train.final_eval_tokens=2048", "train.threads=1", "train.checkpoint_every=0",
              "train.log_every=5", "sweep.min_tokens_per_param=0", "sweep.min_steps=20"]
# 6 N D budgets of 50, 100, 200, 400 steps for width 16; width 32 (4x the FLOPs per token) falls below
# min_steps=20 at the smallest budget, so that point is skipped as in the plain IsoFLOP sweep.
ISOFLOP_WSD = ["+sweep=isoflop_wsd", "sweep.budgets=[1.2e8,2.4e8,4.8e8,9.6e8]",
               "sweep.shapes=[{width:16,depth:1},{width:32,depth:1}]", *TINY_SWEEP]


def by_role(runs):
    return [r for r in runs if r.role == "trunk"], [r for r in runs if r.role == "branch"]


def test_ladder_plan_has_one_trunk_per_shape_and_counts_it_once(tmp_path):
    runs, _ = pricing.plan_sweep(["+sweep=ladder_wsd", "sweep.multiples=[5,10,20]", "sweep.cooldown_fraction=0.25",
                               "sweep.shapes=[{width:64,depth:2},{width:96,depth:2}]", f"runs_dir={tmp_path}"])
    assert [r.role for r in runs] == ["trunk", "branch", "branch", "branch"] * 2  # within a shape, trunk first
    trunks, branches = by_role(runs)
    for trunk in trunks:
        mine = [b for b in branches if b.trunk == trunk.run_id]
        assert len(mine) == 3 and all(b.shape == trunk.shape for b in mine)
        n = trunk.params["non_embedding"]
        assert sorted(b.train_tokens for b in mine) == [5 * n, 10 * n, 20 * n]  # D = k N, as in `ladder`
        assert trunk.tokens == max(b.tokens - b.own_tokens for b in mine)  # up to the longest cooldown's start
        for b in mine:
            start = b.tokens - b.own_tokens
            assert start % (16 * 128) == 0 and 0.74 * b.tokens <= start <= 0.75 * b.tokens
    totals = pricing.totals(runs)
    assert totals["flops"] == pytest.approx(sum(r.compute for r in trunks) + sum(r.own_compute for r in branches))
    assert totals["flops"] < sum(r.compute for r in branches)


def test_wsd_branches_points_are_whole_steps_of_the_trunk(tmp_path):
    runs, _ = pricing.plan_sweep(["+sweep=wsd_branches", f"runs_dir={tmp_path}"])
    trunks, branches = by_role(runs)
    assert len(trunks) == 2 and len(branches) == 8
    for b in branches:
        trunk = next(t for t in trunks if t.run_id == b.trunk)
        start = b.tokens - b.own_tokens
        assert start % (16 * 128) == 0 and start <= trunk.tokens  # the trunk reaches (and keeps) every start


@pytest.mark.parametrize("sweep", ["wsd_branches", "isoflop_wsd", "ladder_wsd", "study_wsd"])
def test_a_cooldown_seed_replicates_every_branch_on_the_same_trunk(tmp_path, sweep):
    plain, _ = pricing.plan_sweep([f"+sweep={sweep}", f"runs_dir={tmp_path}"])
    replicate, _ = pricing.plan_sweep([f"+sweep={sweep}", "sweep.cooldown_seed=7", f"runs_dir={tmp_path}"])
    assert [r.role for r in plain] == [r.role for r in replicate]
    for a, b in zip(plain, replicate):
        if a.role == "trunk":  # reused: the same run directory
            assert a.run_id == b.run_id
        else:  # a run of its own, from the same trunk, for the same tokens
            assert a.run_id != b.run_id and a.trunk == b.trunk and (a.tokens, a.own_tokens) == (b.tokens, b.own_tokens)
    assert sum(r.role == "branch" for r in plain) > 0


def test_replicate_cooldowns_price_each_trunk_once(tmp_path):
    plain, _ = pricing.plan_sweep(["+sweep=wsd_branches", f"runs_dir={tmp_path}"])
    three, _ = pricing.plan_sweep(["+sweep=wsd_branches", "sweep.cooldown_seed=1,2,3", f"runs_dir={tmp_path}"])
    trunks, branches = by_role(plain)
    assert len(three) == 3 * len(plain)  # a job per seed and role: the trunk's three jobs are one run
    priced = pricing.totals(three)
    assert priced["runs"] == len(trunks) + 3 * len(branches)
    assert priced["flops"] == pytest.approx(sum(r.compute for r in trunks) + 3 * sum(r.own_compute for r in branches))


@pytest.mark.slow
def test_isoflop_with_branching_trains_each_point_as_a_branch_of_its_trunk(tmp_path):
    runs_dir = tmp_path / "runs"
    planned = {Path(r.run_dir).name: r for r in pricing.plan_sweep(ISOFLOP_WSD + [f"runs_dir={runs_dir}"])[0]}
    assert len(planned) == 2 + 2 * 4 and sum(1 for r in planned.values() if r.skip_reason) == 1

    proc = run_cli("scaling-train", "--multirun", *ISOFLOP_WSD, f"runs_dir={runs_dir}", cwd=tmp_path,
                   env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = runs_dir / "isoflop_wsd"
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}
    assert set(records) == set(planned)  # run directories are the plan's

    trunks = {k: r for k, r in records.items() if r.get("role") == "trunk"}
    branches = {k: r for k, r in records.items() if r.get("role") == "branch"}
    assert len(trunks) == 2 and len(branches) == 7
    for run_id, rec in branches.items():
        point = planned[run_id]
        assert rec["status"] == "completed" and rec["trunk"] in trunks
        assert records[rec["trunk"]]["model"] == rec["model"]  # a branch of its own shape's trunk
        per_step = TPS * rec["flops_per_token"]["6nd"]
        assert abs(rec["flops"]["6nd"] - point.budget) <= per_step / 2  # the planned compute, whole steps
        assert rec["tokens"] == point.tokens and rec["own_tokens"] == point.own_tokens
        assert rec["branch_tokens"] <= trunks[rec["trunk"]]["tokens"]
    skipped = [r for r in records.values() if r["status"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["error"].startswith("below the floor")

    spent = sweep_flops(list(records.values()))
    assert spent == pytest.approx(pricing.totals(list(planned.values()))["flops"])  # as scaling-plan priced it
    assert spent < sum(r["flops"]["6nd"] for r in branches.values())  # less than separate runs of each point
