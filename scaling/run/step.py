"""One optimizer step, the same for training and for ``scaling-plan --measure``: the optimizer, the
compiled/DDP-wrapped model, mixed precision, gradient accumulation with DDP's sync on the last
micro-batch only, gradient clipping; and where the batches meet the step, the objective's transform
(``objective_batches``: BERT's masking of each step's batch under ``model.objective=mlm``)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from scaling.model.objective import mask_step
from scaling.model.parametrization import param_groups
from scaling.run.distributed import DistContext

FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # where torch (>= 2.4) has a fused AdamW


def make_optimizer(model: torch.nn.Module, cfg: Any, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the parametrisation's groups, fused (one kernel per group, not a loop of small ones: on a
    CPU about 10-15% of a small model's step) on CUDA and CPU unless ``optim.fused`` says otherwise."""
    groups = param_groups(model, cfg.model, cfg.optim)
    fused = cfg.optim.fused if cfg.optim.fused is not None else device.type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                             eps=cfg.optim.eps, fused=fused)


def wrap_model(model: torch.nn.Module, cfg: Any, device: torch.device, ctx: DistContext) -> torch.nn.Module:
    """``torch.compile`` (default on CUDA) and DistributedDataParallel (when several processes run)."""
    compile_model = cfg.train.compile if cfg.train.compile is not None else device.type == "cuda"
    wrapped = torch.compile(model) if compile_model else model
    if ctx.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped


def autocast_for(precision: str, device: torch.device) -> Any:
    """bf16 autocast for ``bf16`` (and ``auto`` on CUDA), else a no-op context (fp32)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def objective_batches(batches: Iterator[tuple[int, Any]], model_cfg: Any, vocab_size: int, seed: int,
                      batch_size: int, ctx: DistContext) -> Iterator[tuple[int, Any]]:
    """The loader's ``(step, micro_batches)`` as the objective trains on them: unchanged under ``clm``;
    under ``mlm`` each step's windows masked by the draws of ``(seed, step)`` (``scaling.model.objective``),
    so the masking, like the batch, is a pure function of (seed, step)."""
    if model_cfg.objective != "mlm":
        yield from batches
        return
    for step, micro_batches in batches:
        yield step, mask_step(micro_batches, seed, step, model_cfg, vocab_size, batch_size, ctx.rank, ctx.world_size)


class OptimizerStep:
    """``step(micro_batches, lr)``: forward and backward over the micro-batches, clip, update; returns the
    step's mean loss as a detached tensor (no host sync)."""

    def __init__(self, model: torch.nn.Module, train_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 grad_clip: float, autocast: Any, ctx: DistContext):
        self.model, self.train_model, self.optimizer = model, train_model, optimizer
        self.grad_clip, self.autocast, self.ctx = grad_clip, autocast, ctx

    def __call__(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]], lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        accum = len(micro_batches)
        loss_sum = torch.zeros((), device=micro_batches[0][0].device)
        for micro, (x, y) in enumerate(micro_batches):
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.ctx.enabled else self.train_model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.train_model(x, y)
                (loss / accum).backward()
            loss_sum += loss.detach() / accum
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum
