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
