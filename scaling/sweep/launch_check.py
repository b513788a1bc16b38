"""Checks before a multirun submits anything: resources make sense, and a Slurm controller answers.

Wired by our launcher presets (``conf/hydra/launcher/{local,slurm}.yaml``) as the Hydra callback
``LaunchCheck``: its ``on_multirun_start`` runs before the sweeper hands jobs to the launcher, prints
one line ``error: ...`` and exits with status 2 when a check fails. The functions raise ``ConfigError``
for use from Python.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from scaling.errors import ConfigError

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"

# field -> smallest allowed value (all are integers when set)
MINIMUM = {
    "nodes": 1,
    "tasks_per_node": 1,
    "cpus_per_task": 1,
    "gpus_per_node": 0,
    "gpus_per_task": 0,
    "cpus_per_gpu": 1,
    "mem_gb": 1,
    "timeout_min": 1,
    "array_parallelism": 1,
    "signal_delay_s": 0,
    "max_num_timeout": 0,
}


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    up: bool
    cpus: int  # most CPUs on one of its nodes
    memory_mb: int  # most memory on one of its nodes


def check_resources(launcher: Mapping[str, Any]) -> None:
    """Every resource the launcher config sets is an integer no smaller than it may be."""
    for key, least in MINIMUM.items():
        value = launcher.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            allowed = "a positive integer" if least == 1 else "an integer >= 0"
            raise ConfigError(f"hydra.launcher.{key}={value!r}: must be {allowed}")


def partitions(timeout_s: float = 20.0) -> dict[str, Partition]:
    """The partitions the controller reports (``sinfo``); ConfigError when no controller answers."""
    hint = "start slurmctld or use hydra/launcher=local"
    try:
        out = subprocess.run(["sinfo", "--noheader", "--format=%P|%a|%c|%m"], capture_output=True,
                             text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise ConfigError(f"no Slurm controller reachable (sinfo: command not found): {hint}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"no Slurm controller reachable (sinfo: no answer in {timeout_s:.0f} s): {hint}") from None
    if out.returncode != 0:
        lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
        why = "; ".join(dict.fromkeys(lines[-2:])) or f"exit status {out.returncode}"
        raise ConfigError(f"no Slurm controller reachable (sinfo: {why}): {hint}")
    found: dict[str, Partition] = {}
    for line in out.stdout.splitlines():
        if line.count("|") != 3:
            continue
        name, avail, cpus, mem = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        old = found.get(name)
        found[name] = Partition(name, default, avail == "up" or (old is not None and old.up),
                                max(_leading_int(cpus), old.cpus if old else 0),
                                max(_leading_int(mem), old.memory_mb if old else 0))
    return found


def check_slurm(launcher: Mapping[str, Any]) -> Partition:
    """A controller answers, the partition exists and is up, and one task fits on one of its nodes."""
    table = partitions()
    name: Optional[str] = launcher.get("partition")
    if name is None:
        chosen = next((p for p in table.values() if p.default), None)
        if chosen is None:
            raise ConfigError(f"hydra.launcher.partition=null: the cluster has no default partition; "
                              f"choose one of {sorted(table)}")
    elif name not in table:
        raise ConfigError(f"hydra.launcher.partition={name!r}: no such partition; the cluster has {sorted(table)}")
    else:
        chosen = table[name]
    if not chosen.up:
        raise ConfigError(f"hydra.launcher.partition={chosen.name!r}: partition is not up")
    cpus = (launcher.get("cpus_per_task") or 1) * (launcher.get("tasks_per_node") or 1)
    if chosen.cpus and cpus > chosen.cpus:
        raise ConfigError(f"hydra.launcher.cpus_per_task={launcher.get('cpus_per_task')} x tasks_per_node="
                          f"{launcher.get('tasks_per_node')}: {cpus} CPUs per node, but nodes of partition "
                          f"{chosen.name!r} have at most {chosen.cpus}")
    mem_gb = launcher.get("mem_gb")
    if mem_gb and chosen.memory_mb and mem_gb * 1024 > chosen.memory_mb:
        raise ConfigError(f"hydra.launcher.mem_gb={mem_gb}: nodes of partition {chosen.name!r} have at most "
                          f"{chosen.memory_mb / 1024:.1f} GB")
    return chosen


def check_launcher(launcher: Mapping[str, Any]) -> None:
    """All checks that apply to this launcher config (the Slurm ones only for the Slurm launcher)."""
    check_resources(launcher)
    if launcher.get("_target_") == SLURM_TARGET:
        check_slurm(launcher)


def _leading_int(text: str) -> int:
    digits = ""
    for ch in text.strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


class LaunchCheck(Callback):
    """Hydra callback: fail a multirun with one line before any job is submitted."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        node = config.hydra.launcher
        keys = [*MINIMUM, "partition", "_target_"]
        try:
            launcher = {k: node.get(k) for k in keys if k in node}  # each resolved on access
            check_launcher(launcher)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
