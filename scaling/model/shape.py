"""Torch-free shape facts of the GPT: head count, MLP width and the checks of a model config.

Everything that counts or checks a model without building it (parameter and FLOP counts, sweep
resolvers, ``scaling-plan``) reads these, so no torch import is needed to price a sweep.
"""

from __future__ import annotations

import math

from scaling.config import ModelConfig
from scaling.errors import ConfigError

POS_KINDS = ("learned", "sinusoidal", "rope")
MLP_KINDS = ("gelu", "swiglu")
PARAM_KINDS = ("sp", "mup")


# ----------------------------------------------------------------------------- shape helpers


def n_heads(cfg: ModelConfig) -> int:
    """Number of attention heads: ``width // head_dim`` when ``head_dim`` is set, else ``heads``."""
    return cfg.width // cfg.head_dim if cfg.head_dim is not None else cfg.heads


def mlp_hidden(cfg: ModelConfig) -> int:
    """Hidden size of the MLP: ``mlp_ratio * width`` (GELU), or 2/3 of that rounded up to
    ``mlp_multiple_of`` (SwiGLU, which has three matrices instead of two)."""
    if cfg.mlp == "swiglu":
        hidden = int(round(2 / 3 * cfg.mlp_ratio * cfg.width))
        return cfg.mlp_multiple_of * math.ceil(hidden / cfg.mlp_multiple_of)
    return int(round(cfg.mlp_ratio * cfg.width))


def _fail(field: str, value, allowed: str) -> None:
    raise ConfigError(f"model.{field}={value!r} {allowed}")


def check_model_config(cfg: ModelConfig, vocab_size: int) -> None:
    """Raise ``ConfigError`` (one line: field, value, what is allowed) for a shape that cannot be built."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ConfigError(f"vocab_size={vocab_size!r} is invalid: it must be a positive integer")
    for field in ("width", "depth", "context", "mlp_multiple_of", "base_width", "base_depth"):
        value = getattr(cfg, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(field, value, "is invalid: it must be a positive integer")
    for field in ("mlp_ratio", "norm_eps", "init_std", "rope_base"):
        value = getattr(cfg, field)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
            _fail(field, value, "is invalid: it must be a positive number")
    if cfg.pos not in POS_KINDS:
        _fail("pos", cfg.pos, f"is unknown: choose one of {', '.join(POS_KINDS)}")
    if cfg.mlp not in MLP_KINDS:
        _fail("mlp", cfg.mlp, f"is unknown: choose one of {', '.join(MLP_KINDS)}")
    if cfg.param not in PARAM_KINDS:
        _fail("param", cfg.param, f"is unknown: choose one of {', '.join(PARAM_KINDS)}")
    if not 0.0 <= cfg.dropout < 1.0:
        _fail("dropout", cfg.dropout, "is invalid: it must be in [0, 1)")
    if cfg.head_dim is not None:
        if not isinstance(cfg.head_dim, int) or isinstance(cfg.head_dim, bool) or cfg.head_dim < 1:
            _fail("head_dim", cfg.head_dim, "is invalid: it must be a positive integer or null")
        if cfg.width % cfg.head_dim:
            raise ConfigError(
                f"model.width={cfg.width} is not divisible by model.head_dim={cfg.head_dim}: "
                "choose a width that is a multiple of the head dimension"
            )
    else:
        if not isinstance(cfg.heads, int) or isinstance(cfg.heads, bool) or cfg.heads < 1:
            _fail("heads", cfg.heads, "is invalid: it must be a positive integer")
        if cfg.width % cfg.heads:
            raise ConfigError(
                f"model.width={cfg.width} is not divisible by model.heads={cfg.heads}: "
                "choose a width that is a multiple of the heads"
            )
    head_dim = cfg.width // n_heads(cfg)
    if cfg.pos == "rope" and head_dim % 2:
        raise ConfigError(
            f"model.pos='rope' needs an even head dimension, got width/heads={head_dim}: "
            "change model.width, model.heads or model.head_dim"
        )
    if mlp_hidden(cfg) < 1:
        _fail("mlp_ratio", cfg.mlp_ratio, f"gives an empty MLP at width {cfg.width}: make it larger")
