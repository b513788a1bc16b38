"""muP transfer: the best learning rate at width 64 against widths 4-8x wider, under sp and mup.

Short real runs (``run_training``) on an LR grid with factor-2 steps; the best LR per width is the grid
point of lowest final validation loss. Under mup (base width 64) the best should move by at most one grid
step; under sp it should shift down as width grows. Also writes a coordinate-check plot: mean |activation|
of the last block and of the logits after a few AdamW steps, against width.

    python bench/bench_mup.py --jobs 2     # widths 64, 256, 512; ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaling.model.coord_check import activation_scales
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

BASE = ["model=tiny", "model.context=64", "model.head_dim=16", "model.depth=2",
        "model.base_depth=2", "model.tie_embeddings=false", "train.batch_size=8", "train.eval_every=0",
        "train.final_eval_tokens=16384", "train.threads=1", "train.checkpoint_every=0", "data.max_bytes=4000000",
        "logger=none", "optim.warmup_steps=10", "optim.weight_decay=0.0"]


def final_loss(run_dir: Path, *overrides: str) -> float:
    """Final validation loss of one short run (inf if it diverged or failed)."""
    r = run_training(compose_run_config([*BASE, *overrides]), run_dir)
    return r["val_loss"] if r["status"] == "completed" and r["val_loss"] is not None else math.inf


def coordinate_check(widths, param: str) -> list[dict[str, float]]:
    """Activation scales (``scaling.model.coord_check``) at each width, base width 64."""
    return [{"width": w, **activation_scales(param, w, base_width=64)} for w in widths]


def plot(checks: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("block", "logits")):
        for param, rows in checks.items():
            ax.plot([r["width"] for r in rows], [r[key] for r in rows], marker="o", label=param)
        ax.set(xscale="log", yscale="log", xlabel="width", ylabel=f"mean |{key}|", title=f"{key} after 4 steps")
        ax.set_xticks([r["width"] for r in rows])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,256,512", help="first = base width of mup")
    ap.add_argument("--lrs", default="0.00025,0.0005,0.001,0.002,0.004,0.008,0.016,0.032")
    ap.add_argument("--tokens", type=int, default=200 * 512)
    ap.add_argument("--out", default="bench/mup_coord_check.png")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    args = ap.parse_args()
    widths, lrs = [int(w) for w in args.widths.split(",")], [float(x) for x in args.lrs.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = {(param, width): [pool.submit(final_loss, Path(tmp) / f"{param}-{width}-{lr}", f"model.param={param}",
                                                f"model.width={width}", f"model.base_width={widths[0]}",
                                                f"optim.lr={lr}", f"train.tokens={args.tokens}")
                                    for lr in lrs]
                   for param in ("sp", "mup") for width in widths}
        table = {key: [f.result() for f in fs] for key, fs in futures.items()}
    checks = {p: coordinate_check([32, 64, 128, 256, 512], p) for p in ("sp", "mup")}
    plot(checks, Path(args.out))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}; "
          f"date {datetime.date.today()}; wall {time.time() - t0:.0f} s; {args.tokens:,} tokens per run")
    print("| param | width | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |")
    print("| --- | --- | " + " | ".join("---" for _ in lrs) + " | --- |")
    best = {}
    for (param, width), losses in table.items():
        i = min(range(len(lrs)), key=losses.__getitem__)
        best[param, width] = i
        print(f"| {param} | {width} | " + " | ".join(f"{x:.4f}" for x in losses) + f" | {lrs[i]:g} |")
    for param in ("sp", "mup"):
        shifts = ", ".join(f"{best[param, w] - best[param, widths[0]]:+d} at width {w}" for w in widths[1:])
        print(f"{param}: best lr moves (grid steps from width {widths[0]}): {shifts}")
    print(f"coordinate check ({args.out}), mean |activation| at widths 32..512:")
    for param, rows in checks.items():
        print(f"  {param} block: " + ", ".join(f"{r['block']:.3g}" for r in rows)
              + "; logits: " + ", ".join(f"{r['logits']:.3g}" for r in rows))


if __name__ == "__main__":
    main()
