"""Masked-LM runs end to end: the record, learning, resume bit-identical, one-line errors, run ids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers import TINY, read_metrics, read_result, run_cli, run_dirs
from scaling.run import identity
from scaling.sweep.expand import compose_run_config, expand

MLM = ["model.objective=mlm"]


def train(runs_dir: Path, *overrides: str, check: bool = True):
    return run_cli("scaling-train", *TINY, f"runs_dir={runs_dir}", *overrides, check=check)


def test_short_mlm_run_learns_and_records_its_objective(tmp_path):
    train(tmp_path, *MLM, "train.tokens=100000", "train.eval_every=50")
    (run_dir,) = run_dirs(tmp_path)
    result = read_result(run_dir)
    assert result["status"] == "completed" and result["objective"] == "mlm"
    # A model that learned nothing scores ln(256) = 5.55 nats per masked byte.
    assert result["val_loss"] < 0.6 * math.log(256)
    k = round(0.15 * 64)  # masked tokens per window of 64
    assert result["predicted_tokens"] == result["steps"] * 8 * k and result["tokens"] == result["steps"] * 8 * 64
    assert result["params"]["total"] == result["params"]["non_embedding"] + 257 * 32  # [MASK] counted, tied head
    assert result["val_pseudo_ppl"] == pytest.approx(math.exp(result["val_loss"]))
    assert "val_bpb" not in result and "val_ppl" not in result
    last = read_metrics(run_dir)[-1]
    assert last["val/tokens"] == (16384 // 64) * k  # the predicted tokens of the fixed held-out masking
    assert last["val/nats"] / last["val/tokens"] == pytest.approx(last["val/loss"])
    assert "val/bytes" not in last and "val/bpb" not in last


def test_causal_run_reports_perplexity(tmp_path):
    train(tmp_path)
    result = read_result(run_dirs(tmp_path)[0])
    assert result["objective"] == "clm" and result["predicted_tokens"] == result["tokens"]
    assert result["val_ppl"] == pytest.approx(math.exp(result["val_loss"]))


def test_mlm_resume_is_bit_identical(tmp_path):
    overrides = [*MLM, "train.tokens=40000", "train.checkpoint_every=15", "train.keep_checkpoints=20",
                 "train.log_every=5", "train.eval_every=30"]
    train(tmp_path / "straight", *overrides)
    train(tmp_path / "resumed", *overrides)
    (straight,), (resumed,) = run_dirs(tmp_path / "straight"), run_dirs(tmp_path / "resumed")
    # interrupt the second after step 30: its later checkpoints and its result are gone, then rerun
    (resumed / "result.json").unlink()
    for ckpt in (resumed / "checkpoints").glob("step_*.pt"):
        if int(ckpt.stem.split("_")[1]) > 30:
            ckpt.unlink()
    train(tmp_path / "resumed", *overrides)
    a, b = read_result(straight), read_result(resumed)
    assert b["status"] == "completed"
    assert (b["val_loss"], b["train_loss"]) == (a["val_loss"], a["train_loss"])
    rows_a, rows_b = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    assert [r.get("train/loss") for r in rows_b] == [r.get("train/loss") for r in rows_a]
    assert [r.get("val/loss") for r in rows_b] == [r.get("val/loss") for r in rows_a]


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model.mask_rate=1.5"], ["model.mask_rate=1.5", "< 1"]),
        (["model.mask_rate=0"], ["model.mask_rate=0", "> 0"]),
        (["model.mask_keep=0.3"], ["model.mask_keep=0.3", "sum to 1.2"]),
        (["model.objective=bert"], ["model.objective='bert'", "clm, mlm"]),
        ([*MLM, "model.vocab_size=4294967296"], ["model.objective='mlm'", "uint32"]),
    ],
)
def test_bad_masking_input_is_one_line_error(tmp_path, overrides, words):
    proc = train(tmp_path, *overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not any(tmp_path.rglob("result.json"))


def test_objective_moves_the_run_id_only_when_set_away_from_clm():
    base = compose_run_config(["model=tiny", "train.tokens=4096"])
    assert identity.run_key(compose_run_config(["model=tiny", "train.tokens=4096", "model.objective=clm",
                                                "model.mask_rate=0.15"])) == identity.run_key(base)
    assert identity.run_key(compose_run_config(["model=tiny", "train.tokens=4096", *MLM])) != identity.run_key(base)
    assert "objective" not in json.dumps(identity.identity(base))


SWEEPS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "sweeps" / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", [s for s in SWEEPS if s != "objectives"])
def test_every_named_sweep_runs_masked(sweep):
    """Each named sweep composes and prices under model.objective=mlm: N counts [MASK], tokens follow."""
    from scaling.model.counts import param_counts
    from scaling.sweep.resolvers import model_config, vocab_size

    cfg = compose_run_config([f"+sweep={sweep}", *MLM])  # the sweep's first job, as a plain compose gives it
    assert cfg.model.objective == "mlm"
    n = param_counts(model_config(cfg), vocab_size(cfg))
    assert n["with_head"] - n["non_embedding"] == (vocab_size(cfg) + 1) * cfg.model.width
    assert int(cfg.train.tokens) > 0


def test_objectives_sweep_is_the_study_design_under_both_objectives():
    jobs = expand(["+sweep=objectives", "sweep.budgets=[4e11]"])  # one budget: the expansion is slow
    study = compose_run_config(["+sweep=study"]).sweep
    grid = sorted((4e11, s["width"], s["depth"]) for s in study.shapes)
    design = lambda cfg: (float(cfg.sweep.budget), cfg.model.width, cfg.model.depth)  # noqa: E731
    by_objective = {o: sorted(design(c) for _, c in jobs if c.model.objective == o) for o in ("clm", "mlm")}
    assert by_objective["clm"] == by_objective["mlm"] == grid
    assert {c.group for _, c in jobs} == {"objectives"}
    names = {c.name for _, c in jobs}
    assert "mlm-w32-d2" in names and "clm-w32-d2" in names
