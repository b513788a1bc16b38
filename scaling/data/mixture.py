"""Mixtures: ``data.sources`` maps a name to ``{source, weight}``; each source is prepared on its own (same
tokenizer), and the run sees one train and one validation array whose segments are the sources.

Every optimizer step's sequences are split between the sources by the largest-remainder rule
(``scaling.data.loader.step_offsets``), so each step holds exactly the configured shares; a weight of 0
makes a source evaluation only. Batches stay a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from scaling.data.loader import largest_remainder
from scaling.data.shards import TokenArray
from scaling.errors import DataError


def entries(cfg) -> list[tuple[str, Any, float]]:
    """(name, the source's own DataConfig, weight) of each source, in name order."""
    out = []
    for name in sorted(cfg.sources):
        e = cfg.sources[name]
        sub = dataclasses.replace(cfg, source=e["source"], sources={}, text_field=e.get("text_field", cfg.text_field),
                                  val_source=e.get("val_source"))
        out.append((str(name), sub, float(e.get("weight", 1.0))))
    return out


def combine(parts: list[tuple[str, float, Any]], align: str) -> dict[str, Any]:
    """One train and one validation array (segments = sources) of the prepared sources (name, weight, data)."""
    vocab = {p.vocab_size for _, _, p in parts}
    if len(vocab) > 1:
        names = ", ".join(f"{n}: {p.vocab_size}" for n, _, p in parts)
        raise DataError(f"data.sources: the sources have different vocabularies ({names}); allowed: one tokenizer")
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        arrays, segments, index, pos = [], [], [], 0
        for name, weight, p in parts:
            arr = getattr(p, split)
            pieces = arr.parts if isinstance(arr, TokenArray) else [arr]
            arrays += pieces
            files = p.doc_index.get(split) or [None] * len(pieces)
            index += files if len(files) == len(pieces) else [None] * len(pieces)
            segments.append((name, pos, pos + len(arr), weight))
            pos += len(arr)
        out[split] = TokenArray(arrays, segments=segments, doc_index=index, align=align)
    out["sources"] = [{"name": n, "weight": w, "dir": str(p.dir), "train_tokens": len(p.train),
                       "val_tokens": len(p.val), "tokenizer": p.meta["tokenizer"]} for n, w, p in parts]
    first = parts[0][2]
    out["meta"] = {**{k: first.meta[k] for k in ("format", "vocab_size", "tokenizer", "tokenizer_sha256", "doc_sep",
                                                 "bos_id", "eos_id") if k in first.meta},
                   "dtype": np.result_type(*[a.dtype for a in out["train"].parts]).name,
                   "source": "mixture", "source_kind": "mixture",
                   "train_tokens": len(out["train"]), "val_tokens": len(out["val"]),
                   "sources": {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in out["sources"]}}
    return out


def prepare_mixture(cfg, prepare_single: Callable) -> list[tuple[str, float, Any]]:
    """Each source of ``cfg.sources`` prepared (or found in the cache): (name, weight, prepared)."""
    return [(name, weight, prepare_single(sub)) for name, sub, weight in entries(cfg)]


def source_report(train: Any, batch_size: int, context: int, steps: int) -> dict[str, Any]:
    """Per source of a mixture: its weight, sequences per step, tokens consumed and epochs over its train split."""
    segments = getattr(train, "segments", None)
    if not segments:
        return {}
    weighted = [s for s in segments if s[3] > 0]
    counts = dict(zip([s[0] for s in weighted], largest_remainder([s[3] for s in weighted], batch_size)))
    report = {}
    for name, start, stop, weight in segments:
        seqs = int(counts.get(name, 0))
        tokens = seqs * context * steps
        report[name] = {"weight": weight, "sequences_per_step": seqs, "tokens": tokens,
                        "train_tokens": stop - start, "epochs": tokens / max(stop - start, 1)}
    return {"sources": report}
