"""Run identity: the ids of existing runs never move, and a new config field at its default moves none.

The literals are the ids ``scaling-plan`` printed for the first and last runs of three named sweeps
before the package was split into layers; a user's run folders are named by them.
"""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from scaling.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from scaling.run import identity
from scaling.sweep.expand import compose_run_config, expand

KNOWN_IDS = {
    "demo": ("w16-d2-33ab336ac91d", "w64-d2-f9ec424619b0"),
    "grid": ("w64-d2-37f858297c9d", "w256-d4-c18682bf2a40"),
    "study": ("w32-d2-eb30e8311179", "w64-d2-1ad6e93459ee"),
}


@pytest.mark.parametrize("sweep", sorted(KNOWN_IDS))
def test_named_sweeps_keep_their_run_ids(sweep):
    jobs = expand([f"+sweep={sweep}"])
    first, last = identity.run_key(jobs[0][1]), identity.run_key(jobs[-1][1])
    assert (first, last) == KNOWN_IDS[sweep]


def test_a_new_field_at_its_default_leaves_the_id_unchanged(monkeypatch):
    cfg = compose_run_config(["model=tiny", "train.tokens=4096"])
    before = identity.run_key(cfg)
    for group, schema in identity.SCHEMAS.items():
        # the schema grows a field (as a later release may) and the config carries it at its default
        monkeypatch.setitem(identity.SCHEMAS, group, dataclasses.make_dataclass(
            schema.__name__, [("added_later", int, dataclasses.field(default=7))], bases=(schema,)))
        grown = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # a plain copy that can grow
        grown[group]["added_later"] = 7
        assert identity.run_key(grown) == before, group
        grown[group]["added_later"] = 8  # set away from its default it is part of the identity
        assert identity.run_key(grown) != before, group


def test_every_schema_field_of_the_first_release_is_hashed():
    for group, schema in identity.SCHEMAS.items():
        assert set(identity.FIRST_FIELDS[group]) <= {f.name for f in dataclasses.fields(schema)}, group
    assert identity.SCHEMAS == {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}


def test_bookkeeping_settings_do_not_change_the_id():
    cfg = compose_run_config(["model=tiny", "train.tokens=4096"])
    moved = compose_run_config(["model=tiny", "train.tokens=4096", "train.log_every=7", "train.checkpoint_every=3",
                                "train.threads=1", "data.cache_dir=/tmp/elsewhere"])
    changed = compose_run_config(["model=tiny", "train.tokens=8192"])
    assert identity.run_key(cfg) == identity.run_key(moved) != identity.run_key(changed)
