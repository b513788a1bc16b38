"""Load run records (folders), tables (CSV / Parquet) or W&B projects into pandas.

``load_runs`` gives one row per run; ``load_curves`` one row per logged step. Both add the canonical
columns ``N``, ``D``, ``C``, ``loss`` chosen by the counting conventions (see ``analysis.columns``).
Failed and diverged runs, unusable records (``analysis.records``) and runs without a finite N, D, C or loss
are left out with a warning naming each; none left is an ``AnalysisInputError``. The same run found twice
is kept once.

WSD branching: every row has a ``role``: ``branch`` (a cooldown branch: a point like any other, with its
``trunk``, ``branch_tokens``, ``own_tokens`` and ``own_flops_<convention>``), ``trunk`` (the constant-lr
run its branches start from), or ``run``. ``load_runs`` leaves trunks out of the points (their branches
are the points); ``load_curves`` keeps them, for ``plots.plot_branches``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis import wandb_source
from analysis.errors import AnalysisInputError
from analysis.frames import canonical, curves_of, runs_frame
from analysis.records import read_metrics, read_records
from analysis.wandb_source import WANDB_PREFIX

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}



def load_runs(
    source: Any,
    *,
    params: str = "non_embedding",
    flops: str = "6nd",
    loss: str = "val_loss",
    params_col: str | None = None,
    tokens_col: str | None = None,
    flops_col: str | None = None,
    loss_col: str | None = None,
    keep_failed: bool = False,
    keep_trunks: bool = False,
    **filters: Any,
) -> pd.DataFrame:
    """One row per run, with canonical columns ``N``, ``D``, ``C``, ``loss``.

    source: a folder searched recursively for ``result.json``; a ``.csv`` / ``.parquet`` table; a
      DataFrame; ``wandb:entity/project`` (or an offline W&B folder) (``analysis.wandb_source``).
    params / flops / loss: the conventions copied into ``N`` / ``C`` / ``loss`` (``N_<params>``,
      ``flops_<flops>``, and ``val_loss`` or ``train_loss``).
    params_col / tokens_col / flops_col / loss_col: for tables, the columns holding N, D, C and the loss;
      when only one of D and C is given the other is derived (D = C / 6N or C = 6ND) with a warning.
    keep_failed: keep failed and diverged runs (their loss may be missing).
    keep_trunks: keep the trunks of WSD branching (constant lr, no cooldown: not points of a law).
    filters: passed to the W&B loader (e.g. ``group=...``).
    """
    conventions = {"params": params, "flops": flops, "loss": loss, "keep_failed": keep_failed}
    if isinstance(source, str) and source.startswith(WANDB_PREFIX):  # the W&B loaders finish via load_runs
        return wandb_source.load_runs_wandb(source, **conventions, **filters)
    if filters:
        raise AnalysisInputError(f"filters: {', '.join(filters)} apply to W&B sources only; "
                                 "select rows of the returned DataFrame instead")
    if isinstance(source, pd.DataFrame):
        raw = source.copy()
    else:
        path = _existing(source)
        if path.is_dir() and _is_offline_wandb(path):
            return wandb_source.load_offline_wandb(path, **conventions)
        raw = read_records(path) if path.is_dir() else _read_table(path)
    out = runs_frame(raw, params=params, flops=flops, loss=loss, params_col=params_col, tokens_col=tokens_col,
                     flops_col=flops_col, loss_col=loss_col, keep_failed=keep_failed, keep_trunks=keep_trunks)
    if "path" not in out.columns:
        out["path"] = "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source)
    return out.reset_index(drop=True)


def load_curves(
    source: Any,
    *,
    params: str = "non_embedding",
    flops: str = "6nd",
    loss: str = "train/loss",
    keep_failed: bool = False,
    run_col: str = "run_id",
    params_col: str | None = None,
    tokens_col: str | None = None,
    flops_col: str | None = None,
    loss_col: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Per-step metrics of every run (long format), joined with the run's N, with canonical columns.

    source: as for ``load_runs``: run folders (each run's ``metrics.jsonl``), a table, an offline W&B
      folder or ``wandb:entity/project`` (each run's W&B history, which holds the same keys).
    Columns: ``run_id``, ``sweep``, ``step``, ``tokens``, ``flops_<convention>`` for every convention of
    the record (per-step FLOPs = tokens x the run's FLOPs per token), the logged metrics (``train/loss``,
    ``val/loss``, ``lr``, ...), ``N_*`` of the run, and ``N``, ``D`` (tokens so far), ``C``, ``loss``
    (``train/loss`` or ``val/loss``; NaN on steps where it was not logged).
    A table source needs one row per (run, step) and a ``run_col`` column.
    filters: passed to the W&B loader (``group``, ``tags``, ``state``, ``job_type``, ``api``).
    """
    conventions = {"params": params, "flops": flops, "loss": loss, "keep_failed": keep_failed}
    if isinstance(source, str) and source.startswith(WANDB_PREFIX):
        return wandb_source.load_curves_wandb(source, **conventions, **filters)
    if filters:
        raise AnalysisInputError(f"filters: {', '.join(filters)} apply to W&B sources only; "
                                 "select rows of the returned DataFrame instead")
    path = _existing(source) if not isinstance(source, pd.DataFrame) else None
    if path is not None and path.is_dir() and _is_offline_wandb(path):
        return wandb_source.load_offline_curves(path, **conventions)
    if path is None or not path.is_dir():
        table = source.copy() if path is None else _read_table(path)
        if run_col not in table.columns:
            raise AnalysisInputError(f"run_col: {run_col!r} is not a column of the table "
                                     f"(columns: {', '.join(map(str, table.columns))})")
        table = table.rename(columns={run_col: "run_id"})
        return canonical(table, params=params, flops=flops, loss=loss, params_col=params_col,
                          tokens_col=tokens_col, flops_col=flops_col, loss_col=loss_col).reset_index(drop=True)
    return curves_of(read_records(path), read_metrics, source=str(path), what="metrics.jsonl", **conventions)


def _existing(source: Any) -> Path:
    try:
        path = Path(source)
    except TypeError:
        raise AnalysisInputError(f"source: {source!r}; expected a folder, a .csv/.parquet file, a DataFrame "
                                 f"or '{WANDB_PREFIX}entity/project'") from None
    if not path.exists():
        raise AnalysisInputError(f"source: {str(path)!r} does not exist; expected a run folder or a .csv/.parquet table")
    return path


def _read_table(path: Path) -> pd.DataFrame:
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise AnalysisInputError(f"source: {str(path)!r}; a file must end in {', '.join(TABLE_SUFFIXES)} "
                                 "(or pass a folder of run records)")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
    except Exception as err:  # pandas raises many types for a malformed file
        raise AnalysisInputError(f"source: {str(path)!r} could not be read as {kind} ({type(err).__name__}: {err})") from None


def _is_offline_wandb(path: Path) -> bool:
    return not any(path.rglob("result.json")) and any(path.rglob("*.wandb"))
