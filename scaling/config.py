"""Structured configs: the schema behind ``conf/``, and the checks of each section next to its fields.

Registered in Hydra's ConfigStore (``scaling.sweep.registry``), so a mistyped override (``model.widht=64``)
or a wrong type is an error rather than a silent no-op. Each dataclass is one config group; ``RunConfig``
composes them. ``validate()`` of a section raises ``ConfigError`` (one line: the field, the value and what
is allowed) for a value of its own fields that cannot work (call it unbound, ``ModelConfig.validate(node)``, on
a DictConfig of the section); the allowed values of every choice field are in ``CHOICES``. The run converts the composed config once (``typed_config``) and validates it once. Rules
that need more than one section's fields live with the part that needs them (the model's shape with the
vocabulary in ``scaling.model.shape``, a WSD branch in ``scaling.run.branch``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from scaling.errors import ConfigError


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config groups scaling-train composes

# The allowed values of every choice field, by its full key.
CHOICES = {
    "model.mlp": ("gelu", "swiglu"),
    "model.pos": ("learned", "sinusoidal", "rope"),
    "model.param": ("sp", "mup"),
    "model.objective": ("clm", "mlm"),
    "optim.schedule": ("cosine", "linear", "constant", "wsd"),
    "data.doc_sep": ("auto", "eos", "bos", "both", "none"),
    "data.align": ("none", "bos"),
    "data.dtype": ("uint16", "uint32"),
    "optim.cooldown_shape": ("linear", "sqrt"),
    "train.precision": ("auto", "fp32", "bf16"),
    "logger.wandb.mode": ("auto", "online", "offline", "disabled"),
}


def check_choice(key: str, value: Any) -> None:
    """``value`` must be one of ``CHOICES[key]``."""
    if value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is unknown: choose one of {', '.join(CHOICES[key])}")


def check_number(key: str, value: Any, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, integer: bool = False) -> None:
    """``value`` must be a finite number (a whole one when ``integer``) in the interval from low to high."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    finite = ok_type and not isinstance(value, bool) and math.isfinite(value)
    inside = finite and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not inside:
        what = "a whole number" if integer else "a finite number"
        lo = "" if low == -math.inf else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high == math.inf else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ConfigError(f"{key}={value!r} is invalid: it must be {what}{' ' + bounds if bounds else ''}")


def check_finite_numbers(section: str, cfg: Any, schema: type) -> None:
    """No float field of a section (a ``schema`` object or its DictConfig) may be NaN or infinite."""
    for f in fields(schema):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name}={value!r} is invalid: it must be a finite number")


@dataclass
class ModelConfig:
    """Shape, parametrisation and pretraining objective of the GPT (causal, or bidirectional for MLM)."""

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
    objective: str = "clm"  # clm (causal, next token) | mlm (BERT: bidirectional, masked tokens; adds [MASK])
    mask_rate: float = 0.15  # mlm: share of each window's tokens selected for the loss
    mask_replace: float = 0.8  # mlm: share of the selected that become [MASK]
    mask_random: float = 0.1  # mlm: share of the selected replaced by a random token
    mask_keep: float = 0.1  # mlm: share of the selected left unchanged (the three shares sum to 1)

    def validate(self) -> None:
        check_finite_numbers("model", self, ModelConfig)
        check_choice("model.objective", self.objective)
        ModelConfig._validate_masking(self)
        for name in ("width", "depth", "context", "mlp_multiple_of", "base_width", "base_depth"):
            check_number(f"model.{name}", getattr(self, name), low=1, integer=True)
        for name in ("mlp_ratio", "norm_eps", "init_std", "rope_base"):
            check_number(f"model.{name}", getattr(self, name), low=0, low_open=True)
        for name in ("mlp", "pos", "param"):
            check_choice(f"model.{name}", getattr(self, name))
        check_number("model.dropout", self.dropout, low=0, high=1, high_open=True)
        if self.head_dim is not None:
            check_number("model.head_dim", self.head_dim, low=1, integer=True)
        else:
            check_number("model.heads", self.heads, low=1, integer=True)
        if self.vocab_size is not None:
            check_number("model.vocab_size", self.vocab_size, low=1, integer=True)

    def _validate_masking(self) -> None:
        """The MLM masking: a rate in (0, 1) and an 80/10/10-style split whose shares sum to 1."""
        check_number("model.mask_rate", self.mask_rate, low=0, high=1, low_open=True, high_open=True)
        shares = [getattr(self, name) for name in ("mask_replace", "mask_random", "mask_keep")]
        for name, value in zip(("mask_replace", "mask_random", "mask_keep"), shares):
            check_number(f"model.{name}", value, low=0, high=1)
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(f"model.mask_replace={shares[0]!r}, model.mask_random={shares[1]!r}, "
                              f"model.mask_keep={shares[2]!r} sum to {sum(shares):g}: the three shares must sum to 1")


@dataclass
class DataConfig:
    """Where tokens come from and how they are made (docs/data.md)."""

    source: Any = "stdlib"  # stdlib | a file | a folder | a glob | a list: text, .jsonl[.gz|.zst], .parquet, token shards
    tokenizer: str = "byte"  # byte | char | bpe | gpt2 (or another tiktoken name) | tiktoken:PATH | hf:PATH | sp:PATH
    bpe_vocab_size: int = 4096  # bpe only
    val_fraction: float = 0.05  # held-out share of the corpus (by file, position or document hash)
    max_bytes: Optional[int] = 16_000_000  # cap on the raw text read (stdlib corpus is ~35 MB); null = all
    cache_dir: Optional[str] = None  # null = $SCALING_DATA_DIR or ~/.cache/scaling-harness/data
    text_field: str = "text"  # the text of a document: its key in a JSON line, its column in parquet
    doc_sep: str = "auto"  # auto (bos where the tokenizer has one, else none) | eos | bos | both | none
    align: str = "none"  # none | bos: training windows start at a document's first token
    val_source: Any = None  # held-out files (fineweb_val_*.bin, a validation jsonl); null = held out from source
    val_tokens: Optional[int] = None  # held-out token budget per source; null = val_fraction of it
    # mixture: name -> {source, weight}; weight 0 = eval only. Untyped with a null default, so that an override
    # data.sources={...} sets it without Hydra's '+' (an empty dict node refuses new keys in struct mode).
    sources: Optional[Any] = None
    dtype: Optional[str] = None  # raw token files without a header: uint16 (nanoGPT .bin) | uint32
    vocab_size: Optional[int] = None  # pre-tokenized files: the vocabulary when no tokenizer names it
    tokenizer_sha256: Optional[str] = None  # the tokenizer file must have this sha256
    workers: int = 1  # tokenizing processes; the prepared bytes do not depend on it
    shard_tokens: int = 100_000_000  # tokens per shard file (llm.c format)
    progress: Optional[bool] = None  # preparation progress bar; null = only on a terminal
    unique_tokens: Optional[int] = None  # repeated data: train on the first U tokens for train.tokens (docs/data_constrained.md)

    def validate(self) -> None:
        """The fields' own ranges (the tokenizer's name is the data layer's: ``scaling.data.tokenizer``)."""
        check_finite_numbers("data", self, DataConfig)
        if not self.sources:
            _check_source("data.source", self.source)
        if self.val_source is not None:
            _check_source("data.val_source", self.val_source)
        check_number("data.val_fraction", self.val_fraction, low=0, high=1, low_open=True, high_open=True)
        for name in ("max_bytes", "val_tokens", "vocab_size"):
            if getattr(self, name) is not None:
                check_number(f"data.{name}", getattr(self, name), low=1, integer=True)
        for name in ("workers", "shard_tokens"):
            check_number(f"data.{name}", getattr(self, name), low=1, integer=True)
        if self.tokenizer == "bpe":
            check_number("data.bpe_vocab_size", self.bpe_vocab_size, low=257, high=2**32, integer=True)
        for name in ("doc_sep", "align"):
            check_choice(f"data.{name}", getattr(self, name))
        if self.dtype is not None:
            check_choice("data.dtype", self.dtype)
        if not isinstance(self.text_field, str) or not self.text_field:
            raise ConfigError(f"data.text_field={self.text_field!r} is not allowed; use the name of a JSON key or column")
        if self.sources:
            _check_mixture(self.sources, self.tokenizer)
        if self.unique_tokens is not None:
            _check_unique_tokens(self)


def _check_unique_tokens(data: Any) -> None:
    """``data.unique_tokens``: a whole number of tokens, of one source read by plain windows."""
    check_number("data.unique_tokens", data.unique_tokens, low=2, integer=True)
    if data.sources or data.align != "none":
        what = "data.sources (a mixture)" if data.sources else f"data.align={data.align!r}"
        raise ConfigError(f"data.unique_tokens with {what} is not supported; allowed: one data.source "
                          "with data.align=none")


def _check_source(key: str, value: Any) -> None:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) or \
        type(value).__name__ == "ListConfig" else None
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(f"{key}={value!r} is not allowed; use 'stdlib', a file, a folder, a glob, or a list of them")


def _check_mixture(sources: Any, tokenizer: str) -> None:
    """A mixture: name -> {source, weight}; weights >= 0, not all zero; a fixed (not trained) tokenizer."""
    if tokenizer in ("char", "bpe"):
        raise ConfigError(f"data.sources with data.tokenizer={tokenizer!r}: each source would train its own "
                          "vocabulary; allowed: byte or a pretrained tokenizer (gpt2, tiktoken:, hf:, sp:)")
    if not hasattr(sources, "items"):
        raise ConfigError(f"data.sources={sources!r} is not allowed; use {{name: {{source: PATH, weight: W}}, ...}}")
    total = 0.0
    for name, entry in sources.items():
        keys = set(entry.keys()) if hasattr(entry, "keys") else None
        if keys is None or "source" not in keys or not keys <= {"source", "weight", "text_field", "val_source"}:
            raise ConfigError(f"data.sources.{name}={entry!r} is not allowed; use {{source: PATH, weight: W}} "
                              "(optional text_field, val_source)")
        _check_source(f"data.sources.{name}.source", entry["source"])
        weight = entry.get("weight", 1.0)
        check_number(f"data.sources.{name}.weight", weight, low=0)
        total += weight
    if total <= 0:
        raise ConfigError(f"data.sources: the weights are all zero ({', '.join(sources)}); allowed: weights >= 0 "
                          "with at least one positive")


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
    fused: Optional[bool] = None  # fused AdamW; null = on for CUDA and CPU

    def validate(self) -> None:
        check_finite_numbers("optim", self, OptimConfig)
        check_choice("optim.schedule", self.schedule)
        check_choice("optim.cooldown_shape", self.cooldown_shape)
        check_number("optim.lr", self.lr, low=0, low_open=True)
        for name in ("weight_decay", "eps", "grad_clip"):
            check_number(f"optim.{name}", getattr(self, name), low=0)
        for name in ("beta1", "beta2"):
            check_number(f"optim.{name}", getattr(self, name), low=0, high=1, high_open=True)
        check_number("optim.final_lr_fraction", self.final_lr_fraction, low=0, high=1)
        check_number("optim.cooldown_fraction", self.cooldown_fraction, low=0, high=1, low_open=True)
        check_number("optim.warmup_fraction", self.warmup_fraction, low=0, high=1, high_open=True)
        if self.warmup_steps is not None:
            check_number("optim.warmup_steps", self.warmup_steps, low=0, integer=True)


@dataclass
class TrainConfig:
    """Budget, batch, precision and bookkeeping of one run."""

    tokens: int = 2_000_000  # token budget D; sets the number of steps
    batch_size: int = 16  # global batch, in sequences, per optimizer step
    micro_batch_size: Optional[int] = None  # sequences per forward pass; null = batch_size
    seed: int = 0  # initialisation, and the data order unless data_seed is set
    data_seed: Optional[int] = None  # order of the batches and MLM masks; null = seed (a branch may differ)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: Optional[bool] = None  # torch.compile; null = on for CUDA
    threads: Optional[int] = None  # torch intra-op threads on CPU; null = torch's default
    eval_every: int = 200  # steps between periodic evaluations; 0 disables
    eval_tokens: int = 32_768  # held-out tokens per periodic evaluation
    final_eval_tokens: int = 131_072  # held-out tokens of the final evaluation (fixed set)
    eval_documents: Optional[int] = None  # final evaluation of the first K validation documents, whole; null = off
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 200  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 1  # how many step checkpoints to keep
    keep_at_tokens: list[int] = field(default_factory=list)  # also keep checkpoints at these token counts
    branch_from: Optional[str] = None  # WSD branch: run directory of the trunk to start from
    branch_tokens: Optional[int] = None  # WSD branch: trunk tokens of the checkpoint to start from
    branch_wait_s: float = 0.0  # WSD branch: seconds to wait for a running trunk to reach branch_tokens
    stop_at_tokens: Optional[int] = None  # stop with a checkpoint (no record) once this many tokens are trained
    progress: Optional[bool] = None  # tqdm bar; null = only when attached to a terminal
    forecast_every: int = 1  # periodic evaluations between estimates of the final loss (pred/final_loss); 0 = off
    forecast_max_share: float = 0.05  # most of the run's wall time the estimates may take (> 0; above 1, more than the training)

    @property
    def effective_data_seed(self) -> int:
        """Seed of the batch order: ``data_seed``, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed

    def validate(self) -> None:
        check_finite_numbers("train", self, TrainConfig)
        check_number("train.tokens", self.tokens, low=1, integer=True)
        check_number("train.batch_size", self.batch_size, low=1, integer=True)
        if self.data_seed is not None:
            check_number("train.data_seed", self.data_seed, low=0, integer=True)
        if self.micro_batch_size is not None:
            check_number("train.micro_batch_size", self.micro_batch_size, low=1, integer=True)
        for name in ("eval_every", "eval_tokens", "final_eval_tokens", "checkpoint_every"):
            check_number(f"train.{name}", getattr(self, name), low=0, integer=True)
        if self.eval_documents is not None:
            check_number("train.eval_documents", self.eval_documents, low=1, integer=True)
        if self.eval_every > 0 and self.eval_tokens == 0:
            raise ConfigError(f"train.eval_tokens=0 with train.eval_every={self.eval_every} is invalid: allowed "
                              "eval_tokens >= 1, or train.eval_every=0 to evaluate only at the end")
        check_number("train.log_every", self.log_every, low=1, integer=True)
        check_number("train.keep_checkpoints", self.keep_checkpoints, low=1, integer=True)
        check_number("train.branch_wait_s", self.branch_wait_s, low=0)
        if self.stop_at_tokens is not None:
            check_number("train.stop_at_tokens", self.stop_at_tokens, low=1, integer=True)
        check_number("train.forecast_every", self.forecast_every, low=0, integer=True)
        check_number("train.forecast_max_share", self.forecast_max_share, low=0, low_open=True)
        check_choice("train.precision", self.precision)
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device={self.device!r} is not known: choose auto, cpu, cuda or cuda:N")


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

    def validate(self) -> None:
        """What W&B would refuse: the mode, the project's name, the tags."""
        check_choice("logger.wandb.mode", self.mode)
        if self.enabled and self.mode != "disabled":
            project = self.project
            if not isinstance(project, str) or not project.strip() or any(c in project for c in "/\\#?%:"):
                raise ConfigError(f"logger.wandb.project: {project!r} is not a valid W&B project name "
                                  "(non-empty, without / \\ # ? % :)")
            for tag in self.tags or []:
                if not isinstance(tag, str) or not 1 <= len(tag) <= 64:
                    raise ConfigError(f"logger.wandb.tags: {tag!r} is not a valid W&B tag (a string of 1 to 64 characters)")


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

    def validate(self) -> None:
        """Every section, and the run's names as single, safe path components under ``runs_dir``."""
        for schema, section in ((ModelConfig, self.model), (DataConfig, self.data), (OptimConfig, self.optim),
                                (TrainConfig, self.train), (WandbConfig, self.logger.wandb)):
            schema.validate(section)  # unbound: a section may be a DictConfig of its schema
        for key in ("name", "group"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value \
                    or "\0" in value:
                raise ConfigError(f"{key}={value!r} is not allowed: use one folder name (no '/', '\\', '..')")


def typed_config(cfg: Any) -> RunConfig:
    """The composed config (an OmegaConf ``DictConfig`` of ``RunConfig``) as a ``RunConfig`` object."""
    from omegaconf import OmegaConf

    return cfg if isinstance(cfg, RunConfig) else OmegaConf.to_object(cfg)
