"""What goes into a prepared folder: the tokenizer, the shards (or, for pre-tokenized files, the manifest
pointing at them), ``manifest.json``, ``files.json`` and ``meta.json`` (written last).

``scaling.data.prepare`` owns the cache around it: the key, the lock, the resumable work folder and the
atomic rename.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from scaling.data import hf, pipeline
from scaling.data.encode import decode_task
from scaling.data.pretokenized import IdsOnly, is_token_source, token_shards
from scaling.data.shards import shard_dtype
from scaling.data.sources import Plan, iter_tasks, plan_source, resolve_inputs
from scaling.data.tokenizer import TOKENIZERS, tokenizer_from_dir, train_tokenizer
from scaling.data.tokenizers import is_pretrained
from scaling.errors import ConfigError, DataError

FORMAT_VERSION = 2  # 2: llm.c shards + manifest.json, document separators and index, jsonl/parquet/token sources


@dataclass
class Source:
    """A single source resolved before its cache key: its plan(s) or token files, and its fixed tokenizer."""

    cfg: Any
    kind: str  # documents | tokens
    plan: Optional[Plan]  # documents
    val_plan: Optional[Plan]
    inputs: list  # tokens: the token files; documents: the plan's inputs
    val_inputs: list
    tokenizer: Any  # fixed tokenizer (byte, pretrained, ids only), or None for char / bpe (trained later)
    doc_sep: str
    fingerprint: str
    root: str
    source_kind: str


def resolve(cfg) -> Source:
    """Plan a source: documents or token files, the held-out files, the tokenizer and separators."""
    kind, root, inputs = resolve_inputs(cfg.source)
    if kind == "hf" and cfg.val_source is None and (held := hf.validation_folder(Path(root), cfg.source)):
        cfg = dataclasses.replace(cfg, val_source=held)  # a DatasetDict's validation split
    val_inputs = resolve_inputs(cfg.val_source)[2] if cfg.val_source is not None else []
    if is_token_source(inputs):
        tok = _fixed_tokenizer(cfg, tokens=True)
        fp = _stat_fingerprint(inputs + val_inputs)
        return Source(cfg, "tokens", None, None, inputs, val_inputs, tok, resolve_doc_sep(cfg, tok), fp, str(root),
                      kind)
    plan = plan_source(cfg.source, cfg.max_bytes, float(cfg.val_fraction), held_out=cfg.val_source is not None,
                       resolved=(kind, root, inputs))
    val_plan = None
    if cfg.val_source is not None:
        val_plan = plan_source(cfg.val_source, None, float(cfg.val_fraction), held_out=False)
        val_plan.mode = "all-val"
    tok = _fixed_tokenizer(cfg, tokens=False)
    fp = plan.fingerprint + (f"+{val_plan.fingerprint}" if val_plan else "")
    return Source(cfg, "documents", plan, val_plan, plan.inputs, val_plan.inputs if val_plan else [], tok,
                  resolve_doc_sep(cfg, tok), fp, plan.root, plan.kind)


def _fixed_tokenizer(cfg, tokens: bool):
    name = cfg.tokenizer
    if name not in TOKENIZERS and not is_pretrained(name):
        train_tokenizer(name, [], [], 0)  # the one-line ConfigError naming what is allowed
    if tokens and not is_pretrained(name):
        if cfg.vocab_size is None:
            raise ConfigError(f"data.source={cfg.source!r} holds token files: set data.tokenizer to the tokenizer "
                              "they were made with (e.g. gpt2) or data.vocab_size")
        return IdsOnly(cfg.vocab_size)
    if name in ("char", "bpe"):
        return None
    return train_tokenizer(name, [], [], 0, cfg.tokenizer_sha256)


def resolve_doc_sep(cfg, tok) -> str:
    """``auto``: bos where the tokenizer has a separator token, else none; an explicit one must exist."""
    if cfg.doc_sep == "auto":
        return "bos" if tok is not None and tok.bos_id is not None else "none"
    if cfg.doc_sep != "none" and (tok is None or (tok.bos_id if cfg.doc_sep == "bos" else tok.eos_id) is None):
        raise ConfigError(f"data.doc_sep={cfg.doc_sep!r}: data.tokenizer={cfg.tokenizer!r} has no "
                          f"{'bos' if cfg.doc_sep == 'bos' else 'eos'} token; allowed: none (or auto)")
    return cfg.doc_sep


def _stat_fingerprint(inputs: list) -> str:
    import hashlib

    h = hashlib.sha256()
    for i in inputs:
        st = i.path.stat()
        h.update(f"{i.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def build(work: Path, src: Source, key: str) -> None:
    """Fill ``work`` (which may hold a resumable earlier attempt) with a complete prepared folder."""
    t0 = time.perf_counter()
    cfg = src.cfg
    tok = _tokenizer(work, src)
    vocab = int(cfg.vocab_size or tok.vocab_size) if src.kind == "tokens" else int(tok.vocab_size)
    if src.kind == "tokens":
        bos = tok.bos_id if src.doc_sep in ("bos", "both") else None
        dtype, shards = token_shards(work, src.inputs, src.val_inputs, cfg, vocab, bos)
        stats = pipeline.Stats(docs=sum(s.docs[1] - s.docs[0] for v in shards.values() for s in v))
    else:
        dtype = shard_dtype(vocab)
        stats, shards = pipeline.tokenize(work, src.plan, src.val_plan, cfg, tok.name, dtype, src.doc_sep)
    for split in ("train", "val"):
        if not shards[split]:
            raise DataError(f"data.source={cfg.source!r}: the {split} split is empty; use more text")
    manifest = {"format": FORMAT_VERSION, "dtype": dtype.name, "vocab_size": vocab, "tokenizer": tok.name,
                "tokenizer_sha256": tok.sha256, "fingerprint": src.fingerprint,
                "shards": [s.as_dict() for split in ("train", "val") for s in shards[split]]}
    write_json(work / "manifest.json", manifest)
    write_json(work / "files.json", _files(src, stats))
    meta = _meta(src, tok, vocab, dtype, shards, stats, key)
    meta["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    with __import__("contextlib").suppress(FileNotFoundError):
        (work / pipeline.PROGRESS).unlink()
    write_json(work / "meta.json", meta)  # written last: a folder with meta.json is complete


def _tokenizer(work: Path, src: Source):
    """The fixed tokenizer, or char / bpe built from the corpus (reused from an interrupted attempt)."""
    cfg, tok = src.cfg, src.tokenizer
    if tok is None:
        if (work / pipeline.PROGRESS).is_file():
            return tokenizer_from_dir(work, cfg.tokenizer)
        tok = train_tokenizer(cfg.tokenizer, _texts(src, train_only=True), _texts(src, train_only=False),
                              cfg.bpe_vocab_size)
    tok.save(work)
    return tok


def _texts(src: Source, train_only: bool):
    """The corpus's texts, decoded in this process (char reads all of them, bpe learns from the train split)."""
    for plan in (src.plan, src.val_plan):
        if plan is None or (train_only and plan is src.val_plan):
            continue
        for task in iter_tasks(plan, src.cfg.text_field):
            texts, val, _, _, _ = decode_task(task, float(src.cfg.val_fraction))
            yield from (t for t, v in zip(texts, val) if not (train_only and v))


def _files(src: Source, stats) -> dict:
    files = []
    for plan, default in ((src.plan, None), (src.val_plan, "val")):
        if plan is None:
            continue
        mode = {"files": None, "position": "both", "docs": "docs", "all-train": "train", "all-val": "val"}[plan.mode]
        for i in plan.inputs:
            split = default or mode or ("val" if i.rel in plan.val_files else "train")
            files.append({"path": i.rel, "bytes": i.take if i.take is not None else i.size, "split": split})
    if src.kind == "tokens":
        files = [{"path": str(i.path), "bytes": i.size, "split": "tokens"} for i in src.inputs + src.val_inputs]
    skipped = (src.plan.skipped if src.plan else []) + list(stats.skipped)
    return {"files": files, "skipped": skipped}


def _meta(src: Source, tok, vocab: int, dtype, shards: dict, stats, key: str) -> dict:
    cfg, plan = src.cfg, src.plan
    count = {s: sum(x.tokens for x in shards[s]) for s in shards}
    docs = {s: sum(x.docs[1] - x.docs[0] for x in shards[s]) for s in shards}
    return {
        "format": FORMAT_VERSION, "vocab_size": vocab, "dtype": dtype.name,
        "train_tokens": count["train"], "val_tokens": count["val"], "train_docs": docs["train"],
        "val_docs": docs["val"], "shards": {s: len(shards[s]) for s in shards},
        "tokenizer": tok.name, "tokenizer_sha256": tok.sha256,
        "bpe_vocab_size": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else None,
        "doc_sep": src.doc_sep, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
        "source": _plain(cfg.source), "source_kind": src.source_kind, "source_root": src.root,
        "kind": src.kind, "text_field": cfg.text_field, "val_source": _plain(cfg.val_source),
        "content_hash": src.fingerprint, "fingerprint_kind": plan.fingerprint_kind if plan else "stat",
        "bytes": stats.bytes, "files": len(src.inputs),
        "val_files": len(plan.val_files) if plan else 0,
        "split": "val_source" if cfg.val_source is not None else (plan.mode if plan else "tokens"),
        "val_fraction": cfg.val_fraction, "val_tokens_budget": cfg.val_tokens, "max_bytes": cfg.max_bytes,
        "truncated": bool((plan.truncated if plan else False) or stats.truncated),
        "key": key, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else [str(v) for v in value]


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
