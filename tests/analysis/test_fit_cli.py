"""The ``scaling-fit`` command line, run as a subprocess like a user would."""

import json
import subprocess
import sys

import pytest
from run_records import write_run

from analysis.cli import main

CLI = [sys.executable, "-m", "analysis.cli"]


def run(*args, cwd=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=240, cwd=cwd)


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory):
    """An IsoFLOP-style sweep of record folders: 4 budgets x 7 widths, plus a failed run."""
    root = tmp_path_factory.mktemp("runs")
    widths = [32, 48, 64, 96, 128, 192, 256]
    for i, C in enumerate([1e12, 3e12, 1e13, 3e13]):
        for j, w in enumerate(widths):
            tokens = int(C / (6 * 12 * w * w * 2))
            write_run(root, f"b{i}w{j}", width=w, depth=2, tokens=tokens, n_steps=30)
    write_run(root, "oom", width=512, depth=2, tokens=10**6, status="failed", error="CUDA out of memory")
    return root


def test_all_approaches_on_run_folders_print_json_and_write_a_report(runs_folder, tmp_path):
    out = tmp_path / "report"
    p = run(runs_folder, "--approach", "all", "--grid", "coarse", "--json", "--out", out, "--svg")
    assert p.returncode == 0, p.stderr
    assert "left out 1 of 29 runs that did not complete (failed: CUDA out of memory)" in p.stderr
    data = json.loads(p.stdout)
    assert set(data) == {"kaplan", "envelope", "isoflop", "parametric"}
    for name, obj in data.items():
        assert {"estimates", "stderr", "interval", "diagnostics", "level", "warnings"} <= set(obj), name
    for name in ("envelope", "isoflop", "parametric"):
        assert 0.2 < data[name]["estimates"]["a"] < 0.8, name
    par = data["parametric"]["estimates"]
    assert {"E", "A", "B", "alpha", "beta", "a", "b"} <= set(par)
    assert json.loads((out / "fit.json").read_text()) == data
    report = (out / "report.md").read_text()
    assert "## isoflop" in report and "![isoflop](isoflop.png)" in report and "CUDA out of memory" in report
    assert (out / "allocation.png").stat().st_size > 0 and (out / "contours.svg").stat().st_size > 0


def test_readable_table_with_bootstrap_intervals(runs_folder):
    p = run(runs_folder, "--approach", "isoflop", "--bootstrap", "20", "--level", "0.9", "--filter", "width >= 32")
    assert p.returncode == 0, p.stderr
    assert "isoflop fit:" in p.stdout and "90% interval" in p.stdout and "compute-optimal allocation" in p.stdout


def test_chinchilla_table_parametric_matches_the_replication(shared_data):
    csv = shared_data / "chinchilla_epoch" / "svg_extracted_data.csv"
    pytest.importorskip("analysis.parametric")
    p = run(csv, "--params-col", "Model Size", "--flops-col", "Training FLOP", "--loss-col", "loss",
            "--drop-highest", "5", "--approach", "parametric", "--json")
    assert p.returncode == 0, p.stderr
    assert "D derived as C / (6 N)" in p.stderr
    res = json.loads(p.stdout)["parametric"]
    est = res["estimates"]
    assert res["diagnostics"]["n_points"] == 240
    assert est["alpha"] == pytest.approx(0.3473, abs=0.001) and est["beta"] == pytest.approx(0.3672, abs=0.001)
    assert est["E"] == pytest.approx(1.8172, abs=0.001) and est["A"] == pytest.approx(477.8, rel=0.01)


@pytest.mark.parametrize("args, message", [
    (["{src}/nope.csv"], "error: source: '{src}/nope.csv' does not exist"),
    (["{csv}", "--params-col", "size", "--tokens-col", "d"], "error: params_col: 'size' is not a column"),
    (["{csv}", "--params-col", "n"], "error: tokens_col / flops_col: neither given"),
    (["{csv}", "--params-col", "n", "--tokens-col", "d", "--approach", "isoflop"], "error: C: every point is at one budget"),
    (["{csv}", "--params-col", "n", "--tokens-col", "d", "--filter", "n >"], "error: --filter 'n >'"),
    (["{csv}", "--params-col", "n", "--tokens-col", "d", "--approach", "envelope"], "error: approach: the envelope needs per-step curves"),
    (["{csv}", "--approach", "magic"], "error: argument --approach: invalid choice: 'magic'"),
    (["{csv}", "--params-col", "n", "--tokens-col", "d", "--level", "2", "--approach", "kaplan"], "error: --level: 2.0"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    csv = tmp_path / "t.csv"
    csv.write_text("n,d,loss\n" + "".join(f"{n},{6e15 / (6 * n)},{3 + 1e6 / n}\n" for n in (1e6 * 2**k for k in range(8))))
    fmt = {"src": tmp_path, "csv": csv}
    try:  # in-process for speed; the subprocess test below checks there is no traceback
        code = main([a.format(**fmt) for a in args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message.format(**fmt)), err
    assert err.count("\n") == 1


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("n,d,loss\n1e6,1e9,-3\n2e6,1e9,3\n4e6,1e9,3\n8e6,1e9,3\n")
    p = run(csv, "--params-col", "n", "--tokens-col", "d", "--approach", "kaplan")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ") and "loss" in p.stderr and "not positive" in p.stderr
