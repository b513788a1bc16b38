"""Mixtures of sources: exact shares in every step, batches a pure function of (seed, step), per-source
evaluation and accounting in a real run, and text sampled back from it."""

import json

import numpy as np
import pytest
import torch

from helpers import TINY, read_metrics, read_result, run_cli, run_dirs
from scaling.config import DataConfig
from scaling.data.loader import largest_remainder, step_offsets
from scaling.data.prefetch import BatchPrefetcher
from scaling.data.prepare import prepare_data
from scaling.errors import ConfigError

PROSE = [f"Paragraph {i}. The river ran past the mill and the miller counted {i} sacks of grain.\n" for i in range(300)]
CODE = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300)]


def corpus(tmp_path):
    import zstandard

    paths = {}
    for name, docs in (("prose", PROSE), ("code", CODE)):
        raw = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
        paths[name] = tmp_path / f"{name}.jsonl.zst"
        paths[name].write_bytes(zstandard.ZstdCompressor().compress(raw))
    return paths


def mixture(tmp_path, weights=(3, 1, 0)):
    paths = corpus(tmp_path)
    sources = {"prose": {"source": str(paths["prose"]), "weight": weights[0]},
               "code": {"source": str(paths["code"]), "weight": weights[1]},
               "held": {"source": str(paths["prose"]), "weight": weights[2]}}
    return DataConfig(sources=sources, cache_dir=str(tmp_path / "cache"), max_bytes=None)


def test_largest_remainder_gives_exact_shares():
    assert largest_remainder([0.7, 0.3], 16).tolist() == [11, 5]
    assert largest_remainder([1, 1, 1], 16).tolist() == [6, 5, 5]
    assert largest_remainder([3, 1, 0], 8).tolist() == [6, 2, 0]
    for w in ([0.5, 0.25, 0.25], [1, 2, 3, 4], [0.01, 0.99]):
        for total in (1, 7, 64):
            counts = largest_remainder(w, total)
            assert counts.sum() == total and np.all(np.abs(counts - np.array(w) / sum(w) * total) < 1)


def test_every_step_holds_the_shares_and_resumes_identically(tmp_path):
    p = prepare_data(mixture(tmp_path))
    segments = {name: (start, stop) for name, start, stop, _ in p.train.segments}
    for step in range(20):
        offsets = step_offsets(p.train, 32, 8, seed=1, step=step)
        inside = {n: int(((offsets >= a) & (offsets + 33 <= b)).sum()) for n, (a, b) in segments.items()}
        assert inside["prose"] == 6 and inside["code"] == 2 and inside["held"] == 0  # 3:1 of 8, every step
    full = list(BatchPrefetcher(p.train, 32, 8, 1, 0, 12))
    resumed = list(BatchPrefetcher(p.train, 32, 8, 1, 7, 12))
    for (s, a), (t, b) in zip(full[7:], resumed):
        assert s == t and all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert {s["name"] for s in p.sources} == {"prose", "code", "held"}


@pytest.mark.parametrize("sources,words", [
    ({"a": {"source": "x", "weight": -1}}, r"data\.sources\.a\.weight=-1"),
    ({"a": {"source": "x", "weight": 0}, "b": {"source": "y", "weight": 0}}, "weights are all zero"),
    ({"a": {"src": "x"}}, r"data\.sources\.a=.* is not allowed"),
])
def test_bad_mixtures(tmp_path, sources, words):
    with pytest.raises(ConfigError, match=words):
        prepare_data(DataConfig(sources=sources, cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="each source would train its own vocabulary"):
        prepare_data(DataConfig(sources={"a": {"source": "x", "weight": 1}}, tokenizer="bpe"))


@pytest.mark.slow
def test_mixture_run_reports_sources_and_samples_text(tmp_path):
    paths = corpus(tmp_path)
    mix = (f"data.sources={{prose:{{source:'{paths['prose']}',weight:3}},code:{{source:'{paths['code']}',weight:1}},"
           f"held:{{source:'{paths['prose']}',weight:0}}}}")
    run_cli("scaling-train", *TINY, f"runs_dir={tmp_path / 'runs'}", mix, "data.max_bytes=null",
            "train.tokens=8192", check=True)
    (run_dir,) = run_dirs(tmp_path / "runs")
    result = read_result(run_dir)
    src = result["sources"]
    assert src["prose"]["sequences_per_step"] == 6 and src["code"]["sequences_per_step"] == 2
    assert src["held"]["tokens"] == 0 and src["prose"]["tokens"] == 3 * src["code"]["tokens"]
    assert src["code"]["epochs"] == pytest.approx(src["code"]["tokens"] / src["code"]["train_tokens"])
    last = read_metrics(run_dir)[-1]
    for name in ("prose", "code", "held"):
        assert last[f"val/{name}/bpb"] > 0 and last[f"val/{name}/tokens"] > 0
    assert last["val/nats"] == pytest.approx(sum(last[f"val/{n}/nats"] for n in ("prose", "code", "held")))
    out = run_cli("scaling-sample", str(run_dir), "--prompt", "def f", "--tokens", "20", check=True)
    assert out.stdout.startswith("def f") and len(out.stdout) > 10
