"""Tokenizers: byte-level (UTF-8 bytes), character-level, byte-level BPE trained locally, and the
pretrained ones of ``scaling.data.tokenizers`` (gpt2 and the tiktoken names, tiktoken:, hf:, sp:).

Each one maps text to ids and back (``encode`` / ``decode``), encodes a whole corpus into a numpy array
(``encode_array``), and saves itself beside the prepared data (``save``) so that evaluation and
sampling decode exactly as preparation encoded. ``load_tokenizer(dir)`` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from scaling.errors import ConfigError, DataError

TOKENIZERS = ("byte", "char", "bpe")
CHARS_FILE = "chars.json"
BPE_FILE = "tokenizer.json"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds every id of a vocabulary of this size."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} tokens is larger than the largest token dtype (uint32) allows")


class ByteTokenizer:
    """UTF-8 bytes: vocabulary of 256, nothing to train or save."""

    name = "byte"
    vocab_size = 256
    bos_id = eos_id = None  # no special tokens: documents can only be joined without a separator
    sha256 = "byte"

    def token_bytes(self) -> np.ndarray:
        return np.ones(256, dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def save(self, directory: Path) -> None:
        pass


class CharTokenizer:
    """The distinct characters of the corpus, sorted by code point; id = rank in that list."""

    name = "char"
    bos_id = eos_id = None

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.vocab_size = len(self.chars)
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted, (V,)
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.sha256 = hashlib.sha256(json.dumps(self.chars, ensure_ascii=True).encode()).hexdigest()

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in the char vocabulary of this corpus") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def token_bytes(self) -> np.ndarray:
        return np.array([len(ch.encode("utf-8", "surrogatepass")) for ch in self.chars], dtype=np.int64)

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (n_chars,) code points
        ids = np.minimum(np.searchsorted(self._codes, codes), max(self.vocab_size - 1, 0))
        if len(codes) and not np.array_equal(self._codes[ids], codes):
            raise DataError("text holds characters outside the char vocabulary of this corpus")
        return ids.astype(dtype_for_vocab(self.vocab_size))

    def save(self, directory: Path) -> None:
        _write_text(Path(directory) / CHARS_FILE, json.dumps(self.chars, ensure_ascii=True))

    @classmethod
    def load(cls, directory: Path) -> "CharTokenizer":
        return cls(json.loads((Path(directory) / CHARS_FILE).read_text()))


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained locally with the ``tokenizers`` library."""

    name = "bpe"
    bos_id = eos_id = None

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.sha256 = hashlib.sha256(tok.to_str().encode()).hexdigest()

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text encodes
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def token_bytes(self) -> np.ndarray:
        """Bytes of each token: a byte-level token is a string of one symbol per byte."""
        return np.array([len(self._tok.id_to_token(i) or "") for i in range(self.vocab_size)], dtype=np.int64)

    def encode_array(self, text: str) -> np.ndarray:
        pieces = _chunks(text)
        out = [np.asarray(e.ids, dtype=np.uint32) for e in self._tok.encode_batch(pieces)]
        ids = np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)
        return ids.astype(dtype_for_vocab(self.vocab_size))

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.uint32) for e in self._tok.encode_batch(texts)]

    def save(self, directory: Path) -> None:
        _write_text(Path(directory) / BPE_FILE, self._tok.to_str())

    @classmethod
    def load(cls, directory: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(Path(directory) / BPE_FILE)))


def train_tokenizer(name: str, train_texts, all_texts, bpe_vocab_size: int, expected_sha256=None):
    """Build the tokenizer ``name``: char reads every character of the corpus (``all_texts``, an iterable of
    texts), bpe learns from the train split (``train_texts``); the pretrained ones load their file."""
    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        chars: set = set()
        for t in all_texts:
            chars.update(t)
        return CharTokenizer(sorted(chars))
    if name == "bpe":
        return BPETokenizer.train((p for t in train_texts for p in _chunks(t)), bpe_vocab_size)
    from scaling.data.tokenizers import ALLOWED, is_pretrained, pretrained_tokenizer

    if is_pretrained(name):
        return pretrained_tokenizer(name, expected_sha256)
    raise ConfigError(f"data.tokenizer={name!r} is not a tokenizer; allowed: {ALLOWED}")


def tokenizer_from_dir(directory, name: str):
    """The tokenizer ``name`` saved in ``directory`` (by its ``save``)."""
    directory = Path(directory)
    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        return CharTokenizer.load(directory)
    if name == "bpe":
        return BPETokenizer.load(directory)
    if name == "none":
        from scaling.data.pretokenized import IdsOnly

        return IdsOnly(int((directory / "vocab_size.txt").read_text()))
    from scaling.data.tokenizers import load_pretrained

    return load_pretrained(directory, name)


def load_tokenizer(prepared_dir):
    """The tokenizer saved beside a prepared dataset (named in its ``meta.json``)."""
    directory = Path(prepared_dir)
    try:
        name = json.loads((directory / "meta.json").read_text())["tokenizer"]
    except FileNotFoundError:
        msg = f"prepared data at {directory}: meta.json is missing; delete the folder to prepare it again"
        raise DataError(msg) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"prepared data at {directory}: meta.json names no tokenizer ({e}); prepare it again") from None
    from scaling.data.tokenizers import is_pretrained

    if name not in TOKENIZERS + ("none",) and not is_pretrained(name):
        raise DataError(f"meta.json at {directory} names an unknown tokenizer {name!r}; allowed: "
                        f"{', '.join(TOKENIZERS)} or a pretrained one")
    try:
        return tokenizer_from_dir(directory, name)
    except Exception as e:  # missing or unreadable tokenizer file
        raise DataError(f"prepared data at {directory}: tokenizer {name!r} cannot be read ({e}); delete the folder "
                        "to prepare it again") from None


def _chunks(text: str, size: int = 1 << 16) -> list[str]:
    """Split text into pieces of about ``size`` characters at line ends (for batch encoding and training)."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
