"""The data layer: corpus sources (``corpus``), tokenizers (``tokenizer``), preparation into cached
token files (``prepare``), and the (seed, step) batch loader (``loader``, ``prefetch``)."""

from importlib import import_module
from typing import Any

_EXPORTS = {"prepare_data": "prepare", "check_context": "prepare", "open_prepared": "prepare",
            "PreparedData": "prepare", "batch_offsets": "loader", "make_batch": "loader", "eval_offsets": "loader"}


def __getattr__(name: str) -> Any:  # the documented ``from scaling.data import prepare_data, ...``, loaded lazily
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scaling.data' has no attribute {name!r}")
    return getattr(import_module(f"scaling.data.{_EXPORTS[name]}"), name)
