"""scaling-plan: expansion of the named sweeps, budgets, totals, time estimates and bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from scaling.cli import plan as plan_cli
from scaling.sweep import pricing
from scaling.model.counts import CONVENTIONS

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps" / "sweep"
SWEEP_NAMES = sorted(p.stem for p in SWEEPS.glob("*.yaml"))
# A 2 budgets x 3 shapes IsoFLOP sweep with a skipped run, for tests that do not need a whole sweep.
SMALL_ISOFLOP = ["+sweep=isoflop", "sweep.budgets=[3e12,3e13]",
                 "sweep.shapes=[{width:64,depth:2},{width:128,depth:2},{width:256,depth:4}]"]


def planned(*overrides, **rates) -> dict:
    """The plan as ``scaling-plan --json`` prints it."""
    runs, throughput = pricing.plan_sweep(list(overrides), **rates)
    return json.loads(json.dumps(plan_cli.as_dict(runs, throughput, "")))


@pytest.fixture(scope="module")
def full_plans(tmp_path_factory) -> dict:
    """Each named sweep as shipped, planned once (composing every job is the slow part)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return {name: planned(f"+sweep={name}", f"runs_dir={runs_dir}", tokens_per_sec=50_000.0)
            for name in ("demo", "isoflop", "ladder", "grid")}


def run_main(capsys, *args):
    code = plan_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def expected_jobs(spec) -> int:
    """Number of jobs a sweep file describes: the product of its swept lists."""
    if "budgets" in spec.sweep:
        return len(spec.sweep.budgets) * len(spec.sweep.shapes)
    if "multiples" in spec.sweep:
        return len(spec.sweep.multiples) * len(spec.sweep.shapes)
    return math.prod(len(str(v).split(",")) for v in spec.hydra.sweeper.params.values())


def test_the_four_named_sweeps_exist():
    assert {"grid", "isoflop", "ladder", "demo"} <= set(SWEEP_NAMES)
    for name in SWEEP_NAMES:
        assert (SWEEPS / f"{name}.yaml").read_text().startswith("# @package _global_")


@pytest.mark.parametrize("name", ["demo", "isoflop", "ladder", "grid"])
def test_sweep_expands_to_the_product_of_its_lists(full_plans, name):
    spec = OmegaConf.load(SWEEPS / f"{name}.yaml")
    runs = full_plans[name]["runs"]
    assert len(runs) == expected_jobs(spec)
    assert len({r["run_id"] for r in runs}) == len(runs)  # every job is a distinct run
    if "budgets" in spec.sweep:
        assert sorted({r["budget"] for r in runs}) == sorted(float(b) for b in spec.sweep.budgets)
    if "shapes" in spec.sweep:
        shapes = {(s["width"], s["depth"]) for s in spec.sweep.shapes}
        assert {(r["shape"]["width"], r["shape"]["depth"]) for r in runs} == shapes
    if "multiples" in spec.sweep:  # ladder: D = k * N_non_embedding
        ks = sorted({r["train_tokens"] / r["params"]["non_embedding"] for r in runs})
        assert ks == pytest.approx(sorted(float(k) for k in spec.sweep.multiples), rel=1e-5)
    if name == "grid":
        axes = {k: sorted(int(v) for v in str(vals).split(",")) for k, vals in spec.hydra.sweeper.params.items()}
        assert sorted({r["shape"]["width"] for r in runs}) == axes["model.width"]
        assert sorted({r["train_tokens"] for r in runs}) == axes["train.tokens"]


def test_demo_is_a_real_isoflop_sweep_for_a_small_cpu(full_plans):
    spec = OmegaConf.load(SWEEPS / "demo.yaml")
    runs = full_plans["demo"]["runs"]
    assert spec.sweep.kind == "isoflop" and len(spec.sweep.budgets) == 3 and 4 <= len(spec.sweep.shapes) <= 5
    assert all(64 <= r["shape"]["context"] <= 128 for r in runs)
    trained = [r for r in runs if not r["skip_reason"]]
    for budget in spec.sweep.budgets:  # each budget keeps enough shapes to fit a parabola
        assert sum(1 for r in trained if r["budget"] == float(budget)) >= 3
    # A few minutes on 2 cores: 12.9M tokens took 211 s on an idle 2-core machine.
    assert sum(r["tokens"] for r in trained) < 15_000_000


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_isoflop_compute_equals_budget_within_one_token(tmp_path, convention):
    runs = planned(*SMALL_ISOFLOP, f"sweep.convention={convention}", "sweep.min_tokens_per_param=0",
                   "sweep.min_steps=1", f"runs_dir={tmp_path}")["runs"]
    assert {r["convention"] for r in runs} == {convention} and len(runs) == 6
    for r in runs:
        per_token = r["flops"][convention] / r["tokens"]
        spent = r["train_tokens"] * per_token  # C of train.tokens, the resolver's answer
        assert r["budget"] - per_token < spent <= r["budget"] * (1 + 1e-12)


def test_totals_are_the_sums_of_the_rows(full_plans):
    for name, p in full_plans.items():
        runs, totals = p["runs"], p["totals"]
        kept = [r for r in runs if not r["skip_reason"]]
        assert totals["runs"] == len(runs) and totals["skipped"] == len(runs) - len(kept)
        assert totals["tokens"] == sum(r["tokens"] for r in kept)
        assert totals["flops"] == pytest.approx(sum(r["compute"] for r in kept))
        assert totals["est_seconds"] == pytest.approx(sum(r["est_seconds"] for r in kept))
        for r in kept:
            assert r["est_seconds"] == pytest.approx((r["tokens"] + r["eval_tokens"] / 3) / 50_000)
    assert full_plans["isoflop"]["totals"]["skipped"] > 0


def test_a_completed_run_is_not_counted_again(tmp_path):
    first = planned(*SMALL_ISOFLOP, f"runs_dir={tmp_path}", tokens_per_sec=50_000.0)
    kept = [r for r in first["runs"] if not r["skip_reason"]]
    done = kept[0]
    Path(done["run_dir"]).mkdir(parents=True)
    (Path(done["run_dir"]) / "result.json").write_text(json.dumps({"status": "completed"}))
    again = planned(*SMALL_ISOFLOP, f"runs_dir={tmp_path}", tokens_per_sec=50_000.0)
    assert [r["run_dir"] for r in again["runs"]] == [r["run_dir"] for r in first["runs"]]
    t = again["totals"]
    assert t["already_done"] == 1 and t["to_train"] == len(kept) - 1
    assert t["tokens_to_train"] == first["totals"]["tokens"] - done["tokens"]
    assert t["est_seconds"] == pytest.approx(first["totals"]["est_seconds"] - done["est_seconds"])


def test_table_and_csv_show_every_run_and_the_throughput_source(capsys, tmp_path):
    code, out, _ = run_main(capsys, *SMALL_ISOFLOP, f"runs_dir={tmp_path}")
    assert code == 0
    assert "assumed" in out and "FLOP/s" in out  # the default throughput says it is an assumption
    skipped = sum(1 for r in planned(*SMALL_ISOFLOP, f"runs_dir={tmp_path}")["runs"] if r["skip_reason"])
    assert skipped > 0 and out.count("skip: ") == skipped
    code, out, _ = run_main(capsys, *SMALL_ISOFLOP, f"runs_dir={tmp_path}", "--csv", "--flops-per-sec", "1e12")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 1 + 6
    assert "N_non_embedding" in lines[0] and "flops_chinchilla" in lines[0]


def test_flops_per_sec_and_measured_throughput(tmp_path):
    one = ["+sweep=demo", "sweep.budgets=[1.2e11]", "sweep.shapes=[{width:32,depth:2}]", f"runs_dir={tmp_path}"]
    by_flops = planned(*one, flops_per_sec=1e9)
    r = by_flops["runs"][0]
    assert r["est_seconds"] == pytest.approx((r["tokens"] + r["eval_tokens"] / 3) * r["flops"]["chinchilla"]
                                             / r["tokens"] / 1e9)
    measured = planned(*one, measure=0.05)
    assert measured["throughput"].startswith("measured on this machine")
    assert 0 < measured["runs"][0]["est_seconds"] < math.inf


def test_measured_throughput_is_at_the_runs_threads(tmp_path, monkeypatch):
    """A sweep of single-threaded runs is priced single-threaded (torch's default on this machine may be
    more), each thread count measured on its own, and the process's own setting is left as it was."""
    import torch

    seen = []
    timed = pricing._timed_steps
    monkeypatch.setattr(pricing, "_timed_steps",
                        lambda *a: seen.append(torch.get_num_threads()) or timed(*a))
    before = torch.get_num_threads()
    one = ["+sweep=demo", "sweep.budgets=[1.2e11]", "sweep.shapes=[{width:32,depth:2}]", f"runs_dir={tmp_path}"]
    planned(*one, "train.threads=1", measure=0.05)
    planned(*one, "train.threads=3", measure=0.05)
    assert seen == [1, 3]
    assert torch.get_num_threads() == before


def test_unknown_sweep_names_the_choices(capsys):
    code, out, err = run_main(capsys, "+sweep=foo")
    assert code == 2 and out == ""
    assert err == f"error: unknown sweep 'foo': choose one of {', '.join(SWEEP_NAMES)}\n"


@pytest.mark.parametrize("args, needle", [
    (["model.widht=64"], "model.widht"),
    (["+sweep.budgts=[1e12]"], "sweep.budgts is not a sweep setting"),
    (["sweep.budgets=[1e6]"], "too small for the smallest shape"),
    (["sweep.convention=7nd"], "convention='7nd' is unknown"),
    (["--tokens-per-sec", "-5"], "--tokens-per-sec='-5' is invalid"),
    (["--fast"], "option '--fast' is unknown"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run_main(capsys, "+sweep=demo", "sweep.shapes=[{width:32,depth:2}]", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_console_script_exits_2_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("scaling-plan")
    proc = subprocess.run([str(exe), "+sweep=demo", "sweep.budgets=[1e6]"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: sweep.budget=1e+06 is too small")
