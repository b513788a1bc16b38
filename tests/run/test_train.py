"""The training run end to end: real text, real Hydra app, the run record, resume after SIGKILL."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import TINY, kill_after_checkpoint, read_metrics, read_result, run_cli, run_dirs


def train(runs_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("scaling-train", *TINY, f"runs_dir={runs_dir}", *overrides, check=check)


def test_short_run_learns_and_writes_the_record(tmp_path):
    train(tmp_path, "train.tokens=60000", "train.eval_every=20")
    (run_dir,) = run_dirs(tmp_path)
    result = read_result(run_dir)
    assert result["status"] == "completed"
    # Byte-level: a model that learned nothing scores ln(256) = 5.55 nats per token.
    assert result["val_loss"] < 0.6 * math.log(256)
    assert result["tokens"] == result["steps"] * 8 * 64 and abs(result["tokens"] - 60000) <= 8 * 64
    assert set(result["params"]) >= {"total", "non_embedding", "with_head"}
    assert set(result["flops"]) >= {"6nd", "kaplan", "chinchilla"}
    assert result["flops"]["6nd"] == pytest.approx(6 * result["params"]["non_embedding"] * result["tokens"])
    metrics = read_metrics(run_dir)
    steps = [row["step"] for row in metrics]
    assert steps == sorted(set(steps)), "a step logged twice"
    assert metrics[-1]["val/loss"] == result["val_loss"]
    assert any("val/loss" in row for row in metrics[:-1]), "no periodic evaluation"
    assert (run_dir / "config.yaml").read_text().count("width: 32") == 1
    # The checkpoint loads without executing pickled code.
    (ckpt,) = (run_dir / "checkpoints").glob("step_*.pt")
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == result["steps"]


def test_rerun_of_a_completed_run_trains_nothing(tmp_path):
    train(tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    before = (run_dir / "result.json").stat().st_mtime_ns, (run_dir / "metrics.jsonl").read_text()
    proc = train(tmp_path)
    assert "already completed" in proc.stdout + proc.stderr
    assert ((run_dir / "result.json").stat().st_mtime_ns, (run_dir / "metrics.jsonl").read_text()) == before


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    overrides = ["train.tokens=80000", "train.checkpoint_every=15", "train.log_every=5", "train.eval_every=30"]
    train(tmp_path / "straight", *overrides)
    (straight,) = run_dirs(tmp_path / "straight")

    killed_root = tmp_path / "killed"
    killed = kill_after_checkpoint(killed_root, *overrides)

    train(killed_root, *overrides)
    a, b = read_result(straight), read_result(killed)
    assert b["status"] == "completed"
    assert b["val_loss"] == a["val_loss"] and b["train_loss"] == a["train_loss"]
    rows_a, rows_b = read_metrics(straight), read_metrics(killed)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    assert [r.get("train/loss") for r in rows_b] == [r.get("train/loss") for r in rows_a]



def test_diverging_run_is_recorded_as_diverged(tmp_path):
    train(tmp_path, "optim.lr=1e6", "optim.grad_clip=0", "optim.warmup_steps=0", "train.log_every=1")
    (run_dir,) = run_dirs(tmp_path)
    result = read_result(run_dir)
    assert result["status"] == "diverged"
    assert "non-finite" in result["error"] and result["step"] >= 1


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.width=33", ["model.width=33", "model.heads"]),
        ("model.pos=alibi", ["model.pos", "alibi"]),
        ("optim.schedule=step", ["optim.schedule", "cosine"]),
        ("data.source=/nonexistent/corpus.txt", ["data.source", "/nonexistent/corpus.txt"]),
        ("model.context=50000000", ["model.context=50000000", "data.source"]),
    ],
)
def test_bad_config_is_one_line_error_without_traceback(tmp_path, override, words):
    proc = train(tmp_path, override, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in proc.stderr
    assert not any((tmp_path).rglob("result.json"))


def test_mistyped_override_is_rejected(tmp_path):
    proc = train(tmp_path, "model.widht=64", check=False)
    assert proc.returncode != 0
    assert "widht" in proc.stderr
    assert not any(tmp_path.rglob("metrics.jsonl"))
