"""Runs on repeated data (data.unique_tokens) end to end: the record's fields, resume after SIGKILL,
validation apart from the train cut, one-line errors, and a tiny real sweep fitted by scaling-fit."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY, kill_after_checkpoint, read_metrics, read_result, run_cli, run_dirs
from scaling.config import DataConfig
from scaling.data import repeat
from scaling.data.loader import eval_offsets
from scaling.data.prepare import prepare_data

REPEATED = ["data.unique_tokens=20000", "train.tokens=80000"]  # about four epochs of 19,968 window tokens


def train(runs_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("scaling-train", *TINY, f"runs_dir={runs_dir}", *REPEATED, *overrides, check=check)



@pytest.mark.slow
def test_repeated_run_records_its_epochs_and_resumes_bit_identically(tmp_path):
    overrides = ["train.checkpoint_every=15", "train.log_every=5", "train.eval_every=30"]
    train(tmp_path / "straight", *overrides)
    (straight,) = run_dirs(tmp_path / "straight")
    a = read_result(straight)
    assert a["status"] == "completed"
    u = a["unique_tokens"]
    assert u % 64 == 0 and a["unique_cut_tokens"] <= 20000 and u == (a["unique_cut_tokens"] - 1) // 64 * 64
    assert a["unique_tokens_requested"] == 20000
    assert a["epochs"] == pytest.approx(a["tokens"] / u)
    assert sum(a["tokens_per_epoch"]) == a["tokens"] and len(a["tokens_per_epoch"]) == math.ceil(a["epochs"])
    assert all(t == u for t in a["tokens_per_epoch"][:-1]) and 0 < a["tokens_per_epoch"][-1] <= u

    killed_root = tmp_path / "killed"
    killed = kill_after_checkpoint(killed_root, *REPEATED, *overrides)
    train(killed_root, *overrides)
    b = read_result(killed)
    assert b["status"] == "completed" and b["run_id"] == a["run_id"]
    assert (b["val_loss"], b["train_loss"], b["tokens_per_epoch"]) == (a["val_loss"], a["train_loss"], a["tokens_per_epoch"])
    rows_a, rows_b = read_metrics(straight), read_metrics(killed)
    assert [(r["step"], r.get("train/loss"), r.get("val/loss")) for r in rows_b] == \
        [(r["step"], r.get("train/loss"), r.get("val/loss")) for r in rows_a]


def test_validation_never_overlaps_the_train_cut(tmp_path):
    """Documents of random letters: any window of the held-out split found in the cut would be an overlap."""
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 8))) for _ in range(300)]
        (corpus / f"doc{i:02d}.txt").write_text(" ".join(words) + "\n")
    prepared = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "cache"), val_fraction=0.2))
    cut, plan = repeat.with_repeats(prepared, 30_000, context=64, batch_size=8, tokens=200_000)
    train_bytes = bytes(np.asarray(prepared.train[0:plan.cut], dtype=np.uint8))
    assert bytes(np.asarray(cut.train, dtype=np.uint8)) == train_bytes  # the cut is a prefix of the train split
    val = np.asarray(prepared.val, dtype=np.uint8)
    windows = [bytes(val[o:o + 33]) for o in eval_offsets(len(val), 32, len(val))]
    assert windows and not any(w in train_bytes for w in windows)
    steps = [plan.offsets(8, seed=0, step=s) for s in range(200_000 // (8 * 64))]
    assert max(int(o.max()) for o in steps) + 64 < plan.cut  # every training window lies inside the cut


@pytest.mark.parametrize("override, needle", [
    ("data.unique_tokens=100", "error: data.unique_tokens=100 is smaller than one batch: allowed at least 513"),
    ("data.unique_tokens=3000000", "error: data.unique_tokens=3,000,000 is larger than the train split"),
    ("data.unique_tokens=1000", "allowed: at most 100 epochs (sweep.max_unique_epochs)"),
])
def test_bad_repeats_are_one_line_errors(tmp_path, override, needle):
    proc = run_cli("scaling-train", *TINY, f"runs_dir={tmp_path}", override, "train.tokens=200000")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr[-2000:]
    assert not any(tmp_path.rglob("result.json"))


TINY_SWEEP = ["+sweep=data_constrained_demo", "sweep.shapes=[{width:16,depth:2},{width:24,depth:2}]",
              "sweep.unique_grid=[1025,4097]", "sweep.epoch_grid=[1,4]", "sweep.min_steps=1",
              "train.final_eval_tokens=4096", "data.max_bytes=2000000"]


@pytest.mark.slow
def test_a_tiny_sweep_is_planned_trained_and_fitted(tmp_path):
    plan = run_cli("scaling-plan", *TINY_SWEEP, f"runs_dir={tmp_path}", "--json", check=True)
    runs = json.loads(plan.stdout)["runs"]
    assert len(runs) == 8 and {r["unique_tokens"] for r in runs} == {1024, 4096}
    assert {round(r["epochs"]) for r in runs} == {1, 4}
    assert all(r["repeated_share"] == pytest.approx(max(0.0, 1 - 1 / r["epochs"])) for r in runs)
    run_cli("scaling-train", "--multirun", *TINY_SWEEP, f"runs_dir={tmp_path}", check=True)
    records = [read_result(d) for d in run_dirs(tmp_path / "data_constrained_demo")]
    assert len(records) == 8 and all(r["status"] == "completed" for r in records)
    assert {r["unique_tokens"] for r in records} <= {1024, 4096} and all("-u1025-" in r["run_id"] or
                                                                          "-u4097-" in r["run_id"] for r in records)
    fit = run_cli("scaling-fit", str(tmp_path / "data_constrained_demo"), "--approach", "data-constrained",
                  "--unique-tokens-col", "unique_tokens", "--json", check=True)
    assert "R_D_star" in fit.stdout
    missing = run_cli("scaling-fit", str(tmp_path / "data_constrained_demo"), "--approach", "data-constrained",
                      "--unique-tokens-col", "U")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --unique-tokens-col: 'U' is not a column")
