"""``scaling-train``: one training run as a Hydra app over ``conf/``.

The entry point wires the parts together (config -> data -> model -> optimizer -> loop -> record);
the parts know nothing of the command line. One call of ``run_training`` trains one run into its run
directory, resuming from the latest checkpoint when one exists and returning the record of a run that
already finished.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from scaling.checkpoint import load_latest_checkpoint, save_checkpoint
from scaling.config import register_configs
from scaling.data import check_context, eval_offsets, make_batch, prepare_data
from scaling.distributed import DistContext, setup_distributed, teardown_distributed
from scaling.errors import ConfigError, DataError
from scaling.flops import flops_per_token, param_counts
from scaling.hardware import peak_flops, resolve_device
from scaling.model import GPT, check_model_config
from scaling.parametrization import param_groups
from scaling.prefetch import BatchPrefetcher
from scaling import branching, preemption, wandb_mirror
from scaling.record import RunRecord
from scaling.resolvers import register_resolvers, skipped_result
from scaling.run_key import register_run_key_resolver
from scaling.schedule import check_schedule, lr_multiplier

log = logging.getLogger("scaling.train")

USER_ERRORS = (ConfigError, DataError)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# --------------------------------------------------------------------------------------------------
# Plan of a run: everything derived from the config before any work.


class RunPlan:
    """Derived sizes of one run: steps, accumulation, exact tokens and FLOPs."""

    def __init__(self, cfg: DictConfig, vocab_size: int, world_size: int):
        t = cfg.train
        self.context = cfg.model.context
        self.batch_size = t.batch_size
        self.micro_batch_size = t.micro_batch_size or max(1, t.batch_size // world_size)
        if t.batch_size <= 0 or t.tokens <= 0:
            raise ConfigError(f"train.batch_size={t.batch_size} and train.tokens={t.tokens} must be positive")
        if t.batch_size % (self.micro_batch_size * world_size):
            raise ConfigError(
                f"train.batch_size={t.batch_size} is not a multiple of train.micro_batch_size="
                f"{self.micro_batch_size} x {world_size} processes: choose sizes that divide it"
            )
        self.accum_steps = t.batch_size // (self.micro_batch_size * world_size)
        self.tokens_per_step = t.batch_size * self.context
        self.steps = max(1, round(t.tokens / self.tokens_per_step))
        self.tokens = self.steps * self.tokens_per_step  # D: tokens the optimizer actually consumes
        self.params = param_counts(cfg.model, vocab_size)
        self.flops_per_token = flops_per_token(cfg.model, vocab_size)
        self.flops = {k: v * self.tokens for k, v in self.flops_per_token.items()}


def shape_of(cfg: DictConfig, vocab_size: int) -> dict[str, Any]:
    m = cfg.model
    heads = m.width // m.head_dim if m.head_dim else m.heads
    return {"width": m.width, "depth": m.depth, "heads": heads, "context": m.context, "vocab_size": vocab_size,
            "mlp": m.mlp, "pos": m.pos, "tie_embeddings": m.tie_embeddings, "param": m.param}


def check_train_config(cfg: DictConfig) -> None:
    t = cfg.train
    for field in ("eval_every", "log_every", "checkpoint_every", "eval_tokens", "final_eval_tokens"):
        if t[field] < 0:
            raise ConfigError(f"train.{field}={t[field]} must be >= 0")
    if t.log_every == 0:
        raise ConfigError("train.log_every=0 must be >= 1")
    if t.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision={t.precision!r} is not known: choose auto, fp32 or bf16")
    check_schedule(cfg.optim)
    branching.check_branch_config(cfg)


# --------------------------------------------------------------------------------------------------
# Evaluation.


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: Any, offsets: Any, context: int, micro: int,
             device: torch.device, autocast: Any, ctx: DistContext) -> float:
    """Mean cross-entropy (nats per token) over fixed held-out windows, split across ranks."""
    model.eval()
    mine = offsets[ctx.rank::ctx.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for i in range(0, len(mine), micro):
        x, y = make_batch(tokens, mine[i:i + micro], context)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            _, loss = model(x, y)
        total[0] += loss.double() * x.numel()
        total[1] += x.numel()
    if ctx.enabled:
        torch.distributed.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


# --------------------------------------------------------------------------------------------------
# The run.


def run_training(cfg: DictConfig, run_dir: str | Path, record_user_errors: bool = True) -> dict[str, Any]:
    """Train one run into ``run_dir`` and return its result record (see DESIGN.md).

    Any failure is recorded as ``failed`` with its error before it is raised again; a bad config or bad
    data too, unless ``record_user_errors`` is false (a single run from the shell, which just reports it).
    """
    run_dir = Path(run_dir)
    record = RunRecord(run_dir)
    finished = record.read_result()
    if finished is not None and finished["status"] in ("completed", "diverged"):
        log.info("run %s already %s; nothing to train", finished["run_id"], finished["status"])
        return finished

    check_train_config(cfg)
    device = resolve_device(cfg.train.device)
    ctx = setup_distributed(device.type)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_id = run_dir.name
    start_time = time.time()
    state: dict[str, Any] = {"step": 0}
    mirror = None
    try:
        if ctx.is_main:
            prepared = prepare_data(cfg.data)
        ctx.barrier()
        if not ctx.is_main:
            prepared = prepare_data(cfg.data)
        vocab_size = cfg.model.vocab_size or prepared.vocab_size
        check_model_config(cfg.model, vocab_size)
        plan = RunPlan(cfg, vocab_size, ctx.world_size)
        check_context(prepared, plan.context)

        torch.manual_seed(cfg.train.seed)
        model = GPT(cfg.model, vocab_size).to(device)
        optimizer = _make_optimizer(model, cfg, device)
        checkpoint = load_latest_checkpoint(run_dir, map_location=device)
        if checkpoint is None and branching.is_branch(cfg):
            checkpoint = branching.load_trunk_checkpoint(cfg, plan, map_location=device)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            torch.set_rng_state(checkpoint["rng_cpu"])
            if device.type == "cuda" and "rng_cuda" in checkpoint:
                torch.cuda.set_rng_state(checkpoint["rng_cuda"], device)
            state = {"step": int(checkpoint["step"]), "wall_time": float(checkpoint["wall_time"])}
            log.info("resuming %s from step %d", run_id, state["step"])

        info = {"params": plan.params, "flops_per_token": plan.flops_per_token, "shape": shape_of(cfg, vocab_size),
                "steps": plan.steps, "tokens": plan.tokens, "flops": plan.flops}
        if ctx.is_main:
            record.write_config(cfg)
            record.open_metrics(resume_step=state["step"])
            mirror = _start_mirror(cfg, run_dir, run_id, checkpoint, info)
        train_model = _wrap(model, cfg, device, ctx)
        result = _loop(cfg, plan, prepared, model, train_model, optimizer, device, ctx, record, mirror,
                       run_dir, state, start_time)
        result = {"run_id": run_id, "group": cfg.group, **result, "model": info["shape"],
                  "params": plan.params, "tokens": plan.tokens, "flops": plan.flops,
                  "flops_per_token": plan.flops_per_token, "steps": plan.steps,
                  "batch_size": plan.batch_size, "context": plan.context, "world_size": ctx.world_size,
                  "device": str(device)}
        result.update(branching.branch_fields(cfg, plan, result.get("wall_time")))
        if ctx.is_main:
            record.write_result(result)
        return result
    except Exception as exc:
        if ctx.is_main and (record_user_errors or not isinstance(exc, USER_ERRORS)):
            record.write_result({"run_id": run_id, "group": cfg.group, "status": "failed",
                                 "error": f"{type(exc).__name__}: {exc}", "step": state.get("step", 0),
                                 "wall_time": time.time() - start_time})
        raise
    finally:
        record.close()
        if mirror is not None:
            mirror.finish(record.read_result() or {})
        teardown_distributed(ctx)


def _loop(cfg, plan, prepared, model, train_model, optimizer, device, ctx, record, mirror, run_dir,
          state, start_time) -> dict[str, Any]:
    t = cfg.train
    autocast = _autocast(cfg, device)
    guard = preemption.install()
    eval_windows = eval_offsets(len(prepared.val), plan.context, t.eval_tokens)
    final_windows = eval_offsets(len(prepared.val), plan.context, t.final_eval_tokens)
    peak = peak_flops(device)
    keep_steps = frozenset(int(math.ceil(k / plan.tokens_per_step)) for k in t.keep_at_tokens)
    wall_before = state.get("wall_time", 0.0)
    step = state["step"]
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    tick, tokens_since = time.perf_counter(), 0
    progress = _progress_bar(t, plan.steps, step, ctx)
    micro_rows = plan.micro_batch_size
    status, error = "completed", None
    row: dict[str, Any] = {}

    batches = iter(BatchPrefetcher(prepared.train, plan.context, plan.batch_size, t.seed, step, plan.steps,
                                   device, rank=ctx.rank, world_size=ctx.world_size, micro_batch_size=micro_rows))
    while step < plan.steps:
        lr_now = cfg.optim.lr * lr_multiplier(step, plan.steps, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr_now * group.get("lr_scale", 1.0)
        _, micro_batches = next(batches)  # this step's micro-batches, already on the device
        for micro, (x, y) in enumerate(micro_batches):
            sync = contextlib.nullcontext() if micro == plan.accum_steps - 1 or not ctx.enabled else train_model.no_sync()
            with sync:
                with autocast:
                    _, loss = train_model(x, y)
                (loss / plan.accum_steps).backward()
            loss_sum += loss.detach() / plan.accum_steps
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_count += 1
        tokens_since += plan.tokens_per_step

        is_last = step == plan.steps
        if step % t.log_every == 0 or is_last:
            train_loss = ctx.all_mean(loss_sum / loss_count).item()
            loss_sum.zero_()
            loss_count = 0
            elapsed = time.perf_counter() - tick
            tokens_per_s = tokens_since / max(elapsed, 1e-9)
            tick, tokens_since = time.perf_counter(), 0
            row = _metrics_row(step, plan, train_loss, lr_now, tokens_per_s, peak)
            if not math.isfinite(train_loss):
                status, error = "diverged", f"non-finite training loss at step {step}"
                log.warning("run diverged: %s", error)
            elif is_last:
                row["val/loss"] = evaluate(model, prepared.val, final_windows, plan.context, micro_rows,
                                           device, autocast, ctx)
            elif t.eval_every and step % t.eval_every == 0:
                row["val/loss"] = evaluate(model, prepared.val, eval_windows, plan.context, micro_rows,
                                           device, autocast, ctx)
            if ctx.is_main:
                record.log(row)
                if mirror is not None:
                    mirror.log(row, step)
            if progress is not None:
                progress.set_postfix(loss=f"{train_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            elif ctx.is_main and (step % (t.log_every * 10) == 0 or is_last):
                log.info("step %d/%d tokens %d loss %.4f lr %.3g tok/s %.0f", step, plan.steps,
                         step * plan.tokens_per_step, train_loss, lr_now, tokens_per_s)
            if status == "diverged":
                break
        if progress is not None:
            progress.update(1)

        wants_stop = guard.requested
        if (t.checkpoint_every and step % t.checkpoint_every == 0) or wants_stop or step in keep_steps:
            _save(run_dir, step, model, optimizer, device, mirror, wall_before + time.time() - start_time,
                  t.keep_checkpoints, keep_steps, ctx)
        if wants_stop:
            record.close()
            guard.handoff()

    guard.uninstall()
    batches.close()
    if progress is not None:
        progress.close()
    wall_time = wall_before + time.time() - start_time
    result: dict[str, Any] = {"status": status, "step": step}
    if status == "diverged":
        result.update(error=error, train_loss=None, val_loss=None)
    else:
        _save(run_dir, step, model, optimizer, device, mirror, wall_time, t.keep_checkpoints, keep_steps, ctx)
        if "val/loss" not in row:  # resumed after the last step: its metrics are already logged
            row = {**_last_logged(record), "val/loss": evaluate(model, prepared.val, final_windows, plan.context,
                                                                micro_rows, device, autocast, ctx)}
        result.update(val_loss=row["val/loss"], train_loss=row.get("train/loss"),
                      eval_tokens=len(final_windows) * plan.context)
    result.update(wall_time=wall_time, tokens_per_second=plan.tokens / max(wall_time, 1e-9))
    return result


def _metrics_row(step, plan, train_loss, lr, tokens_per_s, peak) -> dict[str, Any]:
    tokens = step * plan.tokens_per_step
    row: dict[str, Any] = {"step": step, "tokens": tokens, "flops": tokens * plan.flops_per_token["6nd"]}
    for conv, per_token in plan.flops_per_token.items():
        row[f"flops_{conv}"] = tokens * per_token
    if train_loss is not None:
        row["train/loss"] = train_loss
        row["lr"] = lr
        row["tokens_per_s"] = tokens_per_s
        if peak:
            row["mfu"] = tokens_per_s * plan.flops_per_token["chinchilla"] / peak
    return row


def _last_logged(record: RunRecord) -> dict[str, Any]:
    rows = record.read_metrics()
    return rows[-1] if rows else {}


def _save(run_dir, step, model, optimizer, device, mirror, wall_time, keep, keep_steps, ctx) -> None:
    if not ctx.is_main:
        ctx.barrier()
        return
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "wall_time": wall_time, "rng_cpu": torch.get_rng_state(),
             "wandb_id": getattr(mirror, "wandb_id", None) or ""}
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    save_checkpoint(run_dir, step, state, keep=keep, keep_steps=keep_steps)
    ctx.barrier()


def _make_optimizer(model: torch.nn.Module, cfg: DictConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.model, cfg.optim)
    fused = cfg.optim.fused if cfg.optim.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                             eps=cfg.optim.eps, fused=fused)


def _wrap(model: torch.nn.Module, cfg: DictConfig, device: torch.device, ctx: DistContext) -> torch.nn.Module:
    compile_model = cfg.train.compile if cfg.train.compile is not None else device.type == "cuda"
    wrapped = model
    if compile_model:
        wrapped = torch.compile(wrapped)
    if ctx.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped


def _autocast(cfg: DictConfig, device: torch.device) -> Any:
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress_bar(t: DictConfig, total: int, initial: int, ctx: DistContext) -> Any:
    show = t.progress if t.progress is not None else sys.stderr.isatty()
    if not show or not ctx.is_main:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _start_mirror(cfg: DictConfig, run_dir: Path, run_id: str, checkpoint: dict | None, info: dict) -> Any:
    resume_id = (checkpoint or {}).get("wandb_id") or None
    return wandb_mirror.start(cfg, run_dir, run_id, resume_id, info)


# --------------------------------------------------------------------------------------------------
# Command line.


def configure_runtime() -> None:
    """Register the structured configs and every resolver a run config uses (idempotent)."""
    register_configs()
    register_run_key_resolver()
    register_resolvers()
    branching.register_resolvers()


def compose_run_config(overrides: list[str]) -> DictConfig:
    """The run config ``scaling-train`` composes from ``overrides`` (for scripts and benchmarks)."""
    from hydra import compose, initialize_config_dir

    configure_runtime()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Print a user error as one line and exit 2, without a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def task(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task function: one run in Hydra's output directory (the run's own directory)."""
    configure_runtime()  # a submitit job process unpickles this function and never runs main()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    skipped = _skipped_result(cfg, run_dir)
    if skipped is not None:
        return skipped
    if HydraConfig.get().mode.name == "MULTIRUN":
        return run_training(cfg, run_dir)
    with user_errors_exit():
        return run_training(cfg, run_dir, record_user_errors=False)


def _skipped_result(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A sweep's run left out by its rules (tokens below the floor, beyond the data): recorded, not trained."""
    return skipped_result(cfg, run_dir)


def main() -> None:
    configure_runtime()
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()


if __name__ == "__main__":
    main()
