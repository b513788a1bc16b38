"""Sweeps over repeated data (``data.unique_tokens``, docs/data_constrained.md): token budgets of U x
epochs, the skip rules of a repeated run, and the U, epochs and repeated share ``scaling-plan`` shows.

    train.tokens: ${repeat_tokens:${sweep.unique_tokens},${sweep.epochs}}   # D = epochs x U (U as windows)

U counts as the run counts it (``scaling.data.repeat``): the inputs of the (U - 1) // context windows of
the cut, ``window_count(U, context) * context`` tokens. The run may cut a little more, to end at a document
boundary; its record says exactly.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from omegaconf import DictConfig

from scaling.data.repeat import check_request, max_unique_epochs, window_count
from scaling.errors import ConfigError


def unique_of(cfg: Any) -> Optional[int]:
    """``data.unique_tokens`` of a composed config, or None."""
    value = cfg.data.get("unique_tokens") if hasattr(cfg.data, "get") else getattr(cfg.data, "unique_tokens", None)
    return None if value is None else int(value)


def windows_tokens(unique_tokens: int, context: int) -> int:
    """U as the run counts it: the input tokens of the cut's windows."""
    return window_count(unique_tokens, context) * int(context)


def repeat_tokens(unique_tokens: Any, epochs: Any, *, _root_: DictConfig) -> int:
    """D = epochs x U, U counted as the run's windows (``windows_tokens``), rounded to whole tokens."""
    for key, value in (("sweep.unique_tokens", unique_tokens), ("sweep.epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key}={value!r} is invalid: it must be a positive number")
    if unique_tokens != int(unique_tokens):
        raise ConfigError(f"sweep.unique_tokens={unique_tokens!r} is invalid: it must be a whole number of tokens")
    return int(round(float(epochs) * windows_tokens(int(unique_tokens), int(_root_.model.context))))


def unique_skip_reason(cfg: Any, tokens: int, sweep: DictConfig, data: tuple[Optional[int], bool]) -> Optional[str]:
    """The data rules of a run on repeated data (in place of one pass over the corpus): U must fit in the
    train split (``data``: its training tokens and whether that count is exact), and D / U must not exceed
    ``sweep.max_unique_epochs`` (default 100)."""
    unique = unique_of(cfg)
    available, exact = data
    if available is not None and unique > available:
        held = f"{available:,} training tokens" if exact else f"at most {available:,} training tokens (not prepared yet)"
        return f"beyond the data: data.unique_tokens={unique:,} > the train split of data.source={cfg.data.source!r}, " \
               f"which holds {held}"
    ceiling = max_unique_epochs(sweep)
    u = windows_tokens(unique, int(cfg.model.context))
    if u > 0 and tokens / u > ceiling:
        return (f"beyond the repeat ceiling: {tokens:,} tokens are {tokens / u:.4g} epochs of data.unique_tokens="
                f"{unique:,} > sweep.max_unique_epochs={ceiling:g}")
    return None


def repeat_fields(cfg: Any, tokens: int, skipped: bool) -> dict[str, Any]:
    """``unique_tokens``, ``epochs`` (D / U) and ``repeated_share`` ((D - U) / D, 0 within one epoch) of a
    planned run; empty without ``data.unique_tokens``. A run that will train is checked as the run checks
    itself (one-line errors: U smaller than one batch)."""
    unique = unique_of(cfg)
    if unique is None:
        return {}
    context, batch = int(cfg.model.context), int(cfg.train.batch_size)
    if not skipped:
        check_request(unique, context, batch, tokens, max_unique_epochs(cfg.get("sweep")))
    u = windows_tokens(unique, context)
    epochs = tokens / u if u else math.inf
    return {"unique_tokens": u, "epochs": epochs, "repeated_share": max(0.0, 1.0 - 1.0 / epochs) if u else None}


RESOLVERS = {"repeat_tokens": repeat_tokens}
