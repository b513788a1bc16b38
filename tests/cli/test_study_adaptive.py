"""``scaling-study --adaptive`` on a small cut of the quick sweep: real training, exactly the chosen runs, the
held-out check, and the one-line errors of its flags."""

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_cli
from omegaconf import OmegaConf

from scaling.cli.study import main
from scaling.study.adaptive import POOL, law_holdout, seed_design, up_to_goal
from scaling.study.launch import plan
from scaling.study.next_runs import widened_grid
from scaling.sweep.expand import expand
from scaling.sweep.pricing import plan_run

CUT = ["sweep.shapes=[{width:16,depth:2},{width:24,depth:2},{width:32,depth:2}]",
       "train.final_eval_tokens=4096"]
SEED_FLOPS = 3 * 2.5e10 + 3 * 5e10  # the two smallest budgets x 3 widths


def study(*args):
    return run_cli("scaling-study", "--quick", *map(str, args), cwd=Path(__file__).parent, timeout=900)


@pytest.mark.slow
def test_adaptive_study_trains_the_seed_then_exactly_the_chosen_runs_and_checks_a_held_out_run(tmp_path):
    out = tmp_path / "adaptive"
    # Room for one round of 2 runs at 1e11, and a width no fit reaches: the budget ends it.
    p = study("--adaptive", "--design", "cosine", "--pool", "sweep", "--width", 1e-9, "--max-flops", SEED_FLOPS + 2.2e11, "--batch", 2, "--jobs", 2,
              "--seed-budgets", 2, "--seed-widths", "all", "--holdout-factor", 1, "--bootstrap", 20, "--out", out, *CUT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads((out / "adaptive.json").read_text())
    assert [r["runs"] for r in s["rounds"]][:2] == [6, 8] and s["rounds"][-1]["stop"] == "budget spent"
    added = [a for r in s["rounds"] for a in r["added"]]
    assert sum(a["cost"] for a in added) <= 2.2e11 and not s["reached"]
    assert s["seed"]["flops"] == pytest.approx(SEED_FLOPS, rel=1e-3)  # each run's true 6ND, whole steps
    assert s["flops"] == pytest.approx(s["seed"]["flops"] + sum(a["cost"] for a in added), rel=1e-9)
    assert s["fixed"]["runs"] == 9 and s["pool"] == "sweep"  # the fixed design: the sweep's own 9 runs
    trained = sorted(p.name for p in (out / "runs" / "study-quick").iterdir() if (p / "result.json").exists())
    assert trained == sorted(d["run_id"] for d in s["design"])  # the seed and the chosen runs, no other
    h = s["holdout"]
    assert h["measured"] > 0 and abs(h["rel_error"]) < 0.2
    assert (out / "adaptive.md").read_text().startswith("# Adaptive study `study_quick`")

    # Again, with a width the seed already reaches and the width alone as the stop rule: nothing trains,
    # round 0 stops, the records are reused.
    p = study("--adaptive", "--design", "cosine", "--width", 100, "--seed-budgets", 2, "--seed-widths", "all", "--stable", "off", "--min-dof", 0,
              "--holdout-factor", 1, "--bootstrap", 20, "--out", out, *CUT)
    assert p.returncode == 0, p.stderr[-3000:]
    s2 = json.loads((out / "adaptive.json").read_text())
    assert s2["reached"] and len(s2["rounds"]) == 1 and s2["runs"] == 6  # the design: the seed alone
    assert "held-out: predicted" in p.stdout and p.stdout.strip().splitlines()[-1] == str(out.resolve())


@pytest.mark.slow
def test_adaptive_wsd_study_trains_each_trunk_only_as_far_as_its_chosen_branches_start(tmp_path):
    out = tmp_path / "adaptive-wsd"
    # Seed: the 3 widths at the two smallest budgets (trunks to the second's start, 8.3e10 FLOPs); room for one
    # branch at the largest budget (its trunk to its end, 3e10), a width no fit reaches.
    p = study("--adaptive", "--width", 1e-9, "--max-flops", 1.2e11, "--seed-budgets", 2, "--seed-widths", "all", "--jobs", 2,
              "--holdout-factor", 1, "--bootstrap", 20, "--out", out, *CUT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads((out / "adaptive.json").read_text())
    assert s["design_name"] == "wsd" and s["pool"] == "sweep" and s["rounds"][-1]["stop"] == "budget spent"
    folder = out / "runs" / "study-wsd-quick"
    records = {d.name: json.loads((d / "result.json").read_text()) for d in folder.iterdir() if (d / "result.json").exists()}
    branches = {k: r for k, r in records.items() if r.get("role") == "branch"}
    assert sorted(branches) == sorted(d["run_id"] for d in s["design"])  # the seed and the chosen points, no other
    assert all(d["trunk"] for d in s["design"]) and s["seed"]["runs"] == 6 and len(s["design"]) == 7
    # Each trunk holds checkpoints exactly as far as the furthest branch of the design starts: no further.
    furthest = {}
    for r in branches.values():
        furthest[r["trunk"]] = max(furthest.get(r["trunk"], 0), r["branch_tokens"])
    for trunk, tokens in furthest.items():
        steps = [int(c.stem.split("_")[-1]) for c in (folder / trunk / "checkpoints").glob("*.pt")]
        per_step = next(r["batch_size"] * r["context"] for r in branches.values() if r["trunk"] == trunk)
        assert max(steps) * per_step == tokens, (trunk, steps, tokens)
        assert trunk not in records or records[trunk]["tokens"] == tokens  # completed only where it had to end
    # The design's FLOPs: each branch's cooldown and each trunk once, to its furthest branch point.
    conv = "6nd_total"
    trunk_flops = sum(next(r["flops_per_token"][conv] for r in branches.values() if r["trunk"] == t) * tokens
                      for t, tokens in furthest.items())
    assert s["flops"] == pytest.approx(sum(r["own_flops"][conv] for r in branches.values()) + trunk_flops, rel=1e-9)
    assert s["flops"] <= 1.2e11 and s["whole_sweep"]["design"] == "wsd" and s["whole_sweep_share"] < 1
    assert sum(1 for r in records.values() if r.get("role") == "trunk") == 1  # the one trunk that had to end
    assert s["holdout"]["measured"] > 0 and "(wsd design)" in (out / "adaptive.md").read_text()

    # scaling-next on the same records: the next branch, priced with the trunk it adds, and the trunk's
    # line (stopped at the branch's start, or to its end) before the branch's where the trunk is short of it.
    sweep = ["+sweep=study_wsd_quick", f"runs_dir={out / 'runs'}", *CUT]
    nxt = run_cli("scaling-next", str(folder), *sweep, "--json", cwd=Path(__file__).parent)
    assert nxt.returncode == 0, nxt.stderr
    (chosen,) = json.loads(nxt.stdout)["runs"]
    branch = next(r for r in plan(sweep)[0] if r.run_id == chosen["run_id"])
    start, lines = branch.tokens - branch.own_tokens, json.loads(nxt.stdout)["commands"]
    trained = max((int(c.stem.split("_")[-1]) for c in (folder / branch.trunk / "checkpoints").glob("*.pt")), default=0)
    if trained * branch.tokens // branch.steps >= start:
        assert len(lines) == 1 and chosen["cost"] == pytest.approx(branch.own_compute)
    else:
        assert len(lines) == 2 and "sweep.budget=trunk" in lines[0] and "sweep.budget=trunk" not in lines[1]
        assert chosen["cost"] > branch.own_compute
        assert lines[0].endswith(f"train.stop_at_tokens={start}") or start == max(
            r.tokens - r.own_tokens for r in plan(sweep)[0] if r.trunk == branch.trunk)


@pytest.mark.slow
def test_adaptive_wsd_study_with_the_budgets_pool_trains_a_branch_between_the_sweeps_budgets(tmp_path):
    out = tmp_path / "adaptive-budgets"
    # The seed's trunks pass the start of the midpoint budget 1.77e10; cheapest-first then takes one of its
    # branches (a cooldown alone, 3.5e9), which needs its trunk to have kept a checkpoint there.
    p = study("--adaptive", "--pool", "budgets", "--criterion", "cheapest", "--width", 1e-9, "--max-flops", 8.8e10,
              "--seed-budgets", 2, "--seed-widths", "all", "--jobs", 2, "--holdout-factor", 1, "--bootstrap", 20,
              "--out", out, *CUT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads((out / "adaptive.json").read_text())
    assert s["pool"] == "budgets" and s["candidates"] > s["whole_sweep"]["runs"] - s["seed"]["runs"]
    added = [a for r in s["rounds"] for a in r["added"]]
    assert [a["budget"] for a in added] == [1.77e10] and s["rounds"][-1]["stop"] == "budget spent"
    folder = out / "runs" / "study-wsd-quick"
    chosen = json.loads((folder / s["design"][-1]["run_id"] / "result.json").read_text())
    assert chosen["role"] == "branch" and chosen["trunk"] == s["design"][-1]["trunk"]
    assert s["flops"] == pytest.approx(s["seed"]["flops"] + added[0]["cost"], rel=1e-9)  # its trunk was paid


def test_the_defaults_are_the_measured_setting_and_off_or_all_restore_the_old_rule():
    from scaling.cli.study_adaptive import split_adaptive

    _, ad = split_adaptive(["--adaptive"])
    assert (ad.pool, ad.seed_budgets, ad.seed_widths, ad.batch, ad.stable, ad.min_dof, ad.law) == (None, 3, 2, 1, 0.5, 4, "parametric")
    assert POOL == {"cosine": "inside", "wsd": "sweep"}  # None: the design's own pool
    rest, ad = split_adaptive(["--adaptive", "--stable", "off", "--seed-widths=all", "--min-dof", "0", "--jobs", "2"])
    assert (ad.stable, ad.seed_widths, ad.min_dof, rest) == (None, None, 0, ["--jobs", "2"])


@pytest.mark.parametrize("args,message", [
    (["--width", "0.1"], "--width is an option of the adaptive study: add --adaptive"),
    (["--adaptive", "--batch", "1.5"], "--batch='1.5' is invalid"),
    (["--adaptive", "--width", "-1"], "--width='-1' is invalid"),
    (["--adaptive"], "--adaptive needs the interval to reach: give --width W or --fixed DIR"),
    (["--adaptive", "--fixed", "/nonexistent"], "--fixed='/nonexistent': no run folder"),
    (["--adaptive", "--width", "0.1", "--max-flops", "1e9"], "is smaller than the seed design's"),
    (["--adaptive", "--width", "0.1", "--seed-budgets", "1", "--seed-widths", "2"], "the seed design has 2 points"),
    (["--adaptive", "--width", "0.1", "--target", "gamma"], "gamma"),
    (["--adaptive", "--width", "0.1", "--pool", "all"], "--pool='all' is unknown: choose inside, sweep, wide"),
    (["--adaptive", "--width", "0.1", "--pool", "inside"], "--pool=inside with --design wsd is not supported"),
    (["--adaptive", "--seed-widths", "0"], "--seed-widths='0' is invalid: it must be a whole number >= 1 or all"),
    (["--adaptive", "--min-dof", "-1"], "--min-dof='-1' is invalid: it must be a whole number >= 0"),
    (["--adaptive", "--stable", "0"], "--stable='0' is invalid: it must be a positive number or off"),
    (["--adaptive", "--width", "0.1", "--law", "chinchilla"], "--law='chinchilla' is unknown: choose parametric, kaplan"),
    (["--adaptive", "--width", "0.1", "--law", "kaplan", "--target", "E"], "target: parameter 'E' is not in Kaplan's law"),
])
def test_bad_adaptive_flags_are_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert main(["--quick", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not list(Path(tmp_path).glob("runs/*/*/result.json"))  # nothing trained


def test_the_wide_pool_holds_the_sweeps_grid_and_the_points_between_and_beside_it():
    cfg = OmegaConf.create({"model": {"head_dim": 16}, "sweep": {
        "budgets": [1.6e12, 8e11, 4e11, 2e11], "shapes": [{"width": w, "depth": 2} for w in (32, 96, 16, 48, 80, 64)]}})
    budgets, shapes = widened_grid(cfg)
    assert budgets == "sweep.budgets=[2e+11,2.83e+11,4e+11,5.66e+11,8e+11,1.13e+12,1.6e+12]"  # midpoints, none beyond
    widths = [int(w.split(",")[0]) for w in shapes.split("{width:")[1:]]
    assert widths == [16, 32, 48, 64, 80, 96, 112]  # heads of 16: no width between; one step above (0 is none)
    cfg.model.head_dim, cfg.sweep.shapes = 8, [{"width": w, "depth": 2} for w in (16, 32, 48)]
    assert [int(w.split(",")[0]) for w in widened_grid(cfg)[1].split("{width:")[1:]] == [16, 24, 32, 40, 48, 64]


def test_the_inside_pool_adds_the_midpoints_and_nothing_beside_the_sweeps_widths():
    cfg = OmegaConf.create({"model": {"head_dim": 8}, "sweep": {
        "budgets": [1e11, 5e10, 2.5e10], "shapes": [{"width": w, "depth": 2} for w in (16, 32, 24, 48)]}})
    budgets, shapes = widened_grid(cfg, beside=False)
    assert budgets == "sweep.budgets=[2.5e+10,3.54e+10,5e+10,7.07e+10,1e+11]"
    assert [int(w.split(",")[0]) for w in shapes.split("{width:")[1:]] == [16, 24, 32, 40, 48]  # 40: between


class Run:
    def __init__(self, width, budget):
        self.shape, self.budget = {"width": width, "depth": 2}, budget


def test_the_seed_takes_the_smallest_budgets_and_spreads_the_widths_it_keeps():
    runs = [Run(w, b) for b in (1e11, 2.5e10, 5e10) for w in (40, 16, 32, 24, 48)]
    seed = seed_design(runs, 2, 3)
    assert sorted((r.budget, r.shape["width"]) for r in seed) == [(2.5e10, 16), (2.5e10, 32), (2.5e10, 48),
                                                                  (5e10, 16), (5e10, 32), (5e10, 48)]
    assert len(seed_design(runs, 2, None)) == 10 and len(seed_design(runs, 1, 9)) == 5


def test_a_batch_stops_at_its_first_run_expected_to_reach_the_width():
    table = pd.DataFrame({"candidate": [3, 1, 7], "width": [0.5, 0.3, 0.2]})
    assert list(up_to_goal(table, 0.35)["candidate"]) == [3, 1]
    assert list(up_to_goal(table, 0.1)["candidate"]) == [3, 1, 7] and list(up_to_goal(table, 0.9)["candidate"]) == [3]


def test_the_wide_pool_plans_the_sweeps_own_points_as_the_same_runs(tmp_path):
    base = ["+sweep=study_quick", f"runs_dir={tmp_path}", "sweep.budgets=[2.5e10,5e10]",
            "sweep.shapes=[{width:16,depth:2},{width:32,depth:2}]"]
    own = [plan_run(cfg, i, job) for i, (job, cfg) in enumerate(expand(base))]
    wide = [plan_run(cfg, i, job) for i, (job, cfg) in enumerate(expand(base + widened_grid(expand(base)[0][1])))]
    assert {r.run_id for r in own} < {r.run_id for r in wide}  # config-hashed: a record of the sweep is reused
    extra = {(r.shape["width"], r.budget) for r in wide if r.run_id not in {o.run_id for o in own}}
    assert (24, 5e10) in extra and (32, 3.54e10) in extra and (48, 5e10) in extra
    assert all(r.tokens * 6 * r.params["total"] == pytest.approx(r.budget, rel=0.02) for r in wide if not r.skip_reason)


def test_branch_candidates_carry_their_trunk_and_trunks_stop_at_the_furthest_chosen_branch_point(tmp_path):
    from scaling.study.adaptive_design import design_flops, trunk_commands, trunk_stops
    from scaling.study.next_runs import candidate_pool

    base = ["+sweep=study_wsd_quick", f"runs_dir={tmp_path}", *CUT[:1]]
    runs, _ = plan(base)
    trunks = {r.run_id: r for r in runs if r.role == "trunk"}
    pool = candidate_pool(runs)
    assert len(pool) == sum(1 for r in runs if r.role == "branch" and not r.skip_reason) and set(pool["trunk"]) == set(trunks)
    one = pool.iloc[0]
    trunk = trunks[one["trunk"]]
    assert one["cost"] + one["prefix"] == pytest.approx(runs[pool.index[0]].compute)  # cooldown + trunk to its start
    assert one["prefix"] == pytest.approx(trunk.compute * runs[pool.index[0]].tokens * 0.8 / trunk.tokens, rel=0.01)

    of_trunk = sorted((r for r in runs if r.trunk == trunk.run_id), key=lambda r: r.tokens)
    (stopped, tokens), = trunk_stops(of_trunk[:-1], runs)  # not the last: the trunk stops at the furthest start
    assert stopped is trunk and tokens == of_trunk[-2].tokens - of_trunk[-2].own_tokens
    assert trunk_stops(of_trunk, runs) == [(trunk, None)]  # the largest budget's branch: the trunk to its end
    (cmd,) = trunk_commands(base, trunk_stops(of_trunk[:1], runs))
    assert cmd[-1] == f"train.stop_at_tokens={of_trunk[0].tokens - of_trunk[0].own_tokens}" and "sweep.budget=trunk" in cmd
    # Each trunk once, to the furthest point: two branches of one trunk cost the trunk to the later start.
    assert design_flops(of_trunk[:2]) == pytest.approx(sum(r.own_compute for r in of_trunk[:2]) +
                                                       of_trunk[1].compute - of_trunk[1].own_compute)


def test_the_budgets_pool_of_a_wsd_sweep_adds_branches_of_the_same_trunks_that_keep_their_starts(tmp_path):
    base = ["+sweep=study_wsd_quick", f"runs_dir={tmp_path}", *CUT[:1]]
    own, cfgs = plan(base)
    extra = widened_grid(cfgs[0], beside=False, widths=False)
    assert extra == ["sweep.budgets=[1.25e+10,1.77e+10,2.5e+10,3.54e+10,5e+10]"]  # the sweep's shapes kept
    wide, wide_cfgs = plan(base + extra)
    trunks = {r.run_id for r in own if r.role == "trunk"}
    assert {r.run_id for r in wide if r.role == "trunk"} == trunks  # the same trunks: a record is reused
    added = [r for r in wide if r.run_id not in {o.run_id for o in own} and not r.skip_reason]
    assert added and all(r.role == "branch" and r.trunk in trunks and r.budget in (1.77e10, 3.54e10) for r in added)
    # Launched with the pool's overrides, each trunk keeps a checkpoint where each of its branches starts.
    keep = {r.run_id: set(c.train.keep_at_tokens) for r, c in zip(wide, wide_cfgs) if r.role == "trunk"}
    assert all(r.tokens - r.own_tokens in keep[r.trunk] for r in wide if r.role == "branch" and not r.skip_reason)


def test_under_kaplans_law_the_held_out_check_is_that_laws_prediction_and_approach_3s_is_kept():
    import numpy as np

    from analysis.kaplan_joint import kaplan_log_loss

    theta = np.array([np.log(8.8e13), np.log(5.4e13), 0.076, 0.095])
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e8, 1e10, 4)))
    runs = pd.DataFrame({"N": N, "D": D, "loss": np.exp(kaplan_log_loss(theta, N, D)[0])})
    truth = float(np.exp(kaplan_log_loss(theta, np.array([3e8]), np.array([3e10]))[0][0]))
    holdout = {"N": 3e8, "D": 3e10, "predicted": 2.5, "predicted_low": 2.4, "predicted_high": 2.6, "measured": truth,
               "rel_error": 2.5 / truth - 1, "inside_interval": False, "quantile": 0.9, "position": "outside"}
    assert law_holdout(holdout, runs, "parametric") is holdout
    out = law_holdout(holdout, runs, "kaplan")
    assert out["predicted"] == pytest.approx(truth, rel=1e-5) and abs(out["rel_error"]) < 1e-5 and out["within_target"]
    assert out["predicted_parametric"] == 2.5 and out["law"] == "kaplan"
    assert out["predicted_low"] is None and not {"inside_interval", "quantile", "position"} & set(out)
