"""Parametrisations: initialisation, forward multipliers and optimizer groups, in one place.

``sp`` (standard, GPT-2): every weight and embedding ~ N(0, init_std^2), residual output projections
(``attn.c_proj``, ``mlp.c_proj``) ~ N(0, (init_std / sqrt(2 * depth))^2), biases 0, norms 1; attention
scaled 1/sqrt(head_dim); one learning rate for every group.

``mup`` (maximal update parametrisation, Yang et al. 2021, with Adam; depth scaling after CompleteP,
Dey et al. 2025, alpha = 1). With m = width / base_width and r = depth / base_depth:
- hidden matrices ~ N(0, init_std^2 / m) (variance 1 / fan_in relative to the base width), Adam lr x 1/m;
- embeddings and the output head ~ N(0, init_std^2), lr x 1; logits x 1/m (output multiplier);
- attention scores scaled 1/head_dim instead of 1/sqrt(head_dim);
- each residual branch x 1/r, and no 1/sqrt(2 * depth) on the residual projections.
At width = base_width and depth = base_depth the forward pass equals sp's but for the attention
scale and the residual-projection init.

Each parameter gets a role (``_role``); init and groups both dispatch on it, so a new
parametrisation adds one branch in ``multipliers``, ``init_weights`` and ``_lr_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from scaling.config import ModelConfig, OptimConfig
from scaling.model.shape import check_model_config, n_heads

ROLES = ("embedding", "position_embedding", "head", "hidden", "residual_proj", "norm", "bias")


@dataclass(frozen=True)
class Multipliers:
    """Constants of the forward pass a parametrisation sets."""

    attn_scale: float | None  # on q.k; None = 1/sqrt(head_dim)
    residual: float  # on each residual branch
    output: float  # on the logits


def width_multiplier(cfg: ModelConfig) -> float:
    return cfg.width / cfg.base_width


def depth_multiplier(cfg: ModelConfig) -> float:
    return cfg.depth / cfg.base_depth


def multipliers(cfg: ModelConfig) -> Multipliers:
    if cfg.param == "mup":
        head_dim = cfg.width // n_heads(cfg)
        return Multipliers(attn_scale=1.0 / head_dim, residual=1.0 / depth_multiplier(cfg), output=1.0 / width_multiplier(cfg))
    return Multipliers(attn_scale=None, residual=1.0, output=1.0)


def _role(name: str, p: nn.Parameter) -> str:
    """What a parameter of ``scaling.model.GPT`` is, from its name and shape (any wrapper's prefix,
    such as torch.compile's ``_orig_mod.`` or DDP's ``module.``, is ignored)."""
    name = "." + name
    if name.endswith(".wte.weight"):
        return "embedding"
    if name.endswith(".wpe.weight"):
        return "position_embedding"
    if ".lm_head." in name:
        return "head"
    if ".ln_" in name:  # ln_1, ln_2, ln_f
        return "norm"
    if p.ndim < 2:
        return "bias"
    if name.endswith(".c_proj.weight"):
        return "residual_proj"
    return "hidden"


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """Initialise ``model`` in place according to ``cfg.param`` (see the module docstring)."""
    mup = cfg.param == "mup"
    hidden_std = cfg.init_std / math.sqrt(width_multiplier(cfg)) if mup else cfg.init_std
    residual_std = hidden_std if mup else cfg.init_std / math.sqrt(2 * cfg.depth)
    std = {
        "embedding": cfg.init_std,
        "position_embedding": cfg.init_std,
        "head": cfg.init_std,
        "hidden": hidden_std,
        "residual_proj": residual_std,
    }
    for name, p in model.named_parameters():  # a tied head appears once, as the embedding
        role = _role(name, p)
        if role == "norm":
            nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
        elif role == "bias":
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, mean=0.0, std=std[role])


def _lr_scale(role: str, cfg: ModelConfig) -> float:
    if cfg.param == "mup" and role in ("hidden", "residual_proj"):
        return 1.0 / width_multiplier(cfg)
    return 1.0


def param_groups(model: nn.Module, model_cfg: ModelConfig, optim_cfg: OptimConfig) -> list[dict]:
    """Parameter groups for ``torch.optim.AdamW``.

    Each group has ``name``, ``params``, ``weight_decay`` and ``lr_scale`` (the loop sets
    ``group["lr"] = lr_t * group["lr_scale"]``). Matrices are decayed; norms and biases only if
    ``optim.decay_norms_and_biases``; token/position embeddings (and a head tied to them) only if
    ``optim.decay_embeddings``; an untied head is a matrix and is decayed. Empty groups are left out.
    """
    check_model_config(model_cfg, getattr(model, "vocab_size", 1))
    wd = optim_cfg.weight_decay
    decay_of = {
        "hidden": wd,
        "residual_proj": wd,
        "head": wd,
        "embedding": wd if optim_cfg.decay_embeddings else 0.0,
        "position_embedding": wd if optim_cfg.decay_embeddings else 0.0,
        "norm": wd if optim_cfg.decay_norms_and_biases else 0.0,
        "bias": wd if optim_cfg.decay_norms_and_biases else 0.0,
    }
    group_of = {  # role -> group name
        "hidden": "hidden",
        "residual_proj": "hidden",
        "head": "head",
        "embedding": "embeddings",
        "position_embedding": "embeddings",
        "norm": "norms_and_biases",
        "bias": "norms_and_biases",
    }
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = _role(name, p)
        g = groups.setdefault(
            group_of[role],
            dict(name=group_of[role], params=[], weight_decay=decay_of[role], lr_scale=_lr_scale(role, model_cfg)),
        )
        g["params"].append(p)
    return list(groups.values())
