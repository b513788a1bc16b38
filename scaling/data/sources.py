"""Document sources: what ``data.source`` names, its fingerprint, and the stream of tasks that read it.

A source is ``stdlib``, a file, a folder, a glob, or a list of these. Each file is one of:
``text`` (one file = one document), ``jsonl`` (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``: one JSON object a
line, the text in ``data.text_field``), ``parquet`` (streamed in record batches, the text in the column
``data.text_field``), ``arrow`` (a saved Hugging Face dataset's files, ``scaling.data.hf``), or ``tokens``
(pre-tokenized shards, ``scaling.data.pretokenized``).

The plan (``plan_source``) fixes everything preparation needs before any tokenizing: the files in order,
the cap, the split rule and the fingerprint. ``iter_tasks`` then cuts the reading into tasks of about 4 MB
in a fixed order (the same for any number of workers), which ``scaling.data.encode`` decodes and tokenizes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from scaling.data import hf
from scaling.data.corpus import _decode, _partial_tail, resolve_source
from scaling.errors import DataError

TASK_BYTES = 1 << 22  # raw input per task
CONTENT_HASH_LIMIT = 64 << 20  # corpora up to this size are fingerprinted by content, larger ones by stat
JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")
TOKEN_SUFFIXES = (".bin", ".npy")


@dataclass
class Input:
    path: Path
    rel: str
    kind: str  # text | jsonl | parquet | arrow | tokens
    size: int
    take: Optional[int] = None  # text files: bytes read (the cap cuts the last one)


@dataclass
class Plan:
    source: Any
    kind: str  # stdlib | file | folder | hf | glob | list
    root: str
    inputs: list[Input]
    mode: str  # position (one text file) | files (whole text files held out) | docs (held out by document hash)
    fingerprint: str
    fingerprint_kind: str  # content | stat
    val_fraction: float = 0.05
    val_files: set = field(default_factory=set)
    skipped: list = field(default_factory=list)
    truncated: bool = False

    @property
    def nbytes(self) -> int:
        return sum(i.take if i.take is not None else i.size for i in self.inputs)


def file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(JSONL):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return "text"


def resolve_inputs(source: Any) -> tuple[str, Path, list[Input]]:
    """(kind, root, inputs in order) of a source value: a string or a list of strings."""
    items = [source] if isinstance(source, str) else [str(s) for s in source]
    if not items:
        raise DataError("data.source=[] names nothing; allowed: 'stdlib', a file, a folder, a glob, or a list")
    resolved = [resolve_source(s) for s in items]
    if len(resolved) == 1:
        kind, root, files = resolved[0]
    else:
        kind, files = "list", [p for _, _, fs in resolved for p in fs]
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
    prefix = len(str(root).rstrip(os.sep)) + 1
    rel = (lambda p: p.name) if kind == "file" else (lambda p: str(p)[prefix:].replace(os.sep, "/"))
    inputs = [Input(p, rel(p), file_kind(p), os.stat(p).st_size) for p in files]
    return kind, root, inputs


def plan_source(source: Any, max_bytes: Optional[int], val_fraction: float, held_out: bool,
                resolved: Optional[tuple] = None) -> Plan:
    """The plan of a document source (``held_out``: the source has its own validation files, so every
    document is training data; ``resolved``: its ``resolve_inputs``, when known)."""
    kind, root, inputs = resolved or resolve_inputs(source)
    docs_mode = any(i.kind != "text" for i in inputs)
    plan = Plan(source, kind, str(root), inputs, "docs" if docs_mode else "files", "", "stat", val_fraction)
    total = sum(i.size for i in inputs)
    if not docs_mode and (max_bytes is not None or total <= CONTENT_HASH_LIMIT):
        _scan_text(plan, max_bytes)
    else:
        h = hashlib.sha256()
        for i in inputs:
            st = i.path.stat()
            h.update(f"{i.rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        plan.fingerprint = h.hexdigest()
    if not plan.inputs:
        what = f"{len(plan.skipped)} non-UTF-8 files skipped" if plan.skipped else "no text"
        raise DataError(f"data.source={source!r} is empty ({what}); allowed: text files, .jsonl[.gz|.zst] or "
                        ".parquet documents, or token shards, with some text")
    if plan.mode == "files":
        if held_out:
            plan.mode = "all-train"
        elif len(plan.inputs) == 1:
            plan.mode = "position"
        else:
            plan.val_files = _held_out_files(plan, val_fraction)
            if not plan.val_files:
                plan.mode = "position"
    elif held_out:
        plan.mode = "all-train"
    return plan


def _scan_text(plan: Plan, max_bytes: Optional[int]) -> None:
    """Read the text files once: the cap, the non-UTF-8 files to skip, and the content hash (as before)."""
    h, kept, total = hashlib.sha256(), [], 0
    for i in plan.inputs:
        if max_bytes is not None and total >= max_bytes:
            plan.truncated = True
            break
        try:
            raw = i.path.read_bytes()
        except OSError as e:
            raise DataError(f"data.source={plan.source!r}: cannot read {i.path} ({e.strerror})") from None
        if max_bytes is not None and total + len(raw) > max_bytes:
            raw, plan.truncated = raw[: max_bytes - total], True
            raw = raw[: len(raw) - _partial_tail(raw)]  # never cut a character in two
        if _decode(raw) is None:
            if plan.kind == "file":
                raise DataError(f"data.source={plan.source!r} is not UTF-8 text; allowed: UTF-8 text files, "
                                ".jsonl[.gz|.zst] or .parquet documents, or token shards")
            plan.skipped.append(i.rel)
            continue
        if not raw:
            continue
        h.update(f"{i.rel}\0{len(raw)}\0".encode())
        h.update(raw)
        i.take = len(raw)
        kept.append(i)
        total += len(raw)
    plan.inputs, plan.fingerprint, plan.fingerprint_kind = kept, h.hexdigest(), "content"


def _held_out_files(plan: Plan, val_fraction: float) -> set:
    """Whole files in the order of the hash of their paths, skipping any that overshoot the share by half."""
    sizes = {i.rel: (i.take if i.take is not None else i.size) for i in plan.inputs}
    target, val, held = val_fraction * sum(sizes.values()), set(), 0
    for rel in sorted(sizes, key=lambda r: hashlib.sha256(r.encode()).digest()):
        if held >= target:
            break
        if held + sizes[rel] <= 1.5 * target:
            val.add(rel)
            held += sizes[rel]
    return val if val and len(val) < len(sizes) else set()


# ---------------------------------------------------------------------------------------------------
# reading, in tasks


def open_stream(path: Path):
    """A binary stream of a file's decompressed bytes (gzip and zstandard by suffix)."""
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            return gzip.open(path, "rb")
        if name.endswith(".zst"):
            import zstandard

            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True),
                                     buffer_size=1 << 20)
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None


def iter_tasks(plan: Plan, text_field: str) -> Iterator[tuple]:
    """The tasks of a plan, in order. A task is a tuple whose first item names its kind:
    ('text', [(rel, split, raw bytes), ...]), ('jsonl', rel, first line number, raw lines, field, mode),
    ('rows', rel, first row, [text, ...], mode)."""
    batch, size = [], 0
    for i in plan.inputs:
        if i.kind == "text":
            if plan.mode == "position":
                yield from _position_tasks(plan, i)
                continue
            split = "val" if i.rel in plan.val_files else ("train" if plan.mode != "docs" else "hash")
            batch.append((i.rel, split, _read_text(i)))
            size += len(batch[-1][2])
            if size >= TASK_BYTES:
                yield ("text", batch)
                batch, size = [], 0
            continue
        if batch:
            yield ("text", batch)
            batch, size = [], 0
        if i.kind == "jsonl":
            yield from _jsonl_tasks(i, text_field, plan.mode)
        elif i.kind == "parquet":
            yield from _parquet_tasks(i, text_field, plan.mode)
        elif i.kind == "arrow":
            yield from hf.arrow_tasks(i.path, i.rel, text_field, plan.mode)
    if batch:
        yield ("text", batch)


def _read_text(i: Input) -> bytes:
    try:
        with open(i.path, "rb") as f:
            return f.read(i.take) if i.take is not None else f.read()
    except OSError as e:
        raise DataError(f"{i.path}: cannot be read ({e.strerror})") from None


def _position_tasks(plan: Plan, i: Input) -> Iterator[tuple]:
    """One text file split by position: the last val_fraction of its characters held out (nanoGPT's cut)."""
    text = _read_text(i).decode("utf-8")
    cut = min(int(len(text) * (1 - plan.val_fraction)), len(text) - 1)
    yield ("split-text", i.rel, text[:cut], text[cut:])


def _jsonl_tasks(i: Input, text_field: str, mode: str) -> Iterator[tuple]:
    line = 1
    with open_stream(i.path) as f:
        rest = b""
        while True:
            try:
                block = f.read(TASK_BYTES)
            except Exception as e:  # noqa: BLE001  (a truncated or corrupt gzip / zstd stream)
                raise DataError(f"{i.path}: cannot be decompressed after line {line} ({e}); the file is truncated "
                                "or corrupt") from None
            if not block:
                break
            block = rest + block
            end = block.rfind(b"\n") + 1
            if end == 0:
                rest = block
                continue
            chunk, rest = block[:end], block[end:]
            yield ("jsonl", i.rel, line, chunk, text_field, mode)
            line += chunk.count(b"\n")
        if rest.strip():
            yield ("jsonl", i.rel, line, rest, text_field, mode)


def _parquet_tasks(i: Input, text_field: str, mode: str) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(i.path)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{i.path}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{i.path}: no column data.text_field={text_field!r}; columns: {', '.join(names)}")
    row = 0
    for batch in pf.iter_batches(batch_size=2048, columns=[text_field]):
        texts = batch.column(0).to_pylist()
        yield ("rows", i.rel, row, texts, mode)
        row += len(texts)
