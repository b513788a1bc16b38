"""The study's worker processes, forked from a server that has already imported torch, Hydra and the run
layer (``multiprocessing``'s forkserver with preloaded modules), so that a worker starts training in about a
second instead of paying Python's, torch's and Hydra's imports again (several seconds on a small CPU).

Each worker is ``scaling-train --multirun ARGS`` exactly as ``python -m scaling.cli.train`` runs it: in its
own session (``os.killpg`` stops it and its runs checkpoint), with its output in its log file, the study's
environment and folder at the time of the launch, and SIGTERM when the server dies with the study (Linux).
Where the forkserver is not available (not POSIX) the worker is a plain subprocess.

    warm_up()                                   # at the study's start: the server imports while it plans
    proc = start_worker(args, log_path)         # .pid, .poll(), .returncode, .wait()
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

TRAIN_MODULE = "scaling.cli.train"
# What the server imports once for every worker (the train command's imports; not the command module itself,
# which each worker runs afresh as __main__).
# wandb and wandb.sdk.launch (which wandb imports at each process's first run): about 1 s a worker on a small CPU.
PRELOAD = ["torch", "torch._dynamo", "hydra", "omegaconf", "scaling.cli.overrides", "scaling.sweep.registry",
           "scaling.run.training", "scaling.study.forecast", "hydra_plugins.scaling_worker", "wandb",
           "wandb.sdk.launch"]
_context: Optional[Any] = None


def _forkserver() -> Optional[Any]:
    """The forkserver context with the preload list set, or None where there is none."""
    global _context
    if _context is None and "forkserver" in multiprocessing.get_all_start_methods():
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def warm_up() -> None:
    """Start the server now (it imports in the background), so that the first worker does not wait for it."""
    ctx = _forkserver()
    if ctx is not None:
        from multiprocessing import forkserver

        forkserver.ensure_running()


class Worker:
    """A forked worker with the part of ``subprocess.Popen``'s interface the study uses."""

    def __init__(self, process: Any):
        self.process = process
        self.pid = process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.process.exitcode

    def poll(self) -> Optional[int]:
        return self.process.exitcode

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()


def start_worker(args: list[str], log_path: Path) -> Any:
    """``scaling-train --multirun args`` in a worker process writing to ``log_path`` (appended)."""
    ctx = _forkserver()
    if ctx is None:
        with open(log_path, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", TRAIN_MODULE, "--multirun", *args], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=stop_with_parent)
    process = ctx.Process(target=_worker_main, args=(args, str(log_path), dict(os.environ), os.getcwd()),
                          name=f"scaling-train {log_path.stem}")
    process.start()
    return Worker(process)


def _worker_main(args: list[str], log_path: str, env: dict[str, str], cwd: str) -> None:
    """In the forked worker: its own session, log, environment and folder; then the train command."""
    import runpy

    os.setsid()
    stop_with_parent()
    _leave_the_server()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [TRAIN_MODULE, "--multirun", *args]
    try:
        runpy.run_module(TRAIN_MODULE, run_name="__main__", alter_sys=True)
    finally:  # as the interpreter's exit would (the forked process ends in os._exit): logging, W&B's service
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


def _leave_the_server() -> None:
    """Close this worker's copy of the forkserver's "alive" pipe (multiprocessing hands one to every child it
    forks, so that the server outlives its last child): the server then ends when the study does, even one
    killed with no time to stop its workers, and ``stop_with_parent`` stops them. Without this, the server
    and its workers keep each other alive and the workers train on, unwatched."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def stop_with_parent() -> None:
    """SIGTERM to this process when its parent dies (killed, or its test timed out), so that no worker trains
    on unwatched; its runs checkpoint and stop, and a rerun resumes them (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
