"""The run record on the analysis side: every read of ``result.json``, ``config.yaml`` and ``metrics.jsonl``
(DESIGN.md, "The run record") goes through this module.

A record that cannot be used (torn or garbled JSON, a config that is not YAML, non-UTF-8 bytes) is left out
with a warning naming its file; a torn line of ``metrics.jsonl`` is dropped.
"""

from __future__ import annotations

import hashlib
import json
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
              "threads", "device", "compile", "branch_wait_s", "forecast_every", "forecast_max_share"),
    "data": ("cache_dir", "workers", "progress"),
}
HASHED_GROUPS = ("model", "data", "optim", "train")


def read_records(root: Path) -> pd.DataFrame:
    """One raw row per ``result.json`` under ``root`` (unreadable records are skipped with a warning)."""
    rows, bad = [], []
    for result in sorted(root.rglob("result.json")):
        try:
            rows.append(_record_row(result, root))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as err:
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
    return record_row(rec, read_config(run_dir / "config.yaml"), path=str(run_dir),
                      sweep=folder_group(run_dir, root), status="completed")


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
    row["tokenizer"] = tokenizer_of(config)
    for key, value in (rec.get("own_flops") or {}).items():
        row[f"own_flops_{key}"] = value
    for key in ("unique_tokens", "epochs"):  # repeated data (data.unique_tokens): U and D / U
        if key in rec:
            row[key] = rec[key]
    row["path"] = path
    row["_config_hash"] = config_hash(config) if config else None
    return row


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text())
    return config if isinstance(config, dict) else {}


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
    """The lines of the run's metrics.jsonl: last line per step wins; a torn last line is skipped."""
    path = Path(run["path"]) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines, torn = {}, 0
    for text in path.read_text(errors="replace").splitlines():  # garbled bytes: that line is torn
        try:
            entry = json.loads(text)
            lines[entry.get("step", len(lines))] = entry
        except (ValueError, AttributeError):
            torn += 1
    if torn:
        warnings.warn(f"run {run['run_id']}: skipped {torn} unreadable line(s) of {path}", stacklevel=3)
    return list(lines.values())
