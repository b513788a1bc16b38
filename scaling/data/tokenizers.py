"""Pretrained tokenizers: tiktoken (``gpt2`` and the other tiktoken names, ``tiktoken:PATH``), Hugging Face
``tokenizer.json`` (``hf:PATH``) and SentencePiece (``sp:PATH``).

Resolution is offline-first: an explicit path; for a name, ``$TIKTOKEN_CACHE_DIR`` (tiktoken's own cache
file, ``<name>.tiktoken`` or the file's original name); a download through tiktoken only where the network
allows it (not with ``SCALING_OFFLINE=1``). A missing file is a one-line error naming the file, its
expected SHA-256 and where to put it. Each tokenizer copies its file beside the prepared data (``save``), so
evaluation and sampling decode exactly as preparation encoded, and knows the file's SHA-256 (``sha256``),
the UTF-8 byte length of every id (``token_bytes``) and its document separators (``bos_id``, ``eos_id``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

from scaling.errors import ConfigError, DataError

SPEC_FILE = "tokenizer_spec.json"
TIKTOKEN_NAMES = ("gpt2", "r50k_base", "p50k_base", "p50k_edit", "cl100k_base", "o200k_base")
PREFIXES = ("tiktoken:", "hf:", "sp:")
ALLOWED = "byte, char, bpe, " + ", ".join(TIKTOKEN_NAMES) + ", tiktoken:PATH, hf:PATH (tokenizer.json), sp:PATH (.model)"


def is_pretrained(name: str) -> bool:
    return name in TIKTOKEN_NAMES or any(name.startswith(p) for p in PREFIXES)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tiktoken_recipe(name: str) -> dict:
    """Pattern, special tokens, vocabulary size, URL and expected SHA-256 of a tiktoken name, read from
    tiktoken's own constructors without downloading anything."""
    import tiktoken_ext.openai_public as op

    base = "r50k_base" if name == "gpt2" else name  # GPT-2 = the r50k ranks + <|endoftext|> 50256
    seen: dict = {}

    def record(url, expected_hash=None):
        seen.update(url=url, sha256=expected_hash)
        return {}

    original = op.load_tiktoken_bpe
    op.load_tiktoken_bpe = record
    try:
        recipe = op.ENCODING_CONSTRUCTORS[base]()
    finally:
        op.load_tiktoken_bpe = original
    return {"pattern": recipe["pat_str"], "special_tokens": recipe["special_tokens"],
            "n_vocab": recipe.get("explicit_n_vocab"), **seen}


def find_tiktoken_file(name: str, recipe: dict) -> Path:
    """The local ranks file of a tiktoken name, downloading it only where allowed; DataError when absent."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    url = recipe["url"]
    if cache:
        for cand in (hashlib.sha1(url.encode()).hexdigest(), f"{name}.tiktoken", url.rsplit("/", 1)[-1]):
            if (Path(cache) / cand).is_file():
                return _checked(Path(cache) / cand, recipe["sha256"], f"data.tokenizer={name!r}")
    if os.environ.get("SCALING_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") == "1":
        where = cache or "$TIKTOKEN_CACHE_DIR (unset)"
        raise DataError(f"data.tokenizer={name!r}: {name}.tiktoken (sha256 {recipe['sha256']}) not found; put it "
                        f"in {where} (from {url}), or use tiktoken:PATH")
    try:
        from tiktoken.load import read_file_cached

        read_file_cached(url, recipe["sha256"])
        default = cache or os.path.join(__import__("tempfile").gettempdir(), "data-gym-cache")
        return Path(default) / hashlib.sha1(url.encode()).hexdigest()
    except Exception as e:  # noqa: BLE001  (no network, a proxy, a bad download)
        raise DataError(f"data.tokenizer={name!r}: {name}.tiktoken (sha256 {recipe['sha256']}) is not cached and "
                        f"cannot be downloaded ({type(e).__name__}); put it in $TIKTOKEN_CACHE_DIR (from {url}), or "
                        "use tiktoken:PATH") from None


def _checked(path: Path, expected: Optional[str], what: str) -> Path:
    if expected:
        got = file_sha256(path)
        if got != expected:
            raise DataError(f"{what}: {path} has sha256 {got}; allowed: {expected} (replace the file)")
    return path


def _explicit(name: str, prefix: str, expected: Optional[str]) -> Path:
    path = Path(os.path.expanduser(name[len(prefix):]))
    if not path.is_file():
        pin = f" (sha256 {expected})" if expected else ""
        raise DataError(f"data.tokenizer={name!r}: {path}{pin} does not exist; put the tokenizer file there")
    return _checked(path.resolve(), expected, f"data.tokenizer={name!r}")


class TiktokenTokenizer:
    """A tiktoken ranks file with its pattern and special tokens. The ranks are read and the encoder built
    on first use, so opening a prepared folder or planning a preparation (which need only the vocabulary,
    the separators and the file's sha256) does not pay for it (about 0.15 CPU-s for GPT-2)."""

    def __init__(self, name: str, ranks_file: Path, pattern: str, special_tokens: dict, n_vocab: Optional[int]):
        self.name, self.file, self.sha256 = name, Path(ranks_file), file_sha256(ranks_file)
        self.spec = {"kind": "tiktoken", "name": name, "pattern": pattern, "special_tokens": special_tokens,
                     "n_vocab": n_vocab, "file": "tokenizer.tiktoken"}
        self.vocab_size = n_vocab if n_vocab is not None else self._enc.n_vocab
        eot = special_tokens.get("<|endoftext|>")
        self.bos_id = self.eos_id = eot

    @functools.cached_property
    def _enc(self):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        spec, ranks = self.spec, load_tiktoken_bpe(str(self.file))
        return tiktoken.Encoding(name=self.name, pat_str=spec["pattern"], mergeable_ranks=ranks,
                                 special_tokens=spec["special_tokens"], explicit_n_vocab=spec["n_vocab"])

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self._enc.decode([int(i) for i in ids])

    def encode_array(self, text: str) -> np.ndarray:
        core = getattr(self._enc, "_core_bpe", None)
        if core is not None and hasattr(core, "encode_to_tiktoken_buffer"):
            return np.frombuffer(core.encode_to_tiktoken_buffer(text, set()), dtype=np.uint32)
        return np.asarray(self._enc.encode_ordinary(text), dtype=np.uint32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def token_bytes(self) -> np.ndarray:
        out = np.zeros(self.vocab_size, dtype=np.int64)
        specials = set(self._enc._special_tokens.values())
        for i in range(self.vocab_size):
            if i not in specials:
                try:
                    out[i] = len(self._enc.decode_single_token_bytes(i))
                except KeyError:
                    pass
        return out

    def save(self, directory: Path) -> None:
        shutil.copyfile(self.file, Path(directory) / "tokenizer.tiktoken")
        _write_spec(directory, {**self.spec, "sha256": self.sha256})


class HFTokenizer:
    def __init__(self, name: str, path: Path):
        from tokenizers import Tokenizer

        self.name, self.file, self.sha256 = name, Path(path), file_sha256(path)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"data.tokenizer={name!r}: {path} is not a tokenizer.json ({e})") from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        pick = lambda names: next((vocab[n] for n in names if n in vocab), None)  # noqa: E731
        self.bos_id = pick(("<|endoftext|>", "<|begin_of_text|>", "<s>", "<bos>", "[CLS]"))
        self.eos_id = pick(("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]"))
        self.spec = {"kind": "hf", "name": name, "file": "tokenizer.json"}

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.uint32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.uint32) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def token_bytes(self) -> np.ndarray:
        from tokenizers import pre_tokenizers

        byte_level = "ByteLevel" in json.dumps(json.loads(self._tok.to_str()).get("decoder") or {})
        inverse = {ch: 1 for ch in pre_tokenizers.ByteLevel.alphabet()}
        special = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            tok = self._tok.id_to_token(i)
            if tok is None or tok in special:
                continue
            if byte_level:
                out[i] = sum(inverse.get(c, len(c.encode())) for c in tok)
            elif tok.startswith("<0x") and tok.endswith(">") and len(tok) == 6:
                out[i] = 1
            else:
                out[i] = len(tok.replace("\u2581", " ").encode())
        return out

    def save(self, directory: Path) -> None:
        shutil.copyfile(self.file, Path(directory) / "tokenizer.json")
        _write_spec(directory, {**self.spec, "sha256": self.sha256})


class SentencePieceTokenizer:
    def __init__(self, name: str, path: Path):
        import sentencepiece as spm

        self.name, self.file, self.sha256 = name, Path(path), file_sha256(path)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"data.tokenizer={name!r}: {path} is not a SentencePiece model ({e})") from None
        self.vocab_size = self._sp.GetPieceSize()
        self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
        self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
        self.spec = {"kind": "sp", "name": name, "file": "tokenizer.model"}

    def encode(self, text: str) -> list[int]:
        return self._sp.Encode(text)

    def decode(self, ids) -> str:
        return self._sp.Decode([int(i) for i in ids])

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.Encode(text), dtype=np.uint32)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.uint32) for ids in self._sp.Encode(texts, num_threads=1)]

    def token_bytes(self) -> np.ndarray:
        sp, out = self._sp, np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if sp.IsControl(i) or sp.IsUnknown(i):
                continue
            out[i] = 1 if sp.IsByte(i) else len(sp.IdToPiece(i).replace("\u2581", " ").encode())
        return out

    def save(self, directory: Path) -> None:
        shutil.copyfile(self.file, Path(directory) / "tokenizer.model")
        _write_spec(directory, {**self.spec, "sha256": self.sha256})


def pretrained_tokenizer(name: str, expected_sha256: Optional[str] = None):
    """The pretrained tokenizer named by ``data.tokenizer`` (ConfigError for a name that is none)."""
    if name in TIKTOKEN_NAMES:
        recipe = _tiktoken_recipe(name)
        path = find_tiktoken_file(name, recipe)
        if expected_sha256:
            _checked(path, expected_sha256, f"data.tokenizer={name!r}")
        return TiktokenTokenizer(name, path, recipe["pattern"], recipe["special_tokens"], recipe["n_vocab"])
    if name.startswith("tiktoken:"):
        path = _explicit(name, "tiktoken:", expected_sha256)
        recipe = _tiktoken_recipe("gpt2")  # a bare ranks file: GPT-2's pattern and <|endoftext|> after the ranks
        from tiktoken.load import load_tiktoken_bpe

        n = len(load_tiktoken_bpe(str(path)))
        return TiktokenTokenizer(name, path, recipe["pattern"], {"<|endoftext|>": n}, n + 1)
    if name.startswith("hf:"):
        return HFTokenizer(name, _explicit(name, "hf:", expected_sha256))
    if name.startswith("sp:"):
        return SentencePieceTokenizer(name, _explicit(name, "sp:", expected_sha256))
    raise ConfigError(f"data.tokenizer={name!r} is not a tokenizer; allowed: {ALLOWED}")


def load_pretrained(directory: Path, name: str):
    """The pretrained tokenizer saved beside prepared data (its copied file and spec); DataError when the
    file is not the one the data was prepared with."""
    spec = json.loads((Path(directory) / SPEC_FILE).read_text())
    tok = _from_spec(Path(directory), name, spec)
    if spec.get("sha256") and tok.sha256 != spec["sha256"]:
        raise DataError(f"prepared data at {directory}: {spec['file']} has sha256 {tok.sha256} but {SPEC_FILE} "
                        f"says {spec['sha256']}; delete that folder to prepare it again")
    return tok


def _from_spec(directory: Path, name: str, spec: dict):
    path = directory / spec["file"]
    if spec["kind"] == "tiktoken":
        specials = {k: int(v) for k, v in spec["special_tokens"].items()}
        return TiktokenTokenizer(name, path, spec["pattern"], specials, spec["n_vocab"])
    if spec["kind"] == "hf":
        return HFTokenizer(name, path)
    if spec["kind"] == "sp":
        return SentencePieceTokenizer(name, path)
    raise DataError(f"{directory / SPEC_FILE}: kind={spec['kind']!r}; allowed: tiktoken, hf, sp")


def named_vocab_size(name: str) -> Optional[int]:
    """Vocabulary of a tiktoken name without reading its file (None for anything else)."""
    if name in TIKTOKEN_NAMES:
        recipe = _tiktoken_recipe(name)
        return recipe["n_vocab"] or None
    return None


def _write_spec(directory: Path, spec: dict) -> None:
    path = Path(directory) / SPEC_FILE
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(spec, indent=1))
        f.flush()
        os.fsync(f.fileno())
