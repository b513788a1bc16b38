"""Data preparation, tokenizers, the cache and the deterministic loader."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling.config import DataConfig
from scaling.data.corpus import read_corpus, stdlib_dir
from scaling.data.prepare import (
    batch_offsets,
    check_context,
    eval_offsets,
    load_tokenizer,
    make_batch,
    open_prepared,
    prepare_data,
)
from scaling.cli.prepare import main
from scaling.errors import ConfigError, DataError
from scaling.data.shards import shard_dtype
from scaling.data.tokenizer import dtype_for_vocab

SAMPLE = "def f(x):\n    return x * 2  # doubles\n\nclass Été:\n    naïve = '中文 ✓ 🙂'\n"


def make_folder(root: Path, n: int = 30) -> Path:
    """A folder of n small, distinct text files (nested), plus a hidden file and a binary one."""
    for i in range(n):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod_{i:02d}.py").write_text(f"# module {i}\n" + SAMPLE * (1 + i % 4) + f"VALUE = {i}\n")
    (root / ".hidden.txt").write_text("never read\n")
    (root / "pkg0" / "blob.bin").write_bytes(bytes(range(256)))
    return root


def cfg(tmp_path: Path, source, **kw) -> DataConfig:
    return DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"), **kw)


def decoded(p, split: str) -> str:
    return p.tokenizer.decode(np.asarray(getattr(p, split)).tolist())


# --- tokenizers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["byte", "char", "bpe"])
def test_token_files_decode_back_to_the_corpus(tmp_path, tokenizer):
    text = SAMPLE * 200
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    p = prepare_data(cfg(tmp_path, src, tokenizer=tokenizer, bpe_vocab_size=300))
    assert decoded(p, "train") + decoded(p, "val") == text
    assert p.tokenizer.decode(p.tokenizer.encode(SAMPLE)) == SAMPLE
    reloaded = load_tokenizer(p.dir)  # what evaluation and sampling use
    assert reloaded.encode(SAMPLE) == p.tokenizer.encode(SAMPLE)
    assert int(max(p.train.max(), p.val.max())) < p.vocab_size
    assert p.train.dtype == shard_dtype(p.vocab_size)  # llm.c shards: uint16 up to 65,536 ids


def test_byte_tokenizer_is_utf8():
    from scaling.data.tokenizer import ByteTokenizer

    tok = ByteTokenizer()
    assert tok.encode("é") == list("é".encode())
    assert tok.vocab_size == 256


def test_char_vocabulary_is_the_sorted_distinct_characters(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("banana bread\n")
    p = prepare_data(cfg(tmp_path, src, tokenizer="char", val_fraction=0.2))
    assert p.tokenizer.chars == sorted(set("banana bread\n"))
    assert p.meta["vocab_size"] == len(set("banana bread\n"))
    with pytest.raises(DataError, match="not in the char vocabulary"):
        p.tokenizer.encode("xyz")


def test_bpe_learns_merges_and_compresses(tmp_path):
    src = make_folder(tmp_path / "src")
    p = prepare_data(cfg(tmp_path, src, tokenizer="bpe", bpe_vocab_size=400))
    assert 256 < p.vocab_size <= 400
    byte_tokens = sum(len(t.encode()) for t in [decoded(p, "train"), decoded(p, "val")])
    assert len(p.train) + len(p.val) < byte_tokens / 2  # merges of a repetitive corpus shorten it


def test_dtype_is_the_smallest_that_fits():
    assert dtype_for_vocab(256) == np.uint8
    assert dtype_for_vocab(257) == np.uint16
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32
    with pytest.raises(DataError, match="larger than"):
        dtype_for_vocab(2**32 + 1)


# --- sources and split -------------------------------------------------------------------------------


def test_single_file_holds_out_its_end(tmp_path):
    text = "".join(f"line {i}\n" for i in range(1000))
    src = tmp_path / "t.txt"
    src.write_text(text)
    p = prepare_data(cfg(tmp_path, src, val_fraction=0.1))
    cut = int(len(text) * 0.9)  # nanoGPT: train = data[:int(n * 0.9)]
    assert decoded(p, "train") == text[:cut] and decoded(p, "val") == text[cut:]
    assert p.meta["split"] == "position"


def test_folder_holds_out_whole_files_spread_over_the_corpus(tmp_path):
    src = make_folder(tmp_path / "src", n=40)
    p = prepare_data(cfg(tmp_path, src, val_fraction=0.2))
    files = json.loads((p.dir / "files.json").read_text())
    assert "pkg0/blob.bin" in files["skipped"]
    listed = [f["path"] for f in files["files"]]
    assert listed == sorted(listed) and ".hidden.txt" not in listed and len(listed) == 40
    val = [f["path"] for f in files["files"] if f["split"] == "val"]
    texts = {f["path"]: (src / f["path"]).read_text() for f in files["files"]}
    assert decoded(p, "val") == "".join(texts[f] for f in val)  # whole files, in path order
    assert decoded(p, "train") == "".join(texts[f] for f in listed if f not in val)
    share = sum(len(texts[f].encode()) for f in val) / sum(len(t.encode()) for t in texts.values())
    assert 0.15 < share < 0.3
    assert val != listed[-len(val):]  # not simply the alphabetical end
    assert len({f.split("/")[0] for f in val}) > 1


def test_glob_and_cap(tmp_path):
    src = make_folder(tmp_path / "src", n=12)
    p = prepare_data(cfg(tmp_path, f"{src}/**/*.py", max_bytes=1000))
    assert p.meta["source_kind"] == "glob" and p.meta["truncated"]
    assert p.meta["bytes"] <= 1000 and len(p.train) + len(p.val) == p.meta["bytes"]
    files = [f["path"] for f in json.loads((p.dir / "files.json").read_text())["files"]]
    assert files == sorted(files) and all(f.endswith(".py") for f in files)


def test_cap_never_splits_a_character(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("é" * 100)  # 2 bytes each
    p = prepare_data(cfg(tmp_path, src, tokenizer="char", max_bytes=51))
    assert decoded(p, "train") + decoded(p, "val") == "é" * 25


def test_stdlib_default_corpus(tmp_path):
    t0 = time.perf_counter()
    p = prepare_data(cfg(tmp_path, "stdlib"))  # the default: byte-level, 16 MB cap
    elapsed = time.perf_counter() - t0
    assert p.meta["source_kind"] == "stdlib" and p.meta["tokenizer"] == "byte" and p.vocab_size == 256
    assert 15_990_000 < p.meta["bytes"] <= 16_000_000 == DataConfig().max_bytes
    assert p.meta["split"] == "files" and p.meta["val_files"] > 5
    files = json.loads((p.dir / "files.json").read_text())["files"]
    assert all(f["path"].endswith(".py") and "site-packages" not in f["path"] for f in files)
    first = next(f for f in files if f["split"] == "val")
    head = (stdlib_dir() / first["path"]).read_bytes()[:200]
    assert bytes(np.asarray(p.val[:200]).astype(np.uint8)) == head
    assert elapsed < 30  # a few seconds on an idle machine


# --- cache -------------------------------------------------------------------------------------------


def test_second_call_reuses_the_cache(tmp_path):
    src = make_folder(tmp_path / "src", n=60)
    c = cfg(tmp_path, src, tokenizer="bpe", bpe_vocab_size=600)
    t0 = time.perf_counter()
    first = prepare_data(c)
    t1 = time.perf_counter()
    mtimes = {f.name: f.stat().st_mtime_ns for f in first.dir.iterdir()}
    second = prepare_data(c)
    t2 = time.perf_counter()
    assert second.dir == first.dir and second.meta == first.meta
    assert {f.name: f.stat().st_mtime_ns for f in second.dir.iterdir()} == mtimes
    assert t2 - t1 < (t1 - t0) / 2  # no retraining, no re-tokenising
    assert [d.name for d in (tmp_path / "cache").iterdir() if not d.name.startswith(".")] == [first.dir.name]


def test_cache_key_follows_content_and_settings(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 50)
    base = prepare_data(cfg(tmp_path, src)).dir
    assert prepare_data(cfg(tmp_path, src, tokenizer="char")).dir != base
    assert prepare_data(cfg(tmp_path, src, val_fraction=0.2)).dir != base
    assert prepare_data(cfg(tmp_path, src, max_bytes=100)).dir != base
    src.write_text("hello there\n" * 50)  # same path, new content
    changed = prepare_data(cfg(tmp_path, src))
    assert changed.dir != base and decoded(changed, "train").startswith("hello there")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    src = tmp_path / "t.txt"
    src.write_text("abc\n" * 100)
    monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "env-cache"))
    p = prepare_data(DataConfig(source=str(src)))
    assert p.dir.parent == (tmp_path / "env-cache").resolve()


def _prepare_in_child(c, queue):
    queue.put(str(prepare_data(c).dir))


def test_concurrent_preparations_agree(tmp_path):
    src = make_folder(tmp_path / "src", n=60)
    c = cfg(tmp_path, src, tokenizer="bpe", bpe_vocab_size=500)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(c, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    dirs = {queue.get(timeout=120) for _ in procs}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(dirs) == 1
    assert [d.name for d in (tmp_path / "cache").iterdir() if not d.name.endswith(".lock")] == [Path(dirs.pop()).name]


def test_killed_preparation_leaves_no_half_written_cache(tmp_path):
    src = make_folder(tmp_path / "src", n=60)
    c = cfg(tmp_path, src, tokenizer="bpe", bpe_vocab_size=800)
    ctx = multiprocessing.get_context("fork")
    (tmp_path / "cache").mkdir()
    interrupted = 0
    for delay in (0.005, 0.02, 0.05, 0.1):
        proc = ctx.Process(target=prepare_data, args=(c,))
        proc.start()
        time.sleep(delay)
        proc.kill()
        proc.join()
        visible = [d for d in (tmp_path / "cache").iterdir() if d.is_dir() and not d.name.startswith(".")]
        for d in visible:
            open_prepared(d)  # whatever is visible is complete
        interrupted += not visible
    assert interrupted > 0  # at least one kill landed mid-preparation
    p = prepare_data(c)
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # the dead preparations' leftovers are gone
    assert p.tokenizer.decode(p.tokenizer.encode(SAMPLE)) == SAMPLE


# --- loader ------------------------------------------------------------------------------------------


def test_batch_offsets_depend_only_on_seed_and_step():
    a = batch_offsets(10_000, 64, 32, seed=3, step=7)
    np.random.seed(123)
    np.random.rand(10)  # global RNG state must not matter
    torch.manual_seed(5)
    assert np.array_equal(a, batch_offsets(10_000, 64, 32, seed=3, step=7))
    assert a.dtype == np.int64 and a.shape == (32,)
    assert not np.array_equal(a, batch_offsets(10_000, 64, 32, seed=3, step=8))
    assert not np.array_equal(a, batch_offsets(10_000, 64, 32, seed=4, step=7))


def test_resumed_run_sees_the_same_batches():
    tokens = np.arange(5_000, dtype=np.uint16)
    full = [make_batch(tokens, batch_offsets(len(tokens), 16, 8, 0, s), 16)[0] for s in range(20)]
    resumed = [make_batch(tokens, batch_offsets(len(tokens), 16, 8, 0, s), 16)[0] for s in range(12, 20)]
    assert all(torch.equal(a, b) for a, b in zip(full[12:], resumed))
    assert not torch.equal(full[0], full[1])


def test_batch_offsets_cover_the_whole_split_and_stay_inside():
    n, context = 100, 10
    offs = np.concatenate([batch_offsets(n, context, 64, 0, s) for s in range(50)])
    assert offs.min() == 0 and offs.max() == n - context - 1  # the last window ends at the last token


def test_make_batch_shifts_targets_by_one():
    tokens = np.random.default_rng(0).integers(0, 256, 1000).astype(np.uint8)
    offsets = np.array([0, 5, 989])
    x, y = make_batch(tokens, offsets, 10)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (3, 10)
    for row, o in enumerate(offsets):
        assert x[row].tolist() == tokens[o : o + 10].tolist()
        assert y[row].tolist() == tokens[o + 1 : o + 11].tolist()


def test_make_batch_reads_a_memmap(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abcdefghij" * 100)
    p = prepare_data(cfg(tmp_path, src))
    assert not p.train.flags.writeable
    x, y = make_batch(p.train, np.array([3]), 5)
    assert bytes(x[0].tolist()) == b"defgh" and bytes(y[0].tolist()) == b"efghi"


def test_eval_offsets_are_fixed_disjoint_and_spread():
    offs = eval_offsets(10_000, 64, 1024)  # 16 windows, fewer than fit: spread over the split
    assert len(offs) == 16 and np.array_equal(offs, eval_offsets(10_000, 64, 1024))
    assert offs[0] == 0 and offs[-1] == 10_000 - 64 - 1
    assert np.all(np.diff(offs) >= 64)
    every = eval_offsets(1000, 64, 10**9)  # more asked than fit: tile the split
    assert np.array_equal(every, np.arange(len(every)) * 64) and every[-1] + 65 <= 1000 < every[-1] + 64 * 2 + 1
    assert len(eval_offsets(1000, 64, 10)) == 1


# --- errors ------------------------------------------------------------------------------------------


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match=r"data\.source=.*does not exist"):
        prepare_data(cfg(tmp_path, tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"data\.source=.*empty"):
        prepare_data(cfg(tmp_path, tmp_path / "empty.txt"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\x00\xff\xfe")
    with pytest.raises(DataError, match=r"empty \(1 non-UTF-8 files skipped\)"):
        prepare_data(cfg(tmp_path, tmp_path / "bin"))
    with pytest.raises(DataError, match="glob matches no files"):
        prepare_data(cfg(tmp_path, tmp_path / "*.nothing"))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        prepare_data(cfg(tmp_path, tmp_path / "latin1.txt"))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("tokenizer", "wordpiece", "data.tokenizer='wordpiece'"),
        ("val_fraction", 0.0, "data.val_fraction=0.0"),
        ("val_fraction", 1.5, "data.val_fraction=1.5"),
        ("max_bytes", 0, "data.max_bytes=0"),
        ("bpe_vocab_size", 100, "data.bpe_vocab_size=100"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, field, value, match):
    src = tmp_path / "t.txt"
    src.write_text("text\n")
    kw = {field: value, "tokenizer": "bpe"} if field == "bpe_vocab_size" else {field: value}
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        prepare_data(cfg(tmp_path, src, **kw))


def test_composed_config_is_accepted_and_unset_source_is_reported(tmp_path):
    from omegaconf import OmegaConf

    src = tmp_path / "t.txt"
    src.write_text("abc\n" * 100)
    dc = OmegaConf.structured(cfg(tmp_path, src, tokenizer="char"))  # what the Hydra app passes
    assert prepare_data(dc).meta["tokenizer"] == "char"
    dc.source = "???"  # conf/data/text.yaml leaves it to the user
    with pytest.raises(ConfigError, match=r"data\.source is not set"):
        prepare_data(dc)


@pytest.fixture
def prepared_dir(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("some text to prepare\n" * 40)
    return prepare_data(cfg(tmp_path, src)).dir


def test_truncated_token_file(prepared_dir):
    with open(prepared_dir / "train_000000.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="train_000000.bin holds 100 bytes .* corrupt or truncated"):
        open_prepared(prepared_dir)


def test_missing_meta(prepared_dir):
    (prepared_dir / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        open_prepared(prepared_dir)
    with pytest.raises(DataError, match="meta.json is missing"):
        load_tokenizer(prepared_dir)


def test_corrupt_cache_is_reported_on_reuse(tmp_path, prepared_dir):
    (prepared_dir / "val_000000.bin").write_bytes(b"")
    with pytest.raises(DataError, match="val_000000.bin holds 0 bytes"):
        prepare_data(cfg(tmp_path, tmp_path / "t.txt"))


def test_missing_tokenizer_file(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("abcabc\n" * 50)
    p = prepare_data(cfg(tmp_path, src, tokenizer="char"))
    (p.dir / "chars.json").unlink()
    with pytest.raises(DataError, match="tokenizer 'char' cannot be read"):
        open_prepared(p.dir)


def test_vocabulary_larger_than_dtype(prepared_dir):
    meta = json.loads((prepared_dir / "meta.json").read_text())
    meta["vocab_size"] = 70_000  # a uint16 shard cannot hold ids past 65,535
    (prepared_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="vocab_size=70000 does not fit dtype uint16"):
        open_prepared(prepared_dir)


def test_context_longer_than_a_split(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("x" * 1000)
    p = prepare_data(cfg(tmp_path, src, val_fraction=0.05))  # 50 val tokens
    check_context(p, 49)
    with pytest.raises(DataError, match=r"model\.context=50 is longer than the val split .*50 tokens"):
        check_context(p, 50)
    with pytest.raises(DataError, match="too short for context 50"):
        batch_offsets(len(p.val), 50, 4, 0, 0)


# --- command line ------------------------------------------------------------------------------------


def test_cli_prepares_and_prints_folder_and_meta(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("to be or not to be\n" * 30)
    rc = main([f"data.source={src}", "data.tokenizer=char", f"data.cache_dir={tmp_path / 'c'}", "val_fraction=0.2"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    folder = Path(out[0])
    meta = json.loads("\n".join(out[1:]))
    assert folder.parent == (tmp_path / "c").resolve() and meta == open_prepared(folder).meta
    assert meta["tokenizer"] == "char" and meta["val_fraction"] == 0.2


def test_cli_preset_then_overrides(tmp_path, capsys):
    rc = main(["data.max_bytes=20000", "data=stdlib", f"cache_dir={tmp_path}"])  # the preset applies first
    meta = json.loads("\n".join(capsys.readouterr().out.splitlines()[1:]))
    assert rc == 0 and meta["source"] == "stdlib" and meta["bytes"] <= 20000 and meta["max_bytes"] == 20000


@pytest.mark.parametrize(
    "args,match",
    [
        (["data=nope"], "data='nope' is not a preset; allowed: "),
        (["data.tokenizr=char"], "'data.tokenizr' is not a data setting"),
        (["data.val_fraction=lots"], "data.val_fraction='lots' is not allowed"),
        (["data.source=/does/not/exist"], "data.source='/does/not/exist' does not exist"),
        (["stdlib"], "'stdlib' is not an override"),
    ],
)
def test_cli_bad_input(capsys, args, match):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1


def test_cli_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scaling.cli.prepare", "data.source=/does/not/exist"],
        capture_output=True,
        text=True,
        env={**os.environ, "SCALING_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: data.source=") and "Traceback" not in proc.stderr


def test_read_corpus_is_deterministic(tmp_path):
    src = make_folder(tmp_path / "src")
    a, b = read_corpus(str(src), None), read_corpus(str(src), None)
    assert a.content_hash == b.content_hash and [d.path for d in a.docs] == [d.path for d in b.docs]


# --- reference data ----------------------------------------------------------------------------------


def test_tinyshakespeare_char_level_matches_nanogpt(tmp_path, shared_data):
    src = shared_data / "tinyshakespeare" / "input.txt"
    text = src.read_text()
    p = prepare_data(cfg(tmp_path, src, tokenizer="char", val_fraction=0.1))
    assert p.vocab_size == len(set(text)) == 65
    assert len(p.train) == int(len(text) * 0.9) and len(p.train) + len(p.val) == len(text)
    assert p.tokenizer.decode(np.asarray(p.val[:100]).tolist()) == text[int(len(text) * 0.9) :][:100]
