"""Parameter and FLOP counts of ``scaling.model.GPT``, analytic from the shape.

Both objectives are counted alike, with ``vocab_size`` the data's vocabulary: under ``mlm`` the model's
vocabulary has one more token ([MASK]), whose embedding (and untied head) row is counted; attention
FLOPs are those of the full T x T score matrix for both (no causal halving for ``clm``). FLOPs are per
input token: an MLM window of T tokens costs the same as a causal one, whatever share of it the loss uses.

Conventions (see docs/model.md and DESIGN.md):
- params: ``total`` (everything held, a tied head once), ``non_embedding`` (Kaplan: without token and
  position embeddings and without the output head), ``with_head`` (Porian "standard":
  non_embedding + vocab * width, even when the head is tied).
- training FLOPs per token (forward + backward):
  ``6nd`` = 6 N_non_embedding, ``6nd_with_head`` = 6 N_with_head, ``6nd_total`` = 6 N_total,
  ``kaplan`` = 6 N_non_embedding + 6 depth context width (Kaplan et al. 2020, Table 1, x3; its
  forward attention term 2 n_layer n_ctx d_attn counts the full score matrix, no causal halving),
  ``chinchilla`` = 3 x the forward count of Hoffmann et al. 2022, Appendix F (``chinchilla_forward``).
"""

from __future__ import annotations

import math

from scaling.config import ModelConfig
from scaling.conventions import CONVENTIONS
from scaling.errors import ConfigError
from scaling.model.shape import check_model_config, mlp_hidden, model_vocab, n_heads



def param_counts(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of ``GPT(cfg, vocab_size)``: total, non_embedding, with_head, embedding,
    position_embedding, head (the output matrix, vocab * width, whether tied or not)."""
    check_model_config(cfg, vocab_size)
    vocab_size = model_vocab(cfg, vocab_size)  # mlm: the [MASK] row of the embedding and the head counts
    d, hidden, b = cfg.width, mlp_hidden(cfg), int(cfg.bias)
    n_fc = 2 if cfg.mlp == "swiglu" else 1  # SwiGLU's gate and up projections
    attn = d * 3 * d + b * 3 * d + d * d + b * d  # c_attn, c_proj
    mlp = d * n_fc * hidden + b * n_fc * hidden + hidden * d + b * d  # c_fc, c_proj
    norm = d + b * d
    non_embedding = cfg.depth * (attn + mlp + 2 * norm) + norm  # blocks + ln_f
    embedding = vocab_size * d
    position_embedding = cfg.context * d if cfg.pos == "learned" else 0
    head = vocab_size * d
    total = non_embedding + embedding + position_embedding + (0 if cfg.tie_embeddings else head)
    return dict(
        total=total,
        non_embedding=non_embedding,
        with_head=non_embedding + head,
        embedding=embedding,
        position_embedding=position_embedding,
        head=head,
    )


def chinchilla_forward(cfg: ModelConfig, vocab_size: int) -> dict[str, float]:
    """Forward FLOPs per token by Hoffmann et al. 2022, Appendix F, term by term, at seq_len = context.

    A multiply-add is 2 FLOPs; attention is counted over the full seq_len x seq_len score matrix (no
    causal halving), as in the paper: exact for a bidirectional (``mlm``) model, and the convention for a
    causal one, whose masked half of the scores SDPA may still compute. ``total`` = embeddings + depth * (attention + mlp) + logits.
    The MLP term is 2 x its matrix parameters (2 * 2 * width * hidden for GELU, 2 * 3 * width * hidden
    for SwiGLU).
    """
    check_model_config(cfg, vocab_size)
    vocab_size = model_vocab(cfg, vocab_size)
    d, T, H = cfg.width, cfg.context, n_heads(cfg)
    n_mlp_mats = 3 if cfg.mlp == "swiglu" else 2
    terms = dict(
        embeddings=2.0 * vocab_size * d,
        qkv=2.0 * 3 * d * d,  # key_size * num_heads == width here
        attention_logits=2.0 * T * d,
        softmax=3.0 * H * T,
        attention_values=2.0 * T * d,
        attention_out=2.0 * d * d,
        mlp=2.0 * n_mlp_mats * d * mlp_hidden(cfg),
        logits=2.0 * d * vocab_size,
    )
    per_layer = sum(v for k, v in terms.items() if k not in ("embeddings", "logits"))
    terms["layers"] = cfg.depth * per_layer
    terms["total"] = terms["embeddings"] + terms["layers"] + terms["logits"]
    return terms


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> dict[str, float]:
    """Training FLOPs (forward + backward) per token under each convention of ``CONVENTIONS``."""
    n = param_counts(cfg, vocab_size)
    return {
        "6nd": 6.0 * n["non_embedding"],
        "6nd_with_head": 6.0 * n["with_head"],
        "6nd_total": 6.0 * n["total"],
        "kaplan": 6.0 * n["non_embedding"] + 6.0 * cfg.depth * cfg.context * cfg.width,
        "chinchilla": 3.0 * chinchilla_forward(cfg, vocab_size)["total"],
    }


def training_flops(cfg: ModelConfig, vocab_size: int, tokens: int) -> dict[str, float]:
    """Training FLOPs of ``tokens`` tokens under each convention."""
    _check_nonnegative("tokens", tokens)
    return {k: v * tokens for k, v in flops_per_token(cfg, vocab_size).items()}


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ConfigError(f"convention={convention!r} is unknown: choose one of {', '.join(CONVENTIONS)}")


def _check_nonnegative(field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
        raise ConfigError(f"{field}={value!r} is invalid: it must be a finite number >= 0")


def tokens_for_budget(flops: float, cfg: ModelConfig, vocab_size: int, convention: str) -> int:
    """Largest whole number of tokens whose training compute fits in ``flops`` under ``convention``."""
    _check_convention(convention)
    _check_nonnegative("flops", flops)
    x = flops / flops_per_token(cfg, vocab_size)[convention]
    nearest = round(x)
    return int(nearest if abs(x - nearest) <= 1e-12 * max(1.0, x) else math.floor(x))  # exact multiples survive round-off


def compute_for(cfg: ModelConfig, vocab_size: int, tokens: int, convention: str) -> float:
    """Training FLOPs of ``tokens`` tokens under ``convention``."""
    _check_convention(convention)
    _check_nonnegative("tokens", tokens)
    return flops_per_token(cfg, vocab_size)[convention] * tokens
