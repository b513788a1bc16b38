"""Evaluation on fixed held-out windows: the periodic check (``train.eval_tokens``) and the final one
(``train.final_eval_tokens``), split across ranks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from scaling.data.loader import eval_offsets, make_batch
from scaling.run.distributed import DistContext


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


class Evaluator:
    """The run's two evaluations over its validation tokens: ``periodic()`` and ``final()``."""

    def __init__(self, model: torch.nn.Module, val: np.ndarray, context: int, micro: int, device: torch.device,
                 autocast: Any, ctx: DistContext, eval_tokens: int, final_eval_tokens: int):
        self.model, self.val, self.context, self.micro = model, val, context, micro
        self.device, self.autocast, self.ctx = device, autocast, ctx
        self.periodic_windows = eval_offsets(len(val), context, eval_tokens)
        self.final_windows = eval_offsets(len(val), context, final_eval_tokens)

    @property
    def final_tokens(self) -> int:
        return len(self.final_windows) * self.context

    def periodic(self) -> float:
        return self._run(self.periodic_windows)

    def final(self) -> float:
        return self._run(self.final_windows)

    def _run(self, windows: np.ndarray) -> float:
        return evaluate(self.model, self.val, windows, self.context, self.micro, self.device, self.autocast,
                        self.ctx)
