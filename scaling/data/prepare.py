"""Data preparation: a corpus becomes cached, memory-mapped token files with a train/val split.

``prepare_data(cfg)`` reads the source (``scaling.data.corpus``), builds the tokenizer
(``scaling.data.tokenizer``), writes ``train.bin``, ``val.bin``, ``meta.json`` and the tokenizer into a
temporary folder and renames it into the cache atomically; later calls with the same source content and
settings reuse it. Batches come from ``scaling.data.loader``. The ``scaling-prepare`` command is
``scaling.cli.prepare``.

A prepared folder::

    train.bin, val.bin   raw token ids, dtype from meta (uint8 / uint16 / uint32)
    meta.json            vocab_size, dtype, train_tokens, val_tokens, tokenizer, source, content_hash, ...
    chars.json | tokenizer.json   the char vocabulary or the BPE tokenizer (byte needs none)
    files.json           every file read, its size and split
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scaling.config import DataConfig
from scaling.data.corpus import Corpus, read_corpus, split_corpus
from scaling.errors import ConfigError, DataError
from scaling.io import fsync_dir
from scaling.data.loader import batch_offsets, eval_offsets, make_batch
from scaling.data.tokenizer import TOKENIZERS, dtype_for_vocab, load_tokenizer, train_tokenizer

__all__ = [
    "PreparedData",
    "prepare_data",
    "open_prepared",
    "check_context",
    "batch_offsets",
    "make_batch",
    "eval_offsets",
    "load_tokenizer",
    "cache_root",
]

FORMAT_VERSION = 1  # bump when the layout or the split/tokenisation rules change: old caches are ignored
DEFAULT_CACHE = "~/.cache/scaling-harness/data"
STALE_TMP_SECONDS = 24 * 3600


@dataclass
class PreparedData:
    """A prepared dataset: its folder, metadata, read-only token memmaps and tokenizer."""

    dir: Path
    meta: dict
    train: np.memmap
    val: np.memmap
    tokenizer: Any

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])


def validate_config(cfg: DataConfig) -> None:
    """ConfigError for a data setting outside what is allowed (cfg: a DataConfig or its DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        for name in DataConfig.__dataclass_fields__:
            if OmegaConf.is_missing(cfg, name):
                raise ConfigError(f"data.{name} is not set (???); set it, e.g. data.{name}=... on the command line")
    if cfg.tokenizer not in TOKENIZERS:
        raise ConfigError(f"data.tokenizer={cfg.tokenizer!r} is not a tokenizer; allowed: {', '.join(TOKENIZERS)}")
    if cfg.tokenizer == "bpe" and not 256 < cfg.bpe_vocab_size <= 2**32:
        raise ConfigError(
            f"data.bpe_vocab_size={cfg.bpe_vocab_size} is not allowed; use more than 256 (the byte alphabet)"
        )
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError(
            f"data.val_fraction={cfg.val_fraction} is not allowed; use a fraction strictly between 0 and 1"
        )
    if cfg.max_bytes is not None and cfg.max_bytes <= 0:
        raise ConfigError(f"data.max_bytes={cfg.max_bytes} is not allowed; use a positive byte count or null (no cap)")
    if not isinstance(cfg.source, str) or not cfg.source.strip():
        raise ConfigError(f"data.source={cfg.source!r} is not allowed; use 'stdlib', a text file, a folder or a glob")


def cache_root(cfg: DataConfig) -> Path:
    """Folder that holds prepared datasets: data.cache_dir, else $SCALING_DATA_DIR, else ~/.cache/..."""
    root = cfg.cache_dir or os.environ.get("SCALING_DATA_DIR") or DEFAULT_CACHE
    return Path(os.path.expanduser(root)).resolve()


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Prepared data for ``cfg``, from the cache when it is there, else made and cached atomically."""
    validate_config(cfg)
    corpus = read_corpus(cfg.source, cfg.max_bytes)
    key = _cache_key(cfg, corpus)
    root = cache_root(cfg)
    final = root / f"{_slug(cfg, corpus)}-{key[:16]}"
    if (final / "meta.json").is_file():
        return open_prepared(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"data.cache_dir={str(root)!r} cannot be created ({e.strerror}); use a writable folder"
        raise DataError(msg) from None
    with _lock(root / f".{final.name}.lock") as locked:  # others preparing the same data wait, then reuse it
        if (final / "meta.json").is_file():
            return open_prepared(final)
        _remove_leftovers(root, final.name if locked else None)
        tmp = root / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _write_prepared(tmp, cfg, corpus, key)
            fsync_dir(tmp)
            try:
                os.rename(tmp, final)  # atomic; fails if another process got there first
            except OSError:
                if not (final / "meta.json").is_file():
                    raise DataError(f"{final} is in the way of the prepared data (no meta.json); delete it") from None
            fsync_dir(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return open_prepared(final)


def open_prepared(directory) -> PreparedData:
    """Open a prepared folder, checking that its files match its metadata (DataError when they don't)."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except FileNotFoundError:
        raise _corrupt(directory, "meta.json is missing") from None
    except (OSError, ValueError) as e:
        raise _corrupt(directory, f"meta.json is unreadable ({e})") from None
    missing = [k for k in ("vocab_size", "dtype", "train_tokens", "val_tokens", "tokenizer") if k not in meta]
    if missing:
        raise _corrupt(directory, f"meta.json lacks {', '.join(missing)}")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        raise DataError(f"prepared data at {directory}: meta.json dtype={meta['dtype']!r} is not a dtype") from None
    vocab = int(meta["vocab_size"])
    if dtype not in (np.uint8, np.uint16, np.uint32) or vocab > np.iinfo(dtype).max + 1:
        raise DataError(
            f"prepared data at {directory}: vocab_size={vocab} does not fit dtype {dtype.name}; "
            "allowed: uint8 up to 256, uint16 up to 65536, uint32 beyond"
        )
    splits = {s: _open_split(directory, s, dtype, int(meta[f"{s}_tokens"])) for s in ("train", "val")}
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size != vocab:
        raise DataError(
            f"prepared data at {directory}: tokenizer has {tokenizer.vocab_size} tokens but meta.json says {vocab}"
        )
    return PreparedData(directory, meta, splits["train"], splits["val"], tokenizer)


def check_context(prepared: PreparedData, context: int, eval_tokens: Optional[int] = None) -> None:
    """DataError, before any work, when a context window does not fit in either split."""
    src = prepared.meta.get("source", str(prepared.dir))
    for split in ("train", "val"):
        n = int(prepared.meta[f"{split}_tokens"])
        if context + 1 > n:
            raise DataError(
                f"model.context={context} is longer than the {split} split of data.source={src!r} "
                f"({n} tokens); use a context of at most {n - 1} or more data"
            )
    if eval_tokens is not None and eval_tokens < 1:
        raise DataError(f"eval_tokens={eval_tokens} is not allowed; use a positive number of held-out tokens")


# ---------------------------------------------------------------------------------------------------------
# writing a prepared folder


def _write_prepared(tmp: Path, cfg: DataConfig, corpus: Corpus, key: str) -> None:
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    train_texts, val_texts, val_files = split_corpus(corpus, cfg.val_fraction)
    tok = train_tokenizer(cfg.tokenizer, train_texts, train_texts + val_texts, cfg.bpe_vocab_size)
    dtype = dtype_for_vocab(tok.vocab_size)
    counts = {}
    for split, texts in (("train", train_texts), ("val", val_texts)):
        ids = tok.encode_array("".join(texts)).astype(dtype, copy=False)
        if len(ids) == 0:
            raise DataError(f"data.source={cfg.source!r}: the {split} split is empty; use more text")
        _write_bytes(tmp / f"{split}.bin", ids.tobytes())
        counts[split] = int(len(ids))
    tok.save(tmp)
    val_set = set(val_files)
    files = [
        {"path": d.path, "bytes": d.nbytes, "split": ("val" if d.path in val_set else "train") if val_files else "both"}
        for d in corpus.docs
    ]
    _write_bytes(tmp / "files.json", json.dumps({"files": files, "skipped": corpus.skipped}, indent=1).encode())
    meta = {
        "format": FORMAT_VERSION,
        "vocab_size": int(tok.vocab_size),
        "dtype": dtype.name,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "tokenizer": cfg.tokenizer,
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "source": cfg.source,
        "source_kind": corpus.kind,
        "source_root": corpus.root,
        "content_hash": corpus.content_hash,
        "bytes": corpus.nbytes,
        "files": len(corpus.docs),
        "val_files": len(val_files),
        "split": "files" if val_files else "position",
        "val_fraction": cfg.val_fraction,
        "max_bytes": cfg.max_bytes,
        "truncated": corpus.truncated,
        "key": key,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prepare_seconds": round(time.perf_counter() - t0, 3),
    }
    _write_bytes(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())  # written last


def _cache_key(cfg: DataConfig, corpus: Corpus) -> str:
    identity = {
        "format": FORMAT_VERSION,
        "source": cfg.source if corpus.kind == "stdlib" else f"{corpus.kind}:{corpus.root}:{cfg.source}",
        "content_hash": corpus.content_hash,
        "tokenizer": cfg.tokenizer,
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "val_fraction": cfg.val_fraction,
        "max_bytes": cfg.max_bytes,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _slug(cfg: DataConfig, corpus: Corpus) -> str:
    name = {"stdlib": "stdlib", "file": corpus.docs[0].path}.get(corpus.kind, Path(corpus.root).name)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "data"
    return f"{name}-{cfg.tokenizer}"


def _open_split(directory: Path, split: str, dtype: np.dtype, n: int) -> np.memmap:
    path = directory / f"{split}.bin"
    if not path.is_file():
        raise _corrupt(directory, f"{split}.bin is missing")
    size, want = path.stat().st_size, n * dtype.itemsize
    if size != want or n <= 0:
        raise _corrupt(
            directory, f"{split}.bin holds {size} bytes but meta.json says {n} {dtype.name} tokens ({want} bytes): "
            "the file is corrupt or truncated"
        )
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def _corrupt(directory: Path, what: str) -> DataError:
    return DataError(f"prepared data at {directory}: {what}; delete the folder to prepare it again")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _lock(path: Path):
    """Exclusive advisory lock (flock) while preparing; yields whether it is held (not on every file system)."""
    try:
        import fcntl

        f = open(path, "a+")
    except (ImportError, OSError):
        yield False
        return
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        yield locked
    finally:
        f.close()  # releases the lock


def _remove_leftovers(root: Path, name: Optional[str]) -> None:
    """Delete temporary folders of dead preparations: of ``name`` (we hold its lock), or older than a day."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if (name and p.name.startswith(f".tmp-{name}-")) or now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
