"""Derived sizes of one run: everything computed from the config before any work (steps, accumulation,
exact tokens, parameter and FLOP counts, the shape the record reports)."""

from __future__ import annotations

from typing import Any

from scaling.errors import ConfigError
from scaling.model.counts import flops_per_token, param_counts
from scaling.model.shape import n_heads


class RunSizes:
    """Steps, gradient accumulation, exact tokens D and FLOPs C of one run on ``world_size`` processes."""

    def __init__(self, cfg: Any, vocab_size: int, world_size: int):
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

    def counts_at(self, step: int) -> dict[str, Any]:
        """``tokens``, ``flops`` (6ND, non-embedding N) and ``flops_<convention>`` after ``step`` steps."""
        tokens = step * self.tokens_per_step
        row: dict[str, Any] = {"tokens": tokens, "flops": tokens * self.flops_per_token["6nd"]}
        for conv, per_token in self.flops_per_token.items():
            row[f"flops_{conv}"] = tokens * per_token
        return row


def shape_of(cfg: Any, vocab_size: int) -> dict[str, Any]:
    """The model shape a record reports."""
    m = cfg.model
    return {"width": m.width, "depth": m.depth, "heads": n_heads(m), "context": m.context, "vocab_size": vocab_size,
            "mlp": m.mlp, "pos": m.pos, "tie_embeddings": m.tie_embeddings, "param": m.param}
