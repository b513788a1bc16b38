"""``scaling-fit``'s input: the runs of SOURCE, their selection, the envelope's curves, warnings as notes."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError


def load(args: argparse.Namespace) -> pd.DataFrame:
    """The runs of ``args.source`` (run folders, a table or W&B) under the chosen conventions and columns."""
    from analysis.load import load_runs

    return load_runs(args.source, params=args.params, flops=args.flops, loss=args.loss, params_col=args.params_col,
                     tokens_col=args.tokens_col, flops_col=args.flops_col, loss_col=args.loss_col)


def envelope_curves(args: argparse.Namespace, runs: pd.DataFrame) -> pd.DataFrame:
    """The per-step training curves of ``runs`` (the envelope fits them)."""
    from analysis.load import WANDB_PREFIX, load_curves

    source = str(args.source)
    if not source.startswith(WANDB_PREFIX) and not Path(source).is_dir():
        raise AnalysisInputError(f"approach: the envelope needs per-step curves; {source!r} is not a run folder, "
                                 f"an offline W&B folder or {WANDB_PREFIX}ENTITY/PROJECT")
    curves = load_curves(source, params=args.params, flops=args.flops, loss="train/loss")
    return curves[curves["run_id"].isin(runs["run_id"])]


def select(runs: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """Apply --filter and --drop-highest; what they did is kept in ``runs.attrs["selection"]``."""
    attrs = {**runs.attrs, "selection": []}
    if runs.empty:
        raise AnalysisInputError(f"source: {str(args.source)!r} holds no run to fit")
    loaded = len(runs)
    for expr in args.filter:
        try:
            runs = runs.query(expr)
        except Exception as err:  # pandas raises many types for a bad expression
            raise AnalysisInputError(f"--filter {expr!r}: {type(err).__name__}: {err}") from None
        attrs.setdefault("selection", []).append(f"--filter {expr!r}: {len(runs)} runs kept")
    if args.drop_highest < 0:
        raise AnalysisInputError(f"--drop-highest: {args.drop_highest}; must be a whole number >= 0")
    if args.drop_highest:
        if args.drop_highest >= len(runs):
            raise AnalysisInputError(f"--drop-highest: {args.drop_highest}; only {len(runs)} runs are selected")
        runs = runs.drop(index=runs["loss"].nlargest(args.drop_highest).index)
        attrs.setdefault("selection", []).append(f"--drop-highest {args.drop_highest}: {len(runs)} runs kept")
    if runs.empty:
        exprs = " ".join(f"--filter {e!r}" for e in args.filter)
        raise AnalysisInputError(f"{exprs}: none of the {loaded} runs loaded from {str(args.source)!r} matches; "
                                 "loosen the selection")
    runs = runs.reset_index(drop=True)
    runs.attrs.update(attrs)
    return runs


def captured(sink: list[str], fn, *args: Any, **kwargs: Any):
    """Call ``fn``; its Python warnings become notes (printed once on stderr and put in the report)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message) not in sink:
            sink.append(str(w.message))
    return out
