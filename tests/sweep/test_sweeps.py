"""Sweep resolvers, skip rules, the end-of-sweep summary, and a real demo multirun through scaling-train."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from scaling.sweep import pricing
from scaling.sweep.expand import expand
from scaling.config import DataConfig
from scaling.data.prepare import prepare_data
from scaling.errors import ConfigError
from scaling.model.counts import param_counts
from scaling.sweep.registry import all_resolvers, configure_runtime
from scaling.sweep.resolvers import (data_tokens, skip_reason, skipped_result,
                               sweep_values, vocab_size, model_config)
from scaling.sweep.summary import format_summary, summarize, write_summary

ONE_RUN = ["+sweep=demo", "sweep.budgets=[1.2e11]", "sweep.shapes=[{width:32,depth:2}]"]


def compose_one(*overrides):
    """The composed config of a one-job sweep (Hydra's Compose API, as scaling-plan uses it)."""
    jobs = expand(list(overrides))
    assert len(jobs) == 1
    return jobs[0][1]


def text_file(tmp_path, nbytes=20_000) -> Path:
    path = tmp_path / "corpus.txt"
    words = "the quick brown fox jumps over the lazy dog and keeps on running through the field\n"
    path.write_text((words * (nbytes // len(words) + 1))[:nbytes])
    return path


def test_register_resolvers_is_idempotent():
    configure_runtime()
    configure_runtime()
    assert all(OmegaConf.has_resolver(name) for name in all_resolvers())


def test_sweep_values_round_trip_through_hydras_override_parser():
    values = [1e15, 3.3e16, 2.5e-7, 0.5, 12, {"width": 64, "depth": 2}, "a\\b", "it's\\"]
    override = OverridesParser.create().parse_overrides([f"key={sweep_values(values)}"])[0]
    assert override.is_discrete_sweep()
    parsed = list(override.sweep_iterator())
    assert parsed[:-2] == values[:-2] and [p.text for p in parsed[-2:]] == values[-2:]
    assert [type(v) for v in parsed[:4]] == [float] * 4  # budgets stay floats, exactly
    with pytest.raises(ConfigError, match="empty"):
        sweep_values([])


def test_tokens_per_param_is_k_times_n(tmp_path):
    cfg = compose_one("+sweep=ladder", "sweep.multiples=[7]", "sweep.shapes=[{width:64,depth:2}]",
                      "sweep.param_convention=with_head", f"runs_dir={tmp_path}")
    n = param_counts(model_config(cfg), 256)["with_head"]
    assert cfg.train.tokens == 7 * n


def test_a_run_inside_the_rules_is_not_skipped(tmp_path):
    cfg = compose_one(*ONE_RUN, f"runs_dir={tmp_path}")
    assert cfg.sweep.skip_reason is None and skip_reason(cfg) is None
    assert skipped_result(cfg, tmp_path / "run") is None
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize("override, rule", [
    ("sweep.min_steps=1000", "sweep.min_steps=1000 x {per_step:,} tokens per step"),
    ("sweep.min_tokens=10000000", "sweep.min_tokens=10,000,000"),
    ("sweep.min_tokens_per_param=100", "sweep.min_tokens_per_param=100 x N_total=32,928"),
])
def test_runs_below_a_floor_are_skipped_with_the_rule_that_applies(tmp_path, override, rule):
    cfg = compose_one(*ONE_RUN, override, f"runs_dir={tmp_path}")
    reason = cfg.sweep.skip_reason
    rule = rule.format(per_step=cfg.train.batch_size * cfg.model.context)
    assert reason.startswith(f"below the floor: {cfg.train.tokens:,} tokens < ") and reason.endswith(f"({rule})")
    result = skipped_result(cfg, tmp_path / "run")  # what the training entry point records instead of training
    assert result["status"] == "skipped" and result["error"] == reason
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == result


def test_a_model_too_small_for_its_budget_is_skipped_above_the_ceiling(tmp_path):
    cfg = compose_one(*ONE_RUN, f"runs_dir={tmp_path}")
    ratio = cfg.train.tokens / 32_928  # N_total of width 32, depth 2
    assert compose_one(*ONE_RUN, f"+sweep.max_tokens_per_param={ratio * 1.01}", f"runs_dir={tmp_path}").sweep.skip_reason is None
    cfg = compose_one(*ONE_RUN, f"+sweep.max_tokens_per_param={ratio * 0.99}", f"runs_dir={tmp_path}")
    assert cfg.sweep.skip_reason.startswith(f"above the ceiling: {cfg.train.tokens:,} tokens > ")
    assert cfg.sweep.skip_reason.endswith("x N_total=32,928)")


def test_runs_beyond_the_data_are_skipped_estimated_then_exact(tmp_path):
    corpus = text_file(tmp_path)
    data = [f"data.source={corpus}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.1"]
    cfg = compose_one(*ONE_RUN, *data, f"runs_dir={tmp_path}")
    bound, exact = data_tokens(cfg.data)
    assert not exact and bound == 18_000  # not prepared: no tokenizer makes more tokens than bytes
    assert cfg.sweep.skip_reason == (f"beyond the data: {cfg.train.tokens:,} tokens > 1 epoch(s) of data.source="
                                     f"'{corpus}', which holds at most 18,000 training tokens (not prepared yet)")
    prepared = prepare_data(DataConfig(**OmegaConf.to_container(cfg.data)))
    cfg = compose_one(*ONE_RUN, *data, f"runs_dir={tmp_path}")
    assert data_tokens(cfg.data) == (prepared.meta["train_tokens"], True)
    assert f"which holds {prepared.meta['train_tokens']:,} training tokens" in cfg.sweep.skip_reason
    epochs = cfg.train.tokens / prepared.meta["train_tokens"]
    cfg = compose_one(*ONE_RUN, *data, f"sweep.max_epochs={epochs + 1:.0f}", f"runs_dir={tmp_path}")
    assert cfg.sweep.skip_reason is None  # more epochs allowed: trained


def test_vocabulary_is_known_before_preparation_or_a_clear_error(tmp_path):
    corpus = text_file(tmp_path)
    char = [f"data.source={corpus}", "data.tokenizer=char", f"data.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_one(*ONE_RUN, *char, f"runs_dir={tmp_path}")
    with pytest.raises(ConfigError, match="scaling-prepare"):
        vocab_size(cfg)
    cfg = compose_one(*ONE_RUN, *char, "model.vocab_size=50", f"runs_dir={tmp_path}")
    assert vocab_size(cfg) == 50
    prepared = prepare_data(DataConfig(source=str(corpus), tokenizer="char", cache_dir=str(tmp_path / "cache")))
    cfg = compose_one(*ONE_RUN, *char, f"runs_dir={tmp_path}")
    assert vocab_size(cfg) == prepared.vocab_size == len(set(corpus.read_text()))
    bpe = compose_one(*ONE_RUN, "data.tokenizer=bpe", "data.bpe_vocab_size=1000",
                      f"data.cache_dir={tmp_path / 'empty'}", f"runs_dir={tmp_path}")
    assert vocab_size(bpe) == 1000
    assert vocab_size(compose_one(*ONE_RUN, f"runs_dir={tmp_path}")) == 256


def _record(run_dir: Path, **result):
    run_dir.mkdir(parents=True)
    if result:
        (run_dir / "result.json").write_text(json.dumps({"run_id": run_dir.name, **result}))
    return {"run_dir": str(run_dir), "budget": 1e12, "convention": "6nd"}


def test_summary_lists_every_status_with_its_reason(tmp_path, capsys):
    runs = [
        _record(tmp_path / "a", status="completed", val_loss=2.5, tokens=1000, flops={"6nd": 1e12},
                model={"width": 64, "depth": 2}, params={"non_embedding": 98624}),
        _record(tmp_path / "b", status="diverged", error="non-finite training loss at step 7"),
        _record(tmp_path / "c", status="failed", error="RuntimeError: out of memory"),
        _record(tmp_path / "d", status="skipped", error="below the floor: 5 tokens < 1,024"),
        _record(tmp_path / "e"),
        _record(tmp_path / "f"),
    ]
    runs.append(dict(runs[0]))  # a second job of run a (a reused WSD trunk): one row
    (tmp_path / "f" / "checkpoints").mkdir()
    (tmp_path / "f" / "checkpoints" / "step_000010.pt").write_bytes(b"x")
    summary = summarize(tmp_path, "demo", runs)
    assert summary["counts"] == {"completed": 1, "failed": 1, "diverged": 1, "skipped": 1, "missing": 2}
    reasons = {Path(r["run_dir"]).name: r["reason"] for r in summary["rows"]}
    assert reasons["a"] is None and reasons["b"].startswith("non-finite") and reasons["c"].endswith("out of memory")
    assert reasons["d"].startswith("below the floor") and "did not finish" in reasons["e"]
    assert "relaunch the sweep to resume" in reasons["f"]
    write_summary(tmp_path, summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n| `") == 6 and "w64 d2" in md and "2.5000" in md
    text = format_summary(summary)
    assert text.splitlines()[0].startswith("sweep demo: 6 run(s): 1 completed, 1 failed, 1 diverged, 1 skipped, 2 missing")
    assert all(line.strip().split()[0] != "completed" for line in text.splitlines()[1:])


# --------------------------------------------------------------------------------------------------
# Real multiruns through scaling-train (the basic launcher).

DEMO_2x2 = ["+sweep=demo", "sweep.budgets=[1e10,2e10]", "sweep.shapes=[{width:32,depth:2},{width:48,depth:2}]",
            "sweep.min_tokens_per_param=0", "sweep.min_steps=40", "train.final_eval_tokens=2048", "train.log_every=5"]


def scaling_train(*args, cwd):
    exe = Path(sys.executable).with_name("scaling-train")
    return subprocess.run([str(exe), "--multirun", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "WANDB_MODE": "disabled"}, timeout=600)


def test_too_small_budget_stops_the_sweep_before_any_launch(tmp_path):
    proc = scaling_train("+sweep=demo", "sweep.budgets=[1e6]", f"runs_dir={tmp_path}/runs", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: sweep.budget=1e+06 is too small for the smallest shape")
    assert not any((tmp_path / "runs" / "demo").glob("*/.hydra"))  # nothing launched


@pytest.mark.slow
def test_demo_multirun_trains_skips_summarises_and_relaunches_idle(tmp_path):
    runs_dir = tmp_path / "runs"
    expected = {Path(r.run_dir).name: r for r in pricing.plan_sweep(DEMO_2x2 + [f"runs_dir={runs_dir}"])[0]}
    assert sum(1 for r in expected.values() if r.skip_reason) == 1  # w48 at 1e10: fewer than min_steps

    proc = scaling_train(*DEMO_2x2, f"runs_dir={runs_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = runs_dir / "demo"
    assert {p.name for p in sweep_dir.iterdir() if p.is_dir()} == set(expected)  # run dirs = the plan's
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"] == {"completed": 3, "failed": 0, "diverged": 0, "skipped": 1, "missing": 0}
    assert "sweep demo: 4 run(s): 3 completed, 0 failed, 0 diverged, 1 skipped" in proc.stdout
    for row in summary["rows"]:
        planned = expected[row["run_id"]]
        result = json.loads((Path(row["run_dir"]) / "result.json").read_text())
        if planned.skip_reason:
            assert row["status"] == result["status"] == "skipped" and row["reason"] == planned.skip_reason
            assert not (Path(row["run_dir"]) / "metrics.jsonl").exists()  # returned before any work
        else:
            assert row["status"] == "completed" and result["tokens"] == planned.tokens
            assert result["flops"]["chinchilla"] <= planned.budget * 1.02  # within a step's rounding
            assert (Path(row["run_dir"]) / "config.yaml").exists()
    (sweep_dir / "summary.json").unlink()

    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.jsonl")}
    again = scaling_train(*DEMO_2x2, f"runs_dir={runs_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.jsonl")} == before  # nothing retrained
    assert json.loads((sweep_dir / "summary.json").read_text())["counts"] == summary["counts"]


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_others_and_is_summarised(tmp_path):
    # A learning rate that is not a number fails inside the job (the optimizer rejects it) for one run.
    proc = scaling_train(*DEMO_2x2[:2], "sweep.shapes=[{width:32,depth:2}]", "sweep.min_tokens_per_param=0",
                         "train.final_eval_tokens=2048",
                         "optim.lr=3e-3,-1.0", f"runs_dir={tmp_path}/runs", cwd=tmp_path)
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    assert summary["counts"]["completed"] == 2 and summary["counts"]["failed"] == 2
    failed = [r for r in summary["rows"] if r["status"] == "failed"]
    assert all(r["reason"] for r in failed)
    assert "2 completed, 2 failed" in proc.stdout
