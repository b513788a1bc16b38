"""Learning-rate schedules: linear warmup, then cosine, linear, constant, or warmup-stable-decay (WSD)."""

from __future__ import annotations

import math

from scaling.config import OptimConfig
from scaling.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant", "wsd")
COOLDOWN_SHAPES = ("linear", "sqrt")


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


def check_schedule(cfg: OptimConfig) -> None:
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.schedule!r} is not known: choose one of {', '.join(SCHEDULES)}")
    if cfg.cooldown_shape not in COOLDOWN_SHAPES:
        raise ConfigError(f"optim.cooldown_shape={cfg.cooldown_shape!r} is not known: choose linear or sqrt")
    if not 0.0 <= cfg.final_lr_fraction <= 1.0:
        raise ConfigError(f"optim.final_lr_fraction={cfg.final_lr_fraction} must lie in [0, 1]")
    if not 0.0 < cfg.cooldown_fraction <= 1.0:
        raise ConfigError(f"optim.cooldown_fraction={cfg.cooldown_fraction} must lie in (0, 1]")
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr={cfg.lr} must be positive")
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise ConfigError(f"optim.warmup_steps={cfg.warmup_steps} must be >= 0")
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise ConfigError(f"optim.warmup_fraction={cfg.warmup_fraction} must lie in [0, 1)")
