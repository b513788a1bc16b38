"""Run identity: a run is named by a hash of what determines its result, not by its launch time.

Relaunching a sweep therefore lands every run in the directory it had before: completed runs are
returned from their records and partial ones resume from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaling.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from scaling.errors import report_user_error

# Settings that change how a run is watched or where it runs, not the numbers it produces.
BOOKKEEPING = {
    "train": ("log_every", "checkpoint_every", "keep_checkpoints", "keep_at_tokens", "progress",
              "threads", "device", "compile", "branch_wait_s", "forecast_every", "forecast_max_share",
              "stop_at_tokens"),
    "data": ("cache_dir", "workers", "progress"),
}
HASHED_GROUPS = ("model", "data", "optim", "train")
# The fields each group had when run ids were introduced: always hashed, so those ids stay as they were. A
# field added since is hashed only when it differs from its default, so a new field never moves a run that
# leaves it at its default into a new directory.
FIRST_FIELDS = {
    "model": ("width", "depth", "heads", "head_dim", "mlp", "mlp_ratio", "mlp_multiple_of", "context", "pos",
              "rope_base", "tie_embeddings", "bias", "dropout", "norm_eps", "init_std", "param", "base_width",
              "base_depth", "vocab_size"),
    "data": ("source", "tokenizer", "bpe_vocab_size", "val_fraction", "max_bytes", "cache_dir"),
    "optim": ("lr", "weight_decay", "decay_norms_and_biases", "decay_embeddings", "beta1", "beta2", "eps",
              "grad_clip", "schedule", "warmup_steps", "warmup_fraction", "final_lr_fraction", "cooldown_fraction",
              "cooldown_shape", "fused"),
    "train": ("tokens", "batch_size", "micro_batch_size", "seed", "device", "precision", "compile", "threads",
              "eval_every", "eval_tokens", "final_eval_tokens", "log_every", "checkpoint_every", "keep_checkpoints",
              "keep_at_tokens", "branch_from", "branch_tokens", "branch_wait_s", "progress"),
}
SCHEMAS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved settings a run's result depends on."""
    ident: dict[str, Any] = {}
    for group in HASHED_GROUPS:
        node = OmegaConf.to_container(cfg[group], resolve=True)
        defaults = _defaults(group)
        for key in list(node):
            at_default = key not in FIRST_FIELDS[group] and key in defaults and node[key] == defaults[key]
            if key in BOOKKEEPING.get(group, ()) or at_default:
                node.pop(key)
        ident[group] = node
    return ident


def _defaults(group: str) -> dict[str, Any]:
    """Default value of every field of a config group's schema."""
    out = {}
    for f in dataclasses.fields(SCHEMAS[group]):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def config_hash(cfg: DictConfig, length: int = 12) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def run_key(cfg: DictConfig) -> str:
    """``<name>-<hash>``: the run's directory name and its id."""
    return f"{cfg.name}-{config_hash(cfg)}"


def _resolve_run_key(*, _root_: DictConfig) -> str:
    """``${run_key:}`` of ``hydra.run.dir``: Hydra resolves it before the task runs, so a user error in the
    config (a resolver's ConfigError) ends the program here with one line and status 2, not a traceback."""
    try:
        return run_key(_root_)
    except Exception as exc:  # noqa: BLE001
        if not report_user_error(exc):
            raise
        raise SystemExit(2) from None


RESOLVERS = {"run_key": _resolve_run_key}
