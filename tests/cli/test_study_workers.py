"""The study's local launcher deals the sweep's widths to at most --jobs worker processes (longest first, each
to the least loaded worker), one ``sweep.shapes`` override per worker."""

from types import SimpleNamespace

from scaling.study.launch import _shapes_override, worker_chains


def _run(width: int, tokens: int, runs: int = 1) -> list[SimpleNamespace]:
    return [SimpleNamespace(shape={"width": width, "depth": 2}, tokens=tokens, own_tokens=tokens,
                            flops={"chinchilla": 6.0 * width * width * tokens}) for _ in range(runs)]


def test_widths_go_longest_first_to_the_least_loaded_worker():
    todo = _run(8, 2_600_000, 4) + _run(16, 900_000, 4) + _run(24, 480_000, 4) + _run(32, 290_000, 4) \
        + _run(40, 200_000, 3)
    chains = worker_chains(todo, 2)
    names = [[name for name, _ in chain] for chain in chains]
    assert sorted(n for chain in names for n in chain) == sorted(f"w{w}-d2" for w in (8, 16, 24, 32, 40))
    assert len(chains) == 2 and names[0][0] == "w8-d2"  # the longest width leads the busiest worker
    assert set(names[1]) >= {"w16-d2"}  # the second longest starts at once on the other worker


def test_never_more_workers_than_widths_or_jobs():
    todo = _run(8, 1000) + _run(16, 1000)
    assert len(worker_chains(todo, 16)) == 2
    assert [len(c) for c in worker_chains(todo, 1)] == [2]


def test_one_override_names_every_width_of_a_worker():
    shapes = [{"width": 8, "depth": 2}, {"width": 40, "depth": 2}]
    assert _shapes_override(shapes) == "sweep.shapes=[{width:8,depth:2},{width:40,depth:2}]"


def test_worker_launcher_trains_each_run_from_a_resolved_snapshot_of_the_same_config(tmp_path):
    """``hydra/launcher=worker`` hands the task a copy with every interpolation resolved: the same values,
    the same schema (``typed_config``) and the same run id as the config Hydra composed."""
    from omegaconf import OmegaConf

    from hydra_plugins.scaling_worker import on_snapshot
    from scaling.config import RunConfig, typed_config
    from scaling.run.identity import run_key
    from scaling.sweep.expand import expand

    jobs = expand(["+sweep=study_wsd_quick", f"runs_dir={tmp_path}", "sweep.shapes=[{width:8,depth:2}]"])
    _, cfg = jobs[1]  # a branch: its tokens, keep points and trunk directory come from whole-config resolvers
    seen = []
    on_snapshot(seen.append)(cfg)
    snapshot = seen[0]
    assert OmegaConf.to_container(snapshot, resolve=False) == OmegaConf.to_container(cfg, resolve=True)
    assert run_key(snapshot) == run_key(cfg) and snapshot.train.branch_from == cfg.train.branch_from
    assert isinstance(typed_config(snapshot), RunConfig) and typed_config(snapshot) == typed_config(cfg)


def test_a_config_that_cannot_be_resolved_reaches_the_task_as_composed():
    from omegaconf import OmegaConf

    from hydra_plugins.scaling_worker import on_snapshot

    cfg = OmegaConf.create({"train": {"tokens": "${nowhere}"}})
    seen = []
    on_snapshot(seen.append)(cfg)
    assert seen[0] is cfg  # the run then reports the field's own error, as with the basic launcher


def test_the_worker_launcher_is_a_hydra_launcher_choice():
    from hydra import compose, initialize_config_dir

    from scaling.config import CONF_DIR
    from scaling.sweep.registry import configure_runtime

    configure_runtime()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=worker"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.scaling_worker.WorkerLauncher"
