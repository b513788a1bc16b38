"""Evaluation under data.align=bos: every window begins at a document start (its separator), the same windows
every time, bits per byte exact; the default (align=none) as before; the data fingerprint in result.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling.config import DataConfig, ModelConfig
from scaling.data.loader import aligned_eval_offsets, eval_offsets, make_batch
from scaling.data.prepare import prepare_data
from scaling.errors import DataError
from scaling.model.gpt import GPT
from scaling.run.checkpoint import DATA_FILE
from scaling.run.distributed import DistContext
from scaling.run.evaluate import Evaluator, source_windows
from scaling.run.step import autocast_for
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

SEP = 50256  # GPT-2's <|endoftext|>, prepended to every document (data.doc_sep=auto -> bos)
CONTEXT = 32
WORDS = "amber birch cedar delta ember fjord grove heron inlet juniper kestrel lagoon meadow".split()


def documents(n: int, seed: int) -> list[str]:
    """ASCII documents of 1 to 80 words: some far shorter than a window, some longer."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 80)))) + f" ({i})." for i in range(n)]


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture
def gpt2(shared_data, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_data / "tokenizers"))
    monkeypatch.setenv("SCALING_OFFLINE", "1")


def prepared(tmp_path: Path, align: str):
    source = tmp_path / "docs.jsonl"
    if not source.exists():  # rewritten, a jsonl file would be another corpus (fingerprinted by its stat)
        write_jsonl(source, documents(300, seed=0))
    return prepare_data(DataConfig(source=str(source), tokenizer="gpt2", max_bytes=None, val_fraction=0.3,
                                   align=align, cache_dir=str(tmp_path / "cache")))


def evaluator(val, token_bytes, eval_tokens: int = 128, final_eval_tokens: int = 256) -> Evaluator:
    torch.manual_seed(0)
    model = GPT(ModelConfig(width=32, depth=2, heads=2, context=CONTEXT), 50257)
    return Evaluator(model, val, CONTEXT, 8, torch.device("cpu"), autocast_for("fp32", torch.device("cpu")),
                     DistContext(), eval_tokens,
                     final_eval_tokens, token_bytes)


def separator_positions(val) -> np.ndarray:
    return np.flatnonzero(np.asarray(val) == SEP)


def test_aligned_windows_begin_at_document_starts_the_same_every_time(tmp_path, gpt2):
    p = prepared(tmp_path, "bos")
    starts = separator_positions(p.val)  # the documents' first tokens, found without the index
    assert np.array_equal(p.val.doc_starts, starts)
    [(name, offsets)] = source_windows(p.val, CONTEXT, 1024)
    assert name is None and len(offsets) == 1024 // CONTEXT
    assert np.isin(offsets, starts).all() and (np.asarray(p.val[offsets]) == SEP).all()
    assert (np.diff(offsets) >= CONTEXT).all() and offsets[-1] + CONTEXT + 1 <= len(p.val)  # disjoint, inside
    [(_, chain)] = source_windows(p.val, CONTEXT, 10**9)  # as many as fit: the greedy chain of documents
    assert chain[0] == starts[0] and np.isin(offsets, chain).all()
    ends = [*chain[1:], len(p.val) - CONTEXT]  # no document start was passed over that a window could take
    for a, b in zip(chain, ends):
        assert not np.any((starts >= a + CONTEXT) & (starts < b))
    again = prepared(tmp_path, "bos")  # a later evaluation, or another run on the same data
    first, second = evaluator(p.val, p.token_bytes), evaluator(again.val, again.token_bytes)
    for a, b in ((first.final_windows, second.final_windows), (first.periodic_windows, second.periodic_windows)):
        assert np.array_equal(a[0][1], b[0][1])
    assert first.final() == first.final() == second.final()


def test_aligned_bits_per_byte_are_exact(tmp_path, gpt2):
    p = prepared(tmp_path, "bos")
    ev = evaluator(p.val, p.token_bytes)
    sums = ev.final()
    nats, nbytes = 0.0, 0
    with torch.no_grad():
        for offset in ev.final_windows[0][1]:
            x, y = make_batch(p.val, np.array([offset]), CONTEXT)
            assert int(x[0, 0]) == SEP
            nats += ev.model(x, y)[1].double().item() * CONTEXT
            text = p.tokenizer.decode([t for t in y[0].tolist() if t != SEP])  # separators have no bytes
            nbytes += len(text.encode("utf-8"))
    assert sums.tokens == ev.final_tokens == len(ev.final_windows[0][1]) * CONTEXT
    assert sums.bytes == nbytes and sums.nats == pytest.approx(nats, rel=1e-6)  # float32 means
    row = sums.metrics()
    assert row["val/bpb"] == sums.nats / (math.log(2) * sums.bytes) and row["val/bytes"] == nbytes


def test_the_default_keeps_its_windows_spread_by_position(tmp_path, gpt2):
    p = prepared(tmp_path, "none")
    assert getattr(p.val, "align", "none") == "none" and getattr(p.train, "align", "none") == "none"
    [(name, offsets)] = source_windows(p.val, CONTEXT, 1024)
    assert name is None and np.array_equal(offsets, eval_offsets(len(p.val), CONTEXT, 1024))
    assert not (np.asarray(p.val[offsets]) == SEP).all()  # by position, not at document starts
    aligned = prepared(tmp_path, "bos")
    assert aligned.dir == p.dir  # align does not change the prepared tokens, only where windows start


def test_a_mixture_evaluates_each_source_from_its_own_document_starts(tmp_path, gpt2):
    sources = {name: {"source": str(write_jsonl(tmp_path / f"{name}.jsonl", documents(150, seed))), "weight": w}
               for name, seed, w in (("web", 3, 1.0), ("wiki", 4, 0.0))}
    p = prepare_data(DataConfig(sources=sources, tokenizer="gpt2", max_bytes=None, val_fraction=0.3, align="bos",
                                cache_dir=str(tmp_path / "cache")))
    windows = dict(source_windows(p.val, CONTEXT, 512))
    assert sorted(windows) == ["web", "wiki"]
    starts = separator_positions(p.val)
    for name, start, stop, _ in p.val.segments:
        offsets = windows[name]
        assert len(offsets) == 256 // CONTEXT and np.isin(offsets, starts).all()
        assert start <= offsets.min() and offsets.max() + CONTEXT + 1 <= stop  # inside its own source


def test_a_split_where_no_document_leaves_room_for_a_window_is_a_one_line_error():
    with pytest.raises(DataError, match=r"^data.align=bos: no document of the validation split of source 'web' starts "
                                        r"an evaluation window of 65 tokens; allowed: .* at least 65 tokens"):
        aligned_eval_offsets(np.array([50, 90]), 0, 100, 64, 1024, "the validation split of source 'web'")
    assert aligned_eval_offsets(np.array([0, 10, 35, 90]), 0, 100, 64, 1024).tolist() == [0]  # 35 + 65 fits


def train(tmp_path: Path, name: str, docs: list[str], *overrides: str) -> tuple[dict, Path]:
    source = write_jsonl(tmp_path / f"{name}.jsonl", docs)
    cfg = compose_run_config(["model=tiny", f"model.context={CONTEXT}", "train.batch_size=4", "train.tokens=1024",
                              "train.eval_every=0", "train.eval_tokens=128", "train.final_eval_tokens=256",
                              "train.threads=1", "logger=none", "data.max_bytes=null", f"data.source={source}",
                              f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    run_dir = tmp_path / "runs" / name
    return run_training(cfg, run_dir, record_user_errors=False), run_dir


def test_an_aligned_run_evaluates_whole_windows_from_document_starts(tmp_path, gpt2):
    result, run_dir = train(tmp_path, "aligned", documents(300, seed=0), "data.tokenizer=gpt2", "data.align=bos",
                            "data.val_fraction=0.3")
    assert result["status"] == "completed" and result["eval_tokens"] == 256
    assert result["val_bpb"] == result["val_nats"] / (math.log(2) * result["val_bytes"])
    assert result["val_loss"] == result["val_nats"] / result["eval_tokens"]


def test_result_json_carries_the_data_fingerprint_which_follows_the_data(tmp_path):
    first, first_dir = train(tmp_path, "a", [d + "\n" for d in documents(200, seed=1)])
    second, second_dir = train(tmp_path, "b", [d + "\n" for d in documents(200, seed=2)])
    for result, run_dir in ((first, first_dir), (second, second_dir)):
        recorded = json.loads((run_dir / "result.json").read_text())
        assert recorded.get("data_fingerprint") == json.loads((run_dir / DATA_FILE).read_text())["fingerprint"]
    assert first["data_fingerprint"] != second["data_fingerprint"]
