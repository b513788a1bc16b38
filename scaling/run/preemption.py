"""Preemption and requeue: checkpoint at the next optimizer step, then hand the job back.

A scheduler warns a job before it ends it:

- SIGUSR2 (submitit's preemption signal; ``$SUBMITIT_PREEMPT_SIGNAL`` changes it): Slurm sends it
  ``signal_delay_s`` before the time limit, or on preemption. Under submitit, the job's original
  handler pickles the launcher's ``checkpoint()`` (the same Hydra job again) and runs
  ``scontrol requeue``.
- SIGTERM: ``scontrol requeue``, ``scancel`` and preemption send it, then SIGKILL after ``KillWait``.
  Slurm decides whether the job runs again; the job only has to save its state and leave.
- SIGINT (Ctrl-C) and SIGTERM outside a scheduler: save and exit; running the same command again
  resumes. A second Ctrl-C interrupts at once.

The training loop's contract::

    guard = preemption.install()
    for step in ...:
        ...optimizer step...
        if guard.requested:          # every rank asks, at every step (one all-reduce under DDP)
            save_checkpoint()        # rank 0
            guard.handoff()          # never returns

A signal handler only sets a flag: the checkpoint is written by the loop at a step boundary, never
from inside the handler. The requeued job resumes from that checkpoint in the same run directory
(the directory is a hash of the config), so it ends with the result of an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any, Callable, NoReturn, Optional, Union

log = logging.getLogger(__name__)

Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]

_active: Optional["PreemptionGuard"] = None


def preempt_signal() -> signal.Signals:
    """The signal submitit asks Slurm to send before a time limit or on preemption (SIGUSR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return signal.Signals[f"SIG{name}"]


class PreemptionGuard:
    """Turns scheduler signals into a flag the loop polls, and hands the job back after it saves."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None  # the signal that asked us to stop, if any
        self._previous: dict[int, Handler] = {}
        self._installed = False

    # -- signal side ---------------------------------------------------------------------------------
    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption: not in the main thread, signals are not caught")
            return
        for sig in {preempt_signal(), signal.SIGTERM, signal.SIGINT}:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        """Put back the handlers that were there before ``install()``."""
        global _active
        if self._installed:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            self._installed = False
        if _active is self:
            _active = None

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without saving
        if self.signum is None or signum == preempt_signal():
            self.signum = signum  # the preemption signal wins: it carries submitit's requeue
        # os.write: a print here could re-enter a stderr write the signal interrupted.
        os.write(2, f"received {signal.Signals(signum).name}: saving a checkpoint at the next step\n".encode())

    # -- loop side -----------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True once a stop was asked for, on any rank (every rank must read it at every step)."""
        local = self.signum is not None
        dist = _distributed()
        if dist is None:
            return local
        import torch

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([self.signum if local else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        if not local and int(flag.item()):
            self.signum = int(flag.item())
        return bool(flag.item())

    def handoff(self) -> NoReturn:
        """After the checkpoint is written: requeue (preemption signal) or exit. Never returns."""
        dist = _distributed()
        if dist is not None:
            dist.barrier()  # rank 0 has finished writing the checkpoint
        signum = self.signum or signal.SIGTERM
        previous = self._previous.get(signum)
        self.uninstall()
        name = signal.Signals(signum).name
        if signum == preempt_signal() and callable(previous):
            # submitit's handler: pickles the launcher's checkpoint(), requeues, and exits (rank 0).
            previous(signum, None)
        elif signum == preempt_signal() and os.environ.get("SLURM_JOB_ID"):
            _scontrol_requeue()
        if os.environ.get("SLURM_JOB_ID"):
            log.info("preemption: %s, checkpoint written; leaving the job to Slurm", name)
        else:
            print(f"stopped by {name}: checkpoint written; run the same command again to resume",
                  file=sys.stderr, flush=True)
        sys.exit(128 + int(signum))


def _distributed() -> Any:
    """``torch.distributed`` when a process group of more than one rank is running, else None."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _scontrol_requeue() -> None:
    """Requeue this Slurm job (a plain sbatch job, not run by submitit)."""
    if os.environ.get("SLURM_PROCID", "0") != "0":
        return
    job = os.environ["SLURM_JOB_ID"]
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    subprocess.run(["scontrol", "requeue", job], check=False, timeout=60)
    log.info("preemption: requeued Slurm job %s", job)


def install() -> PreemptionGuard:
    """Catch the preemption signal, SIGTERM and SIGINT for one run (replacing an earlier run's guard)."""
    global _active
    if _active is not None:
        _active.uninstall()
    _active = PreemptionGuard()
    _active._install()
    return _active
