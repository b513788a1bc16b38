"""Structured configs: the schema behind ``conf/``.

Registered in Hydra's ConfigStore (``scaling.sweep.registry``), so a mistyped override (``model.widht=64``) or a wrong type is an
error rather than a silent no-op. Each dataclass is one config group; ``RunConfig`` composes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config groups scaling-train composes


@dataclass
class ModelConfig:
    """Shape and parametrisation of a decoder-only GPT."""

    width: int = 128  # d_model
    depth: int = 4  # number of transformer blocks
    heads: int = 4  # attention heads (ignored when head_dim is set)
    head_dim: Optional[int] = None  # if set, heads = width // head_dim
    mlp: str = "gelu"  # gelu | swiglu
    mlp_ratio: float = 4.0  # hidden = mlp_ratio * width (swiglu: 2/3 of that, rounded to mlp_multiple_of)
    mlp_multiple_of: int = 1  # swiglu hidden size is rounded up to a multiple of this
    context: int = 128  # n_ctx, tokens per sequence
    pos: str = "rope"  # learned | sinusoidal | rope
    rope_base: float = 10000.0
    tie_embeddings: bool = True  # output head shares the token embedding
    bias: bool = False  # biases in linear layers and norms
    dropout: float = 0.0
    norm_eps: float = 1e-5
    init_std: float = 0.02  # std of embeddings and linear weights (GPT-2 style)
    param: str = "sp"  # sp (standard) | mup
    base_width: int = 128  # muP: width at which hyperparameters were tuned
    base_depth: int = 4  # depth scaling: depth at which hyperparameters were tuned
    vocab_size: Optional[int] = None  # normally taken from the data; set to override


@dataclass
class DataConfig:
    """Where tokens come from and how they are made."""

    source: str = "stdlib"  # stdlib (embedded default) | a text file | a folder | a glob
    tokenizer: str = "byte"  # byte | char | bpe
    bpe_vocab_size: int = 4096  # bpe only
    val_fraction: float = 0.05  # held-out share of the corpus, taken from its end
    max_bytes: Optional[int] = 16_000_000  # cap on the raw text read (stdlib corpus is ~35 MB); null = all
    cache_dir: Optional[str] = None  # null = $SCALING_DATA_DIR or ~/.cache/scaling-harness/data


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # decoupled (AdamW)
    decay_norms_and_biases: bool = False
    decay_embeddings: bool = False
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    schedule: str = "cosine"  # cosine | linear | constant | wsd
    warmup_steps: Optional[int] = None  # takes precedence over warmup_fraction
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.1  # lr at the end = final_lr_fraction * lr
    cooldown_fraction: float = 0.2  # wsd: share of steps spent cooling down
    cooldown_shape: str = "linear"  # wsd: linear | sqrt (1 - sqrt)
    fused: Optional[bool] = None  # fused AdamW; null = on for CUDA


@dataclass
class TrainConfig:
    """Budget, batch, precision and bookkeeping of one run."""

    tokens: int = 2_000_000  # token budget D; sets the number of steps
    batch_size: int = 16  # global batch, in sequences, per optimizer step
    micro_batch_size: Optional[int] = None  # sequences per forward pass; null = batch_size
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: Optional[bool] = None  # torch.compile; null = on for CUDA
    threads: Optional[int] = None  # torch intra-op threads on CPU; null = torch's default
    eval_every: int = 200  # steps between periodic evaluations; 0 disables
    eval_tokens: int = 32_768  # held-out tokens per periodic evaluation
    final_eval_tokens: int = 131_072  # held-out tokens of the final evaluation (fixed set)
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 200  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 1  # how many step checkpoints to keep
    keep_at_tokens: list[int] = field(default_factory=list)  # also keep checkpoints at these token counts
    branch_from: Optional[str] = None  # WSD branch: run directory of the trunk to start from
    branch_tokens: Optional[int] = None  # WSD branch: trunk tokens of the checkpoint to start from
    branch_wait_s: float = 0.0  # WSD branch: seconds to wait for a running trunk to reach branch_tokens
    progress: Optional[bool] = None  # tqdm bar; null = only when attached to a terminal


@dataclass
class WandbConfig:
    """Mirror of the run record in Weights & Biases."""

    enabled: bool = True
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled
    project: str = "scaling"
    entity: Optional[str] = None
    group: Optional[str] = None  # null = the sweep name
    tags: list[str] = field(default_factory=list)
    dir: Optional[str] = None  # null = the run directory


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class RunConfig:
    """One training run: what ``scaling-train`` receives after Hydra composition."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "run"  # human-readable prefix of the run id
    group: str = "default"  # sweep name; runs of one sweep share it
    runs_dir: str = "runs"  # where run directories are made (the run id is a hash of the config)
    sweep: Any = None  # free-form sweep settings a named sweep may add (budgets, convention, ...)
