"""Evaluation on fixed held-out windows: the periodic check (``train.eval_tokens``) and the final one
(``train.final_eval_tokens``), split across ranks.

Each evaluation keeps its sums, not only the mean (DESIGN.md, "Conventions"): summed nats, the token count
and, where the data knows each token's UTF-8 length, the byte count, so nats/token, perplexity and bits per
byte (summed nats / (ln 2 x bytes)) are exact transforms.

Under ``model.objective=mlm`` the held-out windows are masked by the fixed, seeded masking of
``scaling.model.objective.mask_windows`` (the same for every run), the sums are over the masked (predicted)
tokens only, and ``val/loss`` is nats per predicted token. Bits per byte is left out for it (a masked
token's bytes are not a text the model compresses), and instead of ``val/ppl`` (perplexity, exp of the
causal loss) it reports ``val/pseudo_ppl``: exp of the masked-token loss under that masking. That is not
the pseudo-log-likelihood perplexity of Salazar et al. (2020; every token masked once, alone) and is
not comparable with a causal perplexity.

Under ``data.align=bos`` every evaluation window begins at a document start (the separator, with
``data.doc_sep=bos``), chosen from the split's document index by the same rule every time
(``scaling.data.loader.aligned_eval_offsets``), so every evaluation of a run, and every run on the same
data and context, sees the same windows. The sums and bits per byte stay exact as above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from scaling.data.loader import aligned_eval_offsets, eval_offsets, make_batch
from scaling.run.distributed import DistContext


@dataclass(frozen=True)
class EvalSums:
    """One evaluation: summed nats over ``tokens`` predicted tokens spanning ``bytes`` UTF-8 bytes."""

    nats: float
    tokens: int
    bytes: Optional[int] = None
    masked: bool = False  # mlm: the tokens are the masked ones of the fixed evaluation masking
    parts: tuple = ()  # a mixture: (source name, EvalSums) per source; the sums above are their totals
    documents: Optional[int] = None  # document-level evaluation: the whole documents scored

    @property
    def loss(self) -> float:
        """Mean cross-entropy, nats per token."""
        return self.nats / self.tokens

    @property
    def bits_per_byte(self) -> Optional[float]:
        return self.nats / (math.log(2) * self.bytes) if self.bytes else None

    def metrics(self, prefix: str = "val") -> dict[str, Any]:
        """The metrics-line keys: ``val/loss``, ``val/nats``, ``val/tokens`` and, when known, ``val/bytes``, ``val/bpb``
        (and ``doc/documents`` for a document-level evaluation)."""
        row: dict[str, Any] = {f"{prefix}/loss": self.loss, f"{prefix}/nats": self.nats, f"{prefix}/tokens": self.tokens}
        if self.documents is not None:
            row[f"{prefix}/documents"] = self.documents
        row[f"{prefix}/pseudo_ppl" if self.masked else f"{prefix}/ppl"] = math.exp(min(self.loss, 700.0))
        if self.bytes:
            row[f"{prefix}/bytes"] = self.bytes
            row[f"{prefix}/bpb"] = self.bits_per_byte
        for name, part in self.parts:  # val/<source>/loss, ... for each source of a mixture
            row.update(part.metrics(f"{prefix}/{name}"))
        return row


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: Any, offsets: Any, context: int, micro: int,
             device: torch.device, autocast: Any, ctx: DistContext,
             token_bytes: Optional[np.ndarray] = None, mask: Optional[Callable[..., Any]] = None) -> EvalSums:
    """Summed cross-entropy over fixed held-out windows, split across ranks (and their UTF-8 bytes when
    ``token_bytes``, the byte length of each token id, is given). ``mask(x, offsets)`` (mlm) turns the windows
    into masked inputs and targets; the sums are then over the predicted tokens and no bytes are counted."""
    model.eval()
    mine = offsets[ctx.rank::ctx.world_size]
    total = torch.zeros(3, dtype=torch.float64, device=device)  # nats, tokens, bytes
    lengths = torch.as_tensor(token_bytes, dtype=torch.float64, device=device) if token_bytes is not None else None
    for i in range(0, len(mine), micro):
        x, y = make_batch(tokens, mine[i:i + micro], context)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mask is not None:
            x, y = mask(x, mine[i:i + micro])
        with autocast:
            _, loss = model(x, y)
        count = x.numel() if mask is None else (y != -100).sum()
        total[0] += loss.double() * count
        total[1] += count
        if lengths is not None and mask is None:
            total[2] += lengths[y].sum()
    if ctx.enabled:
        torch.distributed.all_reduce(total)
    model.train()
    nats, count, nbytes = total.tolist()
    has_bytes = lengths is not None and mask is None
    return EvalSums(nats=nats, tokens=int(count), bytes=int(nbytes) if has_bytes else None, masked=mask is not None)


class Evaluator:
    """The run's two evaluations over its validation tokens: ``periodic()`` and ``final()``; ``documents``
    (``train.eval_documents``: ``scaling.run.evaluate_documents``) joins the final one in ``final_metrics()``."""

    def __init__(self, model: torch.nn.Module, val: np.ndarray, context: int, micro: int, device: torch.device,
                 autocast: Any, ctx: DistContext, eval_tokens: int, final_eval_tokens: int,
                 token_bytes: Optional[np.ndarray] = None, mask: Optional[Callable[..., Any]] = None,
                 documents: Any = None):
        self.model, self.val, self.context, self.micro = model, val, context, micro
        self.token_bytes, self.mask, self.documents = token_bytes, mask, documents
        self.device, self.autocast, self.ctx = device, autocast, ctx
        self.periodic_windows = source_windows(val, context, eval_tokens)
        self.final_windows = source_windows(val, context, final_eval_tokens)

    @property
    def final_tokens(self) -> int:
        return sum(len(w) for _, w in self.final_windows) * self.context

    def periodic(self) -> EvalSums:
        return self._run(self.periodic_windows)

    def final(self) -> EvalSums:
        return self._run(self.final_windows)

    def final_metrics(self) -> dict[str, Any]:
        """The final evaluation's ``val/...`` keys, and the document-level ``doc/...`` ones where asked for."""
        row = self.final().metrics()
        if self.documents is not None:
            row.update(self.documents.documents().metrics("doc"))
        return row

    def _run(self, windows: list) -> EvalSums:
        parts = [(name, evaluate(self.model, self.val, w, self.context, self.micro, self.device, self.autocast,
                                 self.ctx, self.token_bytes, self.mask)) for name, w in windows]
        return combined(parts)


def combined(parts: list) -> EvalSums:
    """[(source, EvalSums)] as one: a single unnamed part as it is; a mixture's sources as their totals
    (bytes and documents where every part knows them), with the parts kept."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    sums = [p for _, p in parts]
    nbytes = None if any(p.bytes is None for p in sums) else sum(p.bytes for p in sums)
    documents = None if any(p.documents is None for p in sums) else sum(p.documents for p in sums)
    return EvalSums(sum(p.nats for p in sums), sum(p.tokens for p in sums), nbytes, sums[0].masked, tuple(parts),
                    documents=documents)


def source_windows(val: Any, context: int, max_tokens: int) -> list:
    """[(source, window offsets)]: one unnamed set over the split, or, for a mixture (``val.segments``),
    an equal share of ``max_tokens`` inside each source's held-out tokens. Under ``data.align=bos``
    (``val.align``) every window begins at a document start (``aligned_eval_offsets``)."""
    segments = [s for s in getattr(val, "segments", ()) if s[2] - s[1] > context]
    if not segments:
        return [(None, _windows(val, 0, len(val), context, max_tokens, "the validation split"))]
    share = max(max_tokens // len(segments), context)
    return [(name, _windows(val, start, stop, context, share, f"the validation split of source {name!r}"))
            for name, start, stop, _ in segments]


def _windows(val: Any, start: int, stop: int, context: int, max_tokens: int, where: str) -> np.ndarray:
    """Evaluation window offsets inside ``[start, stop)`` of ``val``: at document starts under align=bos,
    else spaced evenly by position."""
    if getattr(val, "align", "none") == "bos":
        return aligned_eval_offsets(val.doc_starts, start, stop, context, max_tokens, where)
    return start + eval_offsets(stop - start, context, max_tokens)
