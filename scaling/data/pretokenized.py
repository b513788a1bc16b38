"""Pre-tokenized sources, used as they are: llm.c / modded-nanogpt shards (a 1024-byte header, detected by
its magic), nanoGPT's raw ``train.bin`` / ``val.bin`` (uint16) and OLMo-style raw memmaps (``.npy``/``.bin``
of ``data.dtype``).

Preparation writes no tokens: the manifest points at the files (absolute paths, byte offset, count). It
scans each file once, in chunks, for ids beyond the vocabulary (an error naming the file and offset), for
its SHA-256, and for the document starts (the separator id) so document-aligned windows work.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

import numpy as np

from scaling.data.shards import HEADER_BYTES, ShardInfo, read_header
from scaling.data.sources import TOKEN_SUFFIXES, Input
from scaling.errors import DataError

SCAN_TOKENS = 1 << 24
VAL_NAME = re.compile(r"(^|[_\-.])(val|valid|validation)([_\-.]|$)")


def is_token_file(i: Input) -> bool:
    try:
        return read_header(i.path) is not None or i.path.name.lower().endswith(TOKEN_SUFFIXES)
    except DataError:
        return True  # a known magic with a bad header: a broken token file, reported when it is opened


def is_token_source(inputs: list[Input]) -> bool:
    return bool(inputs) and all(is_token_file(i) for i in inputs)


def layout(i: Input, raw_dtype: Optional[str]) -> tuple[np.dtype, int, int]:
    """(dtype, byte offset of the first token, token count) of one token file."""
    header = read_header(i.path)
    if header is not None:
        return header[0], HEADER_BYTES, header[1]
    dtype = np.dtype(raw_dtype or "uint16")
    if i.size % dtype.itemsize:
        raise DataError(f"{i.path}: {i.size} bytes is not a whole number of {dtype.name} tokens; set data.dtype "
                        "(uint16 for nanoGPT's .bin, uint32 for OLMo-style memmaps of large vocabularies)")
    return dtype, 0, i.size // dtype.itemsize


def scan(i: Input, dtype: np.dtype, offset: int, count: int, vocab: int, bos: Optional[int],
         index_path: Optional[Path]) -> tuple[str, int]:
    """(sha256 of the token bytes, documents) of one file; DataError at the first id beyond ``vocab``."""
    h, docs, starts = hashlib.sha256(), 0, []
    with open(i.path, "rb") as f:
        f.seek(offset)
        done = 0
        while done < count:
            chunk = np.fromfile(f, dtype=dtype, count=min(SCAN_TOKENS, count - done))
            if len(chunk) == 0:
                raise DataError(f"{i.path}: truncated after {done} of {count} tokens")
            top = int(chunk.max())
            if top >= vocab:
                at = done + int(np.argmax(chunk >= vocab))
                raise DataError(f"{i.path}: token id {top if chunk[at - done] == top else int(chunk[at - done])} at "
                                f"token offset {at} is beyond the vocabulary of {vocab} ids (data.tokenizer / "
                                "data.vocab_size); allowed: ids below it")
            h.update(chunk.tobytes())
            if bos is not None:
                found = np.flatnonzero(chunk == bos) + done
                starts.append(found)
                docs += len(found)
            done += len(chunk)
    if index_path is not None:
        np.save(index_path, np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64))
    return h.hexdigest(), docs


def token_shards(work: Path, inputs: list[Input], val_inputs: list[Input], cfg, vocab: int,
                 bos: Optional[int]) -> tuple[np.dtype, dict]:
    """The manifest entries (ShardInfo by split) of the token files; held out: ``val_inputs`` (data.val_source),
    else files named like ``*_val_*`` / ``val.bin``, else the last ``val_fraction`` of the tokens."""
    entries, dtypes = [], set()
    named_val = not val_inputs and any(VAL_NAME.search(i.path.stem) for i in inputs)
    for i in inputs + val_inputs:
        dtype, offset, count = layout(i, cfg.dtype)
        dtypes.add(dtype)
        split = "val" if i in val_inputs or (named_val and VAL_NAME.search(i.path.stem)) else "train"
        entries.append((i, dtype, offset, count, split))
    if len(dtypes) > 1:
        raise DataError(f"data.source={cfg.source!r}: token files of several dtypes ({', '.join(sorted(d.name for d in dtypes))}); "
                        "allowed: one dtype for all")
    dtype = dtypes.pop()
    if vocab > np.iinfo(dtype).max + 1:
        raise DataError(f"data.source={cfg.source!r}: a vocabulary of {vocab} ids does not fit the files' dtype "
                        f"{dtype.name}; allowed: up to {np.iinfo(dtype).max + 1} ids (or uint32 files)")
    shards: dict = {"train": [], "val": []}
    docs = {"train": 0, "val": 0}
    for k, (i, dt, offset, count, split) in enumerate(entries):
        index = work / f"tokens_{k:06d}.docs.npy" if bos is not None else None
        sha, n_docs = scan(i, dt, offset, count, vocab, bos, index)
        shards[split].append(ShardInfo(str(i.path), split, count, 0, sha, [docs[split], docs[split] + n_docs],
                                       offset, index.name if index else None))
        docs[split] += n_docs
    if not shards["val"]:
        shards = _position_split(shards["train"], float(cfg.val_fraction), dtype)
    if not shards["train"]:
        raise DataError(f"data.source={cfg.source!r}: every token file is held out (named *val*); add training "
                        "files or name the held-out ones in data.val_source")
    return dtype, shards


def _position_split(train: list[ShardInfo], val_fraction: float, dtype: np.dtype) -> dict:
    """No held-out files: the last ``val_fraction`` of the tokens (cut inside a file where needed)."""
    total = sum(s.tokens for s in train)
    cut, out, pos = int(total * (1 - val_fraction)), {"train": [], "val": []}, 0
    for s in train:
        lo, hi = pos, pos + s.tokens
        if hi <= cut:
            out["train"].append(s)
        elif lo >= cut:
            out["val"].append(ShardInfo(**{**s.as_dict(), "split": "val", "index": None}))
        else:
            head, whole = cut - lo, s.sha256
            out["train"].append(ShardInfo(**{**s.as_dict(), "tokens": head, "sha256": "", "index": None,
                                             "part_of": whole}))
            out["val"].append(ShardInfo(**{**s.as_dict(), "split": "val", "tokens": s.tokens - head, "sha256": "",
                                           "offset": s.offset + head * dtype.itemsize, "index": None,
                                           "part_of": whole}))
        pos = hi
    return out


class IdsOnly:
    """The tokenizer of pre-tokenized data without a named tokenizer: ids only (``data.vocab_size``)."""

    name = "none"
    bos_id = eos_id = None
    sha256 = "none"

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)

    def decode(self, ids) -> str:
        raise DataError("this data has no tokenizer (pre-tokenized with data.vocab_size); set data.tokenizer to "
                        "the one the files were made with to decode them")

    def save(self, directory: Path) -> None:
        (Path(directory) / "vocab_size.txt").write_text(f"{self.vocab_size}\n")
