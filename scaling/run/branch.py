"""Warmup-stable-decay branching, the run side (planning and the sweep resolvers: ``scaling.sweep.branch_plan``): one stable trunk per model size, one cooldown run per token budget.

The trunk trains at constant lr (after warmup) to the start of the longest cooldown and keeps a
checkpoint where each shorter cooldown starts. A branch is an ordinary run (its own directory, config
and record) with ``train.branch_from`` = the trunk's run directory and ``train.branch_tokens`` = the
trunk tokens it starts from. With no checkpoint of its own, the branch loads the trunk's model and
optimizer state at that step and runs the rest of its own WSD schedule, reading the same data stream
(batches are a function of seed and step). Its record counts true tokens and FLOPs (trunk + own) and
names the trunk, so a sweep total counts the trunk once:

    sweep FLOPs = sum(trunk flops) + sum(branch own_flops)

For budgets D_1 < ... < D_k and cooldown fraction f, the branch of D_i starts at (1 - f) D_i tokens:

    trunk tokens = (1 - f) D_k,  keep_at_tokens = [(1 - f) D_1, ..., (1 - f) D_k]
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from scaling.run.checkpoint import checkpoint_path, list_checkpoints
from scaling.errors import ConfigError
from scaling.run.schedule import lr_multiplier, warmup_steps

# Settings a branch must share with its trunk (else it is not a continuation of that trunk).
SHARED = ("model", "data", "train.batch_size", "train.seed", "optim.lr", "optim.weight_decay", "optim.beta1",
          "optim.beta2", "optim.eps", "optim.grad_clip", "optim.decay_norms_and_biases", "optim.decay_embeddings")


# --------------------------------------------------------------------------------------------------
# Hook of the run loop: start a branch from its trunk, and the branch's record fields.


def is_branch(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "train.branch_from", default=None))


def branch_role(cfg: DictConfig) -> Optional[str]:
    """``branch`` (starts from a trunk), ``trunk`` (the role a branching sweep gave it), or None."""
    if is_branch(cfg):
        return "branch"
    return "trunk" if str(OmegaConf.select(cfg, "sweep.branch", default=None)) == "trunk" else None


def check_branch_config(cfg: DictConfig) -> None:
    """One-line errors for branch settings that cannot work (call with the other config checks)."""
    t = cfg.train
    if not is_branch(cfg):
        if OmegaConf.select(cfg, "train.branch_tokens", default=None) is not None:
            raise ConfigError(f"train.branch_tokens={t.branch_tokens} needs train.branch_from (the trunk's run directory)")
        return
    if t.get("branch_tokens") is None or t.branch_tokens <= 0:
        raise ConfigError(f"train.branch_tokens={t.get('branch_tokens')} must be a positive token count of the trunk")
    if t.branch_tokens >= t.tokens:
        raise ConfigError(f"train.branch_tokens={t.branch_tokens} must be below train.tokens={t.tokens}")
    if cfg.optim.schedule != "wsd":
        raise ConfigError(f"optim.schedule={cfg.optim.schedule!r} with train.branch_from: a branch needs wsd")
    if t.get("branch_wait_s", 0) < 0:
        raise ConfigError(f"train.branch_wait_s={t.branch_wait_s} must be >= 0")


def branch_step(cfg: DictConfig, tokens_per_step: int) -> int:
    """Optimizer step of the trunk checkpoint (rounded as the trunk rounds ``keep_at_tokens``)."""
    return int(math.ceil(cfg.train.branch_tokens / tokens_per_step))


def load_trunk_checkpoint(cfg: DictConfig, plan: Any, map_location: Any = "cpu") -> dict[str, Any]:
    """The trunk's state at ``train.branch_tokens``, ready to resume as this branch's own checkpoint.

    ``plan`` is the run's ``RunPlan`` (``steps``, ``tokens_per_step``). The wall time restarts at zero
    (the branch records its own) and the W&B id is dropped (the branch is its own W&B run).
    """
    import torch

    check_branch_config(cfg)
    trunk_dir = Path(cfg.train.branch_from)
    trunk_cfg = _trunk_config(trunk_dir)
    _check_continues(cfg, trunk_cfg, trunk_dir)
    step = branch_step(cfg, plan.tokens_per_step)
    if step >= plan.steps:
        raise ConfigError(f"train.branch_tokens={cfg.train.branch_tokens} is step {step}, not below the run's "
                          f"{plan.steps} steps")
    trunk_steps = max(1, round(trunk_cfg.train.tokens / plan.tokens_per_step))
    if step < warmup_steps(trunk_cfg.optim, trunk_steps) or lr_multiplier(step - 1, trunk_steps, trunk_cfg.optim) != 1.0:
        raise ConfigError(f"train.branch_tokens={cfg.train.branch_tokens}: the trunk is not in its stable phase at "
                          f"step {step} (use optim.schedule=constant for the trunk)")
    path = _wait_for(trunk_dir, step, plan.tokens_per_step, float(cfg.train.get("branch_wait_s", 0) or 0))
    state = torch.load(path, map_location=map_location, weights_only=True)
    state.update(wall_time=0.0, wandb_id="")
    return state


def branch_fields(cfg: DictConfig, plan: Any, wall_time: Optional[float] = None) -> dict[str, Any]:
    """Fields a branch adds to its record: role, trunk, branch point, own tokens and FLOPs (a trunk: its role)."""
    if not is_branch(cfg):
        return {"role": "trunk"} if branch_role(cfg) == "trunk" else {}
    trunk_dir = Path(cfg.train.branch_from)
    start = branch_step(cfg, plan.tokens_per_step) * plan.tokens_per_step
    own = plan.tokens - start
    fields = {"role": "branch", "trunk": trunk_dir.name, "trunk_dir": str(trunk_dir), "branch_tokens": start,
              "own_tokens": own, "own_flops": {k: v * own for k, v in plan.flops_per_token.items()}}
    if wall_time:
        fields["tokens_per_second"] = own / max(wall_time, 1e-9)
    return fields


def _check_continues(cfg: DictConfig, trunk_cfg: DictConfig, trunk_dir: Path) -> None:
    """One-line error naming the first setting of ``SHARED`` (down to a single field) the branch changes."""
    for key in SHARED:
        found = _first_difference(key, _plain(OmegaConf.select(cfg, key)), _plain(OmegaConf.select(trunk_cfg, key)))
        if found is not None:
            name, mine, theirs = found
            raise ConfigError(f"{name}={mine!r} differs from the trunk's {theirs!r} ({trunk_dir}): a branch continues "
                              "its trunk (train.data_seed may differ: a replicate cooldown)")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def _first_difference(key: str, mine: Any, theirs: Any) -> Optional[tuple[str, Any, Any]]:
    """``(dotted key, mine, theirs)`` of the first leaf where two settings differ, or None."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for sub in [*mine, *(k for k in theirs if k not in mine)]:
            found = _first_difference(f"{key}.{sub}", mine.get(sub), theirs.get(sub))
            if found is not None:
                return found
        return None
    return None if mine == theirs else (key, mine, theirs)


def _trunk_config(trunk_dir: Path) -> DictConfig:
    path = trunk_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"train.branch_from={str(trunk_dir)!r} is not a run directory (no config.yaml): "
                          "run the trunk first")
    return OmegaConf.load(path)


def _wait_for(trunk_dir: Path, step: int, tokens_per_step: int, wait_s: float) -> Path:
    """Path of the trunk's checkpoint at ``step``, waiting up to ``wait_s`` seconds for a running trunk."""
    path = checkpoint_path(trunk_dir, step)
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        result = trunk_dir / "result.json"
        if result.is_file() or time.monotonic() >= deadline:
            kept = [s * tokens_per_step for s, _ in list_checkpoints(trunk_dir)]
            raise ConfigError(f"train.branch_tokens: the trunk {trunk_dir} has no checkpoint at step {step}; it kept "
                              f"tokens {kept} (set the trunk's train.keep_at_tokens, or train.branch_wait_s to wait)")
        time.sleep(min(10.0, max(0.1, deadline - time.monotonic())))
    return path
