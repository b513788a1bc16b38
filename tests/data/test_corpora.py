"""Real corpora: jsonl / gzip / zstd / parquet documents, GPT-2 and SentencePiece tokenizers, llm.c shards,
pre-tokenized files used as they are, workers, resume, and the bad inputs of each."""

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from scaling.config import DataConfig
from scaling.data import pipeline
from scaling.data.prepare import open_prepared, prepare_data
from scaling.data.shards import HEADER_BYTES, make_header, read_header
from scaling.errors import DataError

DOCS = [f"Document {i}: the quick brown fox {'jumps ' * (i % 5)}over the lazy dog. Été {i}." for i in range(400)]


@pytest.fixture(autouse=True)
def offline_tokenizers(shared_data, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_data / "tokenizers"))
    monkeypatch.setenv("SCALING_OFFLINE", "1")
    return shared_data / "tokenizers"


def cfg(tmp_path, source, **kw) -> DataConfig:
    base = {"source": source if isinstance(source, list) else str(source), "cache_dir": str(tmp_path / "cache"), "tokenizer": "gpt2", "max_bytes": None}
    return DataConfig(**{**base, **kw})


def write_jsonl(path: Path, docs, field="text") -> Path:
    raw = "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()
    if path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdCompressor().compress(raw)
    elif path.name.endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def write_parquet(path: Path, docs, field="text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: docs}), path, row_group_size=64)
    return path


def write_shard(path: Path, tokens, dtype=np.uint16) -> Path:
    tokens = np.asarray(tokens, dtype=dtype)
    path.write_bytes(make_header(np.dtype(dtype), len(tokens)) + tokens.tobytes())
    return path


def docs_of(p, split, sep=50256):
    ids = np.asarray(getattr(p, split)).tolist()
    text = p.tokenizer.decode(ids)
    return [d for d in text.split("<|endoftext|>") if d]


# --- tokenizers -----------------------------------------------------------------------------------------


def test_gpt2_and_sentencepiece_give_the_real_ids(offline_tokenizers):
    from scaling.data.tokenizers import pretrained_tokenizer

    gpt2 = pretrained_tokenizer("gpt2")
    assert gpt2.encode("hello world") == [31373, 995] and gpt2.vocab_size == 50257 and gpt2.bos_id == 50256
    assert gpt2.sha256.startswith("306cd27f") and gpt2.sha256.endswith("dd930")
    lengths = gpt2.token_bytes()
    text = DOCS[3]
    assert int(lengths[gpt2.encode(text)].sum()) == len(text.encode()) and lengths[50256] == 0
    sp = pretrained_tokenizer(f"sp:{offline_tokenizers / 'mistral-7b-v0.1.model'}")
    assert sp.encode("hello world") == [6312, 28709, 1526] and sp.vocab_size == 32000 and sp.bos_id == 1


def test_hf_tokenizer_json_and_its_bytes(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(DOCS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    src = write_jsonl(tmp_path / "d.jsonl", DOCS)
    p = prepare_data(cfg(tmp_path, src, tokenizer=f"hf:{tmp_path / 'tokenizer.json'}"))
    assert p.meta["doc_sep"] == "bos" and p.meta["bos_id"] == 0
    ids = np.asarray(p.train).astype(np.int64)
    docs = [d for d in p.tokenizer.decode(ids.tolist()).split("<|endoftext|>") if d]
    assert int(p.token_bytes[ids].sum()) == sum(len(d.encode()) for d in docs)


def test_a_prepared_folder_whose_tokenizer_file_changed_is_refused(tmp_path):
    """The encoder is built only when first used, so the folder's copy of the ranks is checked against the
    sha256 it was prepared with when the folder is opened, not at the first decode of a training run."""
    p = prepare_data(cfg(tmp_path, write_jsonl(tmp_path / "d.jsonl", DOCS)))
    assert p.tokenizer.decode(p.tokenizer.encode("hello world")) == "hello world"
    ranks = p.dir / "tokenizer.tiktoken"
    ranks.write_bytes(ranks.read_bytes().replace(b" 995\n", b" 996\n", 1))
    with pytest.raises(DataError, match=r"^prepared data at .*: tokenizer\.tiktoken has sha256 \w+ but "
                                        r"tokenizer_spec\.json says 306cd27f\w+; delete that folder"):
        open_prepared(p.dir)


# --- documents ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.jsonl.zst", "d.parquet"])
def test_document_formats_give_the_same_tokens(tmp_path, name):
    src = tmp_path / name
    write_parquet(src, DOCS) if name.endswith(".parquet") else write_jsonl(src, DOCS)
    held = write_jsonl(tmp_path / "held.jsonl", DOCS[:20])
    p = prepare_data(cfg(tmp_path, src, val_source=str(held)))
    assert docs_of(p, "train") == DOCS and docs_of(p, "val") == DOCS[:20]
    ids = np.asarray(p.train)
    assert ids[0] == 50256 and (ids == 50256).sum() == len(DOCS) == p.meta["train_docs"]  # GPT-2: bos before each
    assert p.meta["bytes"] == sum(len(d.encode()) for d in DOCS + DOCS[:20])


def test_documents_are_held_out_by_hash(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl.zst", DOCS)
    p = prepare_data(cfg(tmp_path, src, val_fraction=0.2))
    train, val = docs_of(p, "train"), docs_of(p, "val")
    assert sorted(train + val) == sorted(DOCS) and 0.1 < len(val) / len(DOCS) < 0.3
    assert val != DOCS[-len(val):] and p.meta["split"] == "docs"
    again = prepare_data(cfg(tmp_path / "b", src, val_fraction=0.2))
    assert docs_of(again, "val") == val  # the rule is a hash, not a draw
    capped = prepare_data(cfg(tmp_path, src, val_tokens=300))
    assert len(capped.val) <= 300 and len(capped.train) + len(capped.val) == len(p.train) + len(p.val)


@pytest.mark.parametrize("doc_sep,per_doc", [("eos", 1), ("both", 2), ("none", 0)])
def test_document_separators_and_index(tmp_path, doc_sep, per_doc):
    src = write_jsonl(tmp_path / "d.jsonl", DOCS[:50])
    p = prepare_data(cfg(tmp_path, src, doc_sep=doc_sep, val_source=str(src)))
    ids = np.asarray(p.train)
    assert (ids == 50256).sum() == per_doc * 50
    starts = np.load(p.dir / "train_000000.docs.npy")
    lengths = [len(p.tokenizer.encode(d)) + per_doc for d in DOCS[:50]]
    assert starts.tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()


def test_shards_are_llm_c_files_with_a_manifest(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", DOCS)
    p = prepare_data(cfg(tmp_path, src, shard_tokens=2000))
    manifest = json.loads((p.dir / "manifest.json").read_text())
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    assert len(train) > 3 and all(s["tokens"] <= 2000 for s in train) and p.meta["shards"]["train"] == len(train)
    whole = []
    for s in train:  # as modded-nanogpt's _load_data_shard reads them
        header = np.fromfile(p.dir / s["file"], dtype=np.int32, count=256)
        assert header[0] == 20240520 and header[1] == 1 and header[2] == s["tokens"]
        with open(p.dir / s["file"], "rb") as f:
            f.seek(HEADER_BYTES)
            whole.append(np.frombuffer(f.read(), dtype=np.uint16))
        import hashlib

        assert hashlib.sha256(whole[-1].tobytes()).hexdigest() == s["sha256"]
    whole = np.concatenate(whole)
    assert np.array_equal(whole, np.asarray(p.train)) and sum(s["bytes"] for s in train) > 0
    idx = np.array([[1995, 1996, 1997, 1998, 1999, 2000, 2001, 2002]])  # a window across two shards
    assert np.array_equal(p.train[idx], whole[idx]) and np.array_equal(p.train[1990:2010], whole[1990:2010])
    docs = [s["docs"] for s in train]
    assert docs[0][0] == 0 and all(a[1] == b[0] for a, b in zip(docs, docs[1:]))


@pytest.mark.slow
def test_two_workers_write_the_same_bytes(tmp_path):
    src = [str(write_jsonl(tmp_path / f"p{i}.jsonl.zst", DOCS * 20)) for i in range(2)]
    a = prepare_data(cfg(tmp_path / "a", src, shard_tokens=30_000))
    b = prepare_data(cfg(tmp_path / "b", src, shard_tokens=30_000, workers=2))
    files = sorted(f.name for f in a.dir.iterdir() if f.suffix in (".bin", ".npy"))
    assert files == sorted(f.name for f in b.dir.iterdir() if f.suffix in (".bin", ".npy")) and len(files) > 4
    assert all((a.dir / f).read_bytes() == (b.dir / f).read_bytes() for f in files)


def test_workers_do_not_run_the_main_script_again(tmp_path):
    """A console script's imports (scaling-prepare's pull in torch) stay out of the tokenizing workers."""
    import subprocess
    import sys

    marker = tmp_path / "imported"
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        f"if __name__ != '__main__':\n    open({str(marker)!r}, 'a').write('x')\n"
        "from scaling.data import pipeline\n"
        "if __name__ == '__main__':\n"
        "    items = [('main', ('split-text', 'a', 'hello world', 'x'))] * 4\n"
        f"    out = list(pipeline.ordered_results(iter(items), 2, ({str(tmp_path)!r}, 'byte', 'none', 0.0)))\n"
        "    print(sum(len(enc.tokens) for _, enc in out))\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=root, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["48"] and not marker.exists()


def test_interrupted_preparation_resumes_from_its_last_shard(tmp_path, monkeypatch):
    import scaling.data.sources as sources

    monkeypatch.setattr(sources, "TASK_BYTES", 4096)  # many small tasks
    src = write_jsonl(tmp_path / "d.jsonl", DOCS * 5)
    whole = prepare_data(cfg(tmp_path / "whole", src, shard_tokens=3000))
    real_save, calls = pipeline._save_progress, []

    def save_then_die(*args):
        real_save(*args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after its second complete shard

    monkeypatch.setattr(pipeline, "_save_progress", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg(tmp_path, src, shard_tokens=3000))
    partial = next((tmp_path / "cache").glob(".partial-*"))
    done = json.loads((partial / "progress.json").read_text())["done"]["main"]
    monkeypatch.setattr(pipeline, "_save_progress", real_save)
    seen = []
    real_run = pipeline._run
    monkeypatch.setattr(pipeline, "_run", lambda item: seen.append(1) or real_run(item))
    resumed = prepare_data(cfg(tmp_path, src, shard_tokens=3000))
    total = sum(1 for _ in sources.iter_tasks(sources.plan_source(str(src), None, 0.05, False), "text"))
    assert len(seen) == total - done > 0  # only the tasks after the saved point were tokenized again
    files = sorted(f.name for f in whole.dir.iterdir() if f.suffix in (".bin", ".npy"))
    assert all((whole.dir / f).read_bytes() == (resumed.dir / f).read_bytes() for f in files)
    assert not list((tmp_path / "cache").glob(".partial-*"))


def test_resume_refuses_a_changed_corpus(tmp_path, monkeypatch):
    import scaling.data.sources as sources

    monkeypatch.setattr(sources, "TASK_BYTES", 4096)
    monkeypatch.setattr(sources, "CONTENT_HASH_LIMIT", 0)  # fingerprint by stat, as for a large corpus
    src = write_jsonl(tmp_path / "d.jsonl", DOCS * 3)
    real_save = pipeline._save_progress

    def die(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_save_progress", die)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg(tmp_path, src, shard_tokens=2000))
    monkeypatch.setattr(pipeline, "_save_progress", real_save)
    write_jsonl(src, DOCS * 4)
    with pytest.raises(DataError, match="changed since the interrupted preparation .*delete that folder"):
        prepare_data(cfg(tmp_path, src, shard_tokens=2000))


# --- pre-tokenized files --------------------------------------------------------------------------------


def test_modded_nanogpt_shards_are_used_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fineweb10B"
    folder.mkdir()
    shards = []
    for name in ("fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"):
        toks = rng.integers(0, 50256, 3000)
        toks[::100] = 50256  # a document every 100 tokens, bos first
        shards.append(toks)
        write_shard(folder / name, toks)
    p = prepare_data(cfg(tmp_path, f"{folder}/fineweb_*.bin", align="bos"))
    assert p.meta["kind"] == "tokens" and p.meta["val_tokens"] == 3000 and p.meta["train_tokens"] == 6000
    assert np.array_equal(np.asarray(p.train), np.concatenate(shards[1:])) and not list(p.dir.glob("*.bin"))
    from scaling.data.loader import step_offsets

    offsets = step_offsets(p.train, 64, 16, 0, 5)
    assert np.all(p.train[offsets] == 50256) and np.array_equal(offsets, step_offsets(p.train, 64, 16, 0, 5))


def test_nanogpt_and_olmo_raw_token_files(tmp_path):
    toks = np.arange(5000) % 1000
    (tmp_path / "train.bin").write_bytes(toks.astype(np.uint16).tobytes())
    (tmp_path / "val.bin").write_bytes(toks[:500].astype(np.uint16).tobytes())
    p = prepare_data(cfg(tmp_path, f"{tmp_path}/*.bin"))
    assert len(p.train) == 5000 and len(p.val) == 500 and p.vocab_size == 50257
    (tmp_path / "olmo").mkdir()
    (tmp_path / "olmo" / "part-0.npy").write_bytes((toks + 70_000).astype(np.uint32).tobytes())
    q = prepare_data(cfg(tmp_path, tmp_path / "olmo", tokenizer="byte", dtype="uint32", vocab_size=100_000))
    assert q.vocab_size == 100_000 and len(q.train) + len(q.val) == 5000 and int(q.train[0]) == 70_000
    assert q.token_bytes is None  # ids only: no bits per byte


# --- bad input ------------------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> dict:
    ok = write_shard(tmp_path / "ok_train.bin", np.arange(2000) % 50000)
    (tmp_path / "trunc.bin").write_bytes(ok.read_bytes()[:-10])
    version = bytearray(ok.read_bytes())
    version[4:8] = np.int32(3).tobytes()
    (tmp_path / "magic.bin").write_bytes(bytes(version))
    lines = [json.dumps({"text": "fine"}), "{not json", json.dumps({"body": "x"}), "also not json"]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    write_parquet(tmp_path / "nocol.parquet", DOCS[:10], field="content")
    (tmp_path / "big.npy").write_bytes((np.arange(3000) % 1000).astype(np.uint16).tobytes())
    (tmp_path / "fake.tiktoken").write_bytes(b"aGk= 0\n")
    high = np.arange(2000) % 1000
    high[1234] = 60000
    write_shard(tmp_path / "high_train.bin", high)
    docs = str(write_jsonl(tmp_path / "d.jsonl", DOCS))
    return {"docs": docs}


BAD = [  # (settings, error class, words of the one-line error)
    ({"source": "trunc.bin"}, DataError, r"trunc\.bin: header count=2000 tokens .* truncated"),
    ({"source": "magic.bin"}, DataError, r"magic\.bin: header version=3 for magic 20240520; allowed: 1"),
    ({"source": "bad.jsonl"}, DataError, r"bad\.jsonl: 3 line\(s\) unusable, first at line 2 \(not JSON\)"),
    ({"source": "nocol.parquet"}, DataError, r"nocol\.parquet: no column data\.text_field='text'; columns: content"),
    ({"sources": {"a": {"source": "d.jsonl", "weight": -1}}}, Exception, r"data\.sources\.a\.weight=-1"),
    ({"sources": {"a": {"source": "d.jsonl", "weight": 0}}}, Exception, r"weights are all zero"),
    ({"source": "d.jsonl", "tokenizer_sha256": "0" * 64}, DataError, r"gpt2.tiktoken has sha256 306cd27f.*allowed: 0000"),
    ({"source": "big.npy", "tokenizer": "byte", "vocab_size": 70_000}, DataError,
     r"vocabulary of 70000 ids does not fit the files' dtype uint16"),
    ({"source": "high_train.bin"}, DataError, r"high_train\.bin: token id 60000 at token offset 1234 is beyond .*50257"),
    ({"source": "d.jsonl", "tokenizer": "tiktoken:missing.tiktoken"}, DataError, r"missing\.tiktoken does not exist"),
]


@pytest.mark.parametrize("settings,error,words", BAD, ids=[b[2][:24] for b in BAD])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, settings, error, words):
    from scaling.errors import ConfigError

    made = _bad_inputs(tmp_path)
    kept = prepare_data(cfg(tmp_path, made["docs"]))  # already prepared: must survive the error
    rel = lambda v: str(tmp_path / v) if not str(v).startswith(("tiktoken:", "/")) else v  # noqa: E731
    kw = dict(settings)
    if "source" in kw:
        kw["source"] = rel(kw["source"])
    if kw.get("tokenizer", "").startswith("tiktoken:"):
        kw["tokenizer"] = "tiktoken:" + str(tmp_path / kw["tokenizer"].split(":", 1)[1])
    if "sources" in kw:
        kw["sources"] = {n: {**e, "source": rel(e["source"])} for n, e in kw["sources"].items()}
    with pytest.raises((error, ConfigError)) as info:
        prepare_data(cfg(tmp_path, kw.pop("source", made["docs"]), **kw))
    import re

    assert re.search(words, str(info.value)) and "\n" not in str(info.value)
    assert open_prepared(kept.dir).meta == kept.meta


def test_read_header_detects_llm_c_files(tmp_path):
    a = write_shard(tmp_path / "a.bin", [1, 2, 3])
    b = write_shard(tmp_path / "b.bin", [1, 2, 3], dtype=np.uint32)
    assert read_header(a) == (np.dtype(np.uint16), 3) and read_header(b) == (np.dtype(np.uint32), 3)
    (tmp_path / "raw.bin").write_bytes(np.arange(10, dtype=np.uint16).tobytes())
    assert read_header(tmp_path / "raw.bin") is None
    assert os.path.getsize(a) == HEADER_BYTES + 6
