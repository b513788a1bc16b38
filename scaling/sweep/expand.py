"""Expand a sweep exactly as ``scaling-train --multirun`` would, and compose any run's config.

The job list comes from Hydra itself: the sweep's master config is composed in multirun mode, its
sweeper is instantiated from ``hydra.sweeper`` and its own override parser and cartesian product give
each job's overrides; each job's config is then composed with the Compose API from the same
``conf/`` (and ``sweeps/``) as the training entry point. Nothing is launched.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any, Iterator

import omegaconf._utils
import omegaconf.base
from omegaconf import DictConfig, OmegaConf, open_dict

from scaling.config import CONF_DIR
from scaling.errors import ConfigError
from scaling.sweep.registry import configure_runtime

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@contextlib.contextmanager
def cached_grammar() -> Iterator[None]:
    """Within the block, OmegaConf parses each interpolation string once (its ANTLR parse is most of the time
    of composing a sweep's configs and resolving their sweep resolvers, which see the same strings again and
    again); the parse trees are only read, so sharing them gives the same configs."""
    modules = [m for m in (omegaconf.base, omegaconf._utils) if callable(getattr(m, "parse", None))]
    saved = [m.parse for m in modules]
    if not saved or any(p is not saved[0] for p in saved):  # not the one parser of omegaconf 2.3: leave it alone
        yield
        return
    cached = functools.lru_cache(maxsize=4096)(saved[0])
    for m in modules:
        m.parse = cached
    try:
        yield
    finally:
        for m, parse in zip(modules, saved):
            m.parse = parse


def compose_run_config(overrides: list[str]) -> DictConfig:
    """The run config ``scaling-train`` composes from ``overrides`` (for scripts and benchmarks)."""
    from hydra import compose, initialize_config_dir

    configure_runtime()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def job_overrides(master: DictConfig, config_loader: Any) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper derives them from a multirun master config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins

    target = OmegaConf.select(master, "hydra.sweeper._target_")
    if target != BASIC_SWEEPER:
        raise ConfigError(f"hydra.sweeper._target_={target!r}: scaling-plan expands only Hydra's basic sweeper")
    sweeper = Plugins.instance()._instantiate(master.hydra.sweeper)  # as Hydra's multirun does (not set up)
    arguments = sweeper._parse_config() + list(OmegaConf.to_container(master.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(arguments)
    batches = sweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch]


def sweep_names(config_loader: Any) -> list[str]:
    return sorted(config_loader.get_group_options("sweep"))


def _check_sweep_name(overrides: list[str], config_loader: Any) -> None:
    names = sweep_names(config_loader)
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "sweep" and value not in names:
            raise ConfigError(f"unknown sweep {value!r}: choose one of {', '.join(names)}")


@contextlib.contextmanager
def _multirun_master(overrides: list[str]) -> Iterator[tuple[DictConfig, list[str], list[list[str]], Any]]:
    """Within Hydra's initialised config dir: the multirun master config ``overrides`` compose, its Hydra
    overrides, each job's overrides and the config loader."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    configure_runtime()
    with cached_grammar(), initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="scaling-plan"):
        gh = GlobalHydra.instance()
        loader = gh.config_loader()
        _check_sweep_name(overrides, loader)
        master = gh.hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN,
                                         with_log_configuration=False)
        hydra_overrides = list(OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False))
        yield master, hydra_overrides, job_overrides(master, loader), loader


def expand(overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    """(job overrides, composed job config) of every job of the multirun ``overrides`` describe."""
    from hydra import compose

    with _multirun_master(overrides) as (_, hydra_overrides, jobs, _):
        return [(job, compose("config", overrides=hydra_overrides + job, return_hydra_config=False)) for job in jobs]


def expand_values(overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    """Like ``expand``, without composing each job: where the sweeper's parameters only set config values that
    no other override sets (no config group, no sweep among the task's overrides), each job's config is the
    master config with the job's parameter overrides applied as Hydra applies them when it composes the job
    (``ConfigLoaderImpl._apply_overrides_to_config``), on a copy without the ``hydra`` node. Several times
    faster for pricing a sweep; any other sweep is composed job by job, as ``expand`` does."""
    from hydra import compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with _multirun_master(overrides) as (master, hydra_overrides, jobs, loader):
        parser = OverridesParser.create(config_loader=loader)
        params = set(OmegaConf.select(master, "hydra.sweeper.params", default=None) or {})
        task = parser.parse_overrides(list(OmegaConf.to_container(master.hydra.overrides.task, resolve=False)))
        own = [[o for o in parser.parse_overrides(job) if o.get_key_element() in params] for job in jobs]
        if not _values_only(task, own, set(master.hydra.runtime.choices)):
            return [(job, compose("config", overrides=hydra_overrides + job, return_hydra_config=False))
                    for job in jobs]
        base = copy.deepcopy(master)
        with open_dict(base):
            del base["hydra"]
        out = []
        for job, parsed in zip(jobs, own):
            cfg = copy.deepcopy(base)
            ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
            out.append((job, cfg))
        return out


def _values_only(task: list[Any], own: list[list[Any]], groups: set[str]) -> bool:
    """Whether the jobs' parameter overrides only set config values, in an order that cannot matter: none
    names a config group or deletes a key, no task override sets a value on the same key (or above or below
    it; a config group's choice is composed before any value in both ways), and no task override is itself
    a sweep. ``groups``: the config groups of the composition (``hydra.runtime.choices``)."""
    def is_group(o: Any) -> bool:
        return o.package is not None or o.key_or_group in groups

    if any(o.is_sweep_override() for o in task):
        return False
    task_keys = [o.key_or_group for o in task if not is_group(o)]
    for o in (o for job in own for o in job):
        key = o.key_or_group
        if o.is_hydra_override() or o.is_delete() or is_group(o):
            return False
        if any(t == key or t.startswith(key + ".") or key.startswith(t + ".") for t in task_keys):
            return False
    return True
