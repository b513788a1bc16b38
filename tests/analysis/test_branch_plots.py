"""WSD branching in the analysis: loaders keep branches as points (with their trunk) and leave trunks out,
plots mark branch points, and plot_branches draws each trunk with its cooldown branches hanging off it."""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from run_records import counts, write_run
from test_isoflop import isoflop_points

from analysis import fit_isoflop, fit_kaplan_table, load_curves, load_runs, write_report
from analysis.errors import AnalysisInputError
from analysis.plots import plot_branches, plot_isoflop, plot_loss_vs_compute

WIDTHS, BUDGETS, F = (64, 128, 256), (1_000_000, 2_000_000, 4_000_000), 0.2
SVG = "{http://www.w3.org/2000/svg}"


def branching_sweep(root, roles=True):
    """Run records of a branching sweep: per width a trunk and one branch per budget, plus one plain run."""
    for w in WIDTHS:
        trunk = f"w{w}-trunk"
        write_run(root, trunk, width=w, depth=2, tokens=int((1 - F) * BUDGETS[-1]),
                  extra={"role": "trunk"} if roles else {})
        for d in BUDGETS:
            start = int((1 - F) * d)
            per_token = counts(w, 2)["per_token"]
            extra = {"trunk": trunk, "branch_tokens": start, "own_tokens": d - start,
                     "own_flops": {k: v * (d - start) for k, v in per_token.items()}}
            run = write_run(root, f"w{w}-{d}", width=w, depth=2, tokens=d, extra={"role": "branch", **extra} if roles else extra)
            lines = (run / "metrics.jsonl").read_text().splitlines()  # a branch logs only its own steps
            (run / "metrics.jsonl").write_text("".join(x + "\n" for x in lines if json.loads(x)["tokens"] > start))
    write_run(root, "plain", width=96, depth=2, tokens=3_000_000)
    return root


def svg_group(path, gid):
    """How many markers every <g> whose id starts with ``gid`` holds: <use>s of one marker definition, or
    one <path> per marker where each has its own colour."""
    tree = ET.parse(path)
    return [len(g.findall(f".//{SVG}use")) or len(g.findall(f".//{SVG}path"))
            for g in tree.iter(f"{SVG}g") if (g.get("id") or "").startswith(gid)]


@pytest.mark.parametrize("roles", [True, False])  # records with roles, and older ones without
def test_branches_are_points_with_their_trunk_and_trunks_are_left_out(tmp_path, roles):
    branching_sweep(tmp_path, roles)
    with pytest.warns(UserWarning, match="left out 3 WSD trunk run"):
        runs = load_runs(tmp_path)
    assert len(runs) == 10 and runs["role"].value_counts().to_dict() == {"branch": 9, "run": 1}
    row = runs.set_index("run_id").loc["w64-2000000"]
    assert row["trunk"] == "w64-trunk" and row["branch_tokens"] == 1_600_000 and row["own_tokens"] == 400_000
    assert row["D"] == 2_000_000 and row["own_flops_6nd"] == pytest.approx(row["C"] * 0.2)  # D, C: true totals
    assert set(load_runs(tmp_path, keep_trunks=True)["role"]) == {"branch", "trunk", "run"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curves = load_curves(tmp_path)  # the trunks' curves are kept
    assert curves.groupby("role")["run_id"].nunique().to_dict() == {"branch": 9, "run": 1, "trunk": 3}


def test_loss_against_compute_marks_branch_points(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(branching_sweep(tmp_path / "runs"))
    paths = plot_loss_vs_compute(runs, tmp_path / "lvc", formats=("png", "svg"))
    assert svg_group(paths[1], "branch-points") == [9] and svg_group(paths[1], "run-points") == [1]
    text = paths[1].read_text()
    assert "<!-- WSD branch (cooldown) -->" in text and "<!-- run -->" in text  # legend entries of the markers
    plain = plot_loss_vs_compute(runs[runs["role"] == "run"], tmp_path / "plain", formats=("png", "svg"))  # no branch: no role legend
    assert svg_group(plain[1], "branch-points") == [] and "WSD branch" not in plain[1].read_text()


def test_isoflop_profiles_mark_branch_points(tmp_path):
    df = isoflop_points(budgets=np.geomspace(1e18, 1e19, 2))  # 2 budgets x 9 sizes
    df["role"] = np.where(np.arange(len(df)) % 3 == 0, "branch", "run")
    svg = plot_isoflop(fit_isoflop(df.N, df.loss, df.C), tmp_path / "iso", runs=df, formats=("png", "svg"))[1]
    assert svg_group(svg, "branch-points") == [3, 3] and svg_group(svg, "run-points") == [6, 6]  # per budget
    assert "<!-- WSD branch (cooldown) -->" in svg.read_text()


def test_plot_branches_hangs_each_branch_off_its_trunk(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curves = load_curves(branching_sweep(tmp_path / "runs"))
    for x in ("D", "C"):
        png, svg = plot_branches(curves, tmp_path / f"branches_{x}", x=x, formats=("png", "svg"))
        assert png.stat().st_size > 5000
        assert len(svg_group(svg, "trunk-w")) == 3  # one curve per trunk
        assert sum(svg_group(svg, "branch-starts")) == 9 and sum(svg_group(svg, "branch-ends")) == 9
        text = svg.read_text()
        assert all(f"<!-- {label} -->" in text for label in ("trunk (constant lr)", "cooldown branch",
                                                             "WSD branch (cooldown)"))
    with pytest.raises(AnalysisInputError, match="no WSD branch"):
        plot_branches(curves[curves["role"] == "run"], tmp_path / "none")


def test_report_of_a_branching_sweep_has_the_branches_plot(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = load_runs(branching_sweep(tmp_path / "runs"))
        curves = load_curves(tmp_path / "runs")
    written = write_report(tmp_path / "fit", {"kaplan": fit_kaplan_table(runs, xs=("C",))}, runs=runs, curves=curves)
    assert {"branches.png", "loss_vs_compute.png"} <= set(written)
