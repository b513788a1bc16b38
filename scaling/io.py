"""Atomic file writes (a crash or a full disk mid-write never leaves a half-written file in place), their
stale temporaries, the advisory file lock, and the one line for a file that cannot be written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterator, Optional

from scaling.errors import DataError

TMP_SUFFIX = ".tmp"  # atomic_write's temporaries: ".<name>.<random>.tmp" beside the file
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
CANNOT_WRITE = (*DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EEXIST)


class StorageError(DataError):
    """A file cannot be written: the disk is full, or its folder is read-only, forbidden or cannot exist."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``. An OSError
    names ``path`` when it names no file of its own (a full disk mid-write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable, torn or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries ``atomic_write`` left in ``directory`` when its process died mid-write (call it
    only while no other process writes there); the paths it deleted."""
    removed = []
    for p in Path(directory).glob(f".*{TMP_SUFFIX}") if Path(directory).is_dir() else ():
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def storage_problem(exc: BaseException) -> Optional[str]:
    """``<path>: <what is wrong>`` for an OSError of a file that cannot be written (a full disk, a read-only,
    forbidden or impossible folder), else None."""
    if not isinstance(exc, OSError) or exc.errno not in CANNOT_WRITE:
        return None
    what = "the disk is full" if exc.errno in DISK_FULL else (exc.strerror or os.strerror(exc.errno)).lower()
    return f"{exc.filename or 'a file'}: {what}"


def writable_dir(path: str | Path, what: str, create: bool = True) -> Path:
    """``path``, created if missing (else, with ``create=False``, its nearest existing folder) and shown
    writable by a probe file (``os.access`` says yes to root on a read-only mount); StorageError naming
    ``what`` (e.g. ``runs_dir='/x'``), the path and the problem."""
    path = Path(path)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probed = path if create else next((p for p in (path, *path.absolute().parents) if p.exists()), path)
        try:
            with tempfile.TemporaryFile(dir=probed):
                pass
        except OSError as exc:
            exc.filename = str(path)  # the folder, not the probe's name
            raise
    except OSError as exc:
        problem = storage_problem(exc) or f"{exc.filename}: {exc.strerror or exc}"
        raise StorageError(f"{what}: cannot write there ({problem})") from None
    return path


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Optional[Callable[[], None]] = None) -> Iterator[bool]:
    """Exclusive advisory lock (flock) on ``path`` while the block runs; yields whether it is held (flock is
    not on every file system). ``on_wait()`` is called once when another process holds it, before waiting."""
    try:
        import fcntl

        f = open(path, "a+")
    except (ImportError, OSError):
        yield False
        return
    try:
        yield _flock(f, fcntl, on_wait)
    finally:
        f.close()  # releases the lock


def _flock(f: IO[str], fcntl: Any, on_wait: Optional[Callable[[], None]]) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if on_wait is not None:
            on_wait()
    except OSError:
        return False
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        return True
    except OSError:
        return False


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation inside ``directory`` durable (best effort where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
