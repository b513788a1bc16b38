"""OmegaConf resolvers of the named sweeps: token budgets from compute or from tokens per parameter, the
skip rules that leave out runs below a floor or beyond the data, and learning rates from a fitted rule.

Used in ``sweeps/sweep/*.yaml``::

    train.tokens: ${tokens_for_budget:${sweep.budget},${sweep.convention}}   # D = C / flops_per_token
    train.tokens: ${tokens_per_param:${sweep.multiple},non_embedding}         # D = k * N
    sweep.skip_reason: ${skip_reason:}                                        # null, or why the run is skipped
    optim.lr: ${lr_from_rule:fit/lr_rule.json}                                # lr = c N^k of a fitted rule
    hydra.sweeper.params: {sweep.budget: ${sweep_values:${sweep.budgets}}}   # a list -> "a,b,c" for the sweeper

The vocabulary size must be known before the data is prepared: byte = 256, bpe = data.bpe_vocab_size
(or the prepared data's, when cached), char = the prepared data's (or model.vocab_size when set).
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from scaling.config import check_number
from scaling.conventions import PARAM_CONVENTIONS, PARAMS_OF_CONVENTION
from scaling.errors import ConfigError, did_you_mean

# Settings a named sweep may put under ``sweep:`` (the node is free-form in the schema, so check it here).
SWEEP_KEYS = ("name", "kind", "convention", "param_convention", "budget", "budgets", "shape", "shapes",
              "multiple", "multiples", "min_tokens", "min_tokens_per_param", "max_tokens_per_param", "min_steps", "max_epochs",
              "skip_reason", "branch", "branches", "cooldown_fraction", "cooldown_seed",
              "unique_tokens", "unique_grid", "epochs", "epoch_grid", "max_unique_epochs")
SHAPE_KEYS = ("width", "depth")  # what each of sweep.shapes sets (model.width, model.depth)


# --------------------------------------------------------------------------------------------------
# What a run will see before its data is prepared: vocabulary and training tokens.


def _cache_root(data: Any) -> Path:
    root = data.get("cache_dir") or os.environ.get("SCALING_DATA_DIR") or "~/.cache/scaling-harness/data"
    return Path(os.path.expanduser(root)).resolve()


def cached_meta(data: Any) -> Optional[dict]:
    """meta.json of already-prepared data matching these data settings, newest first; None if none."""
    root = _cache_root(data)
    if not isinstance(data.source, str) or data.get("sources"):
        return None  # a list of sources or a mixture: known once prepared (scaling-prepare)
    try:
        stamp = root.stat().st_mtime_ns  # a newly prepared dataset is renamed into root: a new stamp
    except OSError:
        return None
    return _cached_meta_of(str(root), stamp, data.source, data.tokenizer, data.bpe_vocab_size,
                           float(data.val_fraction), data.max_bytes)


@lru_cache(maxsize=64)
def _cached_meta_of(root: str, stamp: int, source: str, tokenizer: str, bpe_vocab_size: int, val_fraction: float,
                    max_bytes: Optional[int]) -> Optional[dict]:
    found = []
    for path in Path(root).glob("*/meta.json"):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (meta.get("source") == source and meta.get("tokenizer") == tokenizer
                and meta.get("max_bytes") == max_bytes and meta.get("val_fraction") == val_fraction
                and (tokenizer != "bpe" or meta.get("bpe_vocab_size") == bpe_vocab_size)):
            found.append(meta)
    return max(found, key=lambda m: m.get("created", "")) if found else None


def vocab_size(cfg: Any) -> int:
    """Vocabulary of the run: model.vocab_size if set, else from the tokenizer (and cached data)."""
    if cfg.model.get("vocab_size"):
        return int(cfg.model.vocab_size)
    if cfg.data.get("vocab_size"):  # pre-tokenized files without a named tokenizer
        return int(cfg.data.vocab_size)
    tokenizer = cfg.data.tokenizer
    if tokenizer == "byte":
        return 256
    meta = cached_meta(cfg.data)
    if meta is not None:
        return int(meta["vocab_size"])
    if tokenizer == "bpe":
        return int(cfg.data.bpe_vocab_size)
    if tokenizer == "char":
        raise ConfigError(
            f"data.tokenizer=char: the vocabulary of data.source={cfg.data.source!r} is known only once it is "
            f"prepared; run `scaling-prepare data.source={cfg.data.source} data.tokenizer=char` first, "
            f"or set model.vocab_size")
    from scaling.data.tokenizers import is_pretrained, named_vocab_size, pretrained_tokenizer

    if is_pretrained(tokenizer):  # gpt2 and the tiktoken names without a file; tiktoken:, hf:, sp: from theirs
        return named_vocab_size(tokenizer) or pretrained_tokenizer(tokenizer).vocab_size
    raise ConfigError(f"data.tokenizer={tokenizer!r} is unknown: choose byte, char, bpe or a pretrained tokenizer "
                      "(gpt2, tiktoken:PATH, hf:PATH, sp:PATH)")


def data_tokens(data: Any) -> tuple[Optional[int], bool]:
    """(training tokens of the data, exact?): exact from cached data, else an upper bound from the bytes
    on disk (no tokenizer makes more tokens than bytes), else (None, False) when it cannot be told."""
    meta = cached_meta(data)
    if meta is not None:
        return int(meta["train_tokens"]), True
    nbytes = _source_bytes(data.source) if isinstance(data.source, str) and not data.get("sources") else None
    if nbytes is None:
        return None, False
    if data.max_bytes is not None:
        nbytes = min(nbytes, int(data.max_bytes))
    return math.ceil(nbytes * (1.0 - float(data.val_fraction))), False


@lru_cache(maxsize=16)
def _source_bytes(source: str) -> Optional[int]:
    from scaling.data.corpus import resolve_source
    from scaling.errors import DataError

    try:
        _, _, files = resolve_source(source)
    except DataError:
        return None  # a missing source is the data preparation's error to report, with its own message
    return sum(p.stat().st_size for p in files)


# --------------------------------------------------------------------------------------------------
# Token budgets.


def model_config(root: Any):
    """The run's model section as a ``ModelConfig`` (the counting functions take the dataclass)."""
    from scaling.config import ModelConfig

    node = root.model
    fields = ModelConfig.__dataclass_fields__
    values = {k: node[k] for k in fields if k in node}
    return ModelConfig(**values)


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field}={value!r} is invalid: it must be a positive number")
    return float(value)


def param_counts_of(root: Any) -> dict[str, int]:
    from scaling.model.counts import param_counts

    return param_counts(model_config(root), vocab_size(root))


def flops_per_token_of(root: Any) -> dict[str, float]:
    from scaling.model.counts import flops_per_token

    return flops_per_token(model_config(root), vocab_size(root))


def tokens_for_budget(budget: Any, convention: str = "6nd", *, _root_: DictConfig) -> int:
    """D = C / flops_per_token(shape) under ``convention``, rounded down to whole tokens."""
    from scaling.model.counts import tokens_for_budget as _tokens

    budget = _number("sweep.budget", budget)
    return _tokens(budget, model_config(_root_), vocab_size(_root_), str(convention))


def tokens_per_param(multiple: Any, convention: str = "non_embedding", *, _root_: DictConfig) -> int:
    """D = k * N, with N under a parameter convention (non_embedding, with_head, total)."""
    k = _number("sweep.multiple", multiple)
    convention = str(convention)
    convention = PARAMS_OF_CONVENTION.get(convention, convention)
    if convention not in PARAM_CONVENTIONS:
        raise ConfigError(f"tokens_per_param convention={convention!r} is unknown: choose one of "
                          f"{', '.join(PARAM_CONVENTIONS)} (or a FLOP convention: {', '.join(PARAMS_OF_CONVENTION)})")
    return int(round(k * param_counts_of(_root_)[convention]))


def sweep_values(values: Any, *, _node_: Any = None) -> str:
    """A list as the value of a Hydra choice sweep: ``[1e15, 3e15]`` -> ``"1e+15,3e+15"``; an empty list,
    a value given twice (the same runs planned and counted twice) or a shape that is not {width, depth} is a
    ConfigError naming the swept key."""
    if isinstance(values, (ListConfig, list, tuple)):
        key = _node_._key() if _node_ is not None else "a sweep key"
        if key == "sweep.shape":
            check_shapes(values)
        literals = [_override_literal(v) for v in values]
        if not literals:
            raise ConfigError(f"the list swept as {key} is empty: give at least one value")
        twice = next((lit for i, lit in enumerate(literals) if lit in literals[:i]), None)
        if twice is not None:
            raise ConfigError(f"the list swept as {key} holds {twice} twice: give each value once")
        return ",".join(literals)
    return _override_literal(values)


def check_shapes(shapes: Any) -> None:
    """Each shape of ``sweep.shapes`` is a mapping of exactly ``SHAPE_KEYS`` (what ``model`` reads from it)."""
    for i, shape in enumerate(shapes):
        where = f"sweep.shapes[{i}]={_override_literal(shape)}"
        if not isinstance(shape, (DictConfig, dict)):
            raise ConfigError(f"{where} is invalid: a shape is a mapping such as {{width:64,depth:2}}")
        for key in shape:
            if key not in SHAPE_KEYS:
                raise ConfigError(f"{where}: {key!r} is not a shape key{did_you_mean(str(key), list(SHAPE_KEYS))}; "
                                  f"a shape takes {' and '.join(SHAPE_KEYS)}, e.g. {{width:64,depth:2}}")
        missing = [k for k in SHAPE_KEYS if k not in shape]
        if missing:
            raise ConfigError(f"{where} has no {missing[0]}: a shape takes {' and '.join(SHAPE_KEYS)}, "
                              "e.g. {width:64,depth:2}")


def _short_float(x: float) -> str:
    """Shortest exact spelling of a float that still reads as a float: 1e15 -> '1e+15', 0.5 -> '0.5'."""
    if x != 0 and math.isfinite(x) and not 1e-4 <= abs(x) < 1e6:
        for digits in range(17):
            text = f"{x:.{digits}e}"
            if float(text) == x:
                return text
    return repr(x)


def _override_literal(value: Any) -> str:
    """``value`` written in Hydra's override grammar."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _short_float(value)
    if isinstance(value, str):
        escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)  # Hydra: only backslashes before a quote
        return "'" + escaped.replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_literal(v) for v in value) + "]"
    raise ConfigError(f"sweep value {value!r} cannot be swept: use numbers, strings, lists or mappings")


# --------------------------------------------------------------------------------------------------
# Skip rules.


def check_sweep_settings(sweep: Any) -> None:
    """A mistyped key under ``sweep:`` is an error, not a silently ignored setting."""
    if not isinstance(sweep, DictConfig):
        return
    unknown = [k for k in sweep.keys() if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"sweep.{unknown[0]} is not a sweep setting: choose among {', '.join(SWEEP_KEYS)}")
    for key in ("min_steps", "min_tokens"):
        if sweep.get(key) is not None:
            check_number(f"sweep.{key}", sweep[key], low=0, integer=True)
    for key in ("min_tokens_per_param", "max_tokens_per_param", "max_epochs"):
        if sweep.get(key) is not None:
            check_number(f"sweep.{key}", sweep[key], low=0)


def skip_reason(cfg: Any, tokens: Optional[int] = None) -> Optional[str]:
    """Why this run of a sweep should not train (None: it should); ``tokens`` replaces ``train.tokens``.
    Rules, from ``sweep:``:

    - below the floor: tokens < max(min_tokens, min_tokens_per_param * N, min_steps * tokens per step)
      (N under ``param_convention``, default the N of the sweep's FLOP ``convention``);
    - above the ceiling: tokens > max_tokens_per_param * N (a model far too small for its budget);
    - beyond the data: tokens > max_epochs * training tokens of the data (default one epoch).
    - repeated data (``data.unique_tokens`` = U, ``scaling.sweep.repeats``): in place of the rule above,
      U > training tokens of the data, or tokens > max_unique_epochs * U (default 100 epochs).
    """
    sweep = cfg.get("sweep")
    check_sweep_settings(sweep)
    sweep = sweep if isinstance(sweep, DictConfig) else OmegaConf.create({})
    tokens = int(cfg.train.tokens if tokens is None else tokens)
    per_step = int(cfg.train.batch_size) * int(cfg.model.context)

    floors = [(0, "")]
    if sweep.get("min_tokens"):
        floors.append((int(sweep.min_tokens), f"sweep.min_tokens={int(sweep.min_tokens):,}"))
    if sweep.get("min_tokens_per_param"):
        k, n, conv = _per_param(sweep, "min_tokens_per_param", cfg)
        floors.append((math.ceil(k * n), f"sweep.min_tokens_per_param={k:g} x N_{conv}={n:,}"))
    min_steps = int(sweep.get("min_steps") or 1)
    floors.append((min_steps * per_step, f"sweep.min_steps={min_steps} x {per_step:,} tokens per step"))
    floor, why = max(floors)
    if tokens < floor:
        return f"below the floor: {tokens:,} tokens < {floor:,} ({why})"

    if sweep.get("max_tokens_per_param"):
        k, n, conv = _per_param(sweep, "max_tokens_per_param", cfg)
        if tokens > k * n:
            return f"above the ceiling: {tokens:,} tokens > {math.floor(k * n):,} (sweep.max_tokens_per_param={k:g} x N_{conv}={n:,})"

    if cfg.data.get("unique_tokens") is not None:  # repeated data: U against the data, D / U against its ceiling
        from scaling.sweep.repeats import unique_skip_reason

        return unique_skip_reason(cfg, tokens, sweep, data_tokens(cfg.data))
    available, exact = data_tokens(cfg.data)
    epochs = float(sweep.get("max_epochs") or 1.0)
    if available is not None and tokens > epochs * available:
        held = f"{available:,} training tokens" if exact else f"at most {available:,} training tokens (not prepared yet)"
        return (f"beyond the data: {tokens:,} tokens > {epochs:g} epoch(s) of data.source={cfg.data.source!r}, "
                f"which holds {held}")
    return None


def _per_param(sweep: DictConfig, key: str, cfg: Any) -> tuple[float, int, str]:
    """(k, N, convention) of a tokens-per-parameter rule: k from ``sweep.<key>``, N under ``param_convention``."""
    conv = sweep.get("param_convention") or PARAMS_OF_CONVENTION.get(sweep.get("convention") or "6nd")
    if conv not in PARAM_CONVENTIONS:
        raise ConfigError(f"sweep.param_convention={conv!r} is unknown: choose one of {', '.join(PARAM_CONVENTIONS)}")
    return float(sweep[key]), param_counts_of(cfg)[conv], conv


def _skip_reason_resolver(*, _root_: DictConfig) -> Optional[str]:
    return skip_reason(_root_)


def skipped_result(cfg: DictConfig, run_dir: str | Path) -> Optional[dict[str, Any]]:
    """For a run whose ``sweep.skip_reason`` is set: write ``result.json`` (status ``skipped``, the reason
    as ``error``) and return it. None for a run that should train. Call before any work."""
    reason = OmegaConf.select(cfg, "sweep.skip_reason", default=None)
    if not reason:
        return None
    from scaling.run.record import RunRecord

    run_dir = Path(run_dir)
    return RunRecord(run_dir).write_skipped(run_dir.name, cfg.get("group"), str(reason),
                                            planned_tokens=int(cfg.train.tokens),
                                            budget=OmegaConf.select(cfg, "sweep.budget", default=None))


# --------------------------------------------------------------------------------------------------


RESOLVERS = {
    "tokens_for_budget": tokens_for_budget,
    "tokens_per_param": tokens_per_param,
    "skip_reason": _skip_reason_resolver,
    "sweep_values": sweep_values,
}
