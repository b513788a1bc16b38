"""Repeated data (data.unique_tokens): the epoch sampler, its accounting, the cut and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaling.config import DataConfig
from scaling.data import repeat
from scaling.data.loader import step_offsets
from scaling.data.prefetch import step_batches
from scaling.data.prepare import PreparedData
from scaling.errors import ConfigError, DataError


def _steps(n_windows, batch, seed, steps, context=1):
    return np.concatenate([repeat.repeat_offsets(n_windows, context, batch, seed, s) for s in range(steps)])


def test_a_step_is_a_pure_function_of_seed_and_step():
    first = [repeat.repeat_offsets(37, 16, 5, 3, s) for s in range(30)]
    repeat.epoch_permutation.cache_clear()
    backwards = [repeat.repeat_offsets(37, 16, 5, 3, s) for s in reversed(range(30))][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, backwards))
    assert not np.array_equal(repeat.repeat_offsets(37, 16, 5, 4, 0), first[0])  # another seed, another order


def test_each_epoch_visits_every_window_exactly_once():
    n, batch = 37, 5  # 37 windows, batches of 5: steps straddle the epoch boundaries
    seen = _steps(n, batch, seed=7, steps=40)  # 200 windows = 5 full epochs and a part
    epochs = [seen[e * n:(e + 1) * n] for e in range(len(seen) // n)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n))
    assert len({tuple(o) for o in epochs}) == len(epochs), "two epochs in the same order"
    assert np.array_equal(epochs[2], repeat.epoch_permutation(n, 7, 2))


def test_offsets_are_window_starts_in_the_cut():
    offsets = _steps(100, 8, seed=0, steps=30, context=64)
    assert offsets.min() >= 0 and offsets.max() == 99 * 64 and np.all(offsets % 64 == 0)


def test_epochs_and_tokens_per_epoch_are_counted():
    acc = repeat.epoch_accounting(n_windows=37, context=16, windows_seen=200)
    assert acc["epochs"] == pytest.approx(200 / 37)
    assert acc["tokens_per_epoch"] == [37 * 16] * 5 + [15 * 16]
    assert sum(acc["tokens_per_epoch"]) == 200 * 16
    plan = repeat.plan_repeat(10_000, 5_000, context=64, batch_size=4)
    rec = plan.record(steps=50, batch_size=4)
    assert plan.n_windows == 4999 // 64 == 78 and rec["unique_tokens"] == 78 * 64
    assert rec["epochs"] == pytest.approx(200 / 78) and rec["tokens_per_epoch"] == [78 * 64] * 2 + [44 * 64]
    assert rec["unique_tokens_requested"] == 5_000 and rec["unique_cut_tokens"] == 5_000
    assert repeat.epoch_accounting(78, 64, 50)["tokens_per_epoch"] == [50 * 64]  # less than one epoch


def test_the_cut_ends_at_a_document_boundary_where_the_data_knows_them():
    starts = np.array([0, 300, 900, 1000, 4000])
    assert repeat.cut_point(6000, 1100, starts) == (1000, True)  # the documents before 1100, whole
    assert repeat.cut_point(6000, 1000, starts) == (1000, True)
    assert repeat.cut_point(6000, 1200, starts) == (1200, False)  # a boundary at 1000 keeps under 90%
    assert repeat.cut_point(6000, 6000, starts) == (6000, True)
    assert repeat.cut_point(6000, 1200, None) == (1200, False)


def test_loader_and_prefetch_read_the_cut_by_epochs():
    tokens = np.arange(1000, dtype=np.uint16)
    plan = repeat.plan_repeat(len(tokens), 500, context=10, batch_size=4)
    cut = repeat.RepeatedTokens(tokens, plan)
    assert len(cut) == 500 and np.array_equal(step_offsets(cut, 10, 4, 3, 9), plan.offsets(4, 3, 9))
    (x, y), = step_batches(cut, 10, 4, seed=3, step=9)
    assert np.array_equal(x[:, 0].numpy(), plan.offsets(4, 3, 9)) and int(y.max()) < 500
    with pytest.raises(IndexError):
        cut[np.array([500])]


def _prepared(n_train=20_000) -> PreparedData:
    train = np.arange(n_train, dtype=np.uint16)
    return PreparedData(Path("."), {"source": "toy"}, train, np.arange(100, dtype=np.uint16), None)


def test_with_repeats_replaces_only_the_train_split():
    prepared = _prepared()
    same, plan = repeat.with_repeats(prepared, None, 64, 8, 50_000)
    assert same is prepared and plan is None
    cut, plan = repeat.with_repeats(prepared, 4_096, 64, 8, 50_000)
    assert len(cut.train) == 4_096 and cut.val is prepared.val and plan.unique_tokens == 63 * 64


@pytest.mark.parametrize("call, error, needle", [
    (lambda: repeat.with_repeats(_prepared(), 30_000, 64, 8, 50_000), DataError,
     "data.unique_tokens=30,000 is larger than the train split of data.source='toy' (20,000 tokens); allowed: at most 20,000"),
    (lambda: repeat.check_request(500, 64, 8, 50_000), ConfigError,
     "data.unique_tokens=500 is smaller than one batch: allowed at least 513"),
    (lambda: repeat.check_request(1_000, 64, 8, 10_000_000), ConfigError,
     "allowed: at most 100 epochs (sweep.max_unique_epochs)"),
    (lambda: repeat.with_repeats(_prepared(), 10_000, 64, 8, 10_000_000, max_epochs=50), ConfigError,
     "allowed: at most 50 epochs"),
    (lambda: repeat.max_unique_epochs({"max_unique_epochs": -1}), ConfigError,
     "sweep.max_unique_epochs=-1 is invalid"),
    (lambda: DataConfig(unique_tokens=1000, align="bos").validate(), ConfigError,
     "data.unique_tokens with data.align='bos' is not supported"),
    (lambda: DataConfig(unique_tokens=1.5).validate(), ConfigError, "data.unique_tokens=1.5 is invalid"),
])
def test_bad_input_is_one_line(call, error, needle):
    with pytest.raises(error) as info:
        call()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_ceiling_defaults_to_100_and_follows_the_sweep():
    assert repeat.max_unique_epochs(None) == 100.0
    assert repeat.max_unique_epochs({"max_unique_epochs": 400}) == 400.0
    repeat.check_request(1_000, 64, 8, 90_000)  # 90,112 tokens over 960: 93.9 epochs, under 100
