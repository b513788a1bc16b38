"""scaling-plan prices the document-level validation (train.eval_documents=K): the forward passes of K
validation documents, once at the end, a third of a training token each, as the eval windows are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.cli import plan as plan_cli
from scaling.config import typed_config
from scaling.data.prepare import prepare_data
from scaling.run.evaluate_documents import rolling_windows, validation_documents
from scaling.sweep import pricing
from scaling.sweep.expand import compose_run_config

RATE = 50_000.0  # --tokens-per-sec


def data_overrides(tmp_path: Path) -> list[str]:
    """A corpus of equal-length documents (byte tokens), so their mean length is each one's."""
    source = tmp_path / "docs.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"text": f"document {i:04d} " * 7}) + "\n" for i in range(300)))
    return [f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.2"]


def plan(tmp_path: Path, *more: str) -> dict:
    overrides = ["model=tiny", "model.context=32", "train.tokens=20000", *data_overrides(tmp_path),
                 f"runs_dir={tmp_path / 'runs'}", *more]
    runs, throughput = pricing.plan_sweep(overrides, tokens_per_sec=RATE)
    return json.loads(json.dumps(plan_cli.as_dict(runs, throughput, "")))["runs"][0]


def test_a_documents_forward_tokens_are_its_rolling_windows_inputs():
    for context in (1, 2, 5, 32):
        for length in range(0, 150):
            windows = rolling_windows(length, context)
            assert pricing.document_forward_tokens(length, context) == sum(n for _, n, _ in windows), (length, context)


def test_prepared_documents_are_priced_at_their_windows_and_add_to_the_time(tmp_path):
    prepared = prepare_data(typed_config(compose_run_config(data_overrides(tmp_path))).data)
    [(_, docs)] = validation_documents(prepared, 8)
    windows = sum(n for doc in docs for _, n, _ in rolling_windows(len(doc), 32))  # what the run forwards
    without = plan(tmp_path)
    priced = plan(tmp_path, "train.eval_documents=8")
    assert without["document_tokens"] == 0
    assert priced["document_tokens"] == windows and priced["documents_from_data"]
    assert priced["est_seconds"] - without["est_seconds"] == pytest.approx(windows / 3 / RATE)
    assert priced["tokens"] == without["tokens"] and priced["compute"] == without["compute"]  # C is training's
    many = plan(tmp_path, f"train.eval_documents={prepared.meta['val_docs'] + 100}")
    assert many["document_tokens"] == windows // 8 * prepared.meta["val_docs"]  # no more than the split holds


def test_before_the_data_is_prepared_each_document_is_one_context(tmp_path):
    priced = plan(tmp_path, "train.eval_documents=8")
    assert not (tmp_path / "cache").exists()
    assert priced["document_tokens"] == 8 * 32 and not priced["documents_from_data"]


def test_scaling_plan_shows_the_documents_price(tmp_path, capsys):
    args = ["model=tiny", "model.context=32", "train.tokens=20000", *data_overrides(tmp_path),
            f"runs_dir={tmp_path / 'runs'}", "--tokens-per-sec", str(RATE)]
    assert plan_cli.main(args) == 0
    plain = capsys.readouterr().out
    assert " docs " not in plain and "document-level" not in plain
    assert plan_cli.main([*args, "train.eval_documents=8"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    assert " docs " in head and "256*" in out
    assert "docs: forward-pass tokens of the document-level validation (train.eval_documents)" in out
    assert "*: data not prepared yet" in out
    assert plan_cli.main([*args, "train.eval_documents=8", "--csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["document_tokens"] == "256"
