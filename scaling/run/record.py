"""The run record of DESIGN.md: ``config.yaml``, ``metrics.jsonl``, ``result.json`` in the run directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from scaling.io import atomic_write_json, atomic_write_text

STATUSES = ("completed", "failed", "diverged", "skipped")


class RunRecord:
    """Reads and writes one run directory. Only the writing rank should create one for writing."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.result_path = self.dir / "result.json"
        self.config_path = self.dir / "config.yaml"
        self._metrics_file = None

    def read_result(self) -> dict[str, Any] | None:
        """The finished run's ``result.json``, or None if the run has not ended."""
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())

    def write_config(self, cfg: DictConfig) -> None:
        atomic_write_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    def open_metrics(self, resume_step: int) -> None:
        """Open ``metrics.jsonl`` for appending, first dropping lines after ``resume_step``.

        Lines past the last checkpoint were logged by a run that then died; the resumed run logs those
        steps again, so keeping them would put the same step twice in the file.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines() if _step_of(line) <= resume_step]
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        self._metrics_file = open(self.metrics_path, "a", buffering=1)

    def log(self, metrics: dict[str, Any]) -> None:
        """Append one step's metrics as a JSON line, flushed at once."""
        assert self._metrics_file is not None, "open_metrics() first"
        self._metrics_file.write(json.dumps({k: finite_or_none(v) for k, v in metrics.items()}) + "\n")
        self._metrics_file.flush()

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None

    def write_result(self, result: dict[str, Any]) -> None:
        assert result.get("status") in STATUSES, result.get("status")
        atomic_write_json(self.result_path, {k: finite_or_none(v) for k, v in result.items()})

    def write_failure(self, run_id: str, group: Any, exc: BaseException, step: int, wall_time: float) -> None:
        """The record of a run that raised ``exc`` at ``step``."""
        self.write_result({"run_id": run_id, "group": group, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                           "step": step, "wall_time": wall_time})

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
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a torn last line from a crash: drop it


def finite_or_none(value: Any) -> Any:
    """Non-finite floats become None (JSON has no NaN), in nested mappings too: the record and its W&B
    mirror hold the same numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value
