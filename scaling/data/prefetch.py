"""Batch prefetcher for the training loop: the next steps' batches are ready before they are needed.

The batches of optimizer step ``step`` are ``scaling.data.loader.batch_offsets(..., seed, step)`` cut into this
rank's micro-batches, exactly as the loop would make them, so batch order stays a pure function of
``(seed, step)`` and a resumed run sees the same batches from any start step.

On CUDA a background thread gathers the windows from the token memmap into pinned (page-locked) host
memory a few steps ahead, and the host-to-device copy of step s+1 is issued on a side stream with
``non_blocking=True`` while step s computes, so the GPU never waits on the host. On the CPU (or with
``threaded=False``) it is a plain in-order iterator that makes each batch when asked.

    prefetch = BatchPrefetcher(prepared.train, context, batch_size, seed, start_step, steps, device)
    for step, micro_batches in prefetch:      # micro_batches: [(x, y), ...], each (micro, T) int64
        ...
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import torch

from scaling.errors import DataError
from scaling.data.loader import make_batch, step_offsets

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def step_batches(tokens: np.ndarray, context: int, batch_size: int, seed: int, step: int,
                 rank: int = 0, world_size: int = 1, micro_batch_size: int | None = None) -> Batches:
    """This rank's micro-batches [(x, y), ...] of optimizer step ``step``, on the CPU (the loop's own cut)."""
    offsets = step_offsets(tokens, context, batch_size, seed, step)  # (batch_size,); mixtures: shares per source
    mine = offsets[rank::world_size]  # this rank's rows of the global batch
    micro = micro_batch_size or len(mine)
    return [make_batch(tokens, mine[i:i + micro], context) for i in range(0, len(mine), micro)]


class BatchPrefetcher:
    """Iterator over ``(step, micro_batches)`` for steps ``start_step .. end_step - 1``, batches on ``device``.

    ``threaded`` (default: on for CUDA) builds batches ``depth`` steps ahead on a background thread;
    ``pin`` (default: on for CUDA) puts them in pinned memory so the copy to the GPU is asynchronous.
    Call ``close()`` (or use it as a context manager) when leaving the loop early.
    """

    def __init__(self, tokens: np.ndarray, context: int, batch_size: int, seed: int, start_step: int,
                 end_step: int, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 micro_batch_size: int | None = None, depth: int = 2, threaded: bool | None = None,
                 pin: bool | None = None):
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if not 0 <= start_step <= end_step:
            raise DataError(f"start_step={start_step} and end_step={end_step}: need 0 <= start_step <= end_step")
        if depth < 1:
            raise DataError(f"depth={depth} is not allowed: prefetch at least 1 step ahead")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise DataError(f"micro_batch_size={micro_batch_size} is not allowed: use a positive number or None")
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size, self.micro = rank, world_size, micro_batch_size
        self.threaded = cuda if threaded is None else threaded
        self.pin = cuda if pin is None else pin
        self.depth = depth
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ host side

    def _host(self, step: int) -> Batches:
        batches = step_batches(self.tokens, self.context, self.batch_size, self.seed, step,
                               self.rank, self.world_size, self.micro)
        if self.pin:
            batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]
        return batches

    def _produce(self) -> None:
        """Background thread: host batches of every step, in order, into the bounded queue."""
        try:
            for step in range(self.start_step, self.end_step):
                item = (step, self._host(step))
                while not self._put(item):
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # handed to the consumer, raised there
            while not self._put((None, exc)) and not self._stop.is_set():
                pass

    def _put(self, item) -> bool:
        try:
            self._queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def _host_steps(self) -> Iterator[tuple[int, Batches]]:
        if not self.threaded:
            for step in range(self.start_step, self.end_step):
                yield step, self._host(step)
            return
        self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
        self._thread.start()
        for _ in range(self.start_step, self.end_step):
            step, batches = self._queue.get()
            if step is None:
                raise batches
            yield step, batches

    # ------------------------------------------------------------------ device side

    def _to_device(self, batches: Batches) -> tuple[Batches, torch.cuda.Event | None]:
        """Start the copy of one step's batches; on CUDA, on the side stream, with an event marking its end."""
        if self._stream is None:
            return [(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
                    for x, y in batches], None
        with torch.cuda.stream(self._stream):  # copies overlap the compute on the current stream
            moved = [(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)) for x, y in batches]
            done = torch.cuda.Event()
            done.record(self._stream)
        return moved, done

    def _ready(self, batches: Batches, done: torch.cuda.Event | None) -> Batches:
        """Make the compute stream wait for this step's copy, and keep its memory alive for that stream."""
        if done is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(done)
            for x, y in batches:
                x.record_stream(compute)
                y.record_stream(compute)
        return batches

    def __iter__(self) -> Iterator[tuple[int, Batches]]:
        try:
            pending = None  # (step, batches on their way to the device, copy event)
            for step, batches in self._host_steps():
                moving = (step, *self._to_device(batches))  # issue step s+1's copy before step s is handed out
                if pending is not None:
                    yield pending[0], self._ready(pending[1], pending[2])
                pending = moving
            if pending is not None:
                yield pending[0], self._ready(pending[1], pending[2])
        finally:
            self.close()

    def close(self) -> None:
        """Stop the background thread (if any) and drop the batches it made ahead."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.05)
            self._thread = None

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
