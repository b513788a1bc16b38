"""WSD cooldowns never trained: predict_branches on a real trunk with 4 cooldown branches.

Trains one shape of ``+sweep=wsd_branches`` with ``scaling-train`` (a constant-lr trunk and 4 cooldown
branches of budgets 2, 3, 4, 6 x ``--unit-steps`` steps, each its own run) on the embedded corpus, then
fits a loss-curve law to the trunk plus one branch (``--fit-branch``, default the longest) and predicts
the final validation loss of the other 3, against what they measured. FLOPs saved: the own FLOPs of the 3
branches not trained over the FLOPs of all 5 runs (the trunk counted once).

    python bench/bench_branches.py                 # ~2 min of training on 2 CPU cores, then the fits
    python bench/bench_branches.py --runs-dir runs/bench_branches   # keep the runs (reused when rerun)
    python bench/bench_branches.py --replicates 8  # and 7 more cooldowns of each branch, on other batches
    python bench/bench_branches.py --replicates 8 --mean-curves  # fit and measure the replicates' mean
    python bench/bench_branches.py --replicates 8 --minima  # and each prediction's range over the minima

The fit uses ``val/loss`` at the evaluation points (every ``--eval-every`` steps, on the same held-out
windows as the final evaluation: ``eval_tokens = final_eval_tokens``). A summary line per law, fitted
branch and loss column shows what the choice of points does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from statistics import mean, stdev
from typing import Optional

from omegaconf import OmegaConf

from analysis import load_curves
from analysis.curve_laws.branches import predict_branches, split_trunk
from scaling.sweep.branch_plan import sweep_flops

MULTIPLES = (2, 3, 4, 6)
LAWS = ("multipower", "tissue", "mpexp")
VARIANTS = [  # (loss column, label, options of predict_branches) of the summary
    ("val/loss", "code", {}), ("val/loss", "code, delta 5e-3", {"delta": 5e-3}),
    ("val/loss", "paper", {"warmup": "paper"}), ("train/loss", "code", {}),
]
CONTEXT = 64


def train(runs_dir: Path, args: argparse.Namespace, *extra: str) -> float:
    """The sweep through scaling-train (``extra``: more overrides); returns its wall time."""
    budgets = ",".join(str(m * args.unit_steps * args.batch * CONTEXT) for m in MULTIPLES)
    cmd = [str(Path(sys.executable).parent / "scaling-train"), "+sweep=wsd_branches", f"sweep.budgets=[{budgets}]",
           f"sweep.shapes=[{{width:{args.width},depth:2}}]", f"sweep.cooldown_fraction={args.cooldown}",
           f"model.context={CONTEXT}", f"train.batch_size={args.batch}", f"train.eval_every={args.eval_every}",
           f"train.log_every={min(10, args.eval_every)}",  # evaluations happen on logged steps
           "train.eval_tokens=16384", "train.final_eval_tokens=16384", "train.threads=1", "train.checkpoint_every=0",
           "data.max_bytes=4000000", "logger=none", f"optim.lr={args.lr}", f"train.seed={args.seed}",
           f"runs_dir={runs_dir}", *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if proc.returncode != 0:
        raise SystemExit(f"scaling-train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.time() - t0


def replicate_seeds(args: argparse.Namespace) -> list[int]:
    """Data seeds of the extra cooldowns of every branch (never the trunk's own, ``--seed``)."""
    return [args.seed + 1000 * k for k in range(1, args.replicates)]


def data_seeds(sweep_dir: Path) -> dict[str, Optional[int]]:
    """``train.data_seed`` of every run of the sweep (None: the run's seed), from its config."""
    return {p.parent.name: OmegaConf.load(p).train.get("data_seed") for p in sweep_dir.glob("*/config.yaml")}


def replicate_finals(records: list[dict], seeds: dict[str, Optional[int]]) -> dict[tuple[int, int], list[float]]:
    """Final val loss of every cooldown of each (branch tokens, tokens), the original first."""
    finals: dict[tuple[int, int], list[float]] = {}
    for r in sorted(records, key=lambda r: seeds.get(r["run_id"]) is not None):
        if r.get("role") == "branch" and r.get("status") == "completed":
            finals.setdefault((r["branch_tokens"], r["tokens"]), []).append(float(r["val_loss"]))
    return finals


def mean_curves(curves, everything, records: list[dict], all_records: list[dict]):
    """``curves`` with each original branch's losses replaced by the mean, step by step, over its replicates."""
    key = {r["run_id"]: (r.get("branch_tokens"), r["tokens"]) for r in all_records if r.get("role") == "branch"}
    group = everything["run_id"].map(key)
    means = everything[group.notna()].groupby([group[group.notna()], everything["step"]])["val/loss"].mean()
    out = curves.copy()
    for r in records:
        if r["run_id"] in key:
            rows = out["run_id"] == r["run_id"]
            out.loc[rows, "val/loss"] = [means.get((key[r["run_id"]], s), float("nan")) for s in out.loc[rows, "step"]]
    return out


def held_out(curves, law: str, fit: int, loss: str, **options) -> tuple[list[dict], list[str]]:
    """Predicted vs measured final val loss of every branch but branch ``fit`` (index by length)."""
    trunk, branches = split_trunk(curves.assign(loss=curves[loss]))
    ids = sorted(branches, key=lambda r: branches[r]["step"].max())
    per = {r: branches[r]["tokens"].iloc[-1] / branches[r]["step"].iloc[-1] for r in ids}  # tokens per step
    point = {r: int(round(branches[r]["branch_tokens"].iloc[0] / per[r])) for r in ids}
    cool = {r: int(branches[r]["step"].max()) - point[r] for r in ids}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, res = predict_branches(trunk, {ids[fit]: branches[ids[fit]]}, branch_points=sorted(point.values()),
                                      cooldowns=sorted(set(cool.values())), law=law, return_fit=True,
                                      **options)
    rows = []
    for r in ids:
        if r == ids[fit]:
            continue
        pred = table[table["predicted"] & (table["branch_step"] == point[r]) & (table["cooldown_steps"] == cool[r])]
        measured = float(branches[r]["val/loss"].dropna().iloc[-1])
        rows.append({"run_id": r, "branch_step": point[r], "cooldown_steps": cool[r], "measured": measured,
                     "key": (int(branches[r]["branch_tokens"].iloc[0]), int(branches[r]["tokens"].iloc[-1])),
                     "predicted": float(pred["loss"].iloc[0]), "error": float(pred["loss"].iloc[0]) / measured - 1,
                     "low": float(pred["loss_low"].iloc[0]), "high": float(pred["loss_high"].iloc[0]),
                     **{k: float(pred[k].iloc[0]) for k in ("loss_minima_low", "loss_minima_high") if k in pred}})
    return rows, res.warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--unit-steps", type=int, default=100, help="branch budgets are 2, 3, 4, 6 x this many steps")
    ap.add_argument("--cooldown", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=8, help="sequences of 64 tokens per step")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", default="code", help="warmup convention of the laws (code or paper)")
    ap.add_argument("--fit-branch", type=int, default=3, help="index (by length) of the branch fitted with the trunk")
    ap.add_argument("--runs-dir", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--bootstrap", type=int, default=0, help="resamples for the 95%% band of each prediction")
    ap.add_argument("--no-grid", action="store_true", help="skip the summary grid (every law, fitted branch, variant)")
    ap.add_argument("--replicates", type=int, default=1,
                    help="cooldowns of every branch on different batches (sweep.cooldown_seed; the trunk reused): "
                         "the measured loss is their mean, and its spread is the noise of a measured point")
    ap.add_argument("--minima", action="store_true",
                    help="the range of each prediction over the near-optimal minima of the fit (minima=True)")
    ap.add_argument("--mean-curves", action="store_true",
                    help="fit and measure each branch by the step-by-step mean of its replicates (with --replicates)")
    args = ap.parse_args()
    if args.mean_curves and args.replicates < 2:
        ap.error("--mean-curves needs --replicates 2 or more")
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(args.runs_dir or tmp)
        wall = train(runs_dir, args)
        if args.replicates > 1:
            wall += train(runs_dir, args, f"sweep.cooldown_seed={','.join(map(str, replicate_seeds(args)))}")
        seeds = data_seeds(runs_dir / "wsd")
        all_records = [json.loads(p.read_text()) for p in (runs_dir / "wsd").glob("*/result.json")]
        finals = replicate_finals(all_records, seeds)
        records = [r for r in all_records if seeds.get(r["run_id"]) is None]  # the fit sees the original runs
        everything = load_curves(runs_dir / "wsd", loss="val/loss")
        curves = everything[everything["run_id"].isin({r["run_id"] for r in records})]
        if args.mean_curves:
            curves = mean_curves(curves, everything, records, all_records)
        t0 = time.time()
        results = {law: held_out(curves, law, args.fit_branch, "val/loss", warmup=args.warmup,
                                  bootstrap=args.bootstrap, minima=args.minima) for law in LAWS}
        fit_s = (time.time() - t0) / len(LAWS)
        summary = [] if args.no_grid else [(law, label, k, loss, held_out(curves, law, k, loss, **options)[0])
                                           for loss, label, options in VARIANTS for law in LAWS
                                           for k in range(len(MULTIPLES))]
    by_id = {r["run_id"]: r for r in records}
    all_flops = sweep_flops(records)
    saved = sum(by_id[row["run_id"]]["own_flops"]["6nd"] for row in results["tissue"][0])
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), python "
          f"{platform.python_version()}; date {datetime.date.today()}; training {wall:.0f} s "
          f"({5 + len(MULTIPLES) * (args.replicates - 1)} runs), "
          f"one fit + predictions {fit_s:.1f} s")
    print(f"trunk + branches of {[m * args.unit_steps for m in MULTIPLES]} steps (cooldown {args.cooldown}, 1 - sqrt "
          f"to 0), width {args.width}, depth 2, {args.batch * CONTEXT} tokens/step, lr {args.lr:g}; fitted: trunk + "
          f"branch {args.fit_branch} (val/loss every {args.eval_every} steps), warmup convention {args.warmup}, "
          f"seed {args.seed}")
    band = " | 95% band | measured in band" if args.bootstrap else ""
    reps = f" | mean of {args.replicates} cooldowns (sd) | error vs mean | within 0.5%" if args.replicates > 1 else ""
    near = " | range over the minima | measured in range" if args.minima else ""
    extra = 2 * bool(band) + 3 * bool(reps) + 2 * bool(near)
    print(f"| law | branch point | cooldown | measured val loss | predicted | error | within 0.5%{band}{reps}{near} |")
    print("| --- " * (7 + extra) + "|")
    for law, (rows, warns) in results.items():
        for r in rows:
            inside = f" | {r['low']:.4f}-{r['high']:.4f} | {'yes' if r['low'] <= r['measured'] <= r['high'] else 'no'}"
            print(f"| {law} | {r['branch_step']} | {r['cooldown_steps']} | {r['measured']:.4f} | {r['predicted']:.4f} "
                  f"| {r['error']:+.2%} | {_within(r['error'])}{inside if band else ''}"
                  f"{_against_mean(r, finals[r['key']]) if reps else ''}"
                  f"{_in_range(r, mean(finals[r['key']])) if near else ''} |")
        if warns:
            print(f"| {law} | fit warnings: {'; '.join(warns)} |" + " |" * (5 + extra))
    print(f"FLOPs (6ND): all 5 runs {all_flops:.3e}; the 3 branches not trained {saved:.3e}: "
          f"saved {saved / all_flops:.1%}")
    if not summary:
        return
    print("\nerror of each branch not fitted (branch point/cooldown: error), by law, warmup convention (Huber delta "
          "1e-3 unless given), fitted branch and loss column:")
    for law, label, k, loss, rows in summary:
        errs = " ".join(f"{r['branch_step']}/{r['cooldown_steps']}: {r['error']:+.2%}" for r in rows)
        worst = max(abs(r["error"]) for r in rows)
        print(f"  {law:10s} {label:16s} trunk + branch {k} ({loss}): {errs}; max {worst:.2%}")

def _within(error: float) -> str:
    return "yes" if abs(error) <= 0.005 else "no"


def _in_range(row: dict, measured: float) -> str:
    low, high = row["loss_minima_low"], row["loss_minima_high"]
    return f" | {low:.4f}-{high:.4f} | {'yes' if low <= measured <= high else 'no'}"


def _against_mean(row: dict, finals: list[float]) -> str:
    """The table cells comparing a prediction with the mean of the branch's replicate cooldowns."""
    m, sd = mean(finals), stdev(finals) if len(finals) > 1 else float("nan")
    error = row["predicted"] / m - 1
    return f" | {m:.4f} ({sd:.4f}, {sd / m:.2%}; n {len(finals)}) | {error:+.2%} | {_within(error)}"


if __name__ == "__main__":
    main()
