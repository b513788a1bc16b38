"""Document-level validation (train.eval_documents): whole documents scored, each token once, from its own
document only; padding adds nothing; bits per byte exact; the record's doc_* sums; bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import run_cli
from scaling.config import ModelConfig, TrainConfig
from scaling.data.shards import TokenArray
from scaling.errors import ConfigError
from scaling.model.gpt import GPT
from scaling.run.distributed import DistContext
from scaling.run.evaluate_documents import (DocumentEvaluator, check_document_eval, document_nats, document_sums,
                                            rolling_windows, validation_documents)
from scaling.run.step import autocast_for
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

VOCAB, BOS, CONTEXT = 64, 63, 8
CPU = torch.device("cpu")
FP32 = autocast_for("fp32", CPU)


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(width=32, depth=2, heads=2, context=CONTEXT), VOCAB).eval()


def corpus(tmp_path: Path, lengths=(3, 20, 1, 9, 31, 8, 2, 17), lead: int = 0) -> SimpleNamespace:
    """A prepared-data stand-in: documents of ``lengths`` text tokens, each after its separator (BOS), after
    ``lead`` tokens that belong to no document; the document index in a .npy file as preparation writes it."""
    rng = np.random.default_rng(1)
    pieces, starts, pos = [rng.integers(0, BOS, size=lead)], [], lead
    for n in lengths:
        starts.append(pos)
        pieces.append(np.concatenate([[BOS], rng.integers(0, BOS, size=n)]))
        pos += n + 1
    index = tmp_path / "val_000000.docs.npy"
    np.save(index, np.array(starts, dtype=np.int64))
    token_bytes = np.append(rng.integers(1, 4, size=VOCAB - 1), 0)  # the separator has no bytes
    return SimpleNamespace(val=np.concatenate(pieces).astype(np.uint16), meta={"doc_sep": "bos"}, dir=tmp_path,
                           doc_index={"val": [index]}, token_bytes=token_bytes, starts=np.array(starts))


def score(docs, micro: int = 4) -> np.ndarray:
    return document_nats(model(), docs, CONTEXT, micro, CPU, FP32, DistContext())


def test_rolling_windows_predict_every_token_but_the_first_once_from_its_own_document():
    for context in (1, 2, 5, 8):
        for n in range(0, 40):
            seen = []
            for start, length, scored in rolling_windows(n, context):
                assert 0 <= start and start + length + 1 <= n and 1 <= scored <= length <= context
                assert length == min(context, start + length)  # as much left context as the window holds
                seen += range(start + length - scored + 1, start + length + 1)  # targets of the scored inputs
            assert seen == list(range(1, n))  # in order, each once


def test_the_token_count_is_the_documents_lengths_less_one_each(tmp_path):
    data = corpus(tmp_path, lead=5)
    ends = np.append(data.starts[1:], len(data.val))  # from the index, independently of the evaluation
    for k in (1, 3, 8, 100):
        [(name, docs)] = validation_documents(data, k)
        nats = score(docs)
        sums = document_sums(nats, docs, data.token_bytes)
        first = min(k, len(data.starts))
        assert name is None and sums.documents == len(docs) == first
        assert sums.tokens == int((ends - data.starts)[:first].sum()) - first
        assert all(d[0] == BOS for d in docs) and np.isfinite(nats).all() and (nats > 0).all()


def test_under_doc_sep_eos_the_separator_conditions_each_document_and_every_token_is_predicted(tmp_path):
    data = corpus(tmp_path)
    data.meta = {"doc_sep": "eos", "eos_id": 5}
    [(_, docs)] = validation_documents(data, 3)
    ends = np.append(data.starts[1:], len(data.val))
    assert [d.tolist() for d in docs] == [[5, *data.val[a:b].tolist()] for a, b in zip(data.starts, ends[:3])]
    assert document_sums(score(docs), docs, data.token_bytes).tokens == int((ends - data.starts)[:3].sum())


def test_no_document_sees_another(tmp_path):
    data = corpus(tmp_path)
    [(_, docs)] = validation_documents(data, 8)
    before = score(docs)
    changed = [d.copy() for d in docs]
    for j in (1, 3, 5):  # the documents before and after 2 and 4, long ones (several windows) among them
        changed[j][1:] = (changed[j][1:] + 7) % BOS
    after = score(changed)
    for i in (0, 2, 4, 6, 7):
        assert after[i] == pytest.approx(before[i], rel=1e-6)
    assert all(abs(after[j] - before[j]) > 1e-3 for j in (1, 3, 5))
    assert before[5] == pytest.approx(token_nats(docs[5], 0, 8).sum(), rel=1e-6)  # one full window, alone
    seq = docs[1]  # 20 predictions: windows 0-7 and 8-15 side by side, then 12-19 scoring its last 4 (lm-eval's)
    assert len(seq) == 21
    by_hand = token_nats(seq, 0, 8).sum() + token_nats(seq, 8, 8).sum() + token_nats(seq, 12, 8)[-4:].sum()
    assert before[1] == pytest.approx(by_hand, rel=1e-6)


def token_nats(seq: np.ndarray, start: int, length: int) -> np.ndarray:
    """The model's nats for each target of the window of ``length`` inputs from ``start``, run on it alone."""
    x = torch.from_numpy(seq[None, start:start + length].astype(np.int64))
    y = torch.from_numpy(seq[start + 1:start + length + 1].astype(np.int64))
    with torch.no_grad():
        logits = model()(x)[0][0]
    return torch.nn.functional.cross_entropy(logits, y, reduction="none").double().numpy()


def test_padding_adds_nothing(tmp_path):
    data = corpus(tmp_path)
    [(_, docs)] = validation_documents(data, 8)
    lengths = {length for d in docs for _, length, _ in rolling_windows(len(d), CONTEXT)}
    assert len(lengths) > 1  # short windows share micro batches with full ones, padded
    together, alone = score(docs, micro=64), score(docs, micro=1)
    assert together == pytest.approx(alone, rel=1e-5)
    assert score(docs[6:7], micro=1) == pytest.approx(together[6:7], rel=1e-5)  # a 3-token document on its own


def test_bits_per_byte_are_the_documents_nats_over_their_bytes(tmp_path):
    data = corpus(tmp_path)
    ev = DocumentEvaluator(model(), validation_documents(data, 5), CONTEXT, 4, CPU, FP32, DistContext(),
                           data.token_bytes)
    sums = ev.documents()
    ends = np.append(data.starts[1:], len(data.val))
    nbytes = sum(int(data.token_bytes[data.val[a:b]].sum()) for a, b in zip(data.starts[:5], ends[:5]))
    assert sums.bytes == nbytes  # every text token's bytes, the separators' none
    row = sums.metrics("doc")
    assert row["doc/bpb"] == sums.nats / (math.log(2) * nbytes) and row["doc/loss"] == sums.nats / sums.tokens
    assert row["doc/documents"] == 5 and row["doc/nats"] == sums.nats and row["doc/bytes"] == nbytes
    assert ev.documents() == sums  # the same documents every time


def test_a_mixture_scores_the_first_documents_of_each_source(tmp_path):
    data = corpus(tmp_path)
    cut, tokens = int(data.starts[4]), data.val
    files = [tmp_path / "a.docs.npy", tmp_path / "b.docs.npy"]  # each source's own index, as combine() joins them
    np.save(files[0], data.starts[:4])
    np.save(files[1], data.starts[4:] - cut)
    data.val = TokenArray([tokens[:cut], tokens[cut:]], segments=[("a", 0, cut, 1.0), ("b", cut, len(tokens), 0.0)],
                          doc_index=files)
    parts = dict(validation_documents(data, 3))
    assert [len(parts["a"]), len(parts["b"])] == [3, 3]
    assert parts["b"][0].tolist() == tokens[cut:int(data.starts[5])].tolist()
    sums = DocumentEvaluator(model(), list(parts.items()), CONTEXT, 4, CPU, FP32, DistContext(),
                             data.token_bytes).documents()
    row = sums.metrics("doc")
    assert row["doc/documents"] == 6 and row["doc/a/documents"] == row["doc/b/documents"] == 3
    assert row["doc/tokens"] == row["doc/a/tokens"] + row["doc/b/tokens"]
    assert row["doc/nats"] == pytest.approx(row["doc/a/nats"] + row["doc/b/nats"])


def test_bad_input_is_one_line_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"^train.eval_documents=0 is invalid: it must be a whole number >= 1$"):
        TrainConfig(eval_documents=0).validate()
    data = corpus(tmp_path)
    run = SimpleNamespace(train=SimpleNamespace(eval_documents=4), model=SimpleNamespace(objective="clm"),
                          data=SimpleNamespace(tokenizer="gpt2"))
    check_document_eval(run, data)  # served: nothing raised
    no_index = SimpleNamespace(**{**vars(data), "doc_index": {"val": [None]}})
    with pytest.raises(ConfigError, match=r"^train.eval_documents=4 needs the validation split's document index, "
                                          r"which the prepared data at .* does not have; allowed: null, or"):
        check_document_eval(run, no_index)
    mlm = SimpleNamespace(**{**vars(run), "model": SimpleNamespace(objective="mlm")})
    with pytest.raises(ConfigError, match=r"^train.eval_documents=4 with model.objective='mlm': .* allowed: null, "
                                          r"or model.objective=clm$"):
        check_document_eval(mlm, data)


def test_a_run_without_document_separators_stops_in_one_line_with_status_2(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(100)))
    overrides = ["model=tiny", "model.context=16", "train.batch_size=2", "train.tokens=64", "train.eval_every=0",
                 "train.final_eval_tokens=64", "train.threads=1", "logger=none", f"data.source={source}",
                 "data.val_fraction=0.3", f"data.cache_dir={tmp_path / 'cache'}", "train.eval_documents=4",
                 f"runs_dir={tmp_path / 'runs'}"]
    message = (r"train.eval_documents=4 needs documents the model can tell apart, but data.doc_sep resolved to "
               r"'none' \(data.tokenizer='byte'\); allowed: null, or data with data.doc_sep=bos, eos or both \(a "
               r"tokenizer with a separator token\)")
    with pytest.raises(ConfigError, match=f"^{message}"):
        run_training(compose_run_config(overrides), tmp_path / "run", record_user_errors=False)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "result.json").exists()
    proc = run_cli("scaling-train", *overrides, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {message}".replace("\\", "")]
    assert not list((tmp_path / "runs").rglob("result.json"))


@pytest.fixture
def gpt2(shared_data, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_data / "tokenizers"))
    monkeypatch.setenv("SCALING_OFFLINE", "1")


def test_a_run_records_the_document_sums(tmp_path, gpt2):
    words = "amber birch cedar delta ember fjord grove heron inlet juniper kestrel lagoon meadow".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) + f" ({i}) é." for i in range(200)]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = compose_run_config(["model=tiny", "model.context=32", "train.batch_size=4", "train.tokens=1024",
                              "train.eval_every=0", "train.final_eval_tokens=256", "train.threads=1", "logger=none",
                              "data.tokenizer=gpt2", "data.max_bytes=null", "data.val_fraction=0.3",
                              f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}",
                              "train.eval_documents=12"])
    result = run_training(cfg, tmp_path / "run", record_user_errors=False)
    assert result["status"] == "completed" and result["doc_documents"] == 12
    assert result["doc_bpb"] == result["doc_nats"] / (math.log(2) * result["doc_bytes"])
    assert result["doc_loss"] == result["doc_nats"] / result["doc_tokens"]
    val_texts = _val_texts(tmp_path / "cache")
    held_out = [t for t in texts if t in val_texts][:12]
    assert result["doc_bytes"] == sum(len(t.encode()) for t in held_out)  # the 12 documents' UTF-8 bytes
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["doc/nats"] == result["doc_nats"] and last["doc/documents"] == 12
    assert json.loads((tmp_path / "run" / "result.json").read_text())["doc_tokens"] == result["doc_tokens"]


def _val_texts(cache: Path) -> set[str]:
    """The held-out documents' texts, decoded from the prepared validation shard at its separators."""
    from scaling.data.prepare import open_prepared

    [folder] = [p for p in cache.iterdir() if (p / "meta.json").is_file()]
    prepared = open_prepared(folder)
    tokens = np.asarray(prepared.val).tolist()
    cuts = [i for i, t in enumerate(tokens) if t == 50256] + [len(tokens)]
    return {prepared.tokenizer.decode(tokens[a + 1:b]) for a, b in zip(cuts, cuts[1:])}
