"""Data preparation: a source becomes cached, memory-mapped token shards with a train/val split.

``prepare_data(cfg)`` resolves the source (``scaling.data.sources``: text, jsonl, parquet, or token files
used as they are, ``scaling.data.pretokenized``), fixes the tokenizer (``scaling.data.tokenizer``,
``scaling.data.tokenizers``) and writes the folder (``scaling.data.build``) into a work folder under a lock,
then renames it into the cache atomically; later calls with the same source content and settings reuse
it, and an interrupted preparation resumes from its last complete shard. A mixture (``data.sources``) is
prepared source by source (``scaling.data.mixture``). Batches come from ``scaling.data.loader``.

A prepared folder::

    train_000000.bin ...  llm.c shards (1024-byte header, uint16 or uint32 tokens), at most data.shard_tokens each
    val_000000.bin ...
    *.docs.npy            each shard's document-start offsets (int64)
    manifest.json         per shard: file, split, tokens, UTF-8 bytes, sha256, document range
    meta.json             vocab_size, dtype, train_tokens, val_tokens, tokenizer (+ sha256), source, ...
    chars.json | tokenizer.json | tokenizer.tiktoken | tokenizer.model (+ tokenizer_spec.json)
    files.json            every file read, its size and split
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scaling.config import DataConfig
from scaling.data.build import FORMAT_VERSION, Source, build, resolve
from scaling.data.loader import batch_offsets, eval_offsets, make_batch
from scaling.data.mixture import combine, prepare_mixture
from scaling.data.shards import TokenArray, open_tokens
from scaling.data.tokenizer import load_tokenizer
from scaling.errors import ConfigError, DataError
from scaling.io import file_lock, fsync_dir

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

DEFAULT_CACHE = "~/.cache/scaling-harness/data"
STALE_TMP_SECONDS = 24 * 3600
UNKEYED = ("cache_dir", "workers", "progress", "sources", "unique_tokens")  # settings that do not change the prepared bytes


@dataclass
class PreparedData:
    """A prepared dataset: its folder, metadata, read-only token arrays and tokenizer. For a mixture,
    ``sources`` lists each source's name, weight, folder and token counts, and ``train`` / ``val`` carry
    their segments."""

    dir: Path
    meta: dict
    train: Any  # np.memmap (one shard) or TokenArray
    val: Any
    tokenizer: Any
    sources: list = field(default_factory=list)
    doc_index: dict = field(default_factory=dict)  # split -> each shard's document-start index file (or None)
    fingerprint: str = ""  # SHA-256 of the token content (data_fingerprint): what a resumed run must see again

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def token_bytes(self) -> Optional[np.ndarray]:
        """UTF-8 byte length of each token id (for bits per byte), or None where the tokenizer cannot say."""
        lengths = getattr(self.tokenizer, "token_bytes", None)
        return lengths() if callable(lengths) else None


def validate_config(cfg: DataConfig) -> None:
    """ConfigError for a data setting outside what is allowed (cfg: a DataConfig or its DictConfig)."""
    if _is_dict_config(cfg):
        from omegaconf import OmegaConf

        for name in DataConfig.__dataclass_fields__:
            if OmegaConf.is_missing(cfg, name):
                raise ConfigError(f"data.{name} is not set (???); set it, e.g. data.{name}=... on the command line")
    DataConfig.validate(cfg)


def _is_dict_config(cfg: Any) -> bool:
    """Whether ``cfg`` is an OmegaConf DictConfig, without importing omegaconf (about 0.2 s) where nothing
    has: a DataConfig or a mapping from a script or the analysis side."""
    omegaconf = sys.modules.get("omegaconf")
    return omegaconf is not None and isinstance(cfg, omegaconf.DictConfig)


def plain_config(cfg: Any) -> DataConfig:
    """The data settings as a DataConfig object (from a DictConfig, a DataConfig, or a mapping)."""
    if isinstance(cfg, DataConfig):
        return cfg
    if _is_dict_config(cfg):
        from omegaconf import OmegaConf

        return DataConfig(**OmegaConf.to_container(cfg, resolve=True))
    return DataConfig(**dict(cfg))


def cache_root(cfg: DataConfig) -> Path:
    """Folder that holds prepared datasets: data.cache_dir, else $SCALING_DATA_DIR, else ~/.cache/..."""
    root = cfg.cache_dir or os.environ.get("SCALING_DATA_DIR") or DEFAULT_CACHE
    return Path(os.path.expanduser(root)).resolve()


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Prepared data for ``cfg``, from the cache when it is there, else made and cached atomically."""
    validate_config(cfg)
    cfg = plain_config(cfg)
    if cfg.sources:
        parts = prepare_mixture(cfg, prepare_single)
        mixed = combine(parts, cfg.align)
        first = parts[0][2]
        prints = {name: p.fingerprint for name, _, p in parts}
        prepared = PreparedData(first.dir, mixed["meta"], mixed["train"], mixed["val"], first.tokenizer,
                                sources=mixed["sources"], fingerprint=_digest(prints))
        if cfg.align != "none":
            for split in ("train", "val"):
                if len(getattr(prepared, split).doc_starts) == 0:
                    raise DataError(f"data.align='bos': the sources' {split} splits have no document starts; "
                                    "use data.doc_sep=bos")
        return prepared
    return with_alignment(prepare_single(cfg), cfg.align)


def prepare_single(cfg: DataConfig) -> PreparedData:
    """One source (``cfg.source``), prepared or found in the cache."""
    src = resolve(cfg)
    key, settings = _cache_key(src, with_content=True), _cache_key(src, with_content=False)
    root = cache_root(cfg)
    slug = _slug(src)
    final = root / f"{slug}-{key[:16]}"
    if (final / "meta.json").is_file():
        return open_prepared(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"data.cache_dir={str(root)!r} cannot be created ({e.strerror}); use a writable folder"
        raise DataError(msg) from None
    with file_lock(root / f".{slug}-{settings[:16]}.lock") as locked:  # others preparing the same data wait, then reuse it
        if (final / "meta.json").is_file():
            return open_prepared(final)
        _remove_leftovers(root, None)
        work = root / f".partial-{slug}-{settings[:16]}"
        if locked and work.is_dir() and not (work / "progress.json").is_file():
            shutil.rmtree(work, ignore_errors=True)  # nothing resumable in it
        if not locked:  # no lock on this file system: never share a work folder
            work = root / f".tmp-{slug}-{os.getpid()}-{os.urandom(4).hex()}"
        work.mkdir(parents=True, exist_ok=True)
        build(work, src, key)
        fsync_dir(work)
        try:
            os.rename(work, final)  # atomic; fails if another process got there first
        except OSError:
            if not (final / "meta.json").is_file():
                raise DataError(f"{final} is in the way of the prepared data (no meta.json); delete it") from None
            shutil.rmtree(work, ignore_errors=True)
        fsync_dir(root)
    return open_prepared(final)


def with_alignment(prepared: PreparedData, align: str) -> PreparedData:
    """``data.align=bos``: both splits as TokenArrays whose windows start at document starts (training
    batches, ``scaling.data.loader.step_offsets``; evaluation windows, ``aligned_eval_offsets``)."""
    if align == "none":
        return prepared
    splits = {}
    for split in ("train", "val"):
        tokens = getattr(prepared, split)
        if not isinstance(tokens, TokenArray):
            tokens = TokenArray([tokens], doc_index=prepared.doc_index.get(split))
        tokens.align = align
        if len(tokens.doc_starts) == 0:
            raise DataError(f"data.align={align!r}: no document starts in the {split} split of {prepared.dir} "
                            f"(data.doc_sep={prepared.meta.get('doc_sep')!r}); use data.doc_sep=bos or data.align=none")
        splits[split] = tokens
    return dataclasses.replace(prepared, **splits)


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
    if meta.get("format") != FORMAT_VERSION:
        raise _corrupt(directory, f"format {meta.get('format')!r} is not this version's ({FORMAT_VERSION})")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        raise DataError(f"prepared data at {directory}: meta.json dtype={meta['dtype']!r} is not a dtype") from None
    vocab = int(meta["vocab_size"])
    if dtype not in (np.uint16, np.uint32) or vocab > np.iinfo(dtype).max + 1:
        raise DataError(
            f"prepared data at {directory}: vocab_size={vocab} does not fit dtype {dtype.name}; "
            "allowed: uint16 up to 65536, uint32 beyond"
        )
    manifest = _read_manifest(directory)
    splits, index = {}, {}
    for split in ("train", "val"):
        entries = [s for s in manifest["shards"] if s["split"] == split]
        parts = [open_tokens(directory / s["file"], dtype, int(s["offset"]), int(s["tokens"]),
                             exact=not os.path.isabs(s["file"]) or s["sha256"] != "") for s in entries]
        if sum(len(p) for p in parts) != int(meta[f"{split}_tokens"]) or not parts:
            raise _corrupt(directory, f"the {split} shards hold {sum(len(p) for p in parts)} tokens but meta.json "
                           f"says {meta[f'{split}_tokens']}")
        index[split] = [directory / s["index"] if s.get("index") else None for s in entries]
        splits[split] = parts[0] if len(parts) == 1 else TokenArray(parts, doc_index=index[split])
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size != vocab and meta.get("kind") != "tokens":
        raise DataError(
            f"prepared data at {directory}: tokenizer has {tokenizer.vocab_size} tokens but meta.json says {vocab}"
        )
    return PreparedData(directory, meta, splits["train"], splits["val"], tokenizer, doc_index=index,
                        fingerprint=data_fingerprint(meta, manifest))


def data_fingerprint(meta: dict, manifest: dict) -> str:
    """SHA-256 of what a model trained on this folder saw: the vocabulary, the tokenizer's SHA-256, the
    separators and each shard's split, token count and SHA-256 (a part of a token file: the whole file's
    SHA-256 and the part's offset). Settings that leave the tokens as they are (workers, cache_dir, a touched
    file) keep it."""
    shards = [[s["split"], int(s["tokens"]),
               s["sha256"] or f"{s.get('part_of') or meta.get('content_hash')}@{s['offset']}"]
              for s in manifest["shards"]]
    return _digest({"vocab_size": meta["vocab_size"], "tokenizer_sha256": meta.get("tokenizer_sha256"),
                    "doc_sep": meta.get("doc_sep"), "shards": shards})


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _read_manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except FileNotFoundError:
        raise _corrupt(directory, "manifest.json is missing") from None
    except (OSError, ValueError) as e:
        raise _corrupt(directory, f"manifest.json is unreadable ({e})") from None


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
# the cache


def _cache_key(src: Source, with_content: bool) -> str:
    """SHA-256 of what the prepared bytes depend on (``with_content``: and the corpus's fingerprint)."""
    cfg = src.cfg
    ident = {k: getattr(cfg, k) for k in DataConfig.__dataclass_fields__ if k not in UNKEYED}
    ident = {k: (v if v is None or isinstance(v, (str, int, float, bool)) else str(v)) for k, v in ident.items()}
    ident.update(format=FORMAT_VERSION, doc_sep=src.doc_sep, kind=src.kind,
                 source=cfg.source if cfg.source == "stdlib" else f"{src.source_kind}:{src.root}:{cfg.source}",
                 tokenizer_sha256=getattr(src.tokenizer, "sha256", None), align=None)
    if with_content:
        ident["content"] = src.fingerprint
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _slug(src: Source) -> str:
    cfg = src.cfg
    name = {"stdlib": "stdlib", "file": src.inputs[0].rel if src.inputs else "data"}.get(src.source_kind,
                                                                                          Path(src.root).name)
    tok = cfg.tokenizer.split(":", 1)[0] if ":" in cfg.tokenizer else cfg.tokenizer
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "data"
    return f"{name}-{tok}"


def _corrupt(directory: Path, what: str) -> DataError:
    return DataError(f"prepared data at {directory}: {what}; delete the folder to prepare it again")


def _remove_leftovers(root: Path, name: Optional[str]) -> None:
    """Delete temporary folders of dead preparations: of ``name`` (we hold its lock), or older than a day."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if (name and p.name.startswith(f".tmp-{name}-")) or now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
