"""The one resolver registry: every OmegaConf resolver a run or sweep config may use, registered at once.

Each module that owns resolvers exposes a ``RESOLVERS`` mapping; this module is the only place that
registers them, so a process (``scaling-train``, a Submitit job, ``scaling-plan``) gets all or none.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from scaling.config import DataConfig, LoggerConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from scaling.run import identity
from scaling.sweep import branch_plan, branches, lr_from_rule, repeats, resolvers

OWNERS = (identity, resolvers, branch_plan, branches, lr_from_rule, repeats)


def register_configs() -> None:
    """Register the schemas so that ``conf/`` files are validated against them."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="train", name="train_schema", node=TrainConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


def all_resolvers() -> dict:
    """name -> function of every resolver, from each owning module's ``RESOLVERS``."""
    merged: dict = {}
    for owner in OWNERS:
        clash = set(merged) & set(owner.RESOLVERS)
        assert not clash, f"resolvers defined twice: {sorted(clash)}"
        merged.update(owner.RESOLVERS)
    return merged


def configure_runtime() -> None:
    """Register the structured configs and every resolver (idempotent; Submitit jobs call it too)."""
    register_configs()
    for name, fn in all_resolvers().items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
