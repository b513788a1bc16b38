"""Training-loop throughput on CPU: nanoGPT's Shakespeare baseline, ours against a plain PyTorch loop.

Runs, side by side in one invocation, (a) ``bench/baseline_gpt.py``, a straightforward eager PyTorch
implementation of nanoGPT's CPU Shakespeare configuration, and (b) ``scaling-train`` with the same
model, data, batch, schedule and optimizer; then prints a table: tokens/s of the training loop, the
validation loss after the last iteration, and the speed-up. Each side runs ``--repeats`` times,
alternating, and the best throughput of each is kept (the machine may be shared).

    python bench/bench_train.py                # 2,000 iterations, as nanoGPT's README
    python bench/bench_train.py --iters 300    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
BATCH, CONTEXT = 12, 64


def loop_seconds(run_dir: Path) -> float:
    """Loop time of a run: the sum of its logged intervals (compilation included in the first), as the
    baseline times its loop."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    prev, seconds = 0, 0.0
    for row in rows:
        if row.get("tokens_per_s"):
            seconds += (row["tokens"] - prev) / row["tokens_per_s"]
            prev = row["tokens"]
    return seconds


def our_overrides(source: Path, iters: int, runs_dir: Path, compile_model: bool) -> list[str]:
    return [
        "data=shakespeare-char", f"data.source={source}",
        "model.width=128", "model.depth=4", "model.heads=4", "model.context=64", "model.pos=learned",
        "model.mlp=gelu", "model.bias=false", "model.tie_embeddings=true", "model.dropout=0",
        f"train.batch_size={BATCH}", f"train.tokens={iters * BATCH * CONTEXT}", "train.eval_every=0",
        f"train.final_eval_tokens={153_600}", "train.log_every=50", "train.checkpoint_every=0",
        f"train.compile={str(compile_model).lower()}", "optim.fused=true",
        "optim.lr=1e-3", "optim.final_lr_fraction=0.1", "optim.warmup_steps=100", "optim.beta1=0.9",
        "optim.beta2=0.99", "optim.weight_decay=0.1", "optim.grad_clip=1.0", "optim.schedule=cosine",
        "logger=none", f"runs_dir={runs_dir}", "name=bench",
    ]


def run_ours(source: Path, iters: int, compile_model: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(BIN / "scaling-train"), *our_overrides(source, iters, Path(tmp), compile_model)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        (run_dir,) = [p.parent for p in Path(tmp).rglob("result.json")]
        result = json.loads((run_dir / "result.json").read_text())
        seconds = loop_seconds(run_dir)
    return {"tokens_per_s": result["tokens"] / seconds, "train_seconds": seconds, "val_loss": result["val_loss"]}


def export_splits(prepared, folder: Path) -> dict[str, Path]:
    """The train and validation ids as training reads them (the prepared shards, through the data layer's
    arrays), written as raw files for the baseline, which reads them as nanoGPT reads its ``.bin`` files."""
    paths = {}
    for split in ("train", "val"):
        tokens = getattr(prepared, split)
        paths[split] = folder / f"{split}.raw"
        np.asarray(tokens[0:len(tokens)], dtype=prepared.meta["dtype"]).tofile(paths[split])
    return paths


def run_baseline(paths: dict[str, Path], vocab: int, dtype: str, iters: int) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "baseline_gpt.py"), "--train", str(paths["train"]),
           "--val", str(paths["val"]), "--dtype", dtype, "--vocab", str(vocab), "--iters", str(iters)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--source", type=Path, default=SHAKESPEARE)
    p.add_argument("--no-compile", action="store_true", help="run our trainer eagerly too")
    args = p.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: --source={args.source} not found (tinyshakespeare lives in ../shared/data)")

    import torch

    from scaling.config import DataConfig
    from scaling.data.prepare import prepare_data

    prepared = prepare_data(DataConfig(source=str(args.source), tokenizer="char", val_fraction=0.1, max_bytes=None))
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_splits(prepared, Path(tmp))
        for _ in range(args.repeats):
            for name, fn in (
                ("baseline (plain PyTorch)", lambda: run_baseline(paths, prepared.vocab_size, prepared.meta["dtype"],
                                                                  args.iters)),
                ("scaling-train", lambda: run_ours(args.source, args.iters, not args.no_compile)),
            ):
                t0 = time.time()
                res = fn()
                res["wall"] = time.time() - t0
                if name not in best or res["tokens_per_s"] > best[name]["tokens_per_s"]:
                    best[name] = res

    base = best["baseline (plain PyTorch)"]["tokens_per_s"]
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; date {date.today()}")
    print(f"config: nanoGPT shakespeare-char CPU: 4 layers, 4 heads, width 128, context 64, batch 12, "
          f"{args.iters} iterations, lr 1e-3 -> 1e-4, warmup 100; best of {args.repeats}")
    print(f"{'trainer':<26}{'tokens/s':>10}{'speed-up':>10}{'val loss':>10}{'loop s':>9}")
    for name, res in best.items():
        print(f"{name:<26}{res['tokens_per_s']:>10,.0f}{res['tokens_per_s'] / base:>9.2f}x"
              f"{res['val_loss']:>10.4f}{res['train_seconds']:>9.1f}")


if __name__ == "__main__":
    main()
