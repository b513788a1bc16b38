"""From raw rows to the frames ``load_runs`` and ``load_curves`` return, whatever the source (run folders,
tables, W&B): roles of WSD runs, unfinished and duplicate runs left out with a warning, and the canonical
columns ``N``, ``D``, ``C``, ``loss`` chosen by the counting conventions (``analysis.columns``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Callable

import numpy as np
import pandas as pd

from analysis import columns as col
from analysis.errors import AnalysisInputError
from analysis.loss_units import check_one_tokenizer, check_recorded, loss_column


def curves_of(runs: pd.DataFrame, history: Callable[[dict[str, Any]], list[dict[str, Any]]], *, source: str,
              what: str, params: str = "non_embedding", flops: str = "6nd", loss: str = "train/loss",
              keep_failed: bool = False) -> pd.DataFrame:
    """The ``load_curves`` frame of ``runs`` (rows as ``record_row`` gives them, any source).

    history: a run row -> its logged steps, one dict each (``metrics.jsonl`` lines, or W&B history rows);
      fetched only for the runs kept. what: the name of that history in messages.
    """
    runs = _drop_duplicates(_drop_unfinished(_with_roles(runs), keep_failed))
    frames = [_curve(row, history(row), what) for row in runs.to_dict("records")]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise AnalysisInputError(f"source: {source!r}; no run has a readable {what} (per-step metrics)")
    curves = canonical(pd.concat(frames, ignore_index=True), params=params, flops=flops, loss=loss, tokens_col="tokens")
    return _drop_not_finite(curves, (col.N,), what="curves").reset_index(drop=True)  # a step may lack C (W&B)


def _curve(run: dict[str, Any], entries: list[dict[str, Any]], what: str) -> pd.DataFrame:
    """One run's logged steps as a frame, with the run's FLOPs per step, shape and N columns."""
    if not entries:
        warnings.warn(f"run {run['run_id']}: no {what} in {run['path']}; left out of the curves", stacklevel=4)
        return pd.DataFrame()
    frame = pd.DataFrame([_flat(entry) for entry in entries])
    if "tokens" not in frame.columns:
        warnings.warn(f"run {run['run_id']}: {what} has no 'tokens'; left out of the curves", stacklevel=4)
        return pd.DataFrame()
    frame = frame.sort_values("step" if "step" in frame.columns else "tokens")
    for key, total in run.items():  # FLOPs per step = tokens x (the run's FLOPs per token)
        if key.startswith("flops_") and key not in frame.columns and _positive(total) and _positive(run["tokens"]):
            frame[key] = frame["tokens"].astype(float) * (float(total) / float(run["tokens"]))
    front = ["run_id", "sweep", "step", "tokens"]
    logged = sorted(c for c in frame.columns if c not in front)  # sorted: W&B keeps no key order
    for key in ("sweep", "run_id", "status", "path") + col.SHAPE + col.BRANCH:
        if key in run:
            frame[key] = run[key]
    for key, value in run.items():
        if key.startswith("N_"):
            frame[key] = value
    rest = [c for c in frame.columns if c not in front and c not in logged]
    return frame[[c for c in front if c in frame.columns] + logged + rest]


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    """One logged step with scalar values: a ``flops`` mapping (or W&B's nested ``flops.<c>``) -> ``flops_<c>``."""
    flat = {k.replace("flops.", "flops_", 1) if k.startswith("flops.") else k: v
            for k, v in entry.items() if not isinstance(v, dict)}
    if isinstance(entry.get("flops"), dict):
        flat.update({f"flops_{k}": v for k, v in entry["flops"].items()})
    return flat


def _positive(x: Any) -> bool:
    try:
        return float(x) > 0
    except (TypeError, ValueError):
        return False


def _drop_unfinished(raw: pd.DataFrame, keep_failed: bool) -> pd.DataFrame:
    """Leave out runs whose status is not ``completed``, with one warning saying how many and why (none left:
    an ``AnalysisInputError`` saying why they did not complete)."""
    if "status" not in raw.columns or keep_failed:
        return raw
    status = raw["status"].fillna("completed").astype(str)
    bad = raw[status != "completed"]
    if len(bad):
        reasons = Counter()
        for _, row in bad.iterrows():
            err = row.get("error")
            reasons[f"{row['status']}: {err}" if isinstance(err, str) and err else str(row["status"])] += 1
        why = "; ".join(f"{n} x {r}" if n > 1 else r for r, n in reasons.items())
        if len(bad) == len(raw):
            raise AnalysisInputError(f"status: none of the {len(raw)} runs completed ({why}); a fit needs "
                                     "completed runs")
        warnings.warn(f"left out {len(bad)} of {len(raw)} runs that did not complete ({why})", stacklevel=3)
    return raw[status == "completed"]


def _with_roles(raw: pd.DataFrame) -> pd.DataFrame:
    """Fill ``role``: as the record says, else ``trunk`` when a branch names the run, ``branch`` when it
    names a trunk, else ``run`` (records written before roles were recorded). A table without ``trunk`` or
    ``role`` columns is returned as it is."""
    if "trunk" not in raw.columns and col.ROLE not in raw.columns:
        return raw
    raw = raw.copy()
    trunk = raw["trunk"] if "trunk" in raw.columns else pd.Series(None, index=raw.index, dtype=object)
    named = set(trunk.dropna().astype(str))
    guess = raw["run_id"].astype(str).isin(named).map({True: col.TRUNK, False: col.RUN}) if "run_id" in raw \
        else pd.Series(col.RUN, index=raw.index)
    guess[trunk.notna()] = col.BRANCH_ROLE
    raw[col.ROLE] = raw[col.ROLE].fillna(guess) if col.ROLE in raw.columns else guess
    return raw


def _drop_trunks(raw: pd.DataFrame, keep_trunks: bool) -> pd.DataFrame:
    """Leave out the trunks of WSD branching (their branches are the points), with one warning."""
    if col.ROLE not in raw.columns:
        return raw
    trunks = raw[col.ROLE] == col.TRUNK
    if trunks.any() and not keep_trunks:
        warnings.warn(f"left out {int(trunks.sum())} WSD trunk run(s) (constant lr, no cooldown); their "
                      "cooldown branches are the points (keep_trunks=True keeps them)", stacklevel=3)
        return raw[~trunks]
    return raw


def _drop_duplicates(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per run id and per resolved config, warning about every duplicate found."""
    notes = []
    if "run_id" in raw.columns:
        dup = raw["run_id"].duplicated(keep="first")
        for rid in raw.loc[dup, "run_id"].unique():
            paths = raw.loc[raw["run_id"] == rid, "path"].astype(str).tolist() if "path" in raw else []
            notes.append(f"run_id {rid} appears {len(paths) or int((raw['run_id'] == rid).sum())} times ({', '.join(paths)})")
        raw = raw[~dup]
    if "_config_hash" in raw.columns:
        hashes = raw["_config_hash"]
        dup = hashes.notna() & hashes.duplicated(keep="first")
        for h in hashes[dup].unique():
            ids = raw.loc[hashes == h, "run_id"].astype(str).tolist()
            notes.append(f"runs {', '.join(ids)} have the same resolved config")
        raw = raw[~dup].drop(columns="_config_hash")
    if notes:
        warnings.warn("duplicate runs, kept the first of each: " + "; ".join(notes), stacklevel=3)
    return raw


def canonical(
    raw: pd.DataFrame, *, params: str, flops: str, loss: str, params_col: str | None = None,
    tokens_col: str | None = None, flops_col: str | None = None, loss_col: str | None = None,
) -> pd.DataFrame:
    """Add ``N``, ``D``, ``C``, ``loss``: from the named columns, else from the chosen conventions."""
    df = raw.copy()
    cols = list(df.columns)

    def pick(flag: str, given: str | None, fallbacks: list[str], required: bool) -> str | None:
        if given is not None:
            if given not in df.columns:
                raise AnalysisInputError(f"{flag}: {given!r} is not a column (columns: {', '.join(map(str, cols))})")
            return given
        return next((c for c in fallbacks if c in df.columns), None) if not required else _need(flag, fallbacks)

    def _need(flag: str, fallbacks: list[str]) -> str:
        for c in fallbacks:
            if c in df.columns:
                return c
        raise AnalysisInputError(f"{flag}: none of {', '.join(map(repr, fallbacks))} is a column; name it "
                                 f"(columns: {', '.join(map(str, cols))})")

    n_name = pick("params_col", params_col, [col.params_col(params), "N"], True)
    loss = loss_column(loss)  # bpb -> val_bpb
    loss_name = pick("loss_col", loss_col, [loss, loss.replace("_", "/"), "loss"], True)
    check_one_tokenizer(df, loss_name)
    check_recorded(df, loss_name)
    d_name = pick("tokens_col", tokens_col, ["tokens", "D"], False)
    c_name = pick("flops_col", flops_col, [col.flops_col(flops), "C"], False)
    if flops_col is None and tokens_col is None and c_name is None and any(c.startswith("flops_") for c in cols):
        have = ", ".join(c[6:] for c in cols if c.startswith("flops_"))
        raise AnalysisInputError(f"flops: {flops!r} is not a convention of these records (available: {have})")

    df[col.N] = _numeric(df[n_name], n_name)
    df[col.LOSS] = _numeric(df[loss_name], loss_name)
    if d_name is None and c_name is None:
        raise AnalysisInputError(f"tokens_col / flops_col: neither given and no tokens or FLOPs column found "
                                 f"(columns: {', '.join(map(str, cols))})")
    if d_name is not None:
        df[col.D] = _numeric(df[d_name], d_name)
    if c_name is not None:
        df[col.C] = _numeric(df[c_name], c_name)
    notes = list(df.attrs.get("notes", []))
    if d_name is None:
        df[col.D] = df[col.C] / (6.0 * df[col.N])
        notes.append(f"no tokens column: D derived as C / (6 N) from {c_name!r} and {n_name!r}")
    elif c_name is None:
        df[col.C] = 6.0 * df[col.N] * df[col.D]
        notes.append(f"no FLOPs column: C derived as 6 N D from {n_name!r} and {d_name!r}")
    for note in notes[len(df.attrs.get("notes", [])):]:
        warnings.warn(note, stacklevel=4)
    df.attrs["notes"] = notes
    df.attrs["columns"] = {"N": n_name, "D": d_name or "C/(6N)", "C": c_name or "6ND", "loss": loss_name}
    return df


def _numeric(series: pd.Series, name: str) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        raise AnalysisInputError(f"{name}: {int(bad.sum())} value(s) are not numbers (first: {series[bad].iloc[0]!r})")
    return values.astype(float)


def runs_frame(raw: pd.DataFrame, *, params: str = "non_embedding", flops: str = "6nd", loss: str = "val_loss",
               params_col: str | None = None,
               tokens_col: str | None = None, flops_col: str | None = None, loss_col: str | None = None,
               keep_failed: bool = False, keep_trunks: bool = False) -> pd.DataFrame:
    """The ``load_runs`` frame of raw run rows (``records.record_row`` rows, or any table)."""
    raw = _drop_unfinished(_with_roles(raw), keep_failed)
    raw = _drop_trunks(_drop_duplicates(raw), keep_trunks)
    df = canonical(raw, params=params, flops=flops, loss=loss, params_col=params_col, tokens_col=tokens_col,
                   flops_col=flops_col, loss_col=loss_col)
    return (df if keep_failed else _drop_not_finite(df, (col.N, col.D, col.C, col.LOSS))).reset_index(drop=True)


def _drop_not_finite(df: pd.DataFrame, needed: tuple[str, ...], *, what: str = "runs") -> pd.DataFrame:
    """Leave out the runs whose value of a ``needed`` canonical column is missing, NaN or infinite, with one
    warning naming each run and the value; none left is an ``AnalysisInputError`` that says why."""
    finite = np.isfinite(df[list(needed)].to_numpy(float))
    bad_rows = df.index[~finite.all(axis=1)]
    if not len(bad_rows):
        return df
    names = df.attrs.get("columns", {})
    why: dict[str, str] = {}
    for i in bad_rows:
        run = _run_name(df, i)
        if run not in why:
            shown = [f"{names.get(k, k)} is {float(df.at[i, k])}" for k in needed if not np.isfinite(df.at[i, k])]
            why[run] = f"{run}: " + ", ".join(shown)
    head = f"{len(why)} run(s) without a finite {', '.join(needed)}: "
    kept = df.drop(index=bad_rows)
    if kept.empty:
        shown = list(why.values())[:3] + ([f"and {len(why) - 3} more"] if len(why) > 3 else [])
        raise AnalysisInputError(f"{what}: no run is left to fit; {head}" + "; ".join(shown))
    warnings.warn(f"left out {head}" + "; ".join(why.values()), stacklevel=4)
    return kept


def _run_name(df: pd.DataFrame, i: Any) -> str:
    """How a message names the run of row ``i``: its run id and folder, else its row."""
    if "run_id" not in df.columns:
        return f"row {i}"
    path = df.at[i, "path"] if "path" in df.columns else None
    return f"run {df.at[i, 'run_id']}" + (f" ({path})" if isinstance(path, str) and path else "")

