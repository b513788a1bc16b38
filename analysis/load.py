"""Load run records (folders), tables (CSV / Parquet) or W&B projects into pandas.

``load_runs`` gives one row per run; ``load_curves`` one row per logged step. Both add the canonical
columns ``N``, ``D``, ``C``, ``loss`` chosen by the counting conventions (see ``analysis.columns``).
Failed and diverged runs are left out with a warning; the same run found twice is kept once.

WSD branching: every row has a ``role``: ``branch`` (a cooldown branch: a point like any other, with its
``trunk``, ``branch_tokens``, ``own_tokens`` and ``own_flops_<convention>``), ``trunk`` (the constant-lr
run its branches start from), or ``run``. ``load_runs`` leaves trunks out of the points (their branches
are the points); ``load_curves`` keeps them, for ``plots.plot_branches``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from analysis import columns as col
from analysis.errors import AnalysisInputError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
WANDB_PREFIX = "wandb:"
# Config keys that say where or how a run executed, not what it is: ignored when spotting duplicates.
EXECUTION_KEYS = {"runs_dir", "logger", "train.device", "train.threads", "train.progress", "train.compile",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.keep_at_tokens"}


# ----------------------------------------------------------------------------- public API


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
      DataFrame; ``wandb:entity/project`` (or an offline W&B folder) when ``analysis.wandb_source`` is installed.
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
        return _wandb("load_runs_wandb")(source, **conventions, **filters)
    if filters:
        raise AnalysisInputError(f"filters: {', '.join(filters)} apply to W&B sources only; "
                                 "select rows of the returned DataFrame instead")
    if isinstance(source, pd.DataFrame):
        raw = source.copy()
    else:
        path = _existing(source)
        if path.is_dir() and _is_offline_wandb(path):
            return _wandb("load_offline_wandb")(path, **conventions)
        raw = _read_records(path) if path.is_dir() else _read_table(path)
    raw = _drop_unfinished(_with_roles(raw), keep_failed)
    raw = _drop_trunks(_drop_duplicates(raw), keep_trunks)
    out = _canonical(raw, params=params, flops=flops, loss=loss, params_col=params_col,
                     tokens_col=tokens_col, flops_col=flops_col, loss_col=loss_col)
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
        return _wandb("load_curves_wandb")(source, **conventions, **filters)
    if filters:
        raise AnalysisInputError(f"filters: {', '.join(filters)} apply to W&B sources only; "
                                 "select rows of the returned DataFrame instead")
    path = _existing(source) if not isinstance(source, pd.DataFrame) else None
    if path is not None and path.is_dir() and _is_offline_wandb(path):
        return _wandb("load_offline_curves")(path, **conventions)
    if path is None or not path.is_dir():
        table = source.copy() if path is None else _read_table(path)
        if run_col not in table.columns:
            raise AnalysisInputError(f"run_col: {run_col!r} is not a column of the table "
                                     f"(columns: {', '.join(map(str, table.columns))})")
        table = table.rename(columns={run_col: "run_id"})
        return _canonical(table, params=params, flops=flops, loss=loss, params_col=params_col,
                          tokens_col=tokens_col, flops_col=flops_col, loss_col=loss_col).reset_index(drop=True)
    return curves_of(_read_records(path), _read_metrics, source=str(path), what="metrics.jsonl", **conventions)


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
    curves = pd.concat(frames, ignore_index=True)
    return _canonical(curves, params=params, flops=flops, loss=loss, tokens_col="tokens").reset_index(drop=True)


# ----------------------------------------------------------------------------- run folders


def _existing(source: Any) -> Path:
    try:
        path = Path(source)
    except TypeError:
        raise AnalysisInputError(f"source: {source!r}; expected a folder, a .csv/.parquet file, a DataFrame "
                                 f"or '{WANDB_PREFIX}entity/project'") from None
    if not path.exists():
        raise AnalysisInputError(f"source: {str(path)!r} does not exist; expected a run folder or a .csv/.parquet table")
    return path


def _read_records(root: Path) -> pd.DataFrame:
    """One raw row per ``result.json`` under ``root`` (unreadable records are skipped with a warning)."""
    rows, bad = [], []
    for result in sorted(root.rglob("result.json")):
        try:
            rows.append(_record_row(result, root))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            bad.append(f"{result} ({err})")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable run record(s): " + "; ".join(bad), stacklevel=3)
    if not rows:
        raise AnalysisInputError(f"source: {str(root)!r}; no readable result.json found in this folder tree")
    return pd.DataFrame(rows)


def _record_row(result: Path, root: Path) -> dict[str, Any]:
    rec = json.loads(result.read_text())
    if not isinstance(rec, dict):
        raise ValueError("result.json is not a JSON object")
    run_dir = result.parent
    return record_row(rec, _read_config(run_dir / "config.yaml"), path=str(run_dir),
                      sweep=_folder_group(run_dir, root), status="completed")


def record_row(rec: dict[str, Any], config: dict[str, Any], *, path: str, sweep: str | None,
               status: str) -> dict[str, Any]:
    """One DataFrame row from a parsed ``result.json`` and ``config.yaml`` (any source that rebuilds them).

    ``sweep`` is the group used when neither the record nor the config names one; ``status`` the status
    used when the record has none.
    """
    logger = config.get("logger") if isinstance(config.get("logger"), dict) else {}
    row: dict[str, Any] = {
        "sweep": rec.get("sweep") or rec.get("group") or config.get("group")
        or (logger.get("wandb") or {}).get("group") or sweep,
        "run_id": str(rec.get("run_id") or Path(path).name),
        "status": rec.get("status") or status,
    }
    for key, value in (rec.get("model") or {}).items():
        if not isinstance(value, (dict, list)):
            row[key] = value
    for key, value in (rec.get("params") or {}).items():
        row[f"N_{key}"] = value
    row["tokens"] = rec.get("tokens")
    for key, value in (rec.get("flops") or {}).items():
        row[f"flops_{key}"] = value
    for key in ("val_loss", "train_loss", "wall_time", "tokens_per_second", "error") + col.BRANCH:
        row[key] = rec.get(key)
    for key, value in (rec.get("own_flops") or {}).items():
        row[f"own_flops_{key}"] = value
    row["path"] = path
    row["_config_hash"] = _config_hash(config) if config else None
    return row


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text())
    return config if isinstance(config, dict) else {}


def _folder_group(run_dir: Path, root: Path) -> str:
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    return rel.parts[0] if len(rel.parts) > 1 else root.name


def _config_hash(config: dict[str, Any]) -> str:
    def strip(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: strip(v, f"{prefix}{k}.") for k, v in sorted(node.items()) if f"{prefix}{k}" not in EXECUTION_KEYS}
        return node
    return hashlib.sha1(json.dumps(strip(config, ""), sort_keys=True, default=str).encode()).hexdigest()


def _read_metrics(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of the run's metrics.jsonl: last line per step wins; a torn last line is skipped."""
    path = Path(run["path"]) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines, torn = {}, 0
    for text in path.read_text().splitlines():
        try:
            entry = json.loads(text)
            lines[entry.get("step", len(lines))] = entry
        except (ValueError, AttributeError):
            torn += 1
    if torn:
        warnings.warn(f"run {run['run_id']}: skipped {torn} unreadable line(s) of {path}", stacklevel=3)
    return list(lines.values())


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


# ----------------------------------------------------------------------------- tables and W&B


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


def _wandb(name: str):
    """``analysis.wandb_source.<name>``, or a clear error when that module is absent."""
    try:
        module = importlib.import_module("analysis.wandb_source")
    except ModuleNotFoundError as err:
        if err.name == "analysis.wandb_source":
            raise AnalysisInputError("source: W&B loading is not installed (analysis/wandb_source.py is missing); "
                                     "export the runs to CSV or read the run folders") from None
        raise AnalysisInputError(f"source: W&B loading needs the {err.name!r} package ({err})") from None
    return getattr(module, name)


# ----------------------------------------------------------------------------- cleaning


def _drop_unfinished(raw: pd.DataFrame, keep_failed: bool) -> pd.DataFrame:
    """Leave out runs whose status is not ``completed``, with one warning saying how many and why."""
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


def _canonical(
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
    loss_name = pick("loss_col", loss_col, [loss, loss.replace("_", "/"), "loss"], True)
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
