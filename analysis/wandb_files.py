"""Offline W&B runs read back from their ``run-<id>.wandb`` files, without the W&B service.

A ``.wandb`` file (under ``wandb/offline-run-*``) is a LevelDB-style log of 32 KiB blocks whose records are
``wandb.proto.wandb_internal_pb2.Record`` messages. A resumed run has one folder per segment; the
segments of one W&B id are merged (later values win, step by step).
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from analysis.errors import AnalysisInputError

# LevelDB log format as W&B writes it: a 7-byte file header, then records in 32 KiB blocks.
_FILE_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0

_RECORD_HEADER = struct.Struct("<IHB")  # crc32 of (type, data), data length, type

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class WandbRun:
    """One W&B run as read back from its offline files (all segments of a resumed run merged)."""

    id: str
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # without W&B's internal "_wandb" key
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per step; "_step" -> "step"
    exit_code: int | None = None  # None: the run never closed (still running, or killed)
    path: str = ""  # the offline-run folder of the last segment
    segments: int = 0

    @property
    def state(self) -> str:
        """W&B's run state as the server would report it after ``wandb sync``."""
        if self.exit_code is None:
            return "running"
        return "finished" if self.exit_code == 0 else "failed"


def read_offline_runs(path: str | Path) -> list[WandbRun]:
    """Every W&B run whose ``.wandb`` files lie under ``path`` (a file, a run folder or any tree of them)."""
    root = Path(path)
    if not root.exists():
        raise AnalysisInputError(f"source: {str(root)!r} does not exist; expected an offline W&B folder")
    files = [root] if root.is_file() else sorted(root.rglob("*.wandb"))
    if not files:
        raise AnalysisInputError(f"source: {str(root)!r}; no W&B run file (*.wandb) found in this folder tree")
    segments = [read_wandb_file(f) for f in files]
    by_id: dict[tuple[str, str], list[tuple[float, WandbRun]]] = {}
    for start, seg in segments:
        by_id.setdefault((seg.project, seg.id), []).append((start, seg))
    return [_merge([seg for _, seg in sorted(parts, key=lambda p: (p[0], p[1].path))]) for parts in by_id.values()]


def read_wandb_file(path: str | Path) -> tuple[float, WandbRun]:
    """(start time, run) of one ``.wandb`` file: run metadata, config, summary, history and exit code."""
    from wandb.proto import wandb_internal_pb2 as pb  # ships with wandb; imported only to read offline files

    path = Path(path)
    run = WandbRun(id="", path=str(path.parent), segments=1)
    start = 0.0
    history: dict[Any, dict[str, Any]] = {}
    for data in _records(path):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.project, run.entity = r.run_id, r.project, r.entity
            run.name, run.group, run.job_type, run.tags = r.display_name, r.run_group, r.job_type, list(r.tags)
            start = r.start_time.seconds + r.start_time.nanos / 1e9
            _apply(run.config, r.config.update, r.config.remove)
        elif kind == "config":
            _apply(run.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(run.summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            items = {".".join(item.nested_key) or item.key: _value(item.value_json) for item in record.history.item}
            step, row = _history_row(items, len(history))
            history.setdefault(step, {}).update(row)
        elif kind == "exit":
            run.exit_code = int(record.exit.exit_code)
    run.config.pop("_wandb", None)
    run.history = [history[s] for s in sorted(history)]
    return start, run


def _history_row(items: dict[str, Any], default_step: int) -> tuple[Any, dict[str, Any]]:
    """(step, row) of one W&B history row: ``_step`` becomes ``step``; W&B's other ``_`` keys are dropped."""
    step = items.get("_step", default_step)
    return step, {"step": step, **{k: v for k, v in items.items() if not k.startswith("_")}}


def _records(path: Path) -> Iterator[bytes]:
    """The records of a W&B LevelDB-style log; a torn tail (a killed writer) ends the scan with a warning."""
    blob = path.read_bytes()
    if len(blob) < _FILE_HEADER.size or _FILE_HEADER.unpack_from(blob)[:2] != (b":W&B", 0xBEE1):
        raise AnalysisInputError(f"source: {str(path)!r} is not a W&B run file (bad header)")
    offset, pending = _FILE_HEADER.size, b""
    while offset + _RECORD_HEADER.size <= len(blob):
        left = _BLOCK - offset % _BLOCK
        if left < _RECORD_HEADER.size:  # block trailer: zero padding
            offset += left
            continue
        crc, length, kind = _RECORD_HEADER.unpack_from(blob, offset)
        if crc == 0 and length == 0 and kind == 0:  # zero padding up to the end of a block written so far
            offset += left
            continue
        data = blob[offset + _RECORD_HEADER.size: offset + _RECORD_HEADER.size + length]
        if len(data) < length or zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            warnings.warn(f"{path}: unreadable record at byte {offset}; read the run up to there", stacklevel=4)
            return
        offset += _RECORD_HEADER.size + length
        if kind == _FULL:
            yield data
        elif kind == _FIRST:
            pending = data
        elif kind == _MIDDLE:
            pending += data
        elif kind == _LAST:
            yield pending + data
            pending = b""


def _apply(target: dict[str, Any], updates: Any, removes: Any) -> None:
    """Apply W&B config/summary items (``key`` or ``nested_key`` path, JSON value) to a nested dict."""
    for item in updates:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = _value(item.value_json)
    for item in removes:
        keys = list(item.nested_key) or [item.key]
        node = target
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(keys[-1], None)


def _value(text: str) -> Any:
    try:
        return json.loads(text)  # W&B writes NaN / Infinity as bare words, which json accepts
    except ValueError:
        return text


def _merge(segments: list[WandbRun]) -> WandbRun:
    """One run from the segments of a resumed W&B id, oldest first: later config, summary and steps win."""
    run = segments[0]
    steps = {row["step"]: row for row in run.history}
    for seg in segments[1:]:
        run.config.update(seg.config)
        run.summary.update(seg.summary)
        for row in seg.history:
            steps.setdefault(row["step"], {}).update(row)
        run.exit_code, run.path = seg.exit_code, seg.path
        run.name, run.group, run.job_type = seg.name or run.name, seg.group or run.group, seg.job_type or run.job_type
        run.tags = seg.tags or run.tags
    run.history = [steps[s] for s in sorted(steps)]
    run.segments = len(segments)
    return run
