"""Column names of the run tables and the counting conventions they come in.

``load_runs`` gives one row per run with every convention side by side (``N_total``,
``N_non_embedding``, ``N_with_head``; ``flops_6nd``, ``flops_kaplan``, ``flops_chinchilla``, ...) and
four canonical columns the fits read: ``N``, ``D``, ``C``, ``loss``, copied from the chosen ones.
"""

from __future__ import annotations

from analysis.checks import choice

PARAMS = ("non_embedding", "with_head", "total")  # conventions for N (see DESIGN.md)
FLOPS = ("6nd", "6nd_with_head", "6nd_total", "kaplan", "chinchilla")  # conventions for C every record carries
# final losses of a run record (bpb: val_bpb, bits per byte; doc_*: whole validation documents, train.eval_documents)
LOSSES = ("val_loss", "train_loss", "bpb", "doc_loss", "doc_bpb")
DOCUMENT = ("doc_loss", "doc_nats", "doc_tokens", "doc_bytes", "doc_bpb", "doc_ppl", "doc_documents")
CURVE_LOSSES = ("val/loss", "train/loss")  # per-step losses in metrics.jsonl

# Canonical columns every fit reads.
N, D, C, LOSS = "N", "D", "C", "loss"

SHAPE = ("width", "depth", "heads", "context", "vocab_size")  # model shape keys of a record
# WSD branching: ``role`` (run, trunk, branch), the branch's trunk (run id), branch point and own tokens.
BRANCH = ("role", "trunk", "branch_tokens", "own_tokens")
ROLE, RUN, TRUNK, BRANCH_ROLE = "role", "run", "trunk", "branch"


def params_col(convention: str) -> str:
    """Column of N under ``convention`` (``non_embedding`` -> ``N_non_embedding``)."""
    return f"N_{choice('params', convention, PARAMS)}"


def flops_col(convention: str) -> str:
    """Column of C under ``convention`` (``6nd`` -> ``flops_6nd``); any key of a record's flops mapping is allowed."""
    return f"flops_{convention}"
