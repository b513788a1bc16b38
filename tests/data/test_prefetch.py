"""The batch prefetcher hands out exactly the loop's batches, in order, from any start step."""

import numpy as np
import pytest
import torch

from scaling.errors import DataError
from scaling.data.loader import batch_offsets, make_batch
from scaling.data.prefetch import BatchPrefetcher

CONTEXT, BATCH, SEED = 16, 8, 3
TOKENS = np.random.default_rng(0).integers(0, 500, size=5000).astype(np.uint16)


def direct(step, rank=0, world=1, micro=None):
    """The batches of ``step`` as the training loop makes them, by direct calls."""
    mine = batch_offsets(len(TOKENS), CONTEXT, BATCH, SEED, step)[rank::world]
    micro = micro or len(mine)
    return [make_batch(TOKENS, mine[i:i + micro], CONTEXT) for i in range(0, len(mine), micro)]


def assert_same(got, want):
    assert len(got) == len(want)
    for (x, y), (wx, wy) in zip(got, want):
        assert x.dtype == torch.int64 and x.shape == wx.shape
        assert torch.equal(x, wx) and torch.equal(y, wy)


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("start", [0, 7])
def test_same_batches_in_order_from_any_start(threaded, start):
    steps = []
    for step, batches in BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, start, start + 12, threaded=threaded):
        assert_same(batches, direct(step))
        steps.append(step)
    assert steps == list(range(start, start + 12))


@pytest.mark.parametrize("threaded", [False, True])
def test_micro_batches_and_ranks_match_the_loop(threaded):
    for rank in range(2):
        prefetch = BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 2, 6, rank=rank, world_size=2,
                                   micro_batch_size=2, threaded=threaded)
        for step, batches in prefetch:
            assert len(batches) == 2  # 8 rows / 2 ranks / 2 per micro-batch
            assert_same(batches, direct(step, rank, 2, 2))


def test_resumed_iteration_continues_the_uninterrupted_one():
    whole = [b for _, b in BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 0, 10, threaded=True)]
    first = BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 0, 10, threaded=True)
    head = []
    for step, batches in first:
        head.append(batches)
        if step == 3:
            break  # leaving early stops the thread
    assert first._thread is None
    tail = [b for _, b in BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 4, 10, threaded=True)]
    for got, want in zip(head + tail, whole, strict=True):
        assert_same(got, want)


def test_error_on_the_background_thread_reaches_the_loop():
    short = TOKENS[:10]  # too short for a window of CONTEXT + 1 tokens
    with pytest.raises(DataError, match="too short"):
        for _ in BatchPrefetcher(short, CONTEXT, BATCH, SEED, 0, 5, threaded=True):
            pass


def test_bad_step_range_is_a_one_line_error():
    with pytest.raises(DataError, match="start_step=5 and end_step=2"):
        BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 5, 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_are_pinned_copies_of_the_same_data():
    prefetch = BatchPrefetcher(TOKENS, CONTEXT, BATCH, SEED, 0, 5, device="cuda")
    assert prefetch.threaded and prefetch.pin
    for step, batches in prefetch:
        assert batches[0][0].is_cuda
        assert_same([(x.cpu(), y.cpu()) for x, y in batches], direct(step))
