"""One training run: config -> data -> model -> loop with its hooks -> run record.

``run_training`` trains one run into its run directory, resuming from the latest checkpoint when one
exists and returning the record of a run that already finished. The parts know nothing of the command
line (``scaling.cli.train`` is the Hydra entry point).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from scaling.config import DataConfig, RunConfig, TrainConfig, typed_config
from scaling.data import repeat
from scaling.data.prefetch import BatchPrefetcher
from scaling.data.prepare import PreparedData, check_context, prepare_data
from scaling.data.mixture import source_report
from scaling.errors import USER_ERRORS, ConfigError
from scaling.io import DISK_FULL, StorageError, storage_problem, writable_dir
from scaling.model.gpt import GPT
from scaling.model.objective import mask_windows
from scaling.model.shape import check_model_config, predicted_per_window
from scaling.run import branch, preemption, wandb_mirror
from scaling.run.checkpoint import (check_resume_data, latest_checkpoint_path, load_latest_checkpoint,
                                   remove_stale_temporaries)
from scaling.run.distributed import DistContext, setup_distributed, teardown_distributed
from scaling.run.evaluate import Evaluator
from scaling.run.evaluate_documents import check_document_eval, document_evaluator, document_fields
from scaling.run.hardware import peak_flops, resolve_device
from scaling.run.hooks import (CheckpointHook, Checkpointer, ConsoleHook, EvalHook, HookContext, HookFactory,
                               MetricsHook, RecordHook)
from scaling.run.lock import run_folder_lock
from scaling.run.loop import train_loop
from scaling.run.record import RunRecord
from scaling.run.schedule import lr_multiplier
from scaling.run.sizes import RunSizes, shape_of
from scaling.run.state import TrainState
from scaling.run.step import OptimizerStep, autocast_for, make_optimizer, objective_batches, wrap_model

log = logging.getLogger("scaling.train")


def check_run_config(cfg: Any) -> None:
    """One-line errors for settings that cannot work, before any work: every section's own checks
    (``RunConfig.validate``) and a WSD branch's."""
    RunConfig.validate(cfg)
    branch.check_branch_config(cfg)
    repeat.check_request(cfg.data.unique_tokens, cfg.model.context, cfg.train.batch_size, cfg.train.tokens,
                         repeat.max_unique_epochs(cfg.sweep))


def check_run_data(run: RunConfig, prepared: PreparedData, world_size: int) -> tuple[int, RunSizes]:
    """The vocabulary and the sizes of the run, after one-line errors for a config the prepared data cannot
    serve (before any training work): a model vocabulary smaller than the data's, a shape that cannot be
    built, a context longer than a split, a budget under one optimizer step, documents it cannot score."""
    vocab_size = run.model.vocab_size or prepared.vocab_size
    if vocab_size < prepared.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab_size} is smaller than the vocabulary of the data "
                          f"({prepared.vocab_size} tokens, data.tokenizer={run.data.tokenizer!r}): use at least "
                          f"{prepared.vocab_size}, or null to take the data's")
    check_model_config(run.model, vocab_size)
    sizes = RunSizes(run, vocab_size, world_size)
    check_context(prepared, sizes.context)
    if run.train.tokens < sizes.tokens_per_step:
        raise ConfigError(f"train.tokens={run.train.tokens} is fewer than one optimizer step of "
                          f"train.batch_size={sizes.batch_size} x model.context={sizes.context} = "
                          f"{sizes.tokens_per_step:,} tokens: allowed >= {sizes.tokens_per_step}")
    check_document_eval(run, prepared)
    return vocab_size, sizes


# The data ``check_training_data`` opened, with its settings and the working folder: the run of the same
# data in this process takes it instead of opening the prepared data a second time (``_prepare``).
_checked_data: list[tuple[str, DataConfig, PreparedData]] = []


def check_training_data(cfg: Any) -> None:
    """``check_run_data`` for a command line before its run folder exists (the data prepared, or opened from
    the cache, as the run will); the opening is kept for the run that follows in this process."""
    run = typed_config(cfg)
    prepared = prepare_data(run.data)
    check_run_data(run, prepared, int(os.environ.get("WORLD_SIZE", 1)))
    _checked_data[:] = [(os.getcwd(), run.data, prepared)]


def run_training(cfg: Any, run_dir: str | Path, record_user_errors: bool = True,
                 extra_hooks: Sequence[HookFactory] = ()) -> dict[str, Any]:
    """Train one run into ``run_dir`` and return its result record (see DESIGN.md).

    A run that already ended returns its record without writing anything. The writing rank holds the run
    folder's lock while it trains (``scaling.run.lock``: a second process waits) and first cleans what a dead
    process left (torn records, stale temporaries). Any failure is recorded as ``failed`` with its error
    before it is raised again; a bad config or bad data too, unless ``record_user_errors`` is false (a single
    run from the shell, which just reports it). A full disk or a folder that takes no file is a one-line
    StorageError. extra_hooks: factories called with the run's ``HookContext``; their hooks run after
    evaluation and before the record (``scaling.run.hooks``), e.g. the forecast of ``scaling.study.forecast``.
    """
    run_dir, start_time = Path(run_dir), time.time()
    finished = RunRecord(run_dir).finished()
    if finished is not None:
        log.info("run %s already %s; nothing to train", finished["run_id"], finished["status"])
        return finished
    check_run_config(cfg)
    run = typed_config(cfg)  # parts receive their own typed section; cfg stays for the record and W&B
    device, ctx = _start_process(run.train)
    try:
        with _claim(run_dir, ctx) as finished:
            if finished is not None:
                log.info("run %s was %s by another process meanwhile", finished["run_id"], finished["status"])
                return finished
            return _run(cfg, run, run_dir, device, ctx, start_time, record_user_errors, extra_hooks)
    finally:
        teardown_distributed(ctx)


@contextlib.contextmanager
def _claim(run_dir: Path, ctx: DistContext) -> Iterator[Optional[dict[str, Any]]]:
    """The writing rank's hold on the run folder: shown writable, then locked; yields the record of a
    process that finished the run while this one waited (else None)."""
    if not ctx.is_main:
        yield None
        return
    writable_dir(run_dir, "the run folder")
    with run_folder_lock(run_dir):
        yield RunRecord(run_dir).finished()


def _run(cfg: Any, run: RunConfig, run_dir: Path, device: torch.device, ctx: DistContext, start_time: float,
         record_user_errors: bool, extra_hooks: Sequence[HookFactory]) -> dict[str, Any]:
    """The run in a folder this process holds: repaired, trained, recorded (a failure too)."""
    record = RunRecord(run_dir)
    state: Optional[TrainState] = None
    mirror = None
    stopped: dict[str, Any] = {}  # the outcome of a run stopped at train.stop_at_tokens (it has no record)
    try:
        if ctx.is_main:
            _warn([*record.repair(), *(f"{p}: removed, a temporary of a write killed midway"
                                       for p in remove_stale_temporaries(run_dir))])
        prepared = _prepare(run.data, ctx)
        vocab_size, sizes = check_run_data(run, prepared, ctx.world_size)
        check_resume_data(run_dir, prepared, ctx.is_main, run.train.branch_from)  # checkpoints resume on their data
        prepared, repeats = repeat.with_repeats(prepared, run.data.unique_tokens, sizes.context, sizes.batch_size,
                                                sizes.tokens, repeat.max_unique_epochs(run.sweep))
        state = _initial_state(cfg, run, run_dir, sizes, vocab_size, device)
        info = {"params": sizes.params, "flops_per_token": sizes.flops_per_token, "shape": shape_of(run, vocab_size),
                "steps": sizes.steps, "tokens": sizes.tokens, "flops": sizes.flops}
        if ctx.is_main:
            record.write_config(cfg)
            record.open_metrics(resume_step=state.step)
            mirror = wandb_mirror.start(cfg, run_dir, run_dir.name, state.wandb_id or None, info)
            state.wandb_id = getattr(mirror, "wandb_id", None) or ""
        outcome = _train(run, sizes, prepared, state, device, ctx, record, mirror, run_dir, start_time, extra_hooks)
        if outcome["status"] == "stopped":  # train.stop_at_tokens: a checkpoint, no record; a rerun goes on
            log.info("run %s stopped at step %d of %d (train.stop_at_tokens=%s): checkpoint written; run it again "
                     "with a larger train.stop_at_tokens, or without, to go on", run_dir.name, state.step,
                     sizes.steps, run.train.stop_at_tokens)
            stopped = {"run_id": run_dir.name, "group": run.group, **outcome, "steps": sizes.steps}
            return stopped
        result = {"run_id": run_dir.name, "group": run.group, **outcome, "model": info["shape"],
                  "params": sizes.params, "tokens": sizes.tokens, "objective": run.model.objective,
                  "predicted_tokens": sizes.steps * sizes.batch_size * predicted_per_window(run.model, sizes.context),
                  "flops": sizes.flops,
                  "flops_per_token": sizes.flops_per_token, "steps": sizes.steps, "batch_size": sizes.batch_size,
                  "context": sizes.context, "world_size": ctx.world_size, "device": str(device),
                  "data_fingerprint": prepared.fingerprint,
                  **source_report(prepared.train, sizes.batch_size, sizes.context, sizes.steps),
                  **branch.branch_fields(cfg, sizes, outcome.get("wall_time")),
                  **(repeats.record(sizes.steps, sizes.batch_size) if repeats else {})}
        if ctx.is_main:
            record.write_result(result)
        return result
    except Exception as exc:
        error = _storage_error(exc, run_dir) or exc
        if ctx.is_main and (record_user_errors or not isinstance(error, USER_ERRORS)):
            record.write_failure(run_dir.name, cfg.group, error, state.step if state else 0, time.time() - start_time)
        if error is exc:
            raise
        raise error from None
    finally:
        record.close()
        if mirror is not None:
            mirror.finish(record.read_result() or stopped)


def _storage_error(exc: BaseException, run_dir: Path) -> Optional[StorageError]:
    """One line for a file the run could not write (a full disk, a read-only folder), saying which checkpoint
    is intact; None for any other error."""
    problem = storage_problem(exc)
    if problem is None:
        return None
    latest = latest_checkpoint_path(run_dir)
    kept = (f"the previous checkpoint {latest} is intact" if latest is not None else "no checkpoint was written yet")
    fix = "free space" if getattr(exc, "errno", None) in DISK_FULL else "make it writable"
    return StorageError(f"cannot write {problem}; {kept}: {fix} and run the same command again to resume")


def _warn(lines: Sequence[str]) -> None:
    """What the run did about the files a dead process left, one line each on stderr."""
    for line in lines:
        print(f"warning: {line}", file=sys.stderr, flush=True)


def _start_process(train: TrainConfig) -> tuple[torch.device, DistContext]:
    device = resolve_device(train.device)
    ctx = setup_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if train.threads:
        torch.set_num_threads(train.threads)
    return device, ctx


def _prepare(data: DataConfig, ctx: DistContext) -> PreparedData:
    """The prepared data (the opening ``check_training_data`` made of the same data, where it did); the
    writing rank prepares first, the others then open the cache."""
    checked = _checked_opening(data)
    prepared = checked if checked is not None else prepare_data(data) if ctx.is_main else None
    ctx.barrier()
    return prepared if prepared is not None else prepare_data(data)


def _checked_opening(data: DataConfig) -> Optional[PreparedData]:
    """The data ``check_training_data`` opened for these settings in this folder (handed over once), else None."""
    held, _checked_data[:] = _checked_data[:], []
    return next((prepared for cwd, checked, prepared in held if cwd == os.getcwd() and checked == data), None)


def _initial_state(cfg: Any, run: RunConfig, run_dir: Path, sizes: RunSizes, vocab_size: int,
                   device: torch.device) -> TrainState:
    """A fresh model and optimizer, restored from the run's latest checkpoint or a branch's trunk (whose
    checks read the whole config ``cfg``)."""
    torch.manual_seed(run.train.seed)
    model = GPT(run.model, vocab_size).to(device)
    state = TrainState(model, make_optimizer(model, run, device), device)
    checkpoint = load_latest_checkpoint(run_dir, map_location=device)
    if checkpoint is None and branch.is_branch(cfg):
        checkpoint = branch.load_trunk_checkpoint(cfg, sizes, map_location=device)
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
        log.info("resuming %s from step %d", run_dir.name, state.step)
    return state


def _train(cfg: RunConfig, sizes: RunSizes, prepared: PreparedData, state: TrainState, device: torch.device,
           ctx: DistContext, record: RunRecord, mirror: Any, run_dir: Path, start_time: float,
           extra_hooks: Sequence[HookFactory] = ()) -> dict[str, Any]:
    """Build the step, the batches and the hooks, iterate, and return the outcome fields of the record."""
    t = cfg.train
    autocast = autocast_for(t.precision, device)
    wall_before = state.wall_time
    wall_time = lambda: wall_before + time.time() - start_time  # noqa: E731
    vocab_size = cfg.model.vocab_size or prepared.vocab_size  # the data's vocabulary ([MASK] is its size)
    mask = (lambda x, offsets: mask_windows(x, offsets, cfg.model, vocab_size)) if cfg.model.objective == "mlm" else None
    documents = document_evaluator(cfg, prepared, state.model, sizes.context, sizes.micro_batch_size, device,
                                   autocast, ctx)
    evaluator = Evaluator(state.model, prepared.val, sizes.context, sizes.micro_batch_size, device, autocast, ctx,
                          t.eval_tokens, t.final_eval_tokens, prepared.token_bytes, mask=mask, documents=documents)
    keep_steps = frozenset(int(math.ceil(k / sizes.tokens_per_step)) for k in t.keep_at_tokens)
    checkpointer = Checkpointer(run_dir, state, t.keep_checkpoints, keep_steps, ctx, wall_time)
    guard = preemption.install()
    metrics = MetricsHook(sizes, t.log_every, ctx, peak_flops(device))
    console = ConsoleHook(t.progress, sizes.steps, state.step, t.log_every, sizes.tokens_per_step, ctx)
    lr_at = lambda s: cfg.optim.lr * lr_multiplier(s, sizes.steps, cfg.optim)  # noqa: E731
    hooks = [metrics, EvalHook(evaluator, t.eval_every),
             *_extra_hooks(extra_hooks, cfg, run_dir, sizes.steps, state.step, lr_at, ctx, record),
             RecordHook(record, mirror, ctx), console,
             CheckpointHook(checkpointer, t.checkpoint_every, guard, before_handoff=record.close)]
    step = OptimizerStep(state.model, wrap_model(state.model, cfg, device, ctx), state.optimizer,
                         cfg.optim.grad_clip, autocast, ctx)
    data_seed = t.effective_data_seed
    batches = BatchPrefetcher(prepared.train, sizes.context, sizes.batch_size, data_seed, state.step, sizes.steps, device,
                              rank=ctx.rank, world_size=ctx.world_size, micro_batch_size=sizes.micro_batch_size)
    trained_on = objective_batches(iter(batches), cfg.model, vocab_size, data_seed, sizes.batch_size, ctx)
    until = stop_step(t.stop_at_tokens, sizes.tokens_per_step)
    try:
        last = train_loop(state, sizes.steps, lr_at, trained_on, step, hooks, until=until)
    finally:
        guard.uninstall()
        batches.close()
        console.close()
    if last is not None and last.status == "diverged":
        outcome = {"status": "diverged", "step": state.step, "error": last.error, "train_loss": None, "val_loss": None}
    elif state.step < sizes.steps:
        if last is not None:
            checkpointer.save()
        outcome = {"status": "stopped", "step": state.step, "tokens_trained": state.step * sizes.tokens_per_step}
    else:
        checkpointer.save()
        row = metrics.last_row if "val/loss" in metrics.last_row else {**record.last_logged(),
                                                                       **evaluator.final_metrics()}
        outcome = {"status": "completed", "step": state.step, "val_loss": row["val/loss"],
                   "train_loss": row.get("train/loss"), "eval_tokens": evaluator.final_tokens,
                   **{f"val_{k}": row[f"val/{k}"] for k in ("nats", "bytes", "bpb", "ppl", "pseudo_ppl")
                      if f"val/{k}" in row}, **document_fields(row)}
    elapsed = wall_time()
    return {**outcome, "wall_time": elapsed, "tokens_per_second": sizes.tokens / max(elapsed, 1e-9)}


def stop_step(stop_at_tokens: Optional[int], tokens_per_step: int) -> Optional[int]:
    """The step ``train.stop_at_tokens`` stops at (whole steps, rounded up as ``keep_at_tokens`` round), or None."""
    return None if stop_at_tokens is None else int(math.ceil(stop_at_tokens / tokens_per_step))


def _extra_hooks(factories: Sequence[HookFactory], run: RunConfig, run_dir: Path, steps: int, start_step: int,
                 lr_at: Any, ctx: DistContext, record: RunRecord) -> list[Any]:
    """The hooks of ``run_training``'s ``extra_hooks`` factories (those that return one)."""
    if not factories:
        return []
    lrs = [0.0] + [lr_at(i) for i in range(steps)]  # lrs[s]: the lr of step s, as the curve logs it
    context = HookContext(run=run, run_dir=run_dir, steps=steps, start_step=start_step, lrs=lrs,
                          is_main=ctx.is_main, history=record.read_metrics if ctx.is_main else list)
    return [h for h in (factory(context) for factory in factories) if h is not None]
