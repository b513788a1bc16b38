"""Loading run records and tables into pandas (analysis.load)."""

import json
import shutil
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from run_records import counts, law_loss, write_run

from analysis import load_curves, load_runs
from analysis.errors import AnalysisInputError


@pytest.fixture
def runs_dir(tmp_path):
    for i, (w, d) in enumerate([(32, 2), (64, 2), (64, 4), (128, 4)]):
        write_run(tmp_path, f"r{i}", width=w, depth=d, tokens=1_000_000 * (i + 1))
    write_run(tmp_path, "bad1", width=32, depth=4, tokens=10**6, status="failed", error="CUDA out of memory")
    write_run(tmp_path, "bad2", width=32, depth=8, tokens=10**6, status="diverged", error="loss is NaN at step 12")
    return tmp_path


def test_records_become_one_row_per_completed_run_with_every_convention(runs_dir):
    with pytest.warns(UserWarning, match=r"left out 2 of 6 runs.*CUDA out of memory.*loss is NaN at step 12"):
        df = load_runs(runs_dir)
    assert sorted(df["run_id"]) == ["r0", "r1", "r2", "r3"]
    for c in ("sweep", "status", "width", "depth", "heads", "context", "vocab_size", "N_total", "N_non_embedding",
              "N_with_head", "tokens", "flops_6nd", "flops_kaplan", "flops_chinchilla", "val_loss", "train_loss", "path"):
        assert c in df.columns, c
    row = df.set_index("run_id").loc["r2"]
    c = counts(64, 4)
    assert row["N"] == c["params"]["non_embedding"] and row["D"] == 3_000_000
    assert row["C"] == c["per_token"]["6nd"] * 3_000_000
    assert row["loss"] == pytest.approx(law_loss(row["N"], row["D"]))
    assert row["sweep"] == "sweep"


def test_conventions_choose_the_canonical_columns(runs_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_runs(runs_dir, params="with_head", flops="kaplan", loss="train_loss")
    assert (df["N"] == df["N_with_head"]).all()
    assert (df["C"] == df["flops_kaplan"]).all()
    assert (df["loss"] == df["train_loss"]).all()


def test_failed_runs_kept_on_request(runs_dir):
    df = load_runs(runs_dir, keep_failed=True)
    assert set(df["status"]) == {"completed", "failed", "diverged"}
    assert df.set_index("run_id").loc["bad1", "error"] == "CUDA out of memory"


def test_same_run_twice_is_reported_and_kept_once(tmp_path):
    write_run(tmp_path, "a", width=32, depth=2, tokens=10**6)
    write_run(tmp_path, "b", width=64, depth=2, tokens=10**6)
    shutil.copytree(tmp_path / "sweep" / "a", tmp_path / "copy" / "a")  # same run_id elsewhere
    write_run(tmp_path, "c", width=64, depth=2, tokens=10**6, group="sweep")  # same config as b
    with pytest.warns(UserWarning, match="duplicate runs") as rec:
        df = load_runs(tmp_path)
    text = " ".join(str(w.message) for w in rec)
    assert "run_id a appears 2 times" in text and "runs b, c have the same resolved config" in text
    assert sorted(df["run_id"]) == ["a", "b"]


def test_reader_tolerates_extra_keys_and_conventions(tmp_path):
    write_run(tmp_path, "x", width=32, depth=2, tokens=10**6,
              extra={"notes": {"any": 1}, "flops": {"6nd": 1e12, "kaplan": 2e12, "chinchilla": 3e12, "custom": 4e12}})
    df = load_runs(tmp_path, flops="custom")
    assert df.loc[0, "C"] == 4e12 and "flops_custom" in df.columns


def test_unknown_convention_names_what_exists(runs_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AnalysisInputError, match=r"flops: 'bogus'.*6nd, kaplan, chinchilla"):
            load_runs(runs_dir, flops="bogus")
        with pytest.raises(AnalysisInputError, match=r"params: 'heads'"):
            load_runs(runs_dir, params="heads")


def test_csv_with_user_columns_derives_tokens_and_says_so(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"Model Size": [1e6, 2e6], "Training FLOP": [6e15, 2.4e16], "l": [3.0, 2.9]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"D derived as C / \(6 N\)"):
        df = load_runs(path, params_col="Model Size", flops_col="Training FLOP", loss_col="l")
    assert df["D"].tolist() == pytest.approx([1e9, 2e9])
    assert df["loss"].tolist() == [3.0, 2.9]


def test_table_with_tokens_derives_flops(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"n": [1e6], "d": [1e9], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="C derived as 6 N D"):
        df = load_runs(path, params_col="n", tokens_col="d")
    assert df.loc[0, "C"] == pytest.approx(6e15)


def test_parquet_round_trip_of_a_loaded_table(runs_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_runs(runs_dir)
    path = tmp_path / "runs.parquet"
    df.to_parquet(path)
    again = load_runs(path, params="with_head")
    assert (again["N"] == df["N_with_head"]).all() and (again["C"] == df["flops_6nd"]).all()


def test_bad_tables_are_clear_errors(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"n": [1e6], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.raises(AnalysisInputError, match=r"params_col: 'size' is not a column \(columns: n, loss\)"):
        load_runs(path, params_col="size", tokens_col="n")
    with pytest.raises(AnalysisInputError, match="tokens_col / flops_col"):
        load_runs(path, params_col="n")
    with pytest.raises(AnalysisInputError, match="does not exist"):
        load_runs(tmp_path / "nope.csv")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(AnalysisInputError, match=r"must end in \.csv"):
        load_runs(tmp_path / "t.txt")
    pd.DataFrame({"n": ["big"], "d": [1.0], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.raises(AnalysisInputError, match=r"n: 1 value\(s\) are not numbers"):
        load_runs(path, params_col="n", tokens_col="d")


def test_wandb_source_without_the_wandb_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as where wandb is not installed (no server is reached)
    with pytest.raises(AnalysisInputError, match="W&B API unavailable"):
        load_runs("wandb:me/project")


def test_curves_are_per_step_with_every_convention(runs_dir):
    run = runs_dir / "sweep" / "r1"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "tok')  # a line torn by a crash
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cur = load_curves(runs_dir)
    assert any("unreadable line" in str(w.message) for w in rec)
    assert set(cur["run_id"]) == {"r0", "r1", "r2", "r3"}
    one = cur[cur["run_id"] == "r2"].sort_values("step")
    c = counts(64, 4)
    assert (one["N"] == c["params"]["non_embedding"]).all()
    assert one["flops_kaplan"].to_numpy() == pytest.approx(one["tokens"].to_numpy() * c["per_token"]["kaplan"])
    assert one["loss"].to_numpy() == pytest.approx(law_loss(one["N"], one["tokens"]))
    assert np.all(np.diff(one["step"].to_numpy()) > 0)
    assert one["val/loss"].notna().sum() < len(one)  # only at eval steps
    lines = [json.loads(x) for x in (runs_dir / "sweep" / "r2" / "metrics.jsonl").read_text().splitlines()]
    assert len(one) == len(lines)
