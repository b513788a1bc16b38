"""The training loop: it only iterates. Each step it sets nothing but the lr and takes the optimizer
step; every duty (metrics, evaluation, the record, W&B, the console, checkpoints, preemption) is a hook
that decides its own cadence (``scaling.run.hooks``), in the manner of OLMo-core's callbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch

from scaling.run.state import TrainState


@dataclass
class StepEvent:
    """What one step tells the hooks; hooks may add to it (``row``) or end the run (``status``, ``stop``)."""

    step: int  # optimizer steps done
    lr: float
    loss: torch.Tensor  # this step's mean training loss, still on the device
    is_last: bool
    row: Optional[dict[str, Any]] = None  # this step's metrics line, when the metrics hook logs one
    status: str = "completed"
    error: Optional[str] = None
    stop: bool = False


class Hook(Protocol):
    def after_step(self, event: StepEvent) -> None: ...


def train_loop(state: TrainState, steps: int, lr_at: Callable[[int], float], batches: Iterator[Any],
               optimizer_step: Callable[[Any, float], torch.Tensor], hooks: Sequence[Hook],
               until: Optional[int] = None) -> Optional[StepEvent]:
    """Run steps ``state.step + 1 .. steps`` (of a run of ``steps``, up to ``until`` where it stops earlier);
    return the last step's event (None when none was left)."""
    event = None
    while state.step < min(steps, until or steps):
        lr = lr_at(state.step)
        _, micro_batches = next(batches)  # this step's micro-batches, already on the device
        loss = optimizer_step(micro_batches, lr)
        state.step += 1
        event = StepEvent(step=state.step, lr=lr, loss=loss, is_last=state.step == steps)
        for hook in hooks:
            hook.after_step(event)
        if event.stop:
            break
    return event
