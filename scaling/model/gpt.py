"""A GPT in one file, in the manner of nanoGPT's model.py: decoder-only (causal) under ``model.objective=clm``,
an encoder (bidirectional attention, BERT's masked-LM objective, one more token: [MASK]) under ``mlm``.

Token embedding, a positional encoding chosen by ``model.pos`` (``learned`` absolute, ``sinusoidal``
fixed, or ``rope`` rotary on queries and keys), ``depth`` pre-LayerNorm blocks of multi-head
self-attention (causal, or bidirectional for ``mlm``) and an MLP (GELU or SwiGLU), a final LayerNorm and an output head tied to the token
embedding or not. Initialisation and the forward-pass multipliers of a parametrisation (sp, mup) come
from ``scaling.model.parametrization``; shape checks from ``scaling.model.shape``; parameter and FLOP counts
from ``scaling.model.counts``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.config import ModelConfig

from scaling.model.parametrization import init_weights, multipliers
from scaling.model.shape import check_model_config, mlp_hidden, model_vocab, n_heads


# ----------------------------------------------------------------------------- positional encodings


def sinusoidal_table(context: int, width: int) -> torch.Tensor:
    """Fixed sine/cosine encodings of Vaswani et al. (2017): (context, width)."""
    pos = torch.arange(context, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    angles = pos * inv_freq  # (T, ceil(C/2))
    table = torch.zeros(context, width)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)[:, : width // 2]
    return table


def rope_tables(context: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each (context, head_dim // 2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., i], x[..., i + hd/2]) of x (B, nh, T, hd) by the angles of their position."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, hd/2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# ----------------------------------------------------------------------------- blocks


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention through SDPA: causal under ``clm``, without the causal mask under ``mlm``."""

    def __init__(self, cfg: ModelConfig, attn_scale: float | None):
        super().__init__()
        self.is_causal = cfg.objective != "mlm"  # a plain bool: torch.compile sees a constant
        self.n_head = n_heads(cfg)
        self.c_attn = nn.Linear(cfg.width, 3 * cfg.width, bias=cfg.bias)  # fused q, k, v
        self.c_proj = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)  # residual output projection
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout
        self.scale = attn_scale  # None: SDPA's 1/sqrt(head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.is_causal, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GELU: proj(gelu(fc x)). SwiGLU: proj(silu(a) * b) with [a, b] = fc x (one fused matmul)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = mlp_hidden(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        self.c_fc = nn.Linear(cfg.width, (2 if self.swiglu else 1) * hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.width, bias=cfg.bias)  # residual output projection
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, hidden) or (B, T, 2 * hidden)
        if self.swiglu:
            a, b = h.chunk(2, dim=-1)
            h = F.silu(a) * b
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-LayerNorm block: x + r * attn(ln(x)), then x + r * mlp(ln(x)); r is the depth multiplier."""

    def __init__(self, cfg: ModelConfig, attn_scale: float | None, residual_multiplier: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, attn_scale)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)
        self.r = residual_multiplier

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if self.r == 1.0:
            x = x + self.attn(self.ln_1(x), rope)
            return x + self.mlp(self.ln_2(x))
        x = x + self.r * self.attn(self.ln_1(x), rope)
        return x + self.r * self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------- the model


class GPT(nn.Module):
    """Transformer language model: causal (``clm``) or masked (``mlm``).

    ``vocab_size`` is the data's vocabulary; the model's (``self.vocab_size``) has one more token under
    ``mlm``, [MASK], id ``vocab_size``. ``model(idx)`` returns ``(logits, None)`` with logits
    (B, T, self.vocab_size). ``model(idx, targets)`` returns ``(None, loss)``: the mean cross-entropy in
    nats over the positions whose target is not -100 (all B*T under ``clm``; the selected tokens of a
    masked batch, ``scaling.model.objective``, under ``mlm``); the logits are not returned then, so that
    they can be freed as soon as the loss is computed.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        check_model_config(cfg, vocab_size)
        self.cfg = cfg  # not read in forward: a DictConfig there would break torch.compile's graph
        self.objective = str(cfg.objective)
        vocab_size = model_vocab(cfg, vocab_size)  # mlm: + [MASK]
        self.vocab_size = vocab_size
        self.context = cfg.context
        self.pos = str(cfg.pos)
        mult = multipliers(cfg)
        self.output_multiplier = mult.output

        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, cfg.width),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg, mult.attn_scale, mult.residual) for _ in range(cfg.depth)]),
                ln_f=nn.LayerNorm(cfg.width, eps=cfg.norm_eps, bias=cfg.bias),
            )
        )
        if cfg.pos == "learned":
            self.transformer["wpe"] = nn.Embedding(cfg.context, cfg.width)
        self.lm_head = nn.Linear(cfg.width, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one tensor, counted and updated once

        # fixed tables: buffers that follow .to(device) but are not saved in checkpoints
        if cfg.pos == "sinusoidal":
            # scaled by init_std so that position and token signals start at the same scale
            self.register_buffer("pos_table", cfg.init_std * sinusoidal_table(cfg.context, cfg.width), persistent=False)
        if cfg.pos == "rope":
            cos, sin = rope_tables(cfg.context, cfg.width // n_heads(cfg), cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

        init_weights(self, cfg)

    def num_params(self) -> int:
        """Parameters actually held (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, T = idx.shape
        if T > self.context:
            raise ValueError(f"sequence length {T} exceeds model.context={self.context}")
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.pos == "learned":
            x = x + self.transformer.wpe(torch.arange(T, device=idx.device))  # (T, C) broadcast
        elif self.pos == "sinusoidal":
            x = x + self.pos_table[:T]
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])  # (T, hd/2) each
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab)
        if self.output_multiplier != 1.0:
            logits = logits * self.output_multiplier
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return None, loss
