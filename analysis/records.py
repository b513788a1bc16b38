"""The run record on the analysis side: every read of ``result.json``, ``config.yaml`` and ``metrics.jsonl``
(DESIGN.md, "The run record") goes through this module.

A record that cannot be used (torn or garbled JSON, a config that is not YAML, non-UTF-8 bytes, a completed
record without ``params``, ``flops`` or ``tokens``) is left out with one warning naming each run, its file and
the line; a line of ``metrics.jsonl`` that is not JSON or not UTF-8 is dropped with a warning naming the line.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis import columns as col
from analysis.errors import AnalysisInputError
from analysis.loss_units import tokenizer_of

# Settings that change how a run is watched or where it runs, not the numbers it produces: the same list
# as the training side's run identity (scaling/run/identity.py; a test keeps the two equal).
BOOKKEEPING = {
    "train": ("log_every", "checkpoint_every", "keep_checkpoints", "keep_at_tokens", "progress",
              "threads", "device", "compile", "branch_wait_s", "forecast_every", "forecast_max_share",
              "stop_at_tokens"),
    "data": ("cache_dir", "workers", "progress"),
}
HASHED_GROUPS = ("model", "data", "optim", "train")


class UnreadableRecord(ValueError):
    """A file of a run record that cannot be used; the message names the file and, where it applies, the line."""


def read_records(root: Path) -> pd.DataFrame:
    """One raw row per ``result.json`` under ``root`` (unusable records are left out with one warning naming
    each run and why; none usable is an ``AnalysisInputError`` that says why)."""
    rows, bad = [], []
    for result in sorted(root.rglob("result.json")):
        try:
            rows.append(_record_row(result, root))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            bad.append(f"run {result.parent.name}: {_one_line(err)}")
    if not rows:
        found = f"{len(bad)} run record(s), none usable: " + "; ".join(bad) if bad else "no result.json found"
        raise AnalysisInputError(f"source: {str(root)!r}; {found}")
    if bad:
        warnings.warn(f"left out {len(bad)} run record(s) that cannot be used: " + "; ".join(bad), stacklevel=3)
    return pd.DataFrame(rows)


def _record_row(result: Path, root: Path) -> dict[str, Any]:
    rec = read_json(result)
    lacking = _lacking(rec)
    if lacking:
        raise UnreadableRecord(f"{result} has no {lacking}, which a completed run records")
    run_dir = result.parent
    return record_row(rec, read_config(run_dir / "config.yaml"), path=str(run_dir),
                      sweep=folder_group(run_dir, root), status="completed")


def _lacking(rec: dict[str, Any]) -> str | None:
    """What a completed record lacks of the counts every fit needs (``params``, ``flops``, ``tokens``)."""
    if rec.get("status", "completed") != "completed":
        return None  # failed, diverged and skipped records are left out (or kept) by the loaders, as they are
    for key in ("params", "flops"):
        if not isinstance(rec.get(key), dict) or not rec[key]:
            return f"{key!r} (a mapping of counts per convention)"
    if rec.get("tokens") is None:
        return "'tokens'"
    return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


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
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    row["objective"] = rec.get("objective") or model.get("objective") or "clm"  # clm before the field existed
    row["predicted_tokens"] = rec.get("predicted_tokens", rec.get("tokens") if row["objective"] == "clm" else None)
    for key, value in (rec.get("flops") or {}).items():
        row[f"flops_{key}"] = value
    for key in ("val_loss", "train_loss", "wall_time", "tokens_per_second", "error") + col.BRANCH:
        row[key] = rec.get(key)
    for key in ("val_bpb", "val_nats", "val_bytes", "eval_tokens"):  # sums of the final evaluation: exact units
        row[key] = rec.get(key)
    for key in col.DOCUMENT:  # document-level validation's sums (train.eval_documents): NaN in runs without it
        row[key] = rec.get(key, math.nan)
    row["tokenizer"] = tokenizer_of(config)
    for key, value in (rec.get("own_flops") or {}).items():
        row[f"own_flops_{key}"] = value
    for key in ("unique_tokens", "epochs"):  # repeated data (data.unique_tokens): U and D / U
        if key in rec:
            row[key] = rec[key]
    row["path"] = path
    row["_config_hash"] = config_hash(config) if config else None
    return row


def read_text(path: Path) -> str:
    """The text of a UTF-8 file; bytes that are not UTF-8 are an ``UnreadableRecord`` naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UnreadableRecord(f"{path} line {line}: bytes that are not UTF-8 ({data[err.start:err.end]!r})") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object (``result.json``); torn or garbled JSON is an ``UnreadableRecord`` naming the line."""
    try:
        rec = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UnreadableRecord(f"{path} line {err.lineno}: not JSON ({err.msg})") from None
    if not isinstance(rec, dict):
        raise UnreadableRecord(f"{path}: not a JSON object")
    return rec


# libyaml's safe loader where PyYAML has it (several times faster: a sweep's configs are most of reading it)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_config(path: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` ({} when there is none); one that is not a YAML mapping is an
    ``UnreadableRecord`` naming the line."""
    if not path.is_file():
        return {}
    try:
        config = yaml.load(read_text(path), Loader=YAML_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or _one_line(err)
        raise UnreadableRecord(f"{path}{line}: not YAML ({problem})") from None
    if not isinstance(config, dict):
        raise UnreadableRecord(f"{path}: not a YAML mapping of config sections")
    return config


def folder_group(run_dir: Path, root: Path) -> str:
    rel = run_dir.relative_to(root) if run_dir != root else Path(run_dir.name)
    return rel.parts[0] if len(rel.parts) > 1 else root.name


def config_hash(config: dict[str, Any]) -> str:
    """Hash of what a run's result depends on: the hashed groups of its config without the bookkeeping
    settings (two records with the same hash are the same run)."""
    ident = {}
    for group in HASHED_GROUPS:
        node = config.get(group)
        if isinstance(node, dict):
            ident[group] = {k: v for k, v in node.items() if k not in BOOKKEEPING.get(group, ())}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def read_metrics(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of the run's metrics.jsonl: last line per step wins; a line that is not a JSON object or not
    UTF-8 (a torn last line, garbled bytes) is skipped, with one warning naming the file and the lines."""
    path = Path(run["path"]) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines, bad = {}, []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        entry, problem = _metrics_line(raw)
        if problem:
            bad.append(f"{number} ({problem})")
        else:
            lines[entry.get("step", len(lines))] = entry
    if bad:
        warnings.warn(f"run {run['run_id']}: skipped {len(bad)} unreadable line(s) of {path}: line "
                      + ", line ".join(bad), stacklevel=3)
    return list(lines.values())



def _metrics_line(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """One line of metrics.jsonl: (its object, None), or ({}, why it cannot be read)."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "bytes that are not UTF-8"
    except ValueError:
        return {}, "not JSON"
    return (entry, None) if isinstance(entry, dict) else ({}, "not a JSON object")
