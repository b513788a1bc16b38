"""The whole CPU Shakespeare command: nanoGPT's (its README) against ``scaling-train``, side by side.

nanoGPT's README trains a small character-level GPT on a CPU with

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

This benchmark times that whole command (process start to exit, its data prepared beforehand by its own
``data/shakespeare_char/prepare.py`` from the local tinyshakespeare copy, so nothing is downloaded) and
``scaling-train`` with the same model, data split, batch, schedule and optimizer, each ``--repeats`` times,
alternating. Our command runs eagerly (the CPU default: no torch.compile) and, with ``--compile``, compiled
with a cold Inductor cache (a fresh ``TORCHINDUCTOR_CACHE_DIR``) and then a warm one. It prints wall time,
the training loop's tokens per second and the final validation loss of each.

    python bench/bench_nanogpt.py --nanogpt ~/src/nanoGPT       # both sides
    python bench/bench_nanogpt.py                               # our side only (says so)
    python bench/bench_nanogpt.py --iters 300 --compile         # a quick check, compiled too

nanoGPT is not vendored here and cannot be fetched by the benchmark: without ``--nanogpt DIR`` (a checkout
of https://github.com/karpathy/nanoGPT) its column is absent, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SHAKESPEARE, cpu_name, our_overrides  # noqa: E402

BIN = Path(sys.executable).parent
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--dropout=0.0"]


def prepare_nanogpt(root: Path, source: Path) -> None:
    """nanoGPT's own data preparation, on the local copy of its input (its script downloads only when absent)."""
    data = root / "data" / "shakespeare_char"
    if not (data / "prepare.py").is_file() or not (root / "train.py").is_file():
        sys.exit(f"error: --nanogpt={root} is not a nanoGPT checkout (no train.py, data/shakespeare_char/prepare.py)")
    if not (data / "input.txt").is_file():
        shutil.copyfile(source, data / "input.txt")
    if not (data / "train.bin").is_file():
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)


def run_nanogpt(root: Path, iters: int) -> dict:
    """nanoGPT's whole command; throughput from its per-iteration ``time`` lines, the last ``val loss`` printed."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "train.py", *NANOGPT_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}",
               f"--out_dir={tmp}/out"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
    ms = [float(m) for m in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", out, re.M)][1:]  # 1st: warm-up
    val = re.findall(r"val loss ([\d.]+)", out)
    return {"wall": wall, "tokens_per_s": 12 * 64 / (sum(ms) / len(ms) / 1000) if ms else float("nan"),
            "val_loss": float(val[-1]) if val else float("nan"), "compile_s": 0.0}


def run_ours(source: Path, iters: int, compile_model: bool, cache: Path | None) -> dict:
    """``scaling-train`` as one command; loop throughput from metrics.jsonl's steady intervals."""
    env = dict(os.environ)
    if cache is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(BIN / "scaling-train"), *our_overrides(source, iters, Path(tmp), compile_model)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        (run_dir,) = [p.parent for p in Path(tmp).rglob("result.json")]
        result = json.loads((run_dir / "result.json").read_text())
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    steady = sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else float("nan")  # median, past the 1st
    first = rows[0]["tokens"] / rates[0] if rates else 0.0
    # compile cost: the first logged interval beyond what it takes at the steady rate
    compile_s = max(0.0, first - rows[0]["tokens"] / steady) if compile_model and steady == steady else 0.0
    return {"wall": wall, "tokens_per_s": steady, "val_loss": result["val_loss"], "compile_s": compile_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout (its data is prepared from --source)")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--source", type=Path, default=SHAKESPEARE)
    p.add_argument("--compile", action="store_true", help="also run ours compiled, cold and warm Inductor cache")
    args = p.parse_args()
    if not args.source.is_file():
        sys.exit(f"error: --source={args.source} not found (tinyshakespeare lives in ../shared/data)")
    import torch

    sides: dict[str, list[dict]] = {}
    if args.nanogpt:
        prepare_nanogpt(args.nanogpt.expanduser().resolve(), args.source)
    for _ in range(args.repeats):
        if args.nanogpt:
            sides.setdefault("nanoGPT (README CPU command)", []).append(run_nanogpt(args.nanogpt.expanduser().resolve(), args.iters))
        sides.setdefault("scaling-train (eager, the CPU default)", []).append(run_ours(args.source, args.iters, False, None))
        if args.compile:
            with tempfile.TemporaryDirectory() as cache:
                sides.setdefault("scaling-train compiled, cold cache", []).append(
                    run_ours(args.source, args.iters, True, Path(cache)))
                sides.setdefault("scaling-train compiled, warm cache", []).append(
                    run_ours(args.source, args.iters, True, Path(cache)))
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f}; date {date.today()}")
    print(f"config: nanoGPT shakespeare-char CPU: 4 layers, 4 heads, width 128, context 64, batch 12, {args.iters} "
          f"iterations, lr 1e-3 -> 1e-4, warmup 100; best wall of {args.repeats}")
    if not args.nanogpt:
        print("nanoGPT: absent (no --nanogpt DIR given; nanoGPT is not vendored and is not fetched): "
              "only our side was run, no speed-up against nanoGPT is claimed")
    base = min(r["wall"] for r in sides["nanoGPT (README CPU command)"]) if args.nanogpt else None
    print("| command | wall s (best) | speed-up, whole command | loop tokens/s | compile s | val loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, results in sides.items():
        best = min(results, key=lambda r: r["wall"])
        speed = f"{base / best['wall']:.2f}x" if base else "n/a"
        print(f"| {name} | {best['wall']:.1f} | {speed} | {best['tokens_per_s']:,.0f} | {best['compile_s']:.1f} | "
              f"{best['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
