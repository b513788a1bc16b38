"""Learning-rate schedules: linear warmup, then cosine, linear, constant, or warmup-stable-decay (WSD)."""

from __future__ import annotations

import math

from scaling.config import OptimConfig



def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return min(int(cfg.warmup_steps), total_steps)
    return min(int(round(cfg.warmup_fraction * total_steps)), total_steps)


def lr_multiplier(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = warmup_steps(cfg, total_steps)
    if step < warm:
        return (step + 1) / warm
    final = cfg.final_lr_fraction
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        cool = max(1, int(round(cfg.cooldown_fraction * total_steps)))
        start = total_steps - cool
        if step < start:
            return 1.0
        progress = (step - start + 1) / cool
        shrink = progress if cfg.cooldown_shape == "linear" else math.sqrt(progress)
        return 1.0 - (1.0 - final) * shrink
    progress = (step - warm + 1) / max(1, total_steps - warm)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - final) * progress
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
