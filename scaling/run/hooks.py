"""The duties of the training loop as hooks, each owning its cadence: the metrics line and divergence
(``MetricsHook``), evaluation (``EvalHook``), the run record and its W&B mirror (``RecordHook``), the
console (``ConsoleHook``), checkpoints and the preemption hand-off (``CheckpointHook`` with its
``Checkpointer``). ``scaling.run.training`` puts them in this order.

Extension point: ``run_training(cfg, run_dir, extra_hooks=[factory, ...])``. Each factory receives the
run's ``HookContext`` and returns a hook (or None); these hooks run after evaluation and before the record,
so keys they add to ``event.row`` land in ``metrics.jsonl``, the W&B mirror and, for ``pred/...`` keys, the
progress bar. Layers above the run (the study's forecast, ``scaling.study.forecast``) plug in this way."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from scaling.config import RunConfig
from scaling.run.checkpoint import save_checkpoint
from scaling.run.distributed import DistContext
from scaling.run.evaluate import Evaluator
from scaling.run.loop import Hook, StepEvent
from scaling.run.record import RunRecord
from scaling.run.sizes import RunSizes
from scaling.run.state import TrainState

log = logging.getLogger("scaling.train")
PRED_PREFIX = "pred/"  # keys of estimates (e.g. pred/final_loss, pred/final_loss_low, pred/final_loss_high)


@dataclass(frozen=True)
class HookContext:
    """What a hook factory of ``run_training(..., extra_hooks=...)`` learns about the run it joins."""

    run: RunConfig  # the typed config
    run_dir: Path
    steps: int  # optimizer steps of the whole run
    start_step: int  # steps already done (a resumed run)
    lrs: Sequence[float]  # the run's own schedule: lrs[s] is the lr of step s (s = 1..steps), lrs[0] = 0
    is_main: bool  # the writing rank (the only one whose rows are recorded)
    history: Callable[[], list[dict[str, Any]]]  # the rows already in metrics.jsonl (writing rank; else [])


HookFactory = Callable[[HookContext], Optional[Hook]]


class MetricsHook:
    """Every ``log_every`` steps (and the last): the metrics line of the record; a non-finite loss ends
    the run as ``diverged``."""

    def __init__(self, sizes: RunSizes, log_every: int, ctx: DistContext, peak_flops: Optional[float]):
        self.sizes, self.log_every, self.ctx, self.peak = sizes, log_every, ctx, peak_flops
        self.loss_sum: Optional[torch.Tensor] = None
        self.count = 0
        self.tick, self.tokens_since = time.perf_counter(), 0
        self.last_row: dict[str, Any] = {}

    def after_step(self, ev: StepEvent) -> None:
        self.loss_sum = ev.loss if self.loss_sum is None else self.loss_sum + ev.loss
        self.count += 1
        self.tokens_since += self.sizes.tokens_per_step
        if ev.step % self.log_every and not ev.is_last:
            return
        train_loss = self.ctx.all_mean(self.loss_sum / self.count).item()
        self.loss_sum, self.count = None, 0
        elapsed = time.perf_counter() - self.tick
        tokens_per_s = self.tokens_since / max(elapsed, 1e-9)
        self.tick, self.tokens_since = time.perf_counter(), 0
        row: dict[str, Any] = {"step": ev.step, **self.sizes.counts_at(ev.step), "train/loss": train_loss,
                               "lr": ev.lr, "tokens_per_s": tokens_per_s}
        if self.peak:
            row["mfu"] = tokens_per_s * self.sizes.flops_per_token["chinchilla"] / self.peak
        ev.row = self.last_row = row
        if not math.isfinite(train_loss):
            ev.status, ev.error, ev.stop = "diverged", f"non-finite training loss at step {ev.step}", True
            log.warning("run diverged: %s", ev.error)


class EvalHook:
    """Validation loss into the metrics line: the final evaluation at the last step, the periodic one
    every ``eval_every`` steps (on logged steps)."""

    def __init__(self, evaluator: Evaluator, eval_every: int):
        self.evaluator, self.eval_every = evaluator, eval_every

    def after_step(self, ev: StepEvent) -> None:
        if ev.row is None or ev.status == "diverged":
            return
        if ev.is_last:
            ev.row.update(self.evaluator.final_metrics())
        elif self.eval_every and ev.step % self.eval_every == 0:
            ev.row.update(self.evaluator.periodic().metrics())


class RecordHook:
    """Each metrics line into ``metrics.jsonl`` and the W&B mirror (the writing rank only)."""

    def __init__(self, record: RunRecord, mirror: Any, ctx: DistContext):
        self.record, self.mirror, self.ctx = record, mirror, ctx

    def after_step(self, ev: StepEvent) -> None:
        if ev.row is None or not self.ctx.is_main:
            return
        self.record.log(ev.row)
        if self.mirror is not None:
            self.mirror.log(ev.row, ev.step)


class ConsoleHook:
    """A progress bar on a terminal (``train.progress``), else a log line every ten metrics lines."""

    def __init__(self, show: Optional[bool], total: int, initial: int, log_every: int, tokens_per_step: int,
                 ctx: DistContext):
        self.bar = _progress_bar(show, total, initial) if ctx.is_main else None
        self.total, self.log_every, self.tokens_per_step, self.ctx = total, log_every, tokens_per_step, ctx
        self.pred: dict[str, str] = {}  # the latest pred/... estimates, shown until newer ones arrive

    def after_step(self, ev: StepEvent) -> None:
        row = ev.row
        if row is not None:
            self.pred = pred_postfix(row) or self.pred
        if row is not None and self.bar is not None:
            self.bar.set_postfix(loss=f"{row['train/loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}", **self.pred)
        elif row is not None and self.ctx.is_main and (ev.step % (self.log_every * 10) == 0 or ev.is_last):
            log.info("step %d/%d tokens %d loss %.4f lr %.3g tok/s %.0f%s", ev.step, self.total,
                     ev.step * self.tokens_per_step, row["train/loss"], ev.lr, row["tokens_per_s"],
                     "".join(f" {k} {v}" for k, v in self.pred.items()))
        if self.bar is not None and not ev.stop:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpointer:
    """Writes the run's ``TrainState`` as a checkpoint (writing rank; the others wait) and prunes old ones."""

    def __init__(self, run_dir: Path, state: TrainState, keep: int, keep_steps: frozenset[int], ctx: DistContext,
                 wall_time: Callable[[], float]):
        self.run_dir, self.state, self.keep, self.keep_steps = run_dir, state, keep, keep_steps
        self.ctx, self.wall_time = ctx, wall_time

    def save(self) -> None:
        if self.ctx.is_main:
            self.state.wall_time = self.wall_time()
            save_checkpoint(self.run_dir, self.state.step, self.state.state_dict(), keep=self.keep,
                            keep_steps=self.keep_steps)
        self.ctx.barrier()


class CheckpointHook:
    """A checkpoint every ``every`` steps, at each kept step, and when a preemption signal arrived; after
    that last one, ``before_handoff()`` (the record closes) and the job is handed back (never returns).
    The guard is polled once per step on every rank (it is a collective under DDP)."""

    def __init__(self, checkpointer: Checkpointer, every: int, guard: Any, before_handoff: Callable[[], None]):
        self.checkpointer, self.every, self.guard, self.before_handoff = checkpointer, every, guard, before_handoff

    def after_step(self, ev: StepEvent) -> None:
        if ev.status == "diverged":
            return
        preempted = self.guard.requested
        if preempted or (self.every and ev.step % self.every == 0) or ev.step in self.checkpointer.keep_steps:
            self.checkpointer.save()
        if preempted:
            self.before_handoff()
            self.guard.handoff()


def pred_postfix(row: dict[str, Any]) -> dict[str, str]:
    """The ``pred/...`` estimates of a metrics row as progress-bar fields: ``pred/final_loss`` with its
    ``_low`` and ``_high`` band becomes ``final_loss='2.3012 [2.2903, 2.3074]'``."""
    keys = [k for k in row if k.startswith(PRED_PREFIX) and isinstance(row[k], (int, float))]
    out = {}
    for key in keys:
        if key.endswith(("_low", "_high")) and key.rsplit("_", 1)[0] in row:
            continue
        text = f"{row[key]:.4f}"
        low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            text += f" [{low:.4f}, {high:.4f}]"
        out[key[len(PRED_PREFIX):].replace("/", "_")] = text
    return out


def _progress_bar(show: Optional[bool], total: int, initial: int) -> Any:
    if not (show if show is not None else sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
