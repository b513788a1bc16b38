"""Repeated data (``data.unique_tokens``): a train cut of U unique tokens read for as many epochs as the
run's token budget needs, each epoch a fresh permutation of its windows.

The cut is the first U tokens of the train split, ended at the last document boundary at or before U
where the data has a document index and that boundary keeps at least ``WHOLE_DOCUMENTS`` (90%) of U;
otherwise (no index, or a long document across U) it ends at U, inside that document. The cut is read as ``n_windows = (cut - 1) // context`` windows of
``context + 1`` tokens, window w starting at ``w * context``: their inputs tile the first
``n_windows * context`` tokens exactly once, and that is the run's count of unique tokens U (the tokens
the model sees as inputs; the targets are the same tokens shifted by one, plus one more).

Epoch e is the permutation of the windows drawn from ``PCG64([seed, e, REPEAT_TAG])``. The batch of
optimizer step s is the windows at global positions ``s*B .. s*B + B - 1`` of the concatenated epochs
(so a step may straddle two epochs): a pure function of (seed, step) and the sizes, with no state, so a
resumed run sees the batches an uninterrupted one would. Validation is untouched: it reads the held-out
split, which the train cut (a prefix of the train split) never contains.

    prepared, plan = with_repeats(prepared, unique_tokens=262_144, context=64, batch_size=8,
                                  tokens=D, max_epochs=100)
    plan.offsets(batch_size, seed, step)          # window starts of one step
    plan.record(steps, batch_size)                # unique_tokens, epochs, tokens_per_epoch, ...
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np

from scaling.errors import ConfigError, DataError

REPEAT_TAG = 0x52455045  # "REPE": the epoch permutations' own stream, apart from batch_offsets' (seed, step)
WHOLE_DOCUMENTS = 0.9  # the cut ends at a document boundary when that keeps at least this share of U
DEFAULT_MAX_EPOCHS = 100.0  # ceiling on D / U unless the sweep says otherwise (sweep.max_unique_epochs)


def window_count(cut: int, context: int) -> int:
    """Windows of ``context + 1`` tokens whose inputs tile a cut of ``cut`` tokens without overlap."""
    return max(0, (int(cut) - 1) // int(context))


def steps_of(tokens: int, context: int, batch_size: int) -> int:
    """Optimizer steps of a run of ``tokens`` (as ``scaling.run.sizes.RunSizes`` rounds them)."""
    return max(1, round(int(tokens) / (int(batch_size) * int(context))))


@lru_cache(maxsize=4)
def epoch_permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The order (int64, read-only) in which epoch ``epoch`` visits the ``n_windows`` windows of the cut.
    Cached: a step asks for the epoch it is in, and the next step almost always asks for the same one."""
    perm = np.random.Generator(np.random.PCG64([seed, epoch, REPEAT_TAG])).permutation(n_windows)
    perm.setflags(write=False)
    return perm


def repeat_offsets(n_windows: int, context: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Start offsets (int64, (batch_size,)) of step ``step``'s windows in the cut: global window positions
    ``step * batch_size ..`` of the concatenated epochs, each epoch a permutation of the windows."""
    if n_windows < batch_size:
        raise DataError(f"a cut of {n_windows} windows is smaller than one batch of {batch_size}")
    if seed < 0 or step < 0:
        raise DataError(f"seed={seed} and step={step} must be non-negative")
    g = step * batch_size + np.arange(batch_size, dtype=np.int64)  # global window positions
    epochs, pos = g // n_windows, g % n_windows
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):  # one epoch, or two where the step straddles a boundary
        m = epochs == e
        out[m] = epoch_permutation(n_windows, seed, int(e))[pos[m]]
    return out * context


def epoch_accounting(n_windows: int, context: int, windows_seen: int) -> dict[str, Any]:
    """``epochs`` (D / U) and ``tokens_per_epoch`` (input tokens seen in each epoch, the last one possibly
    partial) after ``windows_seen`` windows of a cut of ``n_windows``."""
    full, rest = divmod(int(windows_seen), int(n_windows))
    per_epoch = [n_windows * context] * full + ([rest * context] if rest else [])
    return {"epochs": windows_seen / n_windows, "tokens_per_epoch": per_epoch}


@dataclass(frozen=True)
class RepeatPlan:
    """How a run repeats its data: the cut (``cut`` tokens of the train split) and its windows."""

    requested: int  # data.unique_tokens as configured
    cut: int  # tokens of the train split kept (a prefix; whole documents where the data knows them)
    context: int
    n_windows: int
    whole_documents: bool  # the cut ends at a document boundary

    @property
    def unique_tokens(self) -> int:
        """U: the tokens the windows' inputs cover, each once per epoch."""
        return self.n_windows * self.context

    def offsets(self, batch_size: int, seed: int, step: int) -> np.ndarray:
        return repeat_offsets(self.n_windows, self.context, batch_size, seed, step)

    def record(self, steps: int, batch_size: int) -> dict[str, Any]:
        """The record's fields: U, the request and the cut, epochs (D / U) and the tokens of each epoch."""
        return {"unique_tokens": self.unique_tokens, "unique_tokens_requested": self.requested,
                "unique_cut_tokens": self.cut, "unique_whole_documents": self.whole_documents,
                **epoch_accounting(self.n_windows, self.context, steps * batch_size)}


def check_request(unique_tokens: Optional[int], context: int, batch_size: int, tokens: int,
                  max_epochs: float = DEFAULT_MAX_EPOCHS) -> None:
    """ConfigError, before any data is read, for a U smaller than one batch or a budget that would repeat
    it more than ``max_epochs`` times (counted on the windows U makes before any document cut)."""
    if unique_tokens is None:
        return
    least = batch_size * context + 1
    if unique_tokens < least:
        raise ConfigError(f"data.unique_tokens={unique_tokens:,} is smaller than one batch: allowed at least "
                          f"{least:,} (train.batch_size={batch_size} windows of model.context={context} + 1 tokens)")
    check_epochs(unique_tokens, window_count(unique_tokens, context), context, batch_size,
                 steps_of(tokens, context, batch_size), max_epochs)


def check_epochs(requested: int, n_windows: int, context: int, batch_size: int, steps: int,
                 max_epochs: float) -> None:
    """ConfigError when ``steps`` steps would pass over the cut more than ``max_epochs`` times."""
    epochs = steps * batch_size / n_windows
    if epochs > max_epochs:
        raise ConfigError(f"train.tokens={steps * batch_size * context:,} would read data.unique_tokens="
                          f"{requested:,} ({n_windows * context:,} as windows) {epochs:.4g} times; allowed: at most "
                          f"{max_epochs:g} epochs (sweep.max_unique_epochs)")


def cut_point(n_tokens: int, unique_tokens: int, doc_starts: Optional[np.ndarray] = None) -> tuple[int, bool]:
    """(tokens kept, whether the cut ends at a document boundary): the last document start at or before U
    when it keeps at least ``WHOLE_DOCUMENTS`` of U, else U itself."""
    if doc_starts is not None and len(doc_starts):
        if unique_tokens >= n_tokens:
            return n_tokens, True
        starts = np.asarray(doc_starts, dtype=np.int64)
        k = int(np.searchsorted(starts, unique_tokens, side="right"))  # starts[:k] <= U
        boundary = int(starts[k - 1]) if k else 0
        if boundary > 0 and boundary >= WHOLE_DOCUMENTS * unique_tokens:
            return boundary, True
    return unique_tokens, False


def plan_repeat(n_tokens: int, unique_tokens: int, context: int, batch_size: int,
                doc_starts: Optional[np.ndarray] = None, source: Any = None) -> RepeatPlan:
    """The cut of a train split of ``n_tokens`` for ``data.unique_tokens``; DataError when U is larger than
    the split or its cut holds fewer windows than one batch."""
    if unique_tokens > n_tokens:
        raise DataError(f"data.unique_tokens={unique_tokens:,} is larger than the train split of data.source="
                        f"{source!r} ({n_tokens:,} tokens); allowed: at most {n_tokens:,}")
    cut, whole = cut_point(n_tokens, unique_tokens, doc_starts)
    n_windows = window_count(cut, context)
    if n_windows < batch_size:
        raise DataError(f"data.unique_tokens={unique_tokens:,}: its cut at a document boundary keeps {cut:,} tokens, "
                        f"{n_windows} windows, fewer than one batch of train.batch_size={batch_size}; allowed: a "
                        f"cut of at least {batch_size * context + 1:,} tokens")
    return RepeatPlan(int(unique_tokens), int(cut), int(context), int(n_windows), bool(whole))


class RepeatedTokens:
    """The train split seen through a ``RepeatPlan``: ``len`` is the cut, indexing reads the split, and
    ``repeat`` tells the loader (``scaling.data.loader.step_offsets``) to draw windows by epochs."""

    def __init__(self, tokens: Any, plan: RepeatPlan):
        self.tokens, self.repeat = tokens, plan
        self.dtype = tokens.dtype

    def __len__(self) -> int:
        return self.repeat.cut

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.tokens[slice(*index.indices(len(self)))]
        idx = np.asarray(index)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"token index outside the train cut of {len(self)} tokens")
        return self.tokens[index]

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.tokens[0:len(self)])
        return out.astype(dtype) if dtype is not None else out


def document_starts(prepared: Any) -> Optional[np.ndarray]:
    """Global document-start offsets of the train split, or None where the data has no document index."""
    from scaling.data.shards import TokenArray

    train = prepared.train
    try:
        if not isinstance(train, TokenArray):
            index = (getattr(prepared, "doc_index", None) or {}).get("train")
            if not index:
                return None
            train = TokenArray([train], doc_index=index)
        return train.doc_starts
    except (DataError, OSError, ValueError):
        return None


def with_repeats(prepared: Any, unique_tokens: Optional[int], context: int, batch_size: int, tokens: int,
                 max_epochs: float = DEFAULT_MAX_EPOCHS) -> tuple[Any, Optional[RepeatPlan]]:
    """``prepared`` with its train split replaced by the cut for ``unique_tokens`` (and the plan), or as it
    is (and None) when U is not set. One-line errors for a U the data cannot give or a budget over the
    epoch ceiling."""
    if unique_tokens is None:
        return prepared, None
    source = (getattr(prepared, "meta", None) or {}).get("source")
    plan = plan_repeat(len(prepared.train), int(unique_tokens), context, batch_size, document_starts(prepared), source)
    check_epochs(plan.requested, plan.n_windows, context, batch_size, steps_of(tokens, context, batch_size), max_epochs)
    return dataclasses.replace(prepared, train=RepeatedTokens(prepared.train, plan)), plan


def max_unique_epochs(sweep: Any) -> float:
    """The epoch ceiling of a run: ``sweep.max_unique_epochs`` where its sweep sets one, else 100."""
    value = sweep.get("max_unique_epochs") if hasattr(sweep, "get") else None
    if value is None:
        return DEFAULT_MAX_EPOCHS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"sweep.max_unique_epochs={value!r} is invalid: it must be a positive number")
    return float(value)
