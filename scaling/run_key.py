"""Run identity: a run is named by a hash of what determines its result, not by its launch time.

Relaunching a sweep therefore lands every run in the directory it had before: completed runs are
returned from their records and partial ones resume from their checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaling.errors import report_user_error

# Settings that change how a run is watched or where it runs, not the numbers it produces.
BOOKKEEPING = {
    "train": ("log_every", "checkpoint_every", "keep_checkpoints", "keep_at_tokens", "progress",
              "threads", "device", "compile", "branch_wait_s"),
    "data": ("cache_dir",),
}
HASHED_GROUPS = ("model", "data", "optim", "train")


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved settings a run's result depends on."""
    ident: dict[str, Any] = {}
    for group in HASHED_GROUPS:
        node = OmegaConf.to_container(cfg[group], resolve=True)
        for key in BOOKKEEPING.get(group, ()):
            node.pop(key, None)
        ident[group] = node
    return ident


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


def register_run_key_resolver() -> None:
    if not OmegaConf.has_resolver("run_key"):
        OmegaConf.register_new_resolver("run_key", _resolve_run_key)
