"""Loss units: nats per token (``val_loss``, ``train_loss``, ``doc_loss``) and bits per byte (``bpb``,
``doc_bpb``).

Bits per byte = summed nats / (ln 2 x UTF-8 bytes) (lm-evaluation-harness and nanochat compute it so; the
run record keeps ``val_nats`` and ``val_bytes``, so it is exact). Nats per token depend on the tokenizer, so
one fit never mixes tokenizers in that unit: ``check_one_tokenizer`` refuses it, naming the runs. The
``doc_*`` losses are the document-level validation's (``train.eval_documents``); only runs trained with it
have them, and ``check_recorded`` refuses a fit on one where a completed run lacks it, naming the runs.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError

LOSS_COLUMNS = {"bpb": "val_bpb"}  # loss names that are another column's
PER_TOKEN = ("val_loss", "train_loss", "doc_loss", "val/loss", "train/loss", "doc/loss", "loss")
PER_BYTE = {"doc_loss": "doc_bpb"}  # the bits-per-byte loss of a per-token one ('bpb' for the others)
DOCUMENT_LOSSES = ("doc_loss", "doc_bpb")  # final losses recorded only by runs with train.eval_documents


def loss_column(loss: str) -> str:
    """The record column of a loss name (``bpb`` -> ``val_bpb``)."""
    return LOSS_COLUMNS.get(loss, loss)


def tokenizer_of(config: dict[str, Any]) -> str | None:
    """The tokenizer a run's config names; a trained one (char, bpe) is also named by its corpus and size."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    name = data.get("tokenizer")
    if name is None:
        return None
    if name in ("char", "bpe"):
        size = f":{data.get('bpe_vocab_size')}" if name == "bpe" else ""
        return f"{name}{size}@{data.get('source')}"
    return str(name)


def bits_per_byte(nats: float, nbytes: float) -> float:
    return nats / (math.log(2) * nbytes)


def check_one_tokenizer(df: pd.DataFrame, loss_name: str) -> None:
    """AnalysisInputError when a nats-per-token loss would be fitted across runs of different tokenizers."""
    if loss_name not in PER_TOKEN or "tokenizer" not in df.columns:
        return
    names = df["tokenizer"].dropna().astype(str)
    if names.nunique() <= 1:
        return
    ids = df["run_id"].astype(str) if "run_id" in df.columns else df.index.astype(str)
    groups = "; ".join(f"{name}: {', '.join(ids[names.index[names == name]][:4])}"
                       + (" ..." if (names == name).sum() > 4 else "") for name in sorted(names.unique()))
    raise AnalysisInputError(f"loss={loss_name!r} is nats per token and these runs use {names.nunique()} tokenizers "
                             f"({groups}); fit in bits per byte (loss={PER_BYTE.get(loss_name, 'bpb')!r}) or select runs "
                             "of one tokenizer")


def check_recorded(df: pd.DataFrame, loss_name: str) -> None:
    """AnalysisInputError naming the completed runs without a value of a document-level loss (trained
    without ``train.eval_documents``)."""
    if loss_name not in DOCUMENT_LOSSES or loss_name not in df.columns:
        return
    status = df["status"].fillna("completed") if "status" in df.columns else pd.Series("completed", index=df.index)
    values = pd.to_numeric(df[loss_name], errors="coerce")
    lacking = df.index[values.isna() & (status == "completed")]
    if not len(lacking):
        return
    ids = df.loc[lacking, "run_id"].astype(str).tolist() if "run_id" in df.columns else [f"row {i}" for i in lacking]
    shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
    raise AnalysisInputError(f"loss={loss_name!r}: {len(ids)} of {int((status == 'completed').sum())} completed "
                             f"runs have no {loss_name} ({shown}): trained without train.eval_documents; fit on "
                             "loss='val_loss' or 'bpb', or select runs that scored documents")
