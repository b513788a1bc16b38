"""Checkpoints: everything a resume needs, written atomically, loaded without executing pickled code.

Files are ``checkpoints/step_XXXXXXXX.pt``. A checkpoint holds plain tensors and JSON-like values only
(model and optimizer state, step, tokens, RNG states, W&B id), so ``torch.load(weights_only=True)``
reads it. A crash mid-write leaves the previous checkpoint intact: each file is written to a temporary
name, fsynced and renamed; a full disk mid-write raises the OSError itself (naming the file), not torch's
"enforce fail", and a write killed midway leaves a temporary that ``remove_stale_temporaries`` deletes on
the next start (under the run folder's lock, ``scaling.run.lock``). The path helpers need no torch
(sweeps and plans use them), so torch is imported where a checkpoint is written or read.

``data.json`` in the run folder records the fingerprint of the prepared data the run trains on
(``check_resume_data``): a run with checkpoints resumes only on data with the same fingerprint.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import IO, Any, Optional

from scaling.errors import DataError
from scaling.io import atomic_write, atomic_write_json, read_json_object, remove_temporaries

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step_(\d{8})\.pt$")
DATA_FILE = "data.json"
DATA_FIELDS = ("source", "tokenizer", "tokenizer_sha256", "doc_sep", "vocab_size", "train_tokens", "val_tokens")


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
    atomic_write(path, lambda f: _save(torch, state, f))
    for old_step, old_path in list_checkpoints(run_dir)[:-max(keep, 1)]:
        if old_step not in keep_steps:
            old_path.unlink(missing_ok=True)
    return path


def _save(torch: Any, state: dict[str, Any], f: IO[bytes]) -> None:
    """``torch.save`` raising the OSError of a failed write (torch reports it as "enforce fail")."""
    writer = _WriteErrorKeeper(f)
    try:
        torch.save(state, writer)
    except RuntimeError:
        if writer.error is not None:
            raise writer.error from None
        raise


class _WriteErrorKeeper:
    """The file ``torch.save`` writes through, keeping the OSError of a write that failed."""

    def __init__(self, f: IO[bytes]):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def latest_checkpoint_path(run_dir: str | Path) -> Optional[Path]:
    """The newest checkpoint file of the run (None before the first)."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporaries of writes killed midway in the run folder and its checkpoints (the caller holds
    the run folder's lock, so no write is under way); the paths it deleted."""
    return remove_temporaries(run_dir) + remove_temporaries(checkpoint_dir(run_dir))


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


def check_resume_data(run_dir: str | Path, prepared: Any, write: bool = True, trunk: str | Path | None = None) -> None:
    """Refuse (DataError) to resume ``run_dir``'s checkpoints (or, before it has any, to branch from the
    ``trunk`` run's) on data whose fingerprint is not the one recorded in that run's ``data.json``; else
    record this data's (``write``: this process writes the run folder)."""
    path = Path(run_dir) / DATA_FILE
    now = {"fingerprint": prepared.fingerprint, "prepared": str(prepared.dir),
           **{k: prepared.meta.get(k) for k in DATA_FIELDS}}
    origin = Path(run_dir) if list_checkpoints(run_dir) or not trunk else Path(trunk)
    before = read_json_object(origin / DATA_FILE) if list_checkpoints(origin) else None
    if before is not None and before.get("fingerprint") != now["fingerprint"]:
        changed = [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in DATA_FIELDS if before.get(k) != now[k]]
        if not any(before.get(k) != now[k] for k in DATA_FIELDS[:5]):  # same source and tokenizer, other tokens
            changed.insert(0, "the corpus changed")
        fix = (f"delete {origin / 'checkpoints'} to train from the start" if origin == Path(run_dir) else
               f"train a new trunk: the branch {run_dir} continues this one")
        raise DataError(f"{origin}: its checkpoints were trained on data with fingerprint "
                        f"{str(before.get('fingerprint'))[:16]}, but the data is now {now['fingerprint'][:16]} "
                        f"({', '.join(changed)}); restore that data, or {fix}")
    if write and read_json_object(path) != now:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, now)
