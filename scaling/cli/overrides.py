"""The console scripts' command line before Hydra composes it: counts in scientific notation, and the
config checked (composed as Hydra will, then validated) before ``scaling-train`` makes a run folder.

Hydra reads ``train.tokens=5e6`` as the float 5000000.0, which OmegaConf will not merge into an ``int``
field; ``integral_overrides`` rewrites such a value to ``5000000`` for every int field of the schema (and
lists of ints), so the run is the one ``train.tokens=5000000`` names, and refuses ``5.5`` in one line.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Optional

from scaling.config import CONF_DIR, RunConfig
from scaling.errors import ConfigError, config_error_in
from scaling.io import writable_dir

_NUMBER = re.compile(r"(?<![\w.])[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.])")
HYDRA_RUN_FLAGS = ("-m", "--multirun")


def int_keys(schema: type = RunConfig, prefix: str = "") -> set[str]:
    """Full keys of the schema's int fields (``Optional[int]`` and ``list[int]`` too)."""
    keys: set[str] = set()
    for name, hint in typing.get_type_hints(schema).items():
        if name not in {f.name for f in dataclasses.fields(schema)}:
            continue
        if dataclasses.is_dataclass(hint):
            keys |= int_keys(hint, f"{prefix}{name}.")
        elif hint is int or int in typing.get_args(hint) and type(None) in typing.get_args(hint) \
                or typing.get_origin(hint) is list and typing.get_args(hint) == (int,):
            keys.add(prefix + name)
    return keys


INT_KEYS = frozenset(int_keys() | {"sweep.min_steps", "sweep.min_tokens"})  # and the sweeps' counts


def integral_overrides(args: list[str]) -> list[str]:
    """``args`` with every integral number written as a float (``5e6``, ``1.92e2``, ``[1e6,2e6]``, a sweep
    ``1e6,2e6``) in an int field's override rewritten as an integer; ConfigError for a fractional one."""
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        bare = key.lstrip("+~")
        if arg.startswith("-") or not eq or bare not in INT_KEYS or "$" in value or "'" in value or '"' in value:
            out.append(arg)
            continue
        out.append(f"{key}={_NUMBER.sub(lambda m: _as_int(bare, value, m.group(0)), value)}")
    return out


def run_flags_first(args: list[str]) -> list[str]:
    """``-m``/``--multirun`` moved before the overrides: Hydra's parser takes the overrides only in one piece,
    so ``scaling-train a=1 -m b=2`` would be a usage error."""
    return [a for a in args if a in HYDRA_RUN_FLAGS] + [a for a in args if a not in HYDRA_RUN_FLAGS]


def _as_int(key: str, value: str, text: str) -> str:
    if not any(c in text for c in ".eE"):
        return text
    x = float(text)
    if not x.is_integer():
        raise ConfigError(f"{key}={value} is invalid: it must be a whole number (5e6 or 1.92e2 are accepted, "
                          f"{text} is not whole)")
    return str(int(x))


def check_before_run(args: list[str]) -> Optional[Any]:
    """Compose ``args`` as ``scaling-train`` will and, for a single run, validate the config (ConfigError,
    or Hydra's own error, before any run folder exists) and return it. A multirun's jobs are only composed:
    each job checks and records its own config, once ``runs_dir`` is shown writable. Hydra's other commands (``--help``, ``--cfg``, ...) are left
    to Hydra. None where no single run's config was checked."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    if any(a.startswith("-") and a not in HYDRA_RUN_FLAGS for a in args):
        return None
    overrides = [a for a in args if not a.startswith("-")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="scaling-train"):
        hydra = GlobalHydra.instance().hydra
        master = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False,
                                      validate_sweep_overrides=False)
        if len(overrides) < len(args) or master.hydra.mode == RunMode.MULTIRUN:
            writable_dir(master.runs_dir, f"runs_dir={master.runs_dir!r}", create=False)  # before Hydra's first write
            return None
        cfg = hydra.compose_config("config", overrides, run_mode=RunMode.RUN, with_log_configuration=False)
        _validate(cfg)
    return cfg


def _validate(cfg: Any) -> None:
    """The run's own checks (the sections' first, without importing torch, then ``check_run_config``); only a
    ConfigError or DataError counts here, since the config is not yet Hydra's job config (``${hydra:...}``
    does not resolve) and the run checks again."""
    try:
        RunConfig.validate(cfg)
        from scaling.run.training import check_run_config

        check_run_config(cfg)
    except Exception as exc:  # noqa: BLE001 - anything but a user error is the run's to raise
        found: Optional[BaseException] = config_error_in(exc)
        if found is not None:
            raise found from None
