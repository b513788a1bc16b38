"""The deterministic batch loader: random windows of a token array, chosen by (seed, step) alone.

A run's batch at optimizer step ``step`` is a pure function of ``(seed, step)`` and the sizes, so a resumed
run sees exactly the batches an uninterrupted one would, with no loader state to checkpoint, and
data-parallel ranks can each take a slice of the same global batch.
"""

from __future__ import annotations

import numpy as np
import torch

from scaling.errors import DataError


def batch_offsets(n_tokens: int, context: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Start offsets (int64, (batch_size,)) of the global batch of optimizer step ``step``.

    Each window needs ``context + 1`` tokens (inputs and the next-token targets), so offsets lie in
    ``[0, n_tokens - context - 1]``, uniformly, with replacement (nanoGPT's sampling).
    """
    if context < 1 or batch_size < 1:
        raise DataError(f"context={context} and batch_size={batch_size} must both be positive")
    if n_tokens < context + 1:
        raise DataError(f"a split of {n_tokens} tokens is too short for context {context}; it needs {context + 1}")
    if seed < 0 or step < 0:
        raise DataError(f"seed={seed} and step={step} must be non-negative")
    rng = np.random.Generator(np.random.PCG64([seed, step]))
    return rng.integers(0, n_tokens - context, size=batch_size, dtype=np.int64)


def largest_remainder(weights, total: int) -> np.ndarray:
    """Integer shares (int64) of ``total`` in proportion to ``weights`` that sum exactly to ``total``: the
    floors, plus one for the largest remainders (ties to the earlier source)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or np.any(w < 0) or w.sum() <= 0:
        raise DataError(f"weights {list(weights)} are not allowed; use weights >= 0 with at least one positive")
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def step_offsets(tokens, context: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Start offsets of step ``step``'s global batch in ``tokens``: ``batch_offsets`` for a plain split; for a
    mixture (``tokens.segments``: (name, start, stop, weight)) each source's share of the batch by the
    largest-remainder rule, drawn inside that source; with ``tokens.align == "bos"`` only at document starts.
    A pure function of (seed, step) and the sizes, like ``batch_offsets``."""
    plan = getattr(tokens, "repeat", None)  # numpy arrays have a .repeat method: look for the plan's offsets
    if plan is not None and hasattr(plan, "offsets"):  # data.unique_tokens: epochs over a cut (scaling.data.repeat)
        return plan.offsets(batch_size, seed, step)
    segments = [s for s in getattr(tokens, "segments", ()) if s[3] > 0]
    aligned = getattr(tokens, "align", "none") == "bos"
    if not segments and not aligned:
        return batch_offsets(len(tokens), context, batch_size, seed, step)
    if not segments:
        return _draw(tokens, 0, len(tokens), context, batch_size, np.random.PCG64([seed, step]), aligned)
    counts = largest_remainder([s[3] for s in segments], batch_size)
    parts = [_draw(tokens, start, stop, context, int(c), np.random.PCG64([seed, step, k]), aligned)
             for k, ((_, start, stop, _), c) in enumerate(zip(segments, counts)) if c]
    return np.concatenate(parts)


def _draw(tokens, start: int, stop: int, context: int, n: int, bitgen, aligned: bool) -> np.ndarray:
    """``n`` window starts inside [start, stop): uniform offsets, or uniform among the document starts."""
    if stop - start < context + 1:
        raise DataError(f"a source of {stop - start} tokens is too short for context {context}; it needs {context + 1}")
    rng = np.random.Generator(bitgen)
    if not aligned:
        return start + rng.integers(0, stop - start - context, size=n, dtype=np.int64)
    starts = tokens.doc_starts
    lo, hi = np.searchsorted(starts, start), np.searchsorted(starts, stop - context - 1, side="right")
    if hi <= lo:
        raise DataError(f"data.align=bos: no document starts a window of {context + 1} tokens in [{start}, {stop})")
    return starts[lo + rng.integers(0, hi - lo, size=n, dtype=np.int64)]


def make_batch(tokens: np.ndarray, offsets: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y, int64 (B, context), from windows of ``tokens`` at ``offsets``; y is x shifted by one."""
    idx = np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(context + 1, dtype=np.int64)  # (B, T+1)
    window = np.asarray(tokens[idx], dtype=np.int64)  # one gather from the memmap, (B, T+1)
    x = np.ascontiguousarray(window[:, :-1])  # (B, T)
    y = np.ascontiguousarray(window[:, 1:])  # (B, T), the next token at each position
    return torch.from_numpy(x), torch.from_numpy(y)


def eval_offsets(n_tokens: int, context: int, max_tokens: int) -> np.ndarray:
    """Fixed start offsets (int64) of non-overlapping evaluation windows spread evenly over a split.

    ``max(1, max_tokens // context)`` windows of ``context`` predictions each, at most as many as fit
    without overlap; when fewer than that, they are spaced evenly from the start to the end of the split
    so that every part of it is represented. The same sizes always give the same windows.
    """
    if context < 1:
        raise DataError(f"context={context} must be positive")
    if n_tokens < context + 1:
        raise DataError(f"a split of {n_tokens} tokens is too short for context {context}; it needs {context + 1}")
    fit = (n_tokens - 1) // context  # windows that fit side by side
    n = min(max(1, max_tokens // context), fit)
    if n == fit:
        return np.arange(n, dtype=np.int64) * context
    span = n_tokens - context - 1  # last valid offset; consecutive offsets differ by >= context
    return np.arange(n, dtype=np.int64) * span // max(n - 1, 1)


def aligned_eval_offsets(doc_starts: np.ndarray, start: int, stop: int, context: int, max_tokens: int,
                         where: str = "the validation split") -> np.ndarray:
    """Fixed evaluation windows (int64 offsets) inside ``[start, stop)`` that each begin at a document start
    (``data.align=bos``), with non-overlapping predictions as ``eval_offsets`` gives.

    The chain of windows is taken greedily from the first document start that leaves room for a window:
    each next one at the first document start at least ``context`` tokens after the previous (the most
    windows that fit). When ``max(1, max_tokens // context)`` are fewer, that many links of the chain,
    spaced evenly along it from its first to its last. The same starts and sizes always give the same windows.
    """
    if context < 1:
        raise DataError(f"context={context} must be positive")
    starts = np.asarray(doc_starts, dtype=np.int64)
    lo, hi = np.searchsorted(starts, start), np.searchsorted(starts, stop - context - 1, side="right")
    candidates = starts[lo:hi]
    if len(candidates) == 0:
        raise DataError(f"data.align=bos: no document of {where} starts an evaluation window of {context + 1} "
                        f"tokens; allowed: a split with a document start at least {context + 1} tokens before "
                        "its end (use data.align=none or a shorter model.context)")
    after = np.searchsorted(candidates, candidates + context).tolist()  # each start's next link
    chain, k = [], 0
    while k < len(after):
        chain.append(k)
        k = after[k]
    links = candidates[chain]
    n = min(max(1, max_tokens // context), len(links))
    if n == len(links):
        return links
    return links[np.arange(n, dtype=np.int64) * (len(links) - 1) // max(n - 1, 1)]
