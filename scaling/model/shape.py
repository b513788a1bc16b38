"""Torch-free shape facts of the GPT: head count, MLP width, the vocabulary and predicted tokens of the
objective, and the checks of a model config.

Everything that counts or checks a model without building it (parameter and FLOP counts, sweep
resolvers, ``scaling-plan``) reads these, so no torch import is needed to price a sweep.
"""

from __future__ import annotations

import math

from scaling.config import ModelConfig
from scaling.errors import ConfigError


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


# The widest token dtype of the harness (uint32): every token id, the MLM mask token's included, fits in it.
MAX_TOKEN_IDS = 2**32


def model_vocab(cfg: ModelConfig, vocab_size: int) -> int:
    """Rows of the embedding and the head for a data vocabulary of ``vocab_size``: one more under
    ``mlm`` (the [MASK] token, id ``vocab_size``), so that every parameter count includes it."""
    return vocab_size + 1 if cfg.objective == "mlm" else vocab_size


def mask_token_id(vocab_size: int) -> int:
    """Id of the MLM [MASK] token: the first id past the data vocabulary."""
    return vocab_size


def predicted_per_window(cfg: ModelConfig, context: int) -> int:
    """Tokens of one window of ``context`` that the loss is taken on: all of them under ``clm`` (each
    predicts the next), ``max(1, round(mask_rate * context))`` selected ones under ``mlm`` (a fixed number
    per sequence, as in BERT's data generation)."""
    if cfg.objective == "mlm":
        return min(context, max(1, int(round(cfg.mask_rate * context))))
    return context


def check_model_config(cfg: ModelConfig, vocab_size: int) -> None:
    """Raise ``ConfigError`` (one line: field, value, what is allowed) for a shape that cannot be built:
    the section's own checks (``ModelConfig.validate``), then the rules of the shape itself."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ConfigError(f"vocab_size={vocab_size!r} is invalid: it must be a positive integer")
    ModelConfig.validate(cfg)
    if cfg.objective == "mlm" and vocab_size >= MAX_TOKEN_IDS:
        raise ConfigError(
            f"model.objective='mlm' needs a [MASK] id of {vocab_size} past a vocabulary of {vocab_size} tokens, "
            f"which no token dtype holds (uint32: ids below {MAX_TOKEN_IDS}): use a vocabulary of at most {MAX_TOKEN_IDS - 1}"
        )
    if cfg.head_dim is not None and cfg.width % cfg.head_dim:
        raise ConfigError(
            f"model.width={cfg.width} is not divisible by model.head_dim={cfg.head_dim}: "
            "choose a width that is a multiple of the head dimension"
        )
    if cfg.head_dim is None and cfg.width % cfg.heads:
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
        raise ConfigError(f"model.mlp_ratio={cfg.mlp_ratio!r} gives an empty MLP at width {cfg.width}: make it larger")
