"""``scaling-next``: the console script on run records of a real named sweep (study_quick), and its commands
expanded as ``scaling-train --multirun`` would run them."""

import json
import subprocess
import sys

import numpy as np
import pytest
from run_records import counts, write_run

from scaling.cli.next import main
from scaling.study.next_runs import parse_command_line
from scaling.sweep.expand import expand
from scaling.sweep.pricing import plan_run, plan_sweep

CLI = [sys.executable, "-m", "scaling.cli.next"]
SWEEP = "+sweep=study_quick"


def run(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def write_records(root, planned, budgets):
    """Records of the sweep's runs at ``budgets`` under their own run ids (so the pool leaves them out)."""
    rng = np.random.default_rng(0)
    for r in planned:
        if r.skip_reason or r.budget not in budgets:
            continue
        c = counts(r.shape["width"], r.shape["depth"])
        flops = {k: v * r.tokens for k, v in c["per_token"].items()}
        flops["6nd_total"] = 6 * c["params"]["total"] * r.tokens
        write_run(root, r.run_id, width=r.shape["width"], depth=r.shape["depth"], tokens=r.tokens, group="study-quick",
                  noise=0.01, rng=rng, extra={"flops": flops})


@pytest.fixture(scope="module")
def planned():
    return plan_sweep([SWEEP])[0]


@pytest.fixture(scope="module")
def seed_runs(planned, tmp_path_factory):
    """The two smallest budgets of study_quick finished: the pool is the largest budget's runs."""
    root = tmp_path_factory.mktemp("runs")
    write_records(root, planned, {2.5e10, 5e10})
    return root


def expanded_ids(lines):
    return sorted(plan_run(cfg, i, ov).run_id for line in lines for i, (ov, cfg) in enumerate(expand(parse_command_line(line))))


def test_prints_the_best_runs_and_writes_commands_that_run_exactly_them(seed_runs, planned, tmp_path):
    out = tmp_path / "next.sh"
    p = run(seed_runs, SWEEP, "--n", 3, "--out", out)
    assert p.returncode == 0, p.stderr
    assert "a from 9 finished run(s)" in p.stdout and "pool: 5 run(s) of sweep study_quick" in p.stdout
    assert "total: 3 run(s), 3e+11 FLOPs" in p.stdout and f"wrote {out}" in p.stdout
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("scaling-train")]
    assert text.startswith("#!/bin/sh") and lines and all(ln in p.stdout for ln in lines)
    ids = expanded_ids(lines)
    by_id = {r.run_id: r for r in planned}
    assert len(ids) == 3 and all(by_id[i].budget == 1e11 for i in ids)  # the finished budgets are not in the pool


def test_json_choice_matches_its_commands_and_the_budget(seed_runs):
    p = run(seed_runs, SWEEP, "--n", 4, "--budget", 2.5e11, "--target", "N_opt@4e11", "--json")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)
    assert c["target"] == "log N_opt(C=4e+11)"
    assert len(c["runs"]) == 2 and c["cost"] <= 2.5e11  # 1e11 each: two fit the budget
    widths = [r["width_after"] for r in c["runs"]]
    assert widths == sorted(widths, reverse=True) and widths[0] < c["width"]
    assert expanded_ids(c["commands"]) == sorted(r["run_id"] for r in c["runs"])


def test_candidates_outside_the_runs_range_warn_in_one_line(seed_runs):
    p = run(seed_runs, SWEEP, "--criterion", "cheapest")
    assert p.returncode == 0, p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: candidates: ") and "extrapolate" in warnings[0]


@pytest.fixture(scope="module")
def all_runs(planned, tmp_path_factory):
    root = tmp_path_factory.mktemp("all")
    write_records(root, planned, {2.5e10, 5e10, 1e11})
    return root


BAD = [  # (arguments after RUNS, what the one line says)
    (["--target", "gamma"], "gamma"),
    (["--target", "N_opt@many"], "--target='N_opt@many' is not allowed"),
    (["--budget", "1e3"], "the cheapest candidate costs"),
    (["--n", "0"], "--n='0' is invalid"),
    (["--criterion", "best"], "criterion"),
    (["--frobnicate"], "option '--frobnicate' is unknown"),
    (["+sweep=nope"], "unknown sweep 'nope'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:20] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(seed_runs, args, message, capsys):
    sweep = [] if any(a.startswith("+sweep") for a in args) else [SWEEP]
    assert main([str(seed_runs), *sweep, *args]) == 2  # in process: a bug would raise here, with its traceback
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_an_empty_pool_and_missing_arguments_are_one_line(all_runs, tmp_path, capsys):
    for args, message in (([all_runs, SWEEP], "the pool is empty: every run of sweep study_quick is skipped or already finished"),
                          ([SWEEP], "RUNS is missing"), ([all_runs], "+sweep=NAME is missing"),
                          ([tmp_path / "nothing", SWEEP], "does not exist")):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], err
