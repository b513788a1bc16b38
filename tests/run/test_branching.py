"""WSD branching: a cooldown branch started from a trunk checkpoint is the same run as one straight WSD run,
its record counts true tokens and FLOPs, and bad branch settings are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.sweep.branch_plan import plan_branches, sweep_flops
from scaling.errors import ConfigError
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

TINY = ["model=tiny", "model.context=32", "train.batch_size=4", "train.eval_every=0", "train.eval_tokens=1024",
        "train.final_eval_tokens=4096", "train.threads=1", "train.checkpoint_every=0", "data.max_bytes=400000",
        "logger=none", "optim.warmup_steps=5", "optim.cooldown_fraction=0.25", "optim.final_lr_fraction=0.0"]
TPS = 4 * 32  # tokens per step


def make_cfg(*overrides: str):
    return compose_run_config([*TINY, *overrides])


def train(run_dir: Path, *overrides: str) -> dict:
    return run_training(make_cfg(*overrides), run_dir)


def test_plan_branches_starts_each_cooldown_on_the_trunk():
    bp = plan_branches([4000, 1000, 2000], 0.25, tokens_per_step=100)
    assert bp.budgets == (1000, 2000, 4000)
    assert bp.starts == (700, 1500, 3000)  # (1 - f) D, rounded down to whole steps
    assert bp.trunk_tokens == 3000 and bp.branch(1) == (2000, 1500)
    with pytest.raises(ConfigError, match="cooldown_fraction"):
        plan_branches([1000], 1.0)


def test_branch_equals_straight_wsd_run_and_records_true_totals(tmp_path):
    bp = plan_branches([40 * TPS, 80 * TPS], 0.25, tokens_per_step=TPS)
    trunk = train(tmp_path / "trunk", "optim.schedule=constant", f"train.tokens={bp.trunk_tokens}",
                  f"train.keep_at_tokens=[{bp.starts[0]},{bp.starts[1]}]")
    assert trunk["status"] == "completed"
    tokens, start = bp.branch(0)
    branch = train(tmp_path / "branch", "optim.schedule=wsd", f"train.tokens={tokens}",
                   f"train.branch_from={tmp_path / 'trunk'}", f"train.branch_tokens={start}")
    straight = train(tmp_path / "straight", "optim.schedule=wsd", f"train.tokens={tokens}")

    assert branch["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
    assert branch["tokens"] == straight["tokens"] == tokens
    assert branch["flops"] == straight["flops"]
    assert branch["trunk"] == "trunk" and branch["branch_tokens"] == start
    assert branch["own_tokens"] == tokens - start
    assert branch["own_flops"]["6nd"] == pytest.approx(branch["flops"]["6nd"] * (tokens - start) / tokens)
    rows = [json.loads(line) for line in (tmp_path / "branch" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] > start // TPS and rows[-1]["tokens"] == tokens  # its own steps, true token axis
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cooled down to final_lr_fraction = 0
    # The sweep total counts the trunk once: trunk + own part of the branch.
    assert sweep_flops([trunk, branch]) == pytest.approx(trunk["flops"]["6nd"] + branch["own_flops"]["6nd"])


@pytest.mark.parametrize("overrides, words", [
    (["optim.schedule=cosine", "train.branch_tokens=640"], "needs wsd"),
    (["optim.schedule=wsd", "train.branch_tokens=99999"], "must be below train.tokens"),
    (["optim.schedule=wsd", "train.branch_tokens=768"], "no checkpoint at step 6"),
    (["optim.schedule=wsd", "train.branch_tokens=512"], "not in its stable phase at step 4"),  # in warmup
    (["optim.schedule=wsd", "train.branch_tokens=640", "optim.lr=1e-2"], "optim.lr=0.01 differs from the trunk"),
    (["optim.schedule=wsd", "train.branch_tokens=640", "model.dropout=0.1"],  # the field, not the whole model
     r"^model\.dropout=0\.1 differs from the trunk's 0\.0 \([^{]*$"),
    (["optim.schedule=wsd", "train.branch_tokens=640", "train.data_seed=-1"], "train.data_seed"),
])
def test_bad_branch_settings_are_one_line_errors(tmp_path, overrides, words):
    train(tmp_path / "trunk", "optim.schedule=constant", "train.tokens=1280", "train.keep_at_tokens=[640]")
    with pytest.raises(ConfigError, match=words):
        run_training(make_cfg("train.tokens=2560", f"train.branch_from={tmp_path / 'trunk'}", *overrides),
                     tmp_path / "branch", record_user_errors=False)


def test_a_replicate_cooldown_continues_the_trunk_state_on_other_batches(tmp_path):
    bp = plan_branches([40 * TPS, 80 * TPS], 0.25, tokens_per_step=TPS)
    train(tmp_path / "trunk", "optim.schedule=constant", f"train.tokens={bp.trunk_tokens}",
          f"train.keep_at_tokens=[{bp.starts[0]}]")
    tokens, start = bp.branch(0)
    branch = ["optim.schedule=wsd", f"train.tokens={tokens}", f"train.branch_from={tmp_path / 'trunk'}",
              f"train.branch_tokens={start}"]
    original = train(tmp_path / "original", *branch)
    same_seed = train(tmp_path / "same_seed", *branch, "train.data_seed=0")  # the trunk's seed: its stream
    replicate = train(tmp_path / "replicate", *branch, "train.data_seed=1")
    assert same_seed["val_loss"] == original["val_loss"]
    assert replicate["status"] == "completed" and replicate["val_loss"] != original["val_loss"]
    assert replicate["tokens"] == original["tokens"] and replicate["own_flops"] == original["own_flops"]
    first = json.loads((tmp_path / "replicate" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] > start // TPS  # from the trunk's state, not from scratch
    assert abs(replicate["val_loss"] - original["val_loss"]) < 0.05 * original["val_loss"]


def test_a_trunk_stopped_at_a_branch_point_serves_its_branch_and_goes_on_as_if_never_stopped(tmp_path):
    bp = plan_branches([40 * TPS, 80 * TPS], 0.25, tokens_per_step=TPS)
    trunk = ["optim.schedule=constant", f"train.tokens={bp.trunk_tokens}",
             f"train.keep_at_tokens=[{bp.starts[0]},{bp.starts[1]}]"]
    stopped = train(tmp_path / "trunk", *trunk, f"train.stop_at_tokens={bp.starts[0]}")
    assert stopped["status"] == "stopped" and stopped["tokens_trained"] == bp.starts[0]
    assert not (tmp_path / "trunk" / "result.json").exists()  # no record: the run has not ended

    tokens, start = bp.branch(0)
    branch = train(tmp_path / "branch", "optim.schedule=wsd", f"train.tokens={tokens}",
                   f"train.branch_from={tmp_path / 'trunk'}", f"train.branch_tokens={start}")
    straight = train(tmp_path / "straight", "optim.schedule=wsd", f"train.tokens={tokens}")
    assert branch["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)

    again = train(tmp_path / "trunk", *trunk, f"train.stop_at_tokens={bp.starts[0]}")  # already there: no step
    assert again["status"] == "stopped" and again["step"] == bp.starts[0] // TPS
    extended = train(tmp_path / "trunk", *trunk)  # without the stop: on to the trunk's end
    whole = train(tmp_path / "whole", *trunk)
    assert extended["status"] == whole["status"] == "completed"
    assert extended["val_loss"] == whole["val_loss"] and extended["train_loss"] == whole["train_loss"]
    assert extended["steps"] == bp.trunk_tokens // TPS


def test_stop_at_tokens_is_not_part_of_the_run_identity_and_must_be_positive(tmp_path):
    from scaling.run.identity import config_hash

    assert config_hash(make_cfg("train.stop_at_tokens=640")) == config_hash(make_cfg())
    with pytest.raises(ConfigError, match="train.stop_at_tokens"):
        run_training(make_cfg("train.stop_at_tokens=0"), tmp_path / "run", record_user_errors=False)
