"""WSD branching against separate cosine runs: FLOPs spent and final losses, k token budgets per size.

Per size: one trunk at constant lr to (1 - f) D_k keeping a checkpoint at each (1 - f) D_i, then one
cooldown branch per budget (its own run and record); against one cosine run per budget (warmup, cosine
to 10% of the peak lr, and cosine to 0 as the cooldowns end). FLOPs of the branching side count the trunk once (``scaling.run.branch.sweep_flops``).

    python bench/bench_wsd.py            # 2 sizes x 4 budgets, ~2-4 min on 2 CPU cores
    python bench/bench_wsd.py --lrs 1.5e-3,3e-3,6e-3,1.2e-2   # each schedule at its best lr, ~4x longer
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from scaling.sweep.branch_plan import plan_branches, sweep_flops
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

BASE = ["model=tiny", "model.context=64", "train.batch_size=8", "train.eval_every=0", "train.eval_tokens=4096",
        "train.final_eval_tokens=32768", "train.threads=1", "train.checkpoint_every=0", "data.max_bytes=4000000",
        "logger=none", "optim.lr=3e-3", "optim.warmup_steps=20"]


def run(run_dir: Path, *overrides: str) -> dict:
    result = run_training(compose_run_config([*BASE, *overrides]), run_dir)
    assert result["status"] == "completed", result
    return result


def best(results: list[dict], lrs: list[float]) -> tuple[float, float]:
    """(lowest val loss, its lr) over the runs of one budget at each lr."""
    i = min(range(len(lrs)), key=lambda k: results[k]["val_loss"])
    return results[i]["val_loss"], lrs[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,64")
    ap.add_argument("--unit-steps", type=int, default=100, help="budgets are 3,4,5,6 x this many steps")
    ap.add_argument("--cooldown", type=float, default=0.15)
    ap.add_argument("--lrs", default="3e-3", help="peak lrs; each schedule is reported at its best one per budget")
    args = ap.parse_args()
    tps = 8 * 64
    budgets = [m * args.unit_steps * tps for m in (3, 4, 5, 6)]
    lrs = [float(x) for x in args.lrs.split(",")]
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for width in (int(w) for w in args.widths.split(",")):
            size = [f"model.width={width}", f"model.heads={max(1, width // 16)}"]
            bp = plan_branches(budgets, args.cooldown, tokens_per_step=tps)
            wsd = [f"optim.cooldown_fraction={args.cooldown}", "optim.cooldown_shape=sqrt", "optim.final_lr_fraction=0.0"]
            runs = {kind: [[None] * len(lrs) for _ in bp.budgets] for kind in ("wsd", "cos", "cos0")}
            flops_wsd = flops_cos = 0.0
            for k, lr in enumerate(lrs):
                at = [*size, f"optim.lr={lr}"]
                trunk_dir = root / f"trunk-{width}-{lr}"
                trunk = run(trunk_dir, *at, *wsd, "optim.schedule=constant", f"train.tokens={bp.trunk_tokens}",
                            f"train.keep_at_tokens=[{','.join(map(str, bp.starts))}]")
                for i in range(len(bp.budgets)):
                    tokens, start = bp.branch(i)
                    runs["wsd"][i][k] = run(root / f"branch-{width}-{lr}-{i}", *at, *wsd, "optim.schedule=wsd",
                                            f"train.tokens={tokens}", f"train.branch_from={trunk_dir}",
                                            f"train.branch_tokens={start}")
                    runs["cos"][i][k] = run(root / f"cosine-{width}-{lr}-{i}", *at, "optim.schedule=cosine",
                                            f"train.tokens={tokens}")
                    runs["cos0"][i][k] = run(root / f"cosine0-{width}-{lr}-{i}", *at, "optim.schedule=cosine",
                                             "optim.final_lr_fraction=0.0", f"train.tokens={tokens}")
                flops_wsd = sweep_flops([trunk, *(r[k] for r in runs["wsd"])])  # one lr's sweep
                flops_cos = sweep_flops([r[k] for r in runs["cos"]])
            for i in range(len(bp.budgets)):
                rows.append((width, runs["wsd"][i][0]["tokens"], *(best(runs[kind][i], lrs) for kind in ("wsd", "cos", "cos0"))))
            rows.append((width, "all", flops_wsd, flops_cos, None))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"python {platform.python_version()}, torch {torch.__version__}; date {datetime.date.today()}; "
          f"wall {time.time() - t0:.0f} s")
    tuned = len(lrs) > 1
    print(f"budgets (tokens): {budgets}; cooldown {args.cooldown} (1 - sqrt) to 0; warmup 20 steps; peak lrs {lrs}"
          + ("; each loss at its schedule's best lr (in brackets)" if tuned else ""))
    print("| width | tokens | WSD branch val loss | cosine to 10% | rel. diff | cosine to 0 | rel. diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")

    def cell(loss_lr: tuple[float, float]) -> str:
        return f"{loss_lr[0]:.4f}" + (f" ({loss_lr[1]:g})" if tuned else "")

    for width, tokens, a, b, c in rows:
        if tokens == "all":
            print(f"| {width} | FLOPs (6ND), all budgets, one lr | {a:.3e} | {b:.3e} | ratio {a / b:.1%} | {b:.3e} | ratio {a / b:.1%} |")
        else:
            print(f"| {width} | {tokens:,} | {cell(a)} | {cell(b)} | {a[0] / b[0] - 1:+.2%} | {cell(c)} | {a[0] / c[0] - 1:+.2%} |")

if __name__ == "__main__":
    main()
