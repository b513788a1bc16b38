"""Broken run records on the analysis side: each broken file is left out with a warning naming the run, the
file and (where it applies) the line, or a one-line error where nothing is left; from the Python API and
from the real ``scaling-fit`` console script (exit 2, one line on stderr, no traceback).

The run folders are written by hand in the record layout of ``run_records.write_run`` (no training), then
one file of one run is broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_records import write_run, synthetic_sweep

from analysis import fit_data_constrained, fit_isoflop, fit_parametric, load_curves, load_runs
from analysis.cli import build_parser
from analysis.errors import AnalysisInputError

GOOD = [(32, 2), (64, 2), (64, 4), (128, 4), (128, 2), (96, 3)]  # enough runs for Kaplan's fit


def _edit_result(run: Path, change) -> None:
    path = run / "result.json"
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))  # json writes NaN as the bare word NaN, as Python's json reads it back


def _insert_metrics_line(run: Path, line: bytes, at: int = 2) -> None:
    lines = (run / "metrics.jsonl").read_bytes().splitlines()
    lines.insert(at, line)
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")


# name of the broken run -> (how its files are broken, what the warning says after the run's name)
BROKEN = {
    "nan_loss": (lambda run: _edit_result(run, lambda r: r.update(val_loss=float("nan"))), "val_loss is nan"),
    "no_params": (lambda run: _edit_result(run, lambda r: r.pop("params")), "result.json has no 'params'"),
    "no_flops": (lambda run: _edit_result(run, lambda r: r.pop("flops")), "result.json has no 'flops'"),
    "no_tokens": (lambda run: _edit_result(run, lambda r: r.pop("tokens")), "result.json has no 'tokens'"),
    "torn_result": (lambda run: (run / "result.json").write_text('{"run_id": "torn_result", "val_lo'),
                    "result.json line 1: not JSON"),
    "bad_yaml": (lambda run: (run / "config.yaml").write_text("model: {width: 32\n  depth: : 2\n"),
                 "config.yaml line 2: not YAML"),
    "latin1_config": (lambda run: (run / "config.yaml").write_bytes(b"name: run\ngroup: caf\xe9\n"),
                      "config.yaml line 2: bytes that are not UTF-8"),
}
# name of the run -> (how its metrics.jsonl is broken, what the warning says): the run stays, the line goes
BROKEN_LINES = {
    "latin1_line": (lambda run: _insert_metrics_line(run, b'{"step": 3, "note": "caf\xe9"}'),
                    "line 3 (bytes that are not UTF-8)"),
    "text_line": (lambda run: _insert_metrics_line(run, b"loss went down"), "line 3 (not JSON)"),
    "trailing_bytes": (lambda run: open(run / "metrics.jsonl", "ab").write(b'{"step": 99, "tok\xff\xfe'),
                       "bytes that are not UTF-8"),
}


def good_runs(root: Path) -> Path:
    for i, (width, depth) in enumerate(GOOD):
        write_run(root, f"r{i}", width=width, depth=depth, tokens=1_000_000 * (i + 1))
    return root


def broken_run(root: Path, name: str, how) -> Path:
    run = write_run(root, name, width=48, depth=3, tokens=2_000_000)
    how(run)
    return run


def loaded(loader, source, **kwargs) -> tuple[pd.DataFrame, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = loader(source, **kwargs)
    return frame, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ----------------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_run_is_left_out_with_a_warning_naming_it(tmp_path, name):
    how, says = BROKEN[name]
    run = broken_run(good_runs(tmp_path), name, how)
    runs, notes = loaded(load_runs, tmp_path)
    assert sorted(runs["run_id"]) == [f"r{i}" for i in range(len(GOOD))]
    assert np.isfinite(runs[["N", "D", "C", "loss"]].to_numpy()).all()
    (note,) = [n for n in notes if name in n]
    assert f"run {name}" in note and says in note and str(run) in note, note
    assert "\n" not in note


@pytest.mark.parametrize("name", BROKEN_LINES)
def test_an_unreadable_line_of_metrics_is_dropped_with_a_warning_naming_file_and_line(tmp_path, name):
    how, says = BROKEN_LINES[name]
    run = broken_run(good_runs(tmp_path), name, how)
    curves, notes = loaded(load_curves, tmp_path)
    kept = curves[curves["run_id"] == name]
    assert len(kept) == len(pd.read_json(tmp_path / "sweep" / "r0" / "metrics.jsonl", lines=True))
    assert kept["loss"].notna().all()
    (note,) = [n for n in notes if name in n]
    assert f"run {name}" in note and str(run / "metrics.jsonl") in note and says in note, note


def test_nothing_usable_is_one_error_naming_each_run(tmp_path):
    for name in ("no_params", "bad_yaml"):
        broken_run(tmp_path, name, BROKEN[name][0])
    with pytest.raises(AnalysisInputError) as err:
        load_runs(tmp_path)
    message = str(err.value)
    assert "none usable" in message and "run no_params" in message and "run bad_yaml" in message
    assert "config.yaml line 2" in message and "\n" not in message


def test_only_nan_losses_is_one_error_naming_the_runs(tmp_path):
    broken_run(tmp_path, "nan_loss", BROKEN["nan_loss"][0])
    with pytest.raises(AnalysisInputError, match=r"no run is left to fit; .*run nan_loss .*val_loss is nan"):
        load_runs(tmp_path)


def test_only_failed_runs_is_one_error_saying_why_they_failed(tmp_path):
    write_run(tmp_path, "a", width=32, depth=2, tokens=10**6, status="failed", error="CUDA out of memory")
    write_run(tmp_path, "b", width=64, depth=2, tokens=10**6, status="diverged", error="loss is NaN at step 12")
    with pytest.raises(AnalysisInputError, match=r"none of the 2 runs completed \(failed: CUDA out of memory; "
                                                 r"diverged: loss is NaN at step 12\)"):
        load_runs(tmp_path)
    assert len(load_runs(tmp_path, keep_failed=True)) == 2


def test_a_table_row_without_a_finite_loss_is_left_out_by_its_row(tmp_path):
    table = pd.DataFrame({"N": [1e6, 2e6, 4e6], "D": [1e9] * 3, "loss": [3.0, np.nan, 2.8]})
    runs, notes = loaded(load_runs, table)
    assert list(runs["N"]) == [1e6, 4e6]
    assert any("row 1: loss is nan" in n for n in notes), notes


def test_a_nan_loss_given_to_a_fit_names_the_point():
    N = np.array([1e6, 4e6, 1.6e7, 6.4e7] * 3)
    D = np.repeat([1e8, 4e8, 1.6e9], 4)
    loss = pd.Series(1.8 + 400 / N**0.34 + 410 / D**0.28, index=[f"run{i}" for i in range(12)])
    loss.iloc[5] = np.nan
    with pytest.raises(AnalysisInputError, match=r"L: value nan at index 5 \('run5'\) is not allowed"):
        fit_parametric(N, D, loss, grid="coarse")


# ----------------------------------------------------------------------------- every CLI value in the API


def _choices(flag: str) -> list[str]:
    return list(build_parser()._option_string_actions[flag].choices)


@pytest.fixture(scope="module")
def points():
    N = np.repeat([1e6, 4e6, 1.6e7, 6.4e7], 4)
    D = np.tile([1e8, 4e8, 1.6e9, 6.4e9], 4)
    L = (1.8 + 400 / N**0.34 + 410 / D**0.28) * np.exp(np.random.default_rng(0).normal(0, 0.002, N.size))
    return N, D, L


@pytest.mark.parametrize("grid", _choices("--grid"))
def test_fit_parametric_takes_every_grid_of_scaling_fit(points, grid):
    N, D, L = points
    assert fit_parametric(N, D, L, grid=grid, method="varpro", objective="lsq").estimates["alpha"] > 0


@pytest.mark.parametrize("base", _choices("--base-law") + ["nope"])
def test_fit_data_constrained_takes_every_base_law_of_scaling_fit(base):
    """The paper's method (quick on four points) fits with the C4 base law and refuses the joint fit, as
    it refuses ``base=None``: each value is taken for what the CLI means by it; another is a ``base`` error."""
    N, D = np.array([1e6, 4e6, 1.6e7, 1e6]), np.array([1e8, 4e8, 1.6e9, 4e8])
    U, L = D / np.array([1.0, 4.0, 2.0, 8.0]), 1.8 + 400 / N**0.34 + 410 / D**0.28
    if base == "c4":
        assert np.isfinite(fit_data_constrained(N, D, U, L, base=base, method="paper", profile=False)["R_D_star"])
        return
    expected = "method: 'paper' needs base" if base == "joint" else r"base: 'nope' is not allowed"
    with pytest.raises(AnalysisInputError, match=expected):
        fit_data_constrained(N, D, U, L, base=base, method="paper", profile=False)


def test_fit_isoflop_takes_window_0_as_scaling_fit_does():
    N = np.tile([1e6, 2e6, 4e6, 8e6, 1.6e7], 2)
    C = np.repeat([1e15, 1e16], 5)
    L = 2 + 0.1 * np.log(N / np.sqrt(C / 120)) ** 2
    assert fit_isoflop(N, L, C, window=0).diagnostics["window"] is None


# ----------------------------------------------------------------------------- the console script


def scaling_fit(*args: object) -> list[str]:
    installed = Path(sys.executable).with_name("scaling-fit")
    cmd = [str(installed)] if installed.exists() else [sys.executable, "-m", "analysis.cli"]
    return cmd + [str(a) for a in args]


def folders(root: Path) -> dict[str, list[object]]:
    """Each console case (a folder, or a table, with its arguments), written under ``root``."""
    broken = good_runs(root / "broken")
    for name, (how, _) in BROKEN.items():
        broken_run(broken, name, how)
    only_nan = root / "only_nan"
    broken_run(only_nan, "nan_loss", BROKEN["nan_loss"][0])
    failed = root / "only_failed"
    write_run(failed, "a", width=32, depth=2, tokens=10**6, status="failed", error="CUDA out of memory")
    (root / "a_file").write_text("not a folder")
    table = root / "sweep.csv"
    synthetic_sweep().drop(columns="lr").assign(D=1e9).to_csv(table, index=False)
    good = good_runs(root / "good")
    return {"broken": [broken, "--approach", "kaplan"], "only_nan": [only_nan], "only_failed": [failed],
            "out_is_a_file": [good, "--approach", "kaplan", "--out", root / "a_file"],
            "lr_rule_on_a_table": [table, "--params-col", "N", "--tokens-col", "D", "--lr-rule", root / "rule.json"],
            "filter_leaves_nothing": [good, "--approach", "kaplan", "--filter", "N > 1e15"]}


ERRORS = {  # console case -> a substring of its one-line error
    "only_nan": "no run is left to fit; 1 run(s) without a finite N, D, C, loss: run nan_loss",
    "only_failed": "none of the 1 runs completed (failed: CUDA out of memory)",
    "out_is_a_file": "--out: ", "lr_rule_on_a_table": "--lr-rule: ",
    "filter_leaves_nothing": "--filter 'N > 1e15': none of the 6 runs loaded from",
}


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_records")
    cases = folders(root)

    def replay(name: str):
        return name, subprocess.run(scaling_fit(*cases[name]), capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(replay, cases)) | {"root": root}


@pytest.mark.parametrize("name", BROKEN)
def test_scaling_fit_leaves_a_broken_run_out_and_names_it(answers, name):
    proc = answers["broken"]  # one folder: the good runs and every broken one
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ") and f"run {name}" in line]
    assert len(warned) == 1 and BROKEN[name][1] in warned[0], proc.stderr
    assert f"{len(GOOD)} runs;" in proc.stdout


@pytest.mark.parametrize("name", ERRORS)
def test_scaling_fit_without_a_usable_run_is_one_line_and_exit_2(answers, name):
    proc = answers[name]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and ERRORS[name] in lines[0], proc.stderr
    assert (answers["root"] / "a_file").read_text() == "not a folder"
    assert not (answers["root"] / "rule.json").exists()
