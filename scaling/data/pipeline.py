"""Streaming preparation: the tasks of a plan, tokenized by ``data.workers`` processes, reassembled in
order into train and validation shards, resumable from the last complete shard.

Only a bounded number of tasks (about 4 MB of input each) is in flight, so memory does not grow with the
corpus. Whenever a shard is completed, ``progress.json`` records how many tasks are done and the state of
both writers; an interrupted preparation started again with the same settings continues from there,
after checking that the corpus has the fingerprint it had.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from scaling.data import encode
from scaling.data.shards import ShardWriter
from scaling.data.sources import Plan, iter_tasks
from scaling.errors import DataError

PROGRESS = "progress.json"


@dataclass
class Stats:
    docs: int = 0
    bytes: int = 0
    tokens: int = 0
    skipped: list = field(default_factory=list)
    truncated: bool = False
    done: dict = field(default_factory=lambda: {"main": 0, "val": 0})  # tasks consumed per phase


def _phased(plan: Plan, val_plan: Optional[Plan], text_field: str, skip: dict, stop: list) -> Iterator[tuple]:
    for phase, p in (("main", plan), ("val", val_plan)):
        if p is None:
            continue
        for k, task in enumerate(iter_tasks(p, text_field)):
            if phase == "main" and stop[0]:
                break
            if k >= skip[phase]:
                yield phase, task


def _run(item: tuple) -> tuple[str, encode.Encoded]:
    phase, task = item
    return phase, encode.run_task(task)


def ordered_results(items: Iterator[tuple], workers: int, init: tuple) -> Iterator[tuple]:
    """``_run`` of every item, in order: in this process (workers <= 1) or a pool of ``workers`` processes
    with at most ``2 * workers`` items in flight."""
    if workers <= 1:
        encode.init_worker(*init)
        for item in items:
            yield _run(item)
        return
    import multiprocessing

    with _workers_skip_main_script():
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=encode.init_worker, initargs=init)
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.apply_async(_run, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


@contextlib.contextmanager
def _workers_skip_main_script() -> Iterator[None]:
    """Processes spawned meanwhile do not run this process's main script again: the workers need only
    ``scaling.data``, and a console script (``scaling-prepare``, ``scaling-train``) would import torch in
    each of them (about 2 CPU-s and 190 MB per worker)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Progress:
    """A tqdm bar with bytes, documents, tokens and tokens/s, on a terminal (or when asked)."""

    def __init__(self, enabled: Optional[bool]):
        on = sys.stderr.isatty() if enabled is None else enabled
        self.bar, self.t0 = None, time.perf_counter()
        if on:
            from tqdm import tqdm

            self.bar = tqdm(unit="B", unit_scale=True, desc="preparing", file=sys.stderr, mininterval=0.5)

    def update(self, nbytes: int, stats: Stats) -> None:
        if self.bar is not None:
            rate = stats.tokens / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix(docs=f"{stats.docs:,}", tokens=f"{stats.tokens:,}", tok_s=f"{rate:,.0f}",
                                 refresh=False)
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tokenize(work: Path, plan: Plan, val_plan: Optional[Plan], cfg, tokenizer_name: str, dtype: np.dtype,
             doc_sep: str) -> tuple[Stats, dict]:
    """Write the shards of ``plan`` (and of ``val_plan``, all held out) into ``work``; (stats, shards by split)."""
    writers = {s: ShardWriter(work, s, dtype, int(cfg.shard_tokens)) for s in ("train", "val")}
    stats = _resume(work, plan, val_plan, writers)
    stop, bad = [False], {}
    init = (str(work), tokenizer_name, doc_sep, float(cfg.val_fraction), np.dtype(dtype).name)
    items = _phased(plan, val_plan, cfg.text_field, dict(stats.done), stop)
    bar = Progress(cfg.progress)
    try:
        for phase, enc in ordered_results(items, int(cfg.workers), init):
            stats.done[phase] += 1
            if phase == "main" and stop[0]:
                continue
            if phase == "main" and plan.mode == "docs" and cfg.max_bytes is not None:
                enc = _cap(enc, stats, int(cfg.max_bytes), stop)
            if phase == "val":
                enc.val[:] = True
            _check_bad(bad, enc)
            stats.skipped += enc.skipped
            completed = _route(enc, writers, cfg.val_tokens, stats)
            bar.update(int(enc.nbytes.sum()), stats)
            if completed:
                _save_progress(work, plan, val_plan, writers, stats)
        _check_bad(bad, None)
    finally:
        bar.close()
    return stats, {s: w.finish() for s, w in writers.items()}


def _cap(enc: encode.Encoded, stats: Stats, max_bytes: int, stop: list) -> encode.Encoded:
    """Documents are taken whole while the bytes read stay within the cap; reading stops at the first that
    would cross it."""
    room = max_bytes - stats.bytes
    keep = int(np.searchsorted(np.cumsum(enc.nbytes), room, side="right"))
    if keep == len(enc.nbytes):
        return enc
    stop[0] = stats.truncated = True
    n_tok = int(enc.lengths[:keep].sum())
    return encode.Encoded(enc.tokens[:n_tok], enc.lengths[:keep], enc.nbytes[:keep], enc.val[:keep], enc.rel,
                          enc.skipped, enc.bad)


def _route(enc: encode.Encoded, writers: dict, val_tokens: Optional[int], stats: Stats) -> bool:
    """Each document to its split (held-out ones beyond ``val_tokens`` go to train); True when a shard closed."""
    val = enc.val.copy()
    if val_tokens is not None and val.any():
        cum = writers["val"].tokens + np.cumsum(np.where(val, enc.lengths, 0))
        val &= cum <= int(val_tokens)
    done = False
    if not val.any():  # the usual task once the validation budget is full: no mask, no copy
        done = writers["train"].add(enc.tokens, enc.lengths, enc.nbytes)
    else:
        mask = np.repeat(val, enc.lengths)
        for split, docs, toks in (("train", ~val, ~mask), ("val", val, mask)):
            if docs.any():
                done |= writers[split].add(enc.tokens[toks], enc.lengths[docs], enc.nbytes[docs])
    stats.docs += len(enc.lengths)
    stats.bytes += int(enc.nbytes.sum())
    stats.tokens += len(enc.tokens)
    return done


def _check_bad(bad: dict, enc: Optional[encode.Encoded]) -> None:
    """Collect bad lines per file; raise once a file with bad lines is finished (count and first line)."""
    if enc is not None:
        for rel, (count, first, what) in enc.bad.items():
            entry = bad.setdefault(rel, [0, first, what])
            entry[0] += count
    for rel, (count, first, what) in list(bad.items()):
        if enc is None or enc.rel != rel:
            raise DataError(f"{rel}: {count} line(s) unusable, first at line {first} ({what}); allowed: one JSON "
                            "object per line with a string in data.text_field")


def _fingerprints(plan: Plan, val_plan: Optional[Plan]) -> list:
    return [plan.fingerprint, val_plan.fingerprint if val_plan is not None else None]


def _save_progress(work: Path, plan: Plan, val_plan: Optional[Plan], writers: dict, stats: Stats) -> None:
    state = {"fingerprint": _fingerprints(plan, val_plan), "done": stats.done, "docs": stats.docs,
             "bytes": stats.bytes, "tokens": stats.tokens, "skipped": stats.skipped,
             "writers": {s: w.state() for s, w in writers.items()}}
    tmp = work / f".{PROGRESS}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / PROGRESS)


def _resume(work: Path, plan: Plan, val_plan: Optional[Plan], writers: dict) -> Stats:
    path = work / PROGRESS
    if not path.is_file():
        return Stats()
    state = json.loads(path.read_text())
    if state["fingerprint"] != _fingerprints(plan, val_plan):
        raise DataError(f"data.source={plan.source!r} changed since the interrupted preparation in {work} "
                        f"(fingerprint {state['fingerprint'][0][:12]}, now {plan.fingerprint[:12]}); restore the "
                        "corpus, or delete that folder to prepare from the start")
    for split, w in writers.items():
        w.restore(state["writers"][split])
    return Stats(docs=state["docs"], bytes=state["bytes"], tokens=state["tokens"], skipped=state["skipped"],
                 done=state["done"])
