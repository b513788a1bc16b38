"""Fits on the document-level validation (train.eval_documents): the doc_* columns of the loaded table,
loss="doc_bpb" / "doc_loss" (and scaling-fit --loss), the tokenizer rule, and one line naming the runs
trained without it."""

import json
import math

import numpy as np
import pytest
import yaml

from analysis import fit_parametric, load_runs
from analysis.cli import main
from analysis.errors import AnalysisInputError
from run_records import counts, law_loss, write_run

SHAPES = [(64, 2), (96, 3), (128, 4), (192, 4)]
TOKENS = [2e6, 4e6, 8e6, 1.6e7]
DOC_TOKENS, BYTES_PER_TOKEN = 40_000, 4.0


def document_sums(loss: float, bytes_per_token: float = BYTES_PER_TOKEN) -> dict:
    """The doc_* fields of a record whose documents score ``loss`` nats/token (0.05 above the windows')."""
    nats = (loss + 0.05) * DOC_TOKENS
    nbytes = int(DOC_TOKENS * bytes_per_token)
    return {"doc_nats": nats, "doc_tokens": DOC_TOKENS, "doc_bytes": nbytes, "doc_loss": nats / DOC_TOKENS,
            "doc_bpb": nats / (math.log(2) * nbytes), "doc_ppl": math.exp(nats / DOC_TOKENS), "doc_documents": 12}


def sweep(root, *, group="sweep", tokenizer="gpt2", bytes_per_token=BYTES_PER_TOKEN, without=()):
    """A sweep of records with document sums, except the runs named in ``without``."""
    for w, d in SHAPES:
        for t in TOKENS:
            run_id = f"{group}-{w}-{int(t)}"
            loss = float(law_loss(counts(w, d)["params"]["non_embedding"], t))
            extra = {} if run_id in without else document_sums(loss, bytes_per_token)
            run = write_run(root, run_id, width=w, depth=d, tokens=int(t), group=group, extra=extra)
            config = yaml.safe_load((run / "config.yaml").read_text())
            config["data"] = {"tokenizer": tokenizer, "source": "stdlib", "bpe_vocab_size": 4096}
            (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_the_loaded_table_carries_the_document_sums_and_nan_where_a_run_has_none(tmp_path):
    sweep(tmp_path, without=("sweep-64-2000000",))
    runs = load_runs(tmp_path).set_index("run_id")
    for key in ("doc_loss", "doc_nats", "doc_tokens", "doc_bytes", "doc_bpb", "doc_ppl", "doc_documents"):
        assert key in runs.columns, key
        assert np.isnan(runs.at["sweep-64-2000000", key]), key
    assert runs.at["sweep-96-4000000", "doc_tokens"] == DOC_TOKENS
    assert runs.at["sweep-96-4000000", "doc_loss"] == pytest.approx(runs.at["sweep-96-4000000", "val_loss"] + 0.05)


def test_fit_in_document_bits_per_byte(tmp_path):
    sweep(tmp_path)
    runs = load_runs(tmp_path, loss="doc_bpb")
    assert runs.attrs["columns"]["loss"] == "doc_bpb"
    assert np.allclose(runs["loss"], runs["doc_nats"] / (math.log(2) * runs["doc_bytes"]))
    fit = fit_parametric(runs["N"], runs["D"], runs["loss"], grid="coarse")
    assert fit.estimates["E"] == pytest.approx((1.8 + 0.05) / (math.log(2) * BYTES_PER_TOKEN), rel=0.05)
    per_token = load_runs(tmp_path, loss="doc_loss")
    assert np.allclose(per_token["loss"], per_token["val_loss"] + 0.05)


def test_document_nats_per_token_are_not_mixed_across_tokenizers(tmp_path):
    sweep(tmp_path, group="a", tokenizer="gpt2", bytes_per_token=4.0)
    sweep(tmp_path, group="b", tokenizer="byte", bytes_per_token=1.0)
    with pytest.raises(AnalysisInputError, match=r"^loss='doc_loss' is nats per token and these runs use 2 "
                                                 r"tokenizers .*byte: b-.*; fit in bits per byte \(loss='doc_bpb'\)"):
        load_runs(tmp_path, loss="doc_loss")
    assert len(load_runs(tmp_path, loss="doc_bpb")) == 2 * len(SHAPES) * len(TOKENS)


@pytest.mark.parametrize("loss", ["doc_bpb", "doc_loss"])
def test_a_run_without_document_sums_is_one_line_naming_it(tmp_path, loss):
    sweep(tmp_path, without=("sweep-64-2000000", "sweep-192-16000000"))
    with pytest.raises(AnalysisInputError) as err:
        load_runs(tmp_path, loss=loss)
    message = str(err.value)
    assert message.startswith(f"loss={loss!r}: 2 of 16 completed runs have no {loss} (sweep-192-16000000, "
                              "sweep-64-2000000): trained without train.eval_documents")
    assert "\n" not in message
    assert len(load_runs(tmp_path)) == 16  # the window evaluation still loads every run


def test_scaling_fit_takes_loss_doc_bpb(tmp_path, capsys):
    sweep(tmp_path)
    assert main([str(tmp_path), "--loss", "doc_bpb", "--approach", "parametric", "--grid", "coarse", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["parametric"]
    assert fit["estimates"]["E"] == pytest.approx((1.8 + 0.05) / (math.log(2) * BYTES_PER_TOKEN), rel=0.05)
    (tmp_path / "sweep" / "sweep-64-2000000" / "result.json").write_text(json.dumps(
        {k: v for k, v in json.loads((tmp_path / "sweep" / "sweep-64-2000000" / "result.json").read_text()).items()
         if not k.startswith("doc_")}))
    assert main([str(tmp_path), "--loss", "doc_bpb", "--approach", "parametric", "--grid", "coarse"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: loss='doc_bpb': 1 of 16 completed runs have no doc_bpb (sweep-64-2000000)")
    assert err.count("\n") == 1


@pytest.fixture
def gpt2(shared_data, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_data / "tokenizers"))
    monkeypatch.setenv("SCALING_OFFLINE", "1")


def test_a_trained_run_with_eval_documents_is_fitted_on_its_document_sums(tmp_path, gpt2):
    from scaling.run.training import run_training
    from scaling.sweep.expand import compose_run_config

    rng = np.random.default_rng(0)
    words = "amber birch cedar delta ember fjord grove heron inlet juniper kestrel lagoon meadow".split()
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, size=int(rng.integers(1, 60))))})
                              + "\n" for _ in range(200)))
    cfg = compose_run_config(["model=tiny", "model.context=32", "train.batch_size=4", "train.tokens=1024",
                              "train.eval_every=0", "train.final_eval_tokens=256", "train.threads=1", "logger=none",
                              "data.tokenizer=gpt2", "data.max_bytes=null", "data.val_fraction=0.3",
                              f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}",
                              "train.eval_documents=12"])
    result = run_training(cfg, tmp_path / "runs" / "g" / "run", record_user_errors=False)
    [row] = load_runs(tmp_path / "runs", loss="doc_bpb").to_dict("records")
    assert row["loss"] == result["doc_bpb"] and row["doc_documents"] == 12
    assert {k: row[k] for k in result if k.startswith("doc_")} == {k: v for k, v in result.items() if k.startswith("doc_")}
    assert load_runs(tmp_path / "runs", loss="doc_loss")["loss"].tolist() == [result["doc_loss"]]
