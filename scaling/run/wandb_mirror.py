"""Mirror of one run in Weights & Biases; the run record on disk stays the source of truth.

``start(cfg, run_dir, run_id, resume_id, info)`` opens one W&B run per training job (never merged into
another, even when Hydra's basic launcher runs several jobs in one process) and returns a ``Mirror``
with ``.wandb_id`` (kept in checkpoints so a resumed run continues the same W&B run), ``.log(metrics,
step)`` and ``.finish(result)``.

Mode ``auto`` is online only when credentials are configured (``WANDB_API_KEY``, an identity token
file, or a netrc entry for the W&B host) and ``WANDB_MODE`` does not say otherwise; else offline, so
nothing waits for an account. A W&B failure of any kind (no network, quota, init timeout) is a warning
and the mirror becomes a no-op: it never fails or loses a run. Credentials are never written: the W&B
config is built from the resolved run config alone, and any string holding the API key is redacted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from scaling.config import CHOICES, WandbConfig
from scaling.run.record import finite_or_none

log = logging.getLogger(__name__)

MODES = CHOICES["logger.wandb.mode"]
JOB_TYPE = "train"
# Config keys the mirror adds beside the resolved run config (the run config never uses these names).
EXTRA_CONFIG_KEYS = ("run_id", "shape", "N", "D", "C", "flops_per_token")
X_AXES = ("tokens", "flops")  # every logged metric can be plotted against these
# W&B-only copies of the losses that the runs of a named sweep log beside ``train/loss`` and ``val/loss``,
# named to sort first: dashboards that order panels by name (``wandb leet``: capitals before lower case)
# then show the loss panels before the x-axes.
LOSS_PANELS = {"train/loss": "Loss/train", "val/loss": "Loss/val"}
INIT_TIMEOUT_S = 60.0  # online init; WANDB_INIT_TIMEOUT overrides
FINISH_TIMEOUT_S = 120.0  # online upload at finish; the rest stays on disk for `wandb sync`


# ----------------------------------------------------------------------------- mode and credentials


def validate(wandb_cfg: Any) -> None:
    """Raise ConfigError for a ``logger.wandb`` node W&B would refuse (mode, project, tags)."""
    WandbConfig.validate(wandb_cfg)


def has_credentials() -> bool:
    """True when W&B could authenticate without a prompt: env key, identity token file, or netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        import wandb
        from wandb.sdk.lib import wbauth

        host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
        return bool(wbauth.read_netrc_auth(host=host))
    except Exception:  # no netrc, a malformed one, or an internal API that moved: treat as no key
        return False


def resolve_mode(wandb_cfg: Any) -> str:
    """``online``, ``offline`` or ``disabled``, after ``enabled``, ``WANDB_MODE`` (for auto) and credentials."""
    validate(wandb_cfg)
    mode = str(_get(wandb_cfg, "mode", "auto"))
    if not _get(wandb_cfg, "enabled", True) or mode == "disabled":
        return "disabled"
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes") or env_mode == "disabled":
        return "disabled"
    if env_mode in ("offline", "dryrun"):
        return "offline"
    if env_mode == "online":
        return "online"
    return "online" if has_credentials() else "offline"


# ----------------------------------------------------------------------------- the mirror


class Mirror:
    """One W&B run. Every call is guarded: the first W&B error warns once and turns the mirror off."""

    def __init__(self, run: Any = None, wandb_id: str | None = None, secrets: tuple[str, ...] = (),
                 loss_panels: bool = False):
        self._run = run
        self._loss_panels = loss_panels  # also log LOSS_PANELS (runs of a named sweep)
        self.wandb_id = wandb_id
        self._secrets = secrets

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log one step of ``metrics.jsonl`` (the ``step`` key becomes W&B's step)."""
        if self._run is None:
            return
        data = {k: v for k, v in finite_or_none(dict(metrics)).items() if k != "step" and v is not None}
        if self._loss_panels:
            data.update({alias: data[key] for key, alias in LOSS_PANELS.items() if key in data})
        # commit now: a step is one line of metrics.jsonl, so the final record in the summary comes last
        self._guard("log", lambda: self._run.log(data, step=int(step), commit=True))

    def finish(self, result: Mapping[str, Any]) -> None:
        """Put the final record in the summary and close the run (exit code 1 unless completed or diverged)."""
        if self._run is None:
            return
        run = self._run
        summary = _redact(finite_or_none(dict(result)), self._secrets)
        self._guard("summary", lambda: run.summary.update(summary))
        if self._run is not None:
            # no record (preempted, interrupted) or a failed one: close as failed, never as finished; a run
            # stopped where it was asked to (train.stop_at_tokens) closes as finished, its status in the summary
            ended = result.get("status") in ("completed", "diverged", "stopped")
            self._guard("finish", lambda: run.finish(exit_code=0 if ended else 1))
        self._run = None

    def _guard(self, what: str, call) -> None:
        try:
            call()
        except Exception as err:  # W&B must never fail the run: warn once, then stop mirroring
            warn_once(f"W&B {what} failed; the run goes on without its W&B mirror "
                      f"({type(err).__name__}: {_redact(str(err), self._secrets)})")
            run, self._run = self._run, None
            if run is not None and what != "finish":
                try:
                    run.finish(exit_code=1)
                except Exception:
                    pass


def start(cfg: DictConfig, run_dir: str | Path, run_id: str, resume_id: str | None = None,
          info: Mapping[str, Any] | None = None) -> Mirror:
    """Open the W&B run of this training job, or a no-op mirror (disabled, non-zero rank, W&B failure).

    resume_id: the W&B id stored in the checkpoint; the same W&B run is continued (``resume="allow"``).
    info: ``params`` (N per convention), ``flops_per_token`` and ``flops`` (per convention), ``tokens`` and
      ``shape`` (the model shape mapping), as the training loop passes them.
    """
    wcfg = cfg.logger.wandb if "logger" in cfg and "wandb" in cfg.logger else {}
    mode = resolve_mode(wcfg)
    if mode == "disabled" or _rank() != 0:
        return Mirror(wandb_id=resume_id)
    secrets = _secrets()
    try:
        import wandb

        config = _redact(run_config(cfg, run_id, info or {}), secrets)
        in_sweep = OmegaConf.select(cfg, "sweep", default=None) is not None  # a run of a named sweep
        directory = Path(_get(wcfg, "dir", None) or (sweep_folder(run_dir) if in_sweep else run_dir))
        directory.mkdir(parents=True, exist_ok=True)
        with packages_listed_once():  # W&B lists the installed packages once per process
            run = wandb.init(
                project=_get(wcfg, "project", "scaling"),
                entity=_get(wcfg, "entity", None) or None,
                group=_get(wcfg, "group", None) or str(cfg.get("group") or "default"),
                tags=[str(t) for t in (_get(wcfg, "tags", None) or [])],
                name=run_id,
                job_type=JOB_TYPE,
                id=resume_id or wandb_run_id(run_id),
                resume="allow",
                dir=str(directory),
                config=config,
                reinit="create_new",  # one W&B run per job, even with several jobs in one process
                settings=_settings(wandb, mode),
            )
        run.define_metric("tokens")
        run.define_metric("flops")
        for key in ("Loss/*", "train/*", "val/*", "doc/*", "pred/*", "lr", "tokens_per_s", "mfu"):
            run.define_metric(key, step_metric="tokens")
        return Mirror(run, run.id, secrets, loss_panels=in_sweep)
    except Exception as err:  # no network, bad credentials, quota, timeout: the run goes on
        warn_once(f"W&B init failed ({mode}); the run goes on without its W&B mirror "
                  f"({type(err).__name__}: {_redact(str(err), secrets)})")
        return Mirror(wandb_id=resume_id)


def sweep_folder(run_dir: str | Path) -> Path:
    """Where the W&B runs of a named sweep go by default: its group folder (``<runs_dir>/<group>``), so that
    every run of the sweep lands in one ``<runs_dir>/<group>/wandb/`` (one ``wandb leet`` or ``wandb sync``).
    A run outside a named sweep keeps its own ``<run_dir>/wandb/``; ``logger.wandb.dir`` overrides both."""
    return Path(run_dir).parent


def wandb_folder(sweep_dir: str | Path) -> Path:
    """The one W&B folder of a sweep (``<sweep_dir>/wandb``) that ``wandb leet`` and ``wandb sync`` read."""
    return Path(sweep_dir) / "wandb"


def wandb_run_id(run_id: str) -> str:
    """A fresh W&B id that says which run it is: the run id and a random suffix (its folder is
    ``offline-run-<time>-<run id>-<suffix>``). The suffix keeps two studies of one config apart online."""
    import secrets

    return f"{run_id}-{secrets.token_hex(3)}"


def run_config(cfg: DictConfig, run_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B config: the resolved run config plus run id, shape, N, D and C (per counting convention)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    per_token = dict(info.get("flops_per_token") or {})
    tokens = info.get("tokens") or OmegaConf.select(cfg, "train.tokens")
    flops = info.get("flops") or {k: float(v) * float(tokens) for k, v in per_token.items()}
    shape = info.get("shape") or info.get("model") or {}
    config.update({"run_id": run_id, "shape": dict(shape), "N": dict(info.get("params") or {}), "D": tokens,
                   "C": dict(flops), "flops_per_token": per_token})
    return config


def _settings(wandb: Any, mode: str) -> Any:
    """Fast, quiet, bounded: no git/metadata/console capture; system stats only online; init/finish timeouts.
    A setting the user gives through W&B's own environment variable (``WANDB_X_DISABLE_STATS=false``:
    system metrics offline too) is left to W&B."""
    online = mode == "online"
    defaults = dict(x_disable_stats=not online, x_disable_meta=True, disable_git=True, save_code=False,
                    disable_job_creation=True, console="off")
    return wandb.Settings(
        mode=mode,
        init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S),
        finish_timeout=float(os.environ.get("WANDB_FINISH_TIMEOUT") or FINISH_TIMEOUT_S) if online else 0.0,
        silent=True,
        **{key: value for key, value in defaults.items() if not _set_in_env(key)},
    )


def _set_in_env(setting: str) -> bool:
    """Whether the environment sets this W&B setting: ``WANDB_<SETTING>``, or ``WANDB__<NAME>`` for ``x_<name>``."""
    names = [f"WANDB_{setting.upper()}"] + ([f"WANDB__{setting[2:].upper()}"] if setting.startswith("x_") else [])
    return any(os.environ.get(name, "").strip() for name in names)


_PACKAGES: list[Any] = []  # the installed packages as W&B lists them, the first time a run of this process starts


@contextlib.contextmanager
def packages_listed_once() -> Iterator[None]:
    """Within the block, W&B's list of installed packages (``wandb.util.working_set``, which each run's start
    saves as its ``requirements.txt``) is read once per process: listing it parses the metadata of every
    installed distribution, about 0.3 s, most of a later run's offline start in a worker that trains many.
    The packages do not change while a worker trains, so every run keeps the same ``requirements.txt``.
    Leaves W&B alone where it has no such function (another version)."""
    import wandb.util

    listing = getattr(wandb.util, "working_set", None)
    if not callable(listing):
        yield
        return

    def cached() -> Iterator[Any]:
        if not _PACKAGES:
            _PACKAGES.extend(listing())
        return iter(_PACKAGES)

    wandb.util.working_set = cached
    try:
        yield
    finally:
        wandb.util.working_set = listing


# ----------------------------------------------------------------------------- helpers

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A warning in the log, printed once per process per message."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _get(node: Any, key: str, default: Any) -> Any:
    if node is None:
        return default
    if isinstance(node, Mapping) or isinstance(node, DictConfig):
        value = node.get(key, default)
    else:
        value = getattr(node, key, default)
    return default if value is None and default is not None else value


def _rank() -> int:
    """Rank of this process: only rank 0 mirrors (it is the one that writes the run record)."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except Exception:
        pass
    return int(os.environ.get("RANK", "0") or 0)


def _secrets() -> tuple[str, ...]:
    key = os.environ.get("WANDB_API_KEY", "")
    return (key,) if len(key) >= 8 else ()


def _redact(obj: Any, secrets: tuple[str, ...]) -> Any:
    """``obj`` with every occurrence of a secret in its strings replaced by ``***``."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return obj
    if isinstance(obj, Mapping):
        return {_redact(k, secrets): _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_redact(v, secrets) for v in obj)
    return obj
