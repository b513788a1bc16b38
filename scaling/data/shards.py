"""Token shards in the llm.c / modded-nanogpt format, and a virtual array over many of them.

A shard is a 256 x int32 header (1024 bytes) followed by the tokens: magic 20240520 with version 1 holds
uint16 tokens, magic 20240801 with version 7 holds uint32 tokens; header[2] is the token count. nanoGPT's
``train.bin`` and OLMo-style memmaps are raw arrays without a header (dtype given by the user).

``ShardWriter`` streams the tokens of one split into shards of at most ``shard_tokens`` tokens, with a
SHA-256, a UTF-8 byte count and a document-start index per shard. ``TokenArray`` views a split's shards
as one read-only token array (``len``, integer-array and slice indexing), so the (seed, step) loader
works on it unchanged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from scaling.errors import DataError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
FORMATS = {20240520: (1, np.dtype(np.uint16)), 20240801: (7, np.dtype(np.uint32))}  # magic -> (version, dtype)
MAGIC_OF = {np.dtype(np.uint16): 20240520, np.dtype(np.uint32): 20240801}


def shard_dtype(vocab_size: int) -> np.dtype:
    """Token dtype of the shards: uint16 up to 65,536 ids (llm.c version 1), else uint32 (version 7)."""
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} tokens is larger than the largest token dtype (uint32) allows")


def make_header(dtype: np.dtype, n_tokens: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    magic = MAGIC_OF[np.dtype(dtype)]
    header[0], header[1] = magic, FORMATS[magic][0]
    header[2] = n_tokens if n_tokens < 2**31 else 0
    return header.tobytes()


def read_header(path: Path) -> Optional[tuple[np.dtype, int]]:
    """(dtype, token count) of an llm.c shard; None when the file does not start with a known magic.
    DataError for a known magic with a wrong version or a count that does not match the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < 8:
        return None
    magic, version = (int(v) for v in np.frombuffer(head[:8], dtype=np.int32))
    if magic not in FORMATS:
        return None
    want_version, dtype = FORMATS[magic]
    if version != want_version:
        raise DataError(f"{path}: header version={version} for magic {magic}; allowed: {want_version} "
                        "(llm.c: 20240520 v1 uint16, 20240801 v7 uint32)")
    if len(head) < HEADER_BYTES:
        raise DataError(f"{path}: truncated header ({len(head)} of {HEADER_BYTES} bytes)")
    count = int(np.frombuffer(head[8:12], dtype=np.int32)[0])
    body = size - HEADER_BYTES
    if count < 0 or body != count * dtype.itemsize:
        raise DataError(f"{path}: header count={count} tokens ({count * dtype.itemsize} bytes) but the file holds "
                        f"{body} bytes after the header; the shard is truncated or its header is wrong")
    return dtype, count


def open_tokens(path: Path, dtype: np.dtype, offset: int, count: int, exact: bool = True) -> np.memmap:
    """A read-only memmap of ``count`` tokens at byte ``offset`` of ``path`` (DataError when it cannot be);
    ``exact``: the file holds nothing else (not so for a part of a pre-tokenized file)."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"shard {path} cannot be read ({e.strerror}); prepare the data again") from None
    want = offset + count * dtype.itemsize
    if (size != want if exact else size < want) or count <= 0:
        raise DataError(f"shard {path} holds {size} bytes but the manifest says {count} {dtype.name} tokens "
                        f"({want} bytes): the file is corrupt or truncated")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


@dataclass
class ShardInfo:
    file: str  # name inside the prepared folder, or an absolute path (pre-tokenized sources)
    split: str
    tokens: int
    bytes: int
    sha256: str
    docs: list[int]  # [first, end) global document numbers of documents starting in the shard
    offset: int = HEADER_BYTES  # byte offset of the first token
    index: Optional[str] = None  # the document-start index (.npy of int64 offsets inside the shard)
    part_of: Optional[str] = None  # a part of a pre-tokenized file (sha256 ""): the whole file's sha256

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "part_of" or v is not None}


@dataclass
class ShardWriter:
    """Writes one split's tokens into ``<split>_NNNNNN.bin`` shards in ``directory``."""

    directory: Path
    split: str
    dtype: np.dtype
    shard_tokens: int
    shards: list[ShardInfo] = field(default_factory=list)
    docs: int = 0  # documents started so far (global numbering within the split)
    _f: Optional[object] = None
    _hash: Optional[object] = None
    _n: int = 0
    _bytes: int = 0
    _starts: list[np.ndarray] = field(default_factory=list)
    _first_doc: int = 0

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards) + self._n

    def add(self, tokens: np.ndarray, doc_lengths: np.ndarray, doc_bytes: np.ndarray) -> bool:
        """Append whole documents (their tokens, token counts and UTF-8 byte counts); True when a shard
        was completed (a resumable point once the caller has saved its own position)."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        starts = np.concatenate([[0], np.cumsum(doc_lengths)[:-1]]).astype(np.int64) if len(doc_lengths) else \
            np.zeros(0, np.int64)
        done, pos = False, 0
        while pos < len(tokens):
            if self._f is None:
                self._open()
            room = self.shard_tokens - self._n
            piece = tokens[pos:pos + room]
            in_piece = (starts >= pos) & (starts < pos + len(piece))
            self._starts.append(starts[in_piece] - pos + self._n)
            self._bytes += int(np.asarray(doc_bytes)[in_piece].sum())
            self.docs += int(in_piece.sum())
            data = memoryview(piece)  # contiguous: written and hashed without a copy
            self._f.write(data)
            self._hash.update(data)
            self._n += len(piece)
            pos += len(piece)
            if self._n == self.shard_tokens:
                self._close()
                done = True
        return done

    def finish(self) -> list[ShardInfo]:
        if self._f is not None and self._n:
            self._close()
        return self.shards

    def state(self) -> dict:
        """What a resumed preparation needs to continue this writer (the open shard flushed to disk)."""
        partial = None
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            starts = np.concatenate(self._starts) if self._starts else np.zeros(0, np.int64)
            np.save(self.directory / f"{self._name()}.partial-docs.npy", starts.astype(np.int64))
            partial = {"tokens": self._n, "bytes": self._bytes, "first_doc": self._first_doc}
        return {"shards": [s.as_dict() for s in self.shards], "docs": self.docs, "partial": partial}

    def restore(self, state: dict) -> None:
        """Continue from ``state``: completed shards as they are, the open one cut back to its saved length."""
        self.shards = [ShardInfo(**s) for s in state["shards"]]
        self.docs = int(state["docs"])
        partial = state.get("partial")
        if not partial:
            return
        path = self.directory / f"{self._name()}.bin"
        n = int(partial["tokens"])
        f = open(path, "r+b")
        f.truncate(HEADER_BYTES + n * self.dtype.itemsize)
        f.seek(HEADER_BYTES)
        self._hash = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 22), b""):
            self._hash.update(block)
        self._f, self._n, self._bytes = f, n, int(partial["bytes"])
        self._first_doc = int(partial["first_doc"])
        self._starts = [np.load(self.directory / f"{self._name()}.partial-docs.npy")]

    def _name(self) -> str:
        return f"{self.split}_{len(self.shards):06d}"

    def _open(self) -> None:
        self._f = open(self.directory / f"{self._name()}.bin", "wb")
        self._f.write(make_header(self.dtype, 0))
        self._hash, self._n, self._bytes, self._starts, self._first_doc = hashlib.sha256(), 0, 0, [], self.docs

    def _close(self) -> None:
        f = self._f
        f.seek(0)
        f.write(make_header(self.dtype, self._n))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        name = self._name()
        starts = np.concatenate(self._starts) if self._starts else np.zeros(0, np.int64)
        np.save(self.directory / f"{name}.docs.npy", starts.astype(np.int64))
        with __import__("contextlib").suppress(FileNotFoundError):
            (self.directory / f"{name}.partial-docs.npy").unlink()
        self.shards.append(ShardInfo(f"{name}.bin", self.split, self._n, self._bytes, self._hash.hexdigest(),
                                     [self._first_doc, self.docs], HEADER_BYTES, f"{name}.docs.npy"))
        self._f = None


class TokenArray:
    """Read-only virtual concatenation of token memmaps: ``len``, ``a[int array]``, ``a[slice]``, ``np.asarray``.

    ``segments`` names contiguous parts (the sources of a mixture): (name, start, stop, weight).
    ``doc_starts`` (lazy) are the global offsets of document starts, for document-aligned windows.
    """

    def __init__(self, parts: list[np.ndarray], segments: Optional[list[tuple[str, int, int, float]]] = None,
                 doc_index: Optional[list[Optional[Path]]] = None, align: str = "none"):
        if not parts:
            raise DataError("a split with no shards cannot be read; prepare the data again")
        self.parts = parts
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n_parts + 1,)
        self.dtype = np.result_type(*[p.dtype for p in parts])
        self.segments = segments or []
        self.align = align
        self._doc_index = doc_index
        self._doc_starts: Optional[np.ndarray] = None
        self._raw: Optional[list] = None  # plain ndarray views of the parts, for fast slicing
        self._bounds: list = []

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            return self._take(np.arange(lo, hi, step, dtype=np.int64)) if step != 1 else self._range(lo, hi)
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            return self._take(np.array([i]))[0]
        return self._take(np.asarray(index, dtype=np.int64))

    def _range(self, lo: int, hi: int) -> np.ndarray:
        if hi <= lo:
            return np.zeros(0, dtype=self.dtype)
        first = int(np.searchsorted(self.starts, lo, side="right") - 1)
        last = int(np.searchsorted(self.starts, hi - 1, side="right") - 1)
        pieces = [self.parts[k][max(lo - self.starts[k], 0):min(hi, self.starts[k + 1]) - self.starts[k]]
                  for k in range(first, last + 1)]
        return np.concatenate(pieces) if len(pieces) > 1 else np.asarray(pieces[0])

    def _take(self, idx: np.ndarray) -> np.ndarray:
        if idx.ndim == 2 and idx.size and len(self.parts) > 1:
            return self._take_rows(idx)
        flat = idx.ravel()
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range for a split of {len(self)} tokens")
        part = np.searchsorted(self.starts, flat, side="right") - 1
        if len(self.parts) == 1 or (len(flat) and part.min() == part.max()):
            k = int(part[0]) if len(flat) else 0
            return np.asarray(self.parts[k][flat - self.starts[k]]).reshape(idx.shape)
        out = np.empty(flat.shape, dtype=self.dtype)
        for k in np.unique(part):
            m = part == k
            out[m] = self.parts[k][flat[m] - self.starts[k]]
        return out.reshape(idx.shape)

    def _take_rows(self, idx: np.ndarray) -> np.ndarray:
        """Windows (rows of consecutive indices, as ``make_batch`` asks): each row is a slice of its part,
        or of two where it crosses a part's end; other index arrays are gathered element by element."""
        width, lo = idx.shape[1], idx[:, 0]
        if not (((idx[:, -1] - lo) == width - 1).all() and (np.diff(idx[0]) == 1).all()):
            return self._take(idx.ravel()).reshape(idx.shape)
        if lo.min() < 0 or lo.max() + width > len(self):
            raise IndexError(f"token index out of range for a split of {len(self)} tokens")
        if self._raw is None:
            self._raw, self._bounds = [np.asarray(p) for p in self.parts], self.starts.tolist()
        first = (np.searchsorted(self.starts, lo, side="right") - 1).tolist()
        out = np.empty(idx.shape, dtype=self.dtype)
        for r, (a, k) in enumerate(zip(lo.tolist(), first)):
            start = a - self._bounds[k]
            if a + width <= self._bounds[k + 1]:
                out[r] = self._raw[k][start:start + width]
            else:
                out[r] = self._range(a, a + width)
        return out

    @property
    def doc_starts(self) -> np.ndarray:
        """Sorted global offsets (int64) of the documents' first tokens (the separator, if any)."""
        if self._doc_starts is None:
            if not self._doc_index or any(p is None for p in self._doc_index):
                raise DataError("data.align=bos needs a document index; these shards have none "
                                "(pre-tokenized files: set data.doc_sep so documents can be found)")
            self._doc_starts = np.concatenate([np.load(p) + self.starts[k] for k, p in enumerate(self._doc_index)])
        return self._doc_starts
