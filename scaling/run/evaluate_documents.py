"""Document-level validation (``train.eval_documents``): the first K documents of the validation split (of
each source, for a mixture), each scored whole, as lm-evaluation-harness's rolling log-likelihood tasks
(wikitext) score theirs.

A document is the span from its start in the split's document index to the next start (or the end of its
source's held-out tokens). With ``data.doc_sep=bos`` (or ``both``) it begins with its separator, which
conditions the first text token as lm-eval's prefix token does; with ``eos`` the separator id is put in
front of the document's tokens for the same purpose. Every token after that first one is predicted exactly
once, from the tokens before it in its own document only, in the windows of lm-eval's
``get_rolling_token_windows`` (``context_len=1``): consecutive windows of ``model.context`` predictions,
and a last, shorter run of predictions scored at the end of a full-length window that reaches back into
the document (up to ``context - 1`` tokens of its own left context). Windows are batched by length, padded
at their end with targets of -100, so padding adds nothing (attention is causal).

The sums are kept as ``EvalSums`` (``doc/nats``, ``doc/tokens``, ``doc/bytes``, ``doc/documents``), so
``doc/loss`` (nats/token), ``doc/ppl`` and ``doc/bpb`` (summed nats / (ln 2 x the documents' UTF-8 bytes,
lm-eval's ``bits_per_byte``) are exact transforms; a mixture adds ``doc/<source>/...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from scaling.data.shards import TokenArray
from scaling.errors import ConfigError, DataError
from scaling.run.distributed import DistContext
from scaling.run.evaluate import EvalSums, combined

SEPARATED = ("bos", "eos", "both")  # data.doc_sep values whose documents the model can tell apart
RESULT_KEYS = ("loss", "nats", "tokens", "bytes", "bpb", "ppl", "documents")  # doc/<key> -> result.json doc_<key>


@dataclass(frozen=True)
class Window:
    """One model input inside a document's sequence: ``length`` inputs from ``start``, the last ``scored``
    targets counted (the ones before are context only)."""

    doc: int
    start: int
    length: int
    scored: int


def rolling_windows(n_tokens: int, context: int) -> list[tuple[int, int, int]]:
    """(input start, length, scored) of the windows that predict tokens 1..n-1 of an ``n_tokens`` sequence,
    each once: lm-eval's rolling windows. Full windows of ``context`` predictions side by side; the rest
    scored at the end of a window of up to ``context`` inputs that ends with the sequence."""
    out, first = [], 1  # the first target not yet scored
    while first < n_tokens:
        scored = min(context, n_tokens - first)
        end = first + scored  # one past the last target
        length = min(context, end - 1)
        out.append((end - 1 - length, length, scored))
        first = end
    return out


def document_spans(doc_starts: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """[start, end) (int64, (n, 2)) of the first ``k`` documents that start inside ``[start, stop)``; each
    ends where the next begins, the last of the range at ``stop``."""
    starts = np.asarray(doc_starts, dtype=np.int64)
    inside = starts[(starts >= start) & (starts < stop)]
    ends = np.append(inside[1:], stop)
    return np.stack([inside, ends], axis=1)[:k]


def documents_of(tokens: Any, spans: np.ndarray, prefix: Optional[int]) -> list[np.ndarray]:
    """Each span's tokens (int64), with ``prefix`` in front where one is given."""
    head = np.array([] if prefix is None else [prefix], dtype=np.int64)
    return [np.concatenate([head, np.asarray(tokens[int(a):int(b)], dtype=np.int64)]) for a, b in spans]


@torch.no_grad()
def document_nats(model: torch.nn.Module, docs: list[np.ndarray], context: int, micro: int, device: torch.device,
                  autocast: Any, ctx: DistContext) -> np.ndarray:
    """Summed nats (float64, one per document) of tokens 1..n-1 of each document, each predicted once from
    its own document's tokens before it; the windows split across ranks."""
    windows = [Window(d, *w) for d, doc in enumerate(docs) for w in rolling_windows(len(doc), context)]
    windows.sort(key=lambda w: -w.length)  # batches of similar lengths: little padding
    mine = windows[ctx.rank::ctx.world_size]
    nats = torch.zeros(len(docs), dtype=torch.float64, device=device)
    model.eval()
    for i in range(0, len(mine), micro):
        x, y, owner = _batch(mine[i:i + micro], docs)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            logits, _ = model(x)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="none")
        nats.index_add_(0, owner.to(device), nll.view(y.shape).double().sum(1))
    if ctx.enabled:
        torch.distributed.all_reduce(nats)
    model.train()
    return nats.cpu().numpy()


def _batch(windows: list[Window], docs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets (-100 where not scored or padded) and owning document of a micro batch of windows,
    padded at the end to its longest."""
    width = max(w.length for w in windows)
    x = np.zeros((len(windows), width), dtype=np.int64)
    y = np.full((len(windows), width), -100, dtype=np.int64)
    for r, w in enumerate(windows):
        seq = docs[w.doc]
        x[r, :w.length] = seq[w.start:w.start + w.length]
        y[r, w.length - w.scored:w.length] = seq[w.start + w.length - w.scored + 1:w.start + w.length + 1]
    return torch.from_numpy(x), torch.from_numpy(y), torch.tensor([w.doc for w in windows])


def document_sums(nats: np.ndarray, docs: list[np.ndarray], token_bytes: Optional[np.ndarray]) -> EvalSums:
    """The sums over documents scored by ``document_nats``: their nats, predicted tokens and those tokens'
    UTF-8 bytes (None without ``token_bytes``)."""
    tokens = sum(len(d) - 1 for d in docs if len(d))
    nbytes = None if token_bytes is None else int(sum(int(token_bytes[d[1:]].sum()) for d in docs))
    return EvalSums(float(np.sum(nats)), int(tokens), nbytes, documents=len(docs))


class DocumentEvaluator:
    """The final document-level evaluation: ``documents()`` scores the same documents every time."""

    def __init__(self, model: torch.nn.Module, sources: list, context: int, micro: int, device: torch.device,
                 autocast: Any, ctx: DistContext, token_bytes: Optional[np.ndarray] = None):
        self.model, self.sources, self.context, self.micro = model, sources, context, micro
        self.device, self.autocast, self.ctx, self.token_bytes = device, autocast, ctx, token_bytes

    def documents(self) -> EvalSums:
        parts = []
        for name, docs in self.sources:
            nats = document_nats(self.model, docs, self.context, self.micro, self.device, self.autocast, self.ctx)
            parts.append((name, document_sums(nats, docs, self.token_bytes)))
        return combined(parts)


def validation_spans(prepared: Any, k: int) -> list[tuple[Optional[str], np.ndarray]]:
    """[(source, spans)]: the first ``k`` documents of the validation split, or of each source's held-out
    tokens for a mixture (DataError where the split has no document index)."""
    val = prepared.val
    starts = _val_doc_starts(prepared)
    segments = getattr(val, "segments", None) or [(None, 0, len(val), 1.0)]
    return [(name, document_spans(starts, start, stop, k)) for name, start, stop, _ in segments]


def validation_documents(prepared: Any, k: int) -> list[tuple[Optional[str], list[np.ndarray]]]:
    """``validation_spans`` as token sequences (the eos id in front of each under ``data.doc_sep=eos``)."""
    meta = prepared.meta
    prefix = meta.get("eos_id") if meta.get("doc_sep") == "eos" else None
    return [(name, documents_of(prepared.val, spans, prefix)) for name, spans in validation_spans(prepared, k)]


def check_document_eval(run: Any, prepared: Any) -> None:
    """One-line ConfigError, before any training, where ``train.eval_documents`` cannot be served: a masked
    objective, documents joined without a separator, a validation split without a document index or
    without documents."""
    k = run.train.eval_documents
    if k is None:
        return
    field = f"train.eval_documents={k}"
    if run.model.objective != "clm":
        raise ConfigError(f"{field} with model.objective={run.model.objective!r}: a document's rolling "
                          "log-likelihood needs a causal model; allowed: null, or model.objective=clm")
    doc_sep = prepared.meta.get("doc_sep")
    if doc_sep not in SEPARATED:
        raise ConfigError(f"{field} needs documents the model can tell apart, but data.doc_sep resolved to "
                          f"{doc_sep!r} (data.tokenizer={run.data.tokenizer!r}); allowed: null, or data with "
                          "data.doc_sep=bos, eos or both (a tokenizer with a separator token)")
    try:
        counts = [len(spans) for _, spans in validation_spans(prepared, k)]
    except DataError:
        raise ConfigError(f"{field} needs the validation split's document index, which the prepared data at "
                          f"{prepared.dir} does not have; allowed: null, or data prepared with a document "
                          "index (pre-tokenized files: data.doc_sep=bos)") from None
    if not all(counts):
        raise ConfigError(f"{field}: the validation split of {prepared.dir} holds no document start"
                          f"{' in a source' if len(counts) > 1 else ''}; allowed: null, or data with documents")


def document_evaluator(run: Any, prepared: Any, model: torch.nn.Module, context: int, micro: int,
                       device: torch.device, autocast: Any, ctx: DistContext) -> Optional[DocumentEvaluator]:
    """The run's document-level evaluation, or None when ``train.eval_documents`` is null."""
    k = run.train.eval_documents
    if k is None:
        return None
    return DocumentEvaluator(model, validation_documents(prepared, k), context, micro, device, autocast, ctx,
                             prepared.token_bytes)


def document_fields(row: dict[str, Any]) -> dict[str, Any]:
    """``result.json``'s ``doc_loss``, ``doc_nats``, ... from a metrics row's ``doc/...`` keys (none when off)."""
    return {f"doc_{k}": row[f"doc/{k}"] for k in RESULT_KEYS if f"doc/{k}" in row}


def _val_doc_starts(prepared: Any) -> np.ndarray:
    """Global document starts of the validation split (DataError where it has no index)."""
    val = prepared.val
    if not isinstance(val, TokenArray):
        index = (getattr(prepared, "doc_index", None) or {}).get("val")
        val = TokenArray([val], doc_index=index)
    return val.doc_starts
