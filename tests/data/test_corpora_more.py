"""Real corpora, the rest: a local Hugging Face dataset folder as a source, resume refused on changed data,
mixtures set on the command line without '+', and a vocabulary overflow named by file and offset."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from scaling.config import DataConfig
from scaling.data.prepare import prepare_data
from scaling.errors import ConfigError, DataError
from scaling.run.checkpoint import DATA_FILE, check_resume_data, list_checkpoints
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

DOCS = [f"Note {i}: the kettle sang while {i % 9} owls argued about the moon.\n" for i in range(300)]
RUN = ["model=tiny", "model.context=32", "train.batch_size=4", "train.tokens=2048", "train.eval_every=0",
       "train.eval_tokens=512", "train.final_eval_tokens=512", "train.threads=1", "logger=none",
       "data.max_bytes=null"]


def train(tmp_path: Path, *overrides: str) -> tuple[dict, Path]:
    cfg = compose_run_config([*RUN, f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    run_dir = tmp_path / "runs" / "run"
    return run_training(cfg, run_dir, record_user_errors=False), run_dir


def interrupt(run_dir: Path) -> None:
    """A run killed after its last checkpoint: the checkpoints stay, the result is gone."""
    assert list_checkpoints(run_dir)
    (run_dir / "result.json").unlink()


# ---------------------------------------------------------------------------------------------------
# a local Hugging Face dataset folder


def hf_datasets():
    return pytest.importorskip("datasets", reason="the datasets library is not installed (pip install '.[hf]')")


def test_a_saved_dataset_dict_gives_its_train_and_validation_splits(tmp_path):
    datasets = hf_datasets()
    val_docs = [f"Held out {i}: a quiet heron.\n" for i in range(40)]
    splits = {"train": DOCS, "validation": val_docs, "test": ["never read\n"] * 5}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"body": v, "id": list(range(len(v)))})
                          for k, v in splits.items()}).save_to_disk(str(tmp_path / "dd"))
    p = prepare_data(DataConfig(source=str(tmp_path / "dd"), text_field="body", cache_dir=str(tmp_path / "c"),
                                max_bytes=None))
    assert p.tokenizer.decode(np.asarray(p.train).tolist()) == "".join(DOCS)  # in order, all of train
    assert p.tokenizer.decode(np.asarray(p.val).tolist()) == "".join(val_docs)  # the validation split, not test
    assert p.meta["source_kind"] == "hf" and p.meta["val_source"] == str((tmp_path / "dd" / "validation").resolve())
    with pytest.raises(DataError, match=r"dd/train/data-00000-of-00001\.arrow: no column data\.text_field='text'; "
                                        r"columns: body, id"):
        prepare_data(DataConfig(source=str(tmp_path / "dd"), cache_dir=str(tmp_path / "c"), max_bytes=None))


def test_a_saved_dataset_is_held_out_by_document_and_trains(tmp_path):
    datasets = hf_datasets()
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "ds"), max_shard_size="4KB")
    folder = prepare_data(DataConfig(source=str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"), max_bytes=None))
    files = prepare_data(DataConfig(source=str(tmp_path / "ds" / "*.arrow"), cache_dir=str(tmp_path / "cache"),
                                    max_bytes=None))
    assert folder.meta["files"] > 1 and folder.meta["train_docs"] + folder.meta["val_docs"] == len(DOCS)
    assert 0 < folder.meta["val_docs"] < 0.15 * len(DOCS)
    assert folder.fingerprint == files.fingerprint  # the loose arrow files read as the folder is
    shutil.copytree(tmp_path / "ds", tmp_path / "around" / "ds")
    around = prepare_data(DataConfig(source=str(tmp_path / "around"), cache_dir=str(tmp_path / "cache"), max_bytes=None))
    assert around.meta["train_docs"] + around.meta["val_docs"] == len(DOCS)  # its JSON files are no documents
    result, run_dir = train(tmp_path, f"data.source={tmp_path / 'ds'}")
    assert result["status"] == "completed" and result["val_bpb"] > 0
    assert json.loads((run_dir / DATA_FILE).read_text())["fingerprint"] == folder.fingerprint


def test_without_the_datasets_library_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(DataError, match=r"^data\.source='.*ds' is a Hugging Face dataset: reading it needs the "
                                        r"datasets library; install the extra: pip install '\.\[hf\]'"):
        prepare_data(DataConfig(source=str(tmp_path / "ds"), cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------------------------------------------
# resume checks the data's fingerprint


def test_resume_refuses_changed_data_and_accepts_the_same(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(DOCS))
    first, run_dir = train(tmp_path, f"data.source={corpus}")
    recorded = json.loads((run_dir / DATA_FILE).read_text())
    assert first["status"] == "completed" and len(recorded["fingerprint"]) == 64
    interrupt(run_dir)
    again, _ = train(tmp_path, f"data.source={corpus}")  # the same data: resumes and completes
    assert again["status"] == "completed" and again["tokens"] == first["tokens"]

    interrupt(run_dir)
    corpus.write_text("".join(DOCS).replace("owls", "crows"))  # same path, same settings, other text
    with pytest.raises(DataError) as err:
        train(tmp_path, f"data.source={corpus}")
    msg = str(err.value)
    assert "\n" not in msg and str(run_dir) in msg and recorded["fingerprint"][:16] in msg
    assert "the corpus changed" in msg and "delete" in msg
    assert not (run_dir / "result.json").exists() and list_checkpoints(run_dir)  # nothing lost


def test_resume_names_what_changed(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(DOCS))
    _, run_dir = train(tmp_path, f"data.source={corpus}")
    interrupt(run_dir)
    record = json.loads((run_dir / DATA_FILE).read_text())  # as if it had been trained on the char tokenizer
    (run_dir / DATA_FILE).write_text(json.dumps({**record, "tokenizer": "char", "fingerprint": "0" * 64}))
    with pytest.raises(DataError, match=r"fingerprint 0{16}, but the data is now .*tokenizer 'char' -> 'byte'"):
        train(tmp_path, f"data.source={corpus}")


def test_a_fresh_start_records_the_data_it_trains_on(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(DOCS))
    _, run_dir = train(tmp_path, f"data.source={corpus}")
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "result.json").unlink()
    corpus.write_text("".join(DOCS[:200]))  # no checkpoint: nothing to resume, so other data is fine
    result, _ = train(tmp_path, f"data.source={corpus}")
    assert result["status"] == "completed"
    assert json.loads((run_dir / DATA_FILE).read_text())["train_tokens"] < 0.8 * len("".join(DOCS))


def test_a_branch_refuses_data_other_than_its_trunks(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(DOCS))
    trunk_data = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "c"), max_bytes=None))
    trunk, branch = tmp_path / "trunk", tmp_path / "branch"
    check_resume_data(trunk, trunk_data)
    (trunk / "checkpoints").mkdir()
    (trunk / "checkpoints" / "step_00000010.pt").write_bytes(b"")  # the trunk has a checkpoint to branch from
    corpus.write_text("".join(DOCS[::-1]))
    other = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "c"), max_bytes=None))
    with pytest.raises(DataError, match=rf"^{trunk}: its checkpoints .* \(the corpus changed\); restore that data, or "
                                        rf"train a new trunk: the branch {branch} continues this one$"):
        check_resume_data(branch, other, trunk=trunk)
    check_resume_data(branch, trunk_data, trunk=trunk)  # the trunk's own data: the branch starts
    assert json.loads((branch / DATA_FILE).read_text())["fingerprint"] == trunk_data.fingerprint


def test_the_fingerprint_follows_the_tokens_not_the_cache(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(DOCS))
    a = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "a"), max_bytes=None))
    b = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "b"), max_bytes=None, workers=2))
    c = prepare_data(DataConfig(source=str(corpus), cache_dir=str(tmp_path / "a"), max_bytes=None, val_fraction=0.1))
    assert a.dir != b.dir and a.fingerprint == b.fingerprint != c.fingerprint
    ids = tmp_path / "train.bin"  # nanoGPT's raw ids, no validation file: cut by position
    (np.arange(20000) % 250).astype(np.uint16).tofile(ids)
    raw = DataConfig(source=str(ids), vocab_size=256, cache_dir=str(tmp_path / "a"), max_bytes=None)
    before = prepare_data(raw)
    os.utime(ids, (1e9, 1e9))  # touched, not edited: prepared again (a stat fingerprint), the same tokens
    after = prepare_data(raw)
    assert after.dir != before.dir and after.fingerprint == before.fingerprint
    (np.arange(20000) % 249).astype(np.uint16).tofile(ids)
    assert prepare_data(raw).fingerprint != before.fingerprint


# ---------------------------------------------------------------------------------------------------
# mixtures on the command line


def test_sources_is_a_schema_field_set_without_plus(tmp_path):
    override = "data.sources={a:{source:'/x/a.jsonl',weight:3},b:{source:'/x/b.jsonl',weight:0}}"
    cfg = compose_run_config(["model=tiny", override])
    assert cfg.data.sources.a.weight == 3 and cfg.data.sources.b.source == "/x/b.jsonl"
    assert compose_run_config(["model=tiny"]).data.sources is None
    assert compose_run_config(["model=tiny", "+" + override]).data.sources.a.weight == 3  # the '+' form still works
    with pytest.raises(ConfigError, match=r"data\.sources='x' is not allowed"):
        DataConfig(sources="x", tokenizer="byte").validate()


def test_scaling_prepare_reads_a_mixture_in_hydra_syntax(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("".join(DOCS[:150] if name == "a" else DOCS[150:]))
    mix = f"data.sources={{a:{{source:'{tmp_path / 'a.txt'}',weight:3}},b:{{source:'{tmp_path / 'b.txt'}',weight:1}}}}"
    out = run_cli("scaling-prepare", mix, f"data.cache_dir={tmp_path / 'cache'}", "data.max_bytes=null", check=True)
    meta = json.loads(out.stdout.split("\n", 1)[1])
    assert set(meta["sources"]) == {"a", "b"} and meta["sources"]["a"]["weight"] == 3
    bad = run_cli("scaling-prepare", "data.sources={a:{source:")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: data.sources=")


# ---------------------------------------------------------------------------------------------------
# token files: an id beyond the vocabulary


def test_an_id_beyond_the_vocabulary_names_the_file_and_offset(tmp_path):
    tokens = np.arange(5000, dtype=np.uint16) % 300
    tokens[4321] = 999
    path = tmp_path / "ids.bin"
    tokens.tofile(path)
    with pytest.raises(DataError, match=rf"{path}: token id 999 at token offset 4321 is beyond the vocabulary of 300"):
        prepare_data(DataConfig(source=str(path), vocab_size=300, cache_dir=str(tmp_path / "c"), max_bytes=None))
