"""Loss units: fits in bits per byte (loss="bpb"), and no nats-per-token fit across tokenizers."""

import math

import numpy as np
import pytest
import yaml

from analysis import fit_parametric, load_runs
from analysis.errors import AnalysisInputError
from run_records import counts, law_loss, write_run

SHAPES = [(64, 2), (96, 3), (128, 4), (192, 4)]
TOKENS = [2e6, 4e6, 8e6, 1.6e7]


def sweep(root, tokenizer="gpt2", bytes_per_token=4.0, group="sweep"):
    """Runs whose records hold the final evaluation's sums; bpb = loss / (ln 2 x bytes per token)."""
    for w, d in SHAPES:
        for t in TOKENS:
            n = counts(w, d)["params"]["non_embedding"]
            loss = float(law_loss(n, t))
            tokens = 131_072
            extra = {"val_nats": loss * tokens, "val_bytes": int(tokens * bytes_per_token), "eval_tokens": tokens}
            extra["val_bpb"] = extra["val_nats"] / (math.log(2) * extra["val_bytes"])
            run = write_run(root, f"{group}-{tokenizer.replace(':', '_')}-{w}-{int(t)}", width=w, depth=d,
                            tokens=int(t), group=group, extra=extra)
            config = yaml.safe_load((run / "config.yaml").read_text())
            config["data"] = {"tokenizer": tokenizer, "source": "stdlib", "bpe_vocab_size": 4096}
            (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_bits_per_byte_is_an_exact_transform_of_the_sums(tmp_path):
    sweep(tmp_path)
    runs = load_runs(tmp_path, loss="bpb")
    assert np.allclose(runs["loss"], runs["val_nats"] / (math.log(2) * runs["val_bytes"]))
    assert np.allclose(runs["loss"], runs["val_loss"] / (math.log(2) * 4.0))
    assert runs.attrs["columns"]["loss"] == "val_bpb" and set(runs["tokenizer"]) == {"gpt2"}


def test_fit_in_bits_per_byte_across_tokenizers(tmp_path):
    sweep(tmp_path, "gpt2", 4.0, group="a")
    sweep(tmp_path, "byte", 1.0, group="b")
    with pytest.raises(AnalysisInputError, match=r"loss='val_loss' is nats per token .*2 tokenizers .*byte: b-byte"):
        load_runs(tmp_path)
    runs = load_runs(tmp_path, loss="bpb")
    assert len(runs) == 2 * len(SHAPES) * len(TOKENS)
    one = load_runs(tmp_path / "a", loss="bpb")
    fit = fit_parametric(one["N"], one["D"], one["loss"], grid="coarse")
    e_bpb = fit.estimates["E"] if hasattr(fit, "estimates") else fit.params["E"]
    assert e_bpb == pytest.approx(1.8 / (math.log(2) * 4.0), rel=0.05)  # the law's E, in bits per byte


def test_trained_tokenizers_differ_by_corpus_and_size(tmp_path):
    sweep(tmp_path, "bpe", 3.0, group="a")
    for run in (tmp_path / "a").iterdir():
        config = yaml.safe_load((run / "config.yaml").read_text())
        if run.name.endswith("-64-2000000"):
            config["data"]["bpe_vocab_size"] = 8192
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(AnalysisInputError, match=r"bpe:4096@stdlib.*bpe:8192@stdlib"):
        load_runs(tmp_path)
