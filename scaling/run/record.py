"""The run record of DESIGN.md: ``config.yaml``, ``metrics.jsonl``, ``result.json`` in the run directory.

A run's own files never block it (``RunRecord.repair``): a torn or garbled ``result.json`` is moved aside
(``result.json.torn-<n>``) and the run goes on from its checkpoint; a torn tail of ``metrics.jsonl`` (a cut
or non-JSON last line, non-UTF-8 bytes) is moved aside the same way (``metrics.jsonl.torn-<n>``). A bad line
with good lines after it is no crash's doing: a DataError names the file and the line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from scaling.errors import DataError
from scaling.io import atomic_write, atomic_write_json, atomic_write_text, read_json_object

STATUSES = ("completed", "failed", "diverged", "skipped")
FINISHED = ("completed", "diverged")  # a rerun returns the record of such a run; it retries the others


class RunRecord:
    """Reads and writes one run directory. Only the writing rank should create one for writing."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.result_path = self.dir / "result.json"
        self.config_path = self.dir / "config.yaml"
        self._metrics_file = None

    def read_result(self) -> dict[str, Any] | None:
        """The finished run's ``result.json``, or None if the run has not ended (or the file is torn: see
        ``repair``)."""
        result = read_json_object(self.result_path)
        return result if result is not None and result.get("status") in STATUSES else None

    def finished(self) -> dict[str, Any] | None:
        """The record of a run that ended (``FINISHED``), else None."""
        result = self.read_result()
        return result if result is not None and result["status"] in FINISHED else None

    def repair(self) -> list[str]:
        """Move a torn ``result.json`` and a torn tail of ``metrics.jsonl`` aside (only the process that
        trains the run may); one line for each thing it did. DataError for a bad line amid good ones."""
        done = []
        if self.result_path.exists() and self.read_result() is None:
            aside = _set_aside(self.result_path)
            done.append(f"{self.result_path} is torn or not a run record: moved to {aside.name}; "
                        "the run goes on from its checkpoint")
        if self.metrics_path.exists():
            good, tail = _split_torn_tail(self.metrics_path)
            if tail.strip():
                aside = _free_name(self.metrics_path)
                atomic_write(aside, lambda f: f.write(tail))
                atomic_write(self.metrics_path, lambda f: f.write(good))
                done.append(f"{self.metrics_path} ended in a torn line ({len(tail)} bytes, kept in {aside.name}): "
                            "dropped it")
        return done

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    def open_metrics(self, resume_step: int) -> None:
        """Open ``metrics.jsonl`` for appending, first dropping lines after ``resume_step``.

        Lines past the last checkpoint were logged by a run that then died; the resumed run logs those
        steps again, so keeping them would put the same step twice in the file.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.metrics_path.exists():
            kept = [line for line, row in _json_lines(self.metrics_path) if row.get("step", math.inf) <= resume_step]
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        self._metrics_file = open(self.metrics_path, "a", buffering=1)

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one step's metrics as a JSON line, flushed at once."""
        assert self._metrics_file is not None, "open_metrics() first"
        try:
            self._metrics_file.write(json.dumps({k: finite_or_none(v) for k, v in metrics.items()}) + "\n")
            self._metrics_file.flush()
        except OSError as exc:  # a full disk: name the file (a torn line it leaves is dropped on resume)
            raise OSError(exc.errno, exc.strerror, str(self.metrics_path)) from exc

    def close(self) -> None:
        if self._metrics_file is not None:
            try:
                self._metrics_file.close()
            except OSError:  # the line a full disk refused: already raised by log(), dropped on resume
                pass
            self._metrics_file = None

    def write_result(self, result: dict[str, Any]) -> None:
        assert result.get("status") in STATUSES, result.get("status")
        atomic_write_json(self.result_path, {k: finite_or_none(v) for k, v in result.items()})

    def write_failure(self, run_id: str, group: Any, exc: BaseException, step: int, wall_time: float) -> None:
        """The record of a run that raised ``exc`` at ``step``; not written where the folder takes no file (a
        full disk, a read-only folder: the caller raises ``exc`` all the same)."""
        try:
            self.write_result({"run_id": run_id, "group": group, "status": "failed",
                               "error": f"{type(exc).__name__}: {exc}", "step": step, "wall_time": wall_time})
        except OSError:
            pass

    def write_skipped(self, run_id: str, group: Any, reason: str, **fields: Any) -> dict[str, Any]:
        """The record of a sweep run its rules left out (``status: skipped``, the reason as ``error``)."""
        result = {"run_id": run_id, "group": group, "status": "skipped", "error": str(reason), **fields}
        self.write_result(result)
        return result

    def last_logged(self) -> dict[str, Any]:
        """The last line of ``metrics.jsonl`` ({} when there is none)."""
        rows = self.read_metrics()
        return rows[-1] if rows else {}

    def last_tokens(self) -> int | None:
        """``tokens`` of the last complete line of ``metrics.jsonl``, read from its tail (cheap while the run
        writes); 0 for a file without one, None when there is no file."""
        try:
            with open(self.metrics_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                tail = f.read().decode(errors="replace")
        except OSError:
            return None
        for line in reversed(tail.splitlines()):
            try:
                return int(json.loads(line)["tokens"])
            except (ValueError, KeyError, TypeError):
                continue
        return 0

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (a torn last line left out)."""
        if not self.metrics_path.exists():
            return []
        return [row for _, row in _json_lines(self.metrics_path)]


def _json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) of each JSON line of ``path`` before its torn tail."""
    good, _ = _split_torn_tail(path)
    return [(line, json.loads(line)) for line in good.decode().splitlines() if line.strip()]


def _split_torn_tail(path: Path) -> tuple[bytes, bytes]:
    """``path``'s bytes up to the end of its last JSON line, and the torn tail after it; DataError for a line
    that is not a JSON object with a JSON line after it (a crash tears only the end)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    good_end, bad_line = 0, None
    offset = 0
    for number, raw in enumerate(lines, 1):
        offset += len(raw) + 1
        if not raw.strip():
            continue
        if not _is_json_object(raw):
            bad_line = bad_line or (number, raw)
            continue
        if bad_line is not None:
            raise DataError(f"{path}: line {bad_line[0]} is not a JSON object ({bad_line[1][:60].decode(errors='replace')!r}), and lines after "
                            "it are: remove that line (or move the file away) to resume the run")
        good_end = min(offset, len(data))
    good = data[:good_end]
    return (good if good.endswith(b"\n") or not good else good + b"\n"), data[good_end:]


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode()), dict)
    except ValueError:  # UnicodeDecodeError too
        return False


def _free_name(path: Path) -> Path:
    """``<name>.torn-<n>`` beside ``path`` with the first ``n`` not taken."""
    n = 1
    while path.with_name(f"{path.name}.torn-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}.torn-{n}")


def _set_aside(path: Path) -> Path:
    """Move ``path`` to a free ``<name>.torn-<n>``; the new path."""
    aside = _free_name(path)
    os.replace(path, aside)
    return aside


def finite_or_none(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN), in nested mappings too: the record and its W&B
    mirror hold the same numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value
