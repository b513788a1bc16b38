"""One process trains a run folder at a time: an advisory lock on ``<run folder>/.lock`` (the data cache's
lock, ``scaling.io.file_lock``), held by the writing rank while it trains. A second process started on the
same folder says so in one line on stderr and waits; once it holds the lock it finds the record the first
one wrote (and returns it) or the checkpoint it left (and resumes from it)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

from scaling.io import file_lock

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[bool]:
    """Hold ``run_dir``'s lock while the block runs (waiting for another process that holds it); yields
    whether it is held (flock is not on every file system)."""
    run_dir = Path(run_dir)

    def waiting() -> None:
        print(f"waiting: another process is training {run_dir}; this one goes on when it ends", file=sys.stderr,
              flush=True)

    with file_lock(run_dir / LOCK_FILE, on_wait=waiting) as held:
        yield held
