"""A single run from the shell opens its prepared data once: the check before the run folder exists hands
its opening to the run of the same data; other data is opened by the run itself."""

from __future__ import annotations

import sys

import pytest

import scaling.run.training as training
from helpers import read_result, run_dirs
from scaling.sweep.expand import compose_run_config


@pytest.fixture
def openings(monkeypatch):
    """Every data config prepare_data is called with, in scaling.run.training (the check's and the run's)."""
    calls = []

    def counted(data):
        calls.append(data)
        return prepare(data)

    prepare = training.prepare_data
    monkeypatch.setattr(training, "prepare_data", counted)
    return calls


def overrides(tmp_path, *more: str) -> list[str]:
    source = tmp_path / "corpus.txt"
    if not source.exists():
        source.write_text("".join(f"line {i} of a small corpus for one short run.\n" for i in range(400)))
    return ["model=tiny", "model.context=16", "train.batch_size=2", "train.tokens=128", "train.eval_every=0",
            "train.final_eval_tokens=64", "train.threads=1", "logger=none", f"data.source={source}",
            f"data.cache_dir={tmp_path / 'cache'}", f"runs_dir={tmp_path / 'runs'}", *more]


def test_a_single_run_from_the_shell_opens_its_data_once(tmp_path, monkeypatch, openings):
    from scaling.cli.train import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["scaling-train", *overrides(tmp_path)])
    main()
    [run_dir] = run_dirs(tmp_path / "runs")
    assert read_result(run_dir)["status"] == "completed"
    assert len(openings) == 1


def test_the_run_opens_data_the_check_did_not(tmp_path, openings):
    training.check_training_data(compose_run_config(overrides(tmp_path)))
    cfg = compose_run_config(overrides(tmp_path, "data.val_fraction=0.2"))
    result = training.run_training(cfg, tmp_path / "run", record_user_errors=False)
    assert result["status"] == "completed"
    assert [d.val_fraction for d in openings] == [0.05, 0.2]
    same = compose_run_config(overrides(tmp_path))
    training.run_training(same, tmp_path / "again", record_user_errors=False)  # the check's opening was handed over once
    assert len(openings) == 3
