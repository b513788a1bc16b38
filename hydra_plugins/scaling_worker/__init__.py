"""``hydra/launcher=worker``: Hydra's basic launcher (every job in turn in this process) with a cheaper
start for each job, as ``scaling-study``'s worker processes run it.

The sweep resolvers read the whole config (a branch prices every point of its shape, its trunk directory
hashes a copy of the config), and OmegaConf resolves an interpolation on every read, so a job used to
resolve the same resolvers hundreds of times before and while it trained. Here each job's config is
composed with each interpolation string parsed once (``scaling.sweep.expand.cached_grammar``), and the
task gets a resolved snapshot of it (``scaling.sweep.pricing.resolved_typed``, its schema kept):
the same values, so the same run directory, run and record. Hydra's own files (``.hydra/``) are written
from the config as composed, as with the basic launcher.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules, where
# a dataclass cannot look up string annotations
import functools
from dataclasses import dataclass
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class WorkerLauncherConf:
    _target_: str = "hydra_plugins.scaling_worker.WorkerLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="worker", node=WorkerLauncherConf, provider="scaling")


def on_snapshot(task_function: TaskFunction) -> TaskFunction:
    """``task_function`` called with a resolved snapshot of its job's config (or the config itself where
    some field cannot be resolved: the task then reports that field's error as before)."""

    @functools.wraps(task_function)
    def task(cfg: DictConfig) -> Any:
        from scaling.sweep.pricing import resolved_typed  # not at import: Hydra imports every plugin at start

        return task_function(resolved_typed(cfg))

    return task


class WorkerLauncher(BasicLauncher):
    """The basic launcher, its jobs composed under ``cached_grammar`` and run on resolved snapshots."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=on_snapshot(task_function), config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from scaling.sweep.expand import cached_grammar

        with cached_grammar():
            return super().launch(job_overrides, initial_job_idx)
