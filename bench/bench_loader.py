"""Loader throughput from shards: the host side of every training step (offsets of (seed, step), one gather
from the memmapped shards, int64 tensors), against the rate at which training consumes batches.

Writes synthetic GPT-2-sized shards (uint16, ``--shard-tokens`` each) under ``--tmp``, then times
``scaling.data.prefetch.step_batches`` (what the prefetcher's thread does per step) for: one shard (a plain
memmap), many shards (a ``TokenArray``, windows crossing shard ends), a two-source mixture, and
document-aligned windows. For reference it times the training step of the tiny CPU model on this machine;
a GPU step rate is stated in RESULTS.md. The shards are deleted afterwards.

    python bench/bench_loader.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from scaling.data.prefetch import step_batches
from scaling.data.shards import ShardWriter, TokenArray, open_tokens, HEADER_BYTES

SHAPES = ((16, 1024), (64, 1024), (8, 64))


def write_shards(folder: Path, n_shards: int, shard_tokens: int) -> list[np.memmap]:
    rng = np.random.default_rng(0)
    writer = ShardWriter(folder, "train", np.dtype(np.uint16), shard_tokens)
    for _ in range(n_shards):
        toks = rng.integers(0, 50257, shard_tokens, dtype=np.uint16)
        toks[::1000] = 50256  # a document every 1000 tokens
        lengths = np.full(shard_tokens // 1000, 1000, dtype=np.int64)
        writer.add(toks, lengths, lengths * 4)
    shards = writer.finish()
    return [open_tokens(folder / s.file, np.dtype(np.uint16), HEADER_BYTES, s.tokens) for s in shards], shards


def rate(tokens, context: int, batch: int, n: int) -> float:
    step_batches(tokens, context, batch, 0, 0)  # page in
    t0 = time.perf_counter()
    for step in range(n):
        step_batches(tokens, context, batch, 0, step)
    return n / (time.perf_counter() - t0)


def train_step_rate(n: int = 20) -> float:
    """Steps/s of the tiny model (conf/model/tiny.yaml: width 32, depth 2) on 8 x 64 tokens, on this CPU."""
    import torch

    from scaling.config import ModelConfig
    from scaling.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(width=32, depth=2, heads=2, context=64), 256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (8, 64))
    for i in range(n + 3):
        if i == 3:
            t0 = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--shard-tokens", type=int, default=5_000_000)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-loader-", dir=args.tmp))
    try:
        parts, infos = write_shards(work, args.shards, args.shard_tokens)
        starts = [work / s.index for s in infos]
        many = TokenArray(parts, doc_index=starts)
        half = len(many) // 2
        mixed = TokenArray(parts, segments=[("a", 0, half, 0.7), ("b", half, len(many), 0.3)], doc_index=starts)
        aligned = TokenArray(parts, doc_index=starts, align="bos")
        cases = {"one shard (memmap)": parts[0], f"{args.shards} shards (TokenArray)": many,
                 "mixture of 2 sources": mixed, "align=bos": aligned}
        print(f"| layout | " + " | ".join(f"{b} x {t}: batches/s (tokens/s)" for b, t in SHAPES) + " |")
        print("| --- |" + " --- |" * len(SHAPES))
        for name, tokens in cases.items():
            cells = []
            for b, t in SHAPES:
                r = rate(tokens, t, b, args.iters)
                cells.append(f"{r:,.0f} ({r * b * t / 1e6:,.1f}M)")
            print(f"| {name} | " + " | ".join(cells) + " |")
        steps = train_step_rate()
        print(f"\ntraining step of the tiny CPU model (8 x 64): {steps:,.1f} steps/s on this machine")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
