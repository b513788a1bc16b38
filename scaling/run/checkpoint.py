"""Checkpoints: everything a resume needs, written atomically, loaded without executing pickled code.

Files are ``checkpoints/step_XXXXXXXX.pt``. A checkpoint holds plain tensors and JSON-like values only
(model and optimizer state, step, tokens, RNG states, W&B id), so ``torch.load(weights_only=True)``
reads it. A crash mid-write leaves the previous checkpoint intact: each file is written to a temporary
name, fsynced and renamed. The path helpers need no torch (sweeps and plans use them), so torch is
imported where a checkpoint is written or read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from scaling.io import atomic_write

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint file, oldest first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 1,
                    keep_steps: frozenset[int] = frozenset()) -> Path:
    """Write ``state`` as the checkpoint of ``step``; then prune to the ``keep`` newest (plus ``keep_steps``)."""
    import torch

    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda f: torch.save(state, f))
    for old_step, old_path in list_checkpoints(run_dir)[:-max(keep, 1)]:
        if old_step not in keep_steps:
            old_path.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: str | Path, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None. An unreadable file is skipped with a warning."""
    import torch

    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # a torn or foreign file: fall back to the previous one
            log.warning("checkpoint %s is unreadable (%s); trying an older one", path, exc)
    return None


def load_checkpoint_at(run_dir: str | Path, step: int, map_location: Any = "cpu") -> dict[str, Any]:
    import torch

    return torch.load(checkpoint_path(run_dir, step), map_location=map_location, weights_only=True)
