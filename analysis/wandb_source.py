"""Runs from Weights & Biases into the analysis DataFrame: a project through ``wandb.Api``, or offline files.

Both loaders give the same frame as ``analysis.load.load_runs`` on the run records: the training mirror
(``scaling.wandb_mirror``) puts the resolved run config in the W&B config and the final ``result.json``
in the W&B summary, and each W&B run is turned back into that (result, config) pair. The curve loaders
(``load_curves_wandb``, ``load_offline_curves``) give the ``load_curves`` frame: the W&B history holds
every line of ``metrics.jsonl`` under the same keys.

Offline runs are read from their ``run-<id>.wandb`` files (under ``wandb/offline-run-*``): a LevelDB-style
log of 32 KiB blocks whose records are ``wandb.proto.wandb_internal_pb2.Record`` messages. A resumed run
has one folder per segment; the segments of one W&B id are merged (later values win, step by step).
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.load import WANDB_PREFIX, curves_of, load_runs
from analysis.load import record_row as load_record_row

JOB_TYPE = "train"
# Keys the mirror adds to the W&B config beside the resolved run config (see scaling.wandb_mirror).
EXTRA_CONFIG_KEYS = ("run_id", "shape", "N", "D", "C", "flops_per_token")
LOAD_KWARGS = ("params", "flops", "loss", "keep_failed")  # passed on to analysis.load.load_runs / load_curves
HISTORY = "W&B history"  # what per-step curves are read from, in messages
STATES = ("running", "finished", "crashed", "failed", "killed", "preempting", "preempted")
# W&B run state -> run record status, for runs whose summary holds no record (they never reached finish).
STATE_STATUS = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed"}

# LevelDB log format as W&B writes it: a 7-byte file header, then records in 32 KiB blocks.
_FILE_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
_RECORD_HEADER = struct.Struct("<IHB")  # crc32 of (type, data), data length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


# ----------------------------------------------------------------------------- public API


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


def load_offline_wandb(path: str | Path, **load_kwargs: Any) -> pd.DataFrame:
    """Offline W&B runs under ``path`` (searched for ``*.wandb``) as ``load_runs`` gives run records.

    load_kwargs: passed to ``analysis.load.load_runs`` (``params``, ``flops``, ``loss``, ``keep_failed``).
    Only runs of job type ``train`` are read (an analysis run logged by ``log_fit`` is not a data point).
    """
    rows = [_offline_row(r) for r in _offline_training_runs(path)]
    return load_runs(pd.DataFrame(rows), **load_kwargs)


def load_offline_curves(path: str | Path, **load_kwargs: Any) -> pd.DataFrame:
    """Per-step curves of the offline W&B training runs under ``path``, as ``load_curves`` gives them.

    load_kwargs: ``params``, ``flops``, ``loss``, ``keep_failed`` (see ``analysis.load.load_curves``).
    """
    runs = {r.path: r for r in _offline_training_runs(path)}
    rows = pd.DataFrame([_offline_row(r) for r in runs.values()])
    return curves_of(rows, lambda row: runs[row["path"]].history, source=str(path), what=HISTORY, **load_kwargs)


def load_runs_wandb(
    source: str,
    *,
    group: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    state: str | list[str] | None = None,
    job_type: str = JOB_TYPE,
    api: Any = None,
    timeout: int = 30,
    **load_kwargs: Any,
) -> pd.DataFrame:
    """Runs of ``"wandb:ENTITY/PROJECT"`` through ``wandb.Api``, as ``load_runs`` gives run records.

    group: keep runs of this group (or of any of these groups).
    tags: keep runs carrying every one of these tags.
    state: keep runs in this W&B state (or any of these): running, finished, crashed, failed, killed, ...
    api: a ``wandb.Api`` (default: a new one, which needs an API key: WANDB_API_KEY or ``wandb login``).
    load_kwargs: passed to ``analysis.load.load_runs`` (``params``, ``flops``, ``loss``, ``keep_failed``).
    """
    found = _api_runs(source, group=group, tags=tags, state=state, job_type=job_type, api=api, timeout=timeout,
                      load_kwargs=load_kwargs)
    return load_runs(pd.DataFrame([row for row, _ in found.values()]), **load_kwargs)


def load_curves_wandb(
    source: str,
    *,
    group: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    state: str | list[str] | None = None,
    job_type: str = JOB_TYPE,
    api: Any = None,
    timeout: int = 30,
    **load_kwargs: Any,
) -> pd.DataFrame:
    """Per-step curves of the runs of ``"wandb:ENTITY/PROJECT"``, as ``load_curves`` gives them.

    Same filters as ``load_runs_wandb``; each kept run's full history is read with ``Run.scan_history()``.
    load_kwargs: ``params``, ``flops``, ``loss``, ``keep_failed`` (see ``analysis.load.load_curves``).
    """
    found = _api_runs(source, group=group, tags=tags, state=state, job_type=job_type, api=api, timeout=timeout,
                      load_kwargs=load_kwargs)

    def history(row: dict[str, Any]) -> list[dict[str, Any]]:
        with _api_errors(source):
            return [_history_row(r, i)[1] for i, r in enumerate(found[row["path"]][1].scan_history())]

    rows = pd.DataFrame([row for row, _ in found.values()])
    return curves_of(rows, history, source=source, what=HISTORY, **load_kwargs)


def wandb_filters(*, group: Any = None, tags: Any = None, state: Any = None, job_type: str | None = JOB_TYPE
                  ) -> dict[str, Any]:
    """The MongoDB-style filter ``wandb.Api().runs`` takes for these arguments."""
    clauses: list[dict[str, Any]] = []
    if job_type:
        clauses.append({"jobType": job_type})
    if group is not None:
        groups = _names("group", group)
        clauses.append({"group": groups[0]} if len(groups) == 1 else {"group": {"$in": groups}})
    if state is not None:
        states = _names("state", state)
        for s in states:
            if s not in STATES:
                raise AnalysisInputError(f"state: {s!r} is not a W&B run state ({', '.join(STATES)})")
        clauses.append({"state": states[0]} if len(states) == 1 else {"state": {"$in": states}})
    if tags is not None:
        clauses.extend({"tags": {"$in": [t]}} for t in _names("tags", tags))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else {}


def record_row(summary: dict[str, Any], config: dict[str, Any], *, state: str, group: str, name: str,
               path: str) -> dict[str, Any]:
    """The row ``load_runs`` builds from (result.json, config.yaml), rebuilt from a W&B summary and config."""
    extras = {k: config.get(k) for k in EXTRA_CONFIG_KEYS}
    config = {k: v for k, v in config.items() if k not in EXTRA_CONFIG_KEYS and not k.startswith("_")}
    rec = {k: v for k, v in summary.items() if not k.startswith("_")}
    if not isinstance(rec.get("model"), dict) and isinstance(extras["shape"], dict):
        rec["model"] = extras["shape"]  # the run never wrote its record: fall back to what the mirror knew
    if not isinstance(rec.get("params"), dict) and isinstance(extras["N"], dict):
        rec["params"] = extras["N"]
    if not isinstance(rec.get("flops"), dict):
        rec["flops"] = extras["C"] if isinstance(extras["C"], dict) else {}
    if rec.get("tokens") is None:
        rec["tokens"] = extras["D"]
    rec["run_id"] = rec.get("run_id") or extras["run_id"] or name
    return load_record_row(rec, config, path=path, sweep=group, status=STATE_STATUS.get(state, state))


# ----------------------------------------------------------------------------- offline files


def _offline_training_runs(path: str | Path) -> list[WandbRun]:
    runs = [r for r in read_offline_runs(path) if r.job_type in ("", JOB_TYPE)]
    if not runs:
        raise AnalysisInputError(f"source: {str(path)!r}; no W&B training run (job_type {JOB_TYPE!r}) found")
    return runs


def _offline_row(run: WandbRun) -> dict[str, Any]:
    return record_row(run.summary, run.config, state=run.state, group=run.group, name=run.name, path=run.path)


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


# ----------------------------------------------------------------------------- the API


def _api_runs(source: str, *, group: Any, tags: Any, state: Any, job_type: str, api: Any, timeout: int,
              load_kwargs: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Any]]:
    """path -> (run row as ``record_row`` gives it, ``wandb`` Run) for every run matching the filters."""
    unknown = sorted(set(load_kwargs) - set(LOAD_KWARGS))
    if unknown:
        raise AnalysisInputError(f"filters: {', '.join(map(repr, unknown))} not known; W&B sources filter on "
                                 "group, tags, state and job_type")
    project_path = _project_path(source)
    filters = wandb_filters(group=group, tags=tags, state=state, job_type=job_type)
    if api is None:
        api = _default_api(timeout)
    found = {}
    with _api_errors(source):
        for run in api.runs(project_path, filters=filters, per_page=100, lazy=False):
            row = record_row(dict(run.summary_metrics), dict(run.config), state=run.state, group=run.group or "",
                             name=run.name or run.id, path=f"{WANDB_PREFIX}{'/'.join(run.path)}")
            found[row["path"]] = (row, run)
    if not found:
        raise AnalysisInputError(f"source: {source!r}; no W&B run matches the filters {json.dumps(filters)}")
    return found


@contextmanager
def _api_errors(source: str) -> Iterator[None]:
    """Turn any failure inside ``wandb`` (network, authentication, unknown project) into one line."""
    try:
        yield
    except AnalysisInputError:
        raise
    except Exception as err:
        raise AnalysisInputError(f"source: {source!r}; the W&B API request failed "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _project_path(source: str) -> str:
    path = source[len(WANDB_PREFIX):] if source.startswith(WANDB_PREFIX) else source
    parts = path.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise AnalysisInputError(f"source: {source!r}; expected '{WANDB_PREFIX}ENTITY/PROJECT'")
    return "/".join(parts)


def _names(field_name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise AnalysisInputError(f"{field_name}: {value!r}; expected a non-empty string or list of strings")
    return values


def _default_api(timeout: int) -> Any:
    try:
        import wandb

        return wandb.Api(timeout=timeout)
    except Exception as err:  # no API key configured, or a bad one
        raise AnalysisInputError(f"source: W&B API unavailable ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}); set WANDB_API_KEY or run "
                                 "`wandb login`, or read the offline run folders instead") from None
