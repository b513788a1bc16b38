"""One preparation task, decoded and tokenized: what a worker process does (``run_task``).

A task (``scaling.data.sources.iter_tasks``) becomes its documents' texts (text files, JSON lines,
parquet rows), each with its split; the tokenizer encodes them, and the document separators of
``data.doc_sep`` are added. The result depends on the task alone, so any number of workers, reassembled
in task order, gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from scaling.data.corpus import _decode

_STATE: dict = {}  # per process: tokenizer, separators, val_fraction, the shards' token dtype


@dataclass
class Encoded:
    tokens: np.ndarray  # (n_tokens,) in the shards' dtype (uint16 or uint32), separators included
    lengths: np.ndarray  # (n_docs,) int64 tokens per document
    nbytes: np.ndarray  # (n_docs,) int64 UTF-8 bytes per document
    val: np.ndarray  # (n_docs,) bool, held out
    rel: str = ""  # the file of the task's last document
    skipped: list = field(default_factory=list)  # text files that are not UTF-8
    bad: dict = field(default_factory=dict)  # rel -> [count, first line, what]


def separators(tokenizer, doc_sep: str) -> tuple[Optional[int], Optional[int]]:
    """(id prepended, id appended) to every document under ``doc_sep``."""
    bos = tokenizer.bos_id if doc_sep in ("bos", "both") else None
    eos = tokenizer.eos_id if doc_sep in ("eos", "both") else None
    return bos, eos


def init_worker(tokenizer_dir: str, tokenizer_name: str, doc_sep: str, val_fraction: float,
                dtype: str = "uint32") -> None:
    from scaling.data.tokenizer import tokenizer_from_dir

    setup(tokenizer_from_dir(tokenizer_dir, tokenizer_name), doc_sep, val_fraction, dtype)


def setup(tokenizer, doc_sep: str, val_fraction: float, dtype: str = "uint32") -> None:
    """This process's tokenizer, separators, held-out share and the dtype its tokens are returned in (the
    shards' own, so the worker converts them and half the bytes travel back for a uint16 vocabulary)."""
    _STATE.update(tok=tokenizer, sep=separators(tokenizer, doc_sep), val_fraction=val_fraction,
                  dtype=np.dtype(dtype))


def held_out(rel: str, index: int, val_fraction: float) -> bool:
    """The document-hash rule: a document is held out when the hash of (file, index) falls in the share."""
    digest = hashlib.blake2b(f"{rel}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


def decode_task(task: tuple, val_fraction: float) -> tuple[list[str], list[bool], list[str], dict, str]:
    """(texts, held out?, skipped files, bad lines, last file) of one task; empty documents left out."""
    texts, val, skipped, bad = [], [], [], {}
    kind = task[0]
    if kind == "split-text":
        _, rel, train, held = task
        pairs = [(train, False), (held, True)]
        return [t for t, _ in pairs if t], [v for t, v in pairs if t], [], {}, rel
    if kind == "text":
        rel = ""
        for rel, split, raw in task[1]:
            text = _decode(raw)
            if text is None:
                skipped.append(rel)
            elif text:
                texts.append(text)
                val.append(split == "val" or (split == "hash" and held_out(rel, 0, val_fraction)))
        return texts, val, skipped, bad, rel
    if kind == "rows":
        _, rel, first, rows, mode = task
        for k, text in enumerate(rows):
            if not isinstance(text, str):
                _bad(bad, rel, first + k, f"row holds {type(text).__name__}, not text")
            elif text:
                texts.append(text)
                val.append(mode == "docs" and held_out(rel, first + k, val_fraction))
        return texts, val, skipped, bad, rel
    _, rel, first, chunk, text_field, mode = task
    for k, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            _bad(bad, rel, first + k, "not JSON")
            continue
        text = obj.get(text_field) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            _bad(bad, rel, first + k, f"lacks the text field {text_field!r}")
        elif text:
            texts.append(text)
            val.append(mode == "docs" and held_out(rel, first + k, val_fraction))
    return texts, val, skipped, bad, rel


def _bad(bad: dict, rel: str, line: int, what: str) -> None:
    entry = bad.setdefault(rel, [0, line, what])
    entry[0] += 1


def run_task(task: tuple) -> Encoded:
    """Decode and tokenize one task with this process's tokenizer (``init_worker`` / ``setup``)."""
    tok, (bos, eos), frac, dtype = _STATE["tok"], _STATE["sep"], _STATE["val_fraction"], _STATE["dtype"]
    texts, val, skipped, bad, rel = decode_task(task, frac)
    ids = tok.encode_many(texts) if hasattr(tok, "encode_many") else [tok.encode_array(t) for t in texts]
    n_sep = (bos is not None) + (eos is not None)
    lengths = np.fromiter((len(a) + n_sep for a in ids), dtype=np.int64, count=len(ids))
    if n_sep:
        b = [np.array([bos], dtype=np.uint32)] if bos is not None else []
        e = [np.array([eos], dtype=np.uint32)] if eos is not None else []
        ids = [piece for a in ids for piece in (*b, a, *e)]
    tokens = np.concatenate(ids, dtype=dtype, casting="unsafe") if ids else np.zeros(0, dtype=dtype)
    nbytes = np.fromiter((len(t.encode("utf-8", "surrogatepass")) for t in texts), dtype=np.int64, count=len(texts))
    return Encoded(tokens, lengths, nbytes, np.asarray(val, dtype=bool), rel, skipped, bad)
