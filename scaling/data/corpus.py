"""Reading a corpus: the embedded stdlib default, a text file, a folder or a glob; and the train/val split.

Files are read in sorted order of their relative paths and capped at ``max_bytes``; non-UTF-8 (binary)
files of a multi-file source are skipped. A single file is split by position (the last ``val_fraction``
held out, as nanoGPT does); a multi-file source holds out whole files, picked in the order of a hash of
their relative paths, so validation is representative rather than one alphabetical corner.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scaling.data import hf
from scaling.errors import DataError

ALLOWED_SOURCES = "'stdlib', a file, a folder (of files, or a saved Hugging Face dataset), or a glob matching files"


@dataclass
class Doc:
    """One file of the corpus: its path relative to the source root and its UTF-8 text."""

    path: str
    text: str
    nbytes: int


@dataclass
class Corpus:
    kind: str  # stdlib | file | folder | glob
    root: str  # resolved path (folder, file, or the common folder of a glob)
    docs: list[Doc]
    content_hash: str  # sha256 over (relative path, bytes) of every doc read, after the cap
    skipped: list[str] = field(default_factory=list)  # files that were not UTF-8 text
    truncated: bool = False  # the cap cut the corpus short

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes for d in self.docs)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_source(source: str) -> tuple[str, Path, list[Path]]:
    """(kind, root, files in sorted order) of a ``data.source`` value; DataError when it names nothing."""
    if source == "stdlib":
        root = stdlib_dir()
        files = [p for p in _walk(root, skip=("site-packages", "dist-packages")) if p.suffix == ".py"]
        return "stdlib", root, files
    path = Path(os.path.expanduser(source))
    if any(ch in source for ch in "*?["):
        matches = glob.glob(os.path.expanduser(source), recursive=True)
        files = [Path(p).resolve() for p in matches if os.path.isfile(p)]
        if not files:
            raise DataError(f"data.source={source!r}: the glob matches no files; allowed: {ALLOWED_SOURCES}")
        root = Path(os.path.commonpath([str(p.parent) for p in files]))
        return "glob", root, sorted(files, key=lambda p: p.relative_to(root).as_posix())
    if path.is_file():
        path = path.resolve()
        return "file", path.parent, [path]
    if path.is_dir():
        root = path.resolve()
        if hf.is_dataset_folder(root):  # written by datasets' save_to_disk: its arrow files
            return "hf", root, hf.dataset_files(root, source)
        return "folder", root, [p for p in _walk(root) if not hf.is_metadata(p)]
    raise DataError(f"data.source={source!r} does not exist; allowed: {ALLOWED_SOURCES}")


def read_corpus(source: str, max_bytes: Optional[int]) -> Corpus:
    """Read the source's text files in order, up to ``max_bytes`` bytes in all (null: no cap)."""
    kind, root, files = resolve_source(source)
    docs, skipped, total, truncated = [], [], 0, False
    h = hashlib.sha256()
    for p in files:
        if max_bytes is not None and total >= max_bytes:
            truncated = True
            break
        rel = p.relative_to(root).as_posix() if kind != "file" else p.name
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DataError(f"data.source={source!r}: cannot read {p} ({e.strerror})") from None
        if max_bytes is not None and total + len(raw) > max_bytes:
            raw, truncated = raw[: max_bytes - total], True
            raw = raw[: len(raw) - _partial_tail(raw)]  # never cut a character in two
        text = _decode(raw)
        if text is None:
            if kind == "file":
                raise DataError(f"data.source={source!r} is not UTF-8 text; allowed: {ALLOWED_SOURCES}")
            skipped.append(rel)
            continue
        if not raw:
            continue
        h.update(f"{rel}\0{len(raw)}\0".encode())
        h.update(raw)
        docs.append(Doc(rel, text, len(raw)))
        total += len(raw)
    if not docs:
        what = f"{len(skipped)} non-UTF-8 files skipped" if skipped else "no text"
        raise DataError(f"data.source={source!r} is empty ({what}); allowed: {ALLOWED_SOURCES} with some text")
    return Corpus(kind, str(root), docs, h.hexdigest(), skipped, truncated)


def split_corpus(corpus: Corpus, val_fraction: float) -> tuple[list[str], list[str], list[str]]:
    """(train texts, val texts, val file paths). Whole files are held out when there are several."""
    target = val_fraction * corpus.nbytes
    if len(corpus.docs) > 1:
        val, held = set(), 0
        for d in sorted(corpus.docs, key=lambda d: hashlib.sha256(d.path.encode()).digest()):
            if held >= target:
                break
            if held + d.nbytes <= 1.5 * target:  # skip files that would overshoot the share by half
                val.add(d.path)
                held += d.nbytes
        if val and len(val) < len(corpus.docs):
            train = [d.text for d in corpus.docs if d.path not in val]
            return train, [d.text for d in corpus.docs if d.path in val], sorted(val)
    # one file (or no file fits the share): split the concatenation by position, the end held out
    text = "".join(d.text for d in corpus.docs)
    cut = min(int(len(text) * (1 - val_fraction)), len(text) - 1)  # nanoGPT's int(n * 0.9) for 0.1
    return [text[:cut]], [text[cut:]], []


def _walk(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Files under root, recursively, sorted by relative path; hidden files, folders and caches left out."""
    out, prefix = [], len(str(root).rstrip(os.sep)) + 1
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__" and d not in skip]
        out += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
    out.sort(key=lambda p: p[prefix:].replace(os.sep, "/"))
    return [Path(p) for p in out]


def _decode(raw: bytes) -> Optional[str]:
    """The UTF-8 text of raw, or None for binary data (invalid UTF-8 or a NUL byte)."""
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _partial_tail(raw: bytes) -> int:
    """Number of bytes at the end of raw that start an incomplete UTF-8 character."""
    for back in range(1, min(4, len(raw)) + 1):
        b = raw[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII): how long should its character be?
            need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
            return back if need > back else 0
    return 0
