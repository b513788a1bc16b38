"""The adaptive study replayed offline on a study's real run records: the share of the fixed design's FLOPs
at which the stop rule holds, per seed design, candidate pool and stop rule.

The fixed design is the run folder of a fixed study (``scaling-study --design cosine``): its runs are the
sweep, their budgets and widths its grid, and its interval on ``a`` the width to reach. More folders of
the same sweep (runs trained at the widened grid's budgets and widths) add candidates. Every candidate is
a record with a measured loss: nothing is simulated. Pools: ``sweep`` (the fixed runs), ``inside``
(every record within the sweep's range of widths and budgets), ``all`` (every record). Seeds: the K
smallest budgets, M widths of each spread as ``scaling-study --adaptive --seed-widths M`` spreads them.
Each step adds one run (``analysis.replay``: the study's ``--batch 1``) and stops by ``goal_met``.

``--branches DIR``: the candidates are instead the cooldown branches of a WSD study's run folder
(``study-wsd``; pool ``branches``, and ``branches-budgets`` with the branches at the midpoint budgets of a
study run with the widened budgets, ``--pool budgets``), each costing its own cooldown plus the part of its trunk (up to its branch point) that no
branch chosen before has paid (``replay(..., groups=, shared=)``); the seed is taken among them the same
way. The fixed design (the first folder, cosine or WSD: a WSD folder's trunks count in its FLOPs, not in
its fit) still gives the width to reach and the FLOPs the shares are of.

    python bench/bench_adaptive_replay.py /tmp/qfix/runs/study-quick /tmp/mid/runs/study-quick
    python bench/bench_adaptive_replay.py FIXED MORE --seeds 3x2,2x3 --rules width,stable=0.5+dof=4
    python bench/bench_adaptive_replay.py FIXED --branches WSD/runs/study-wsd --pools branches

``--target`` is the study's (``a``, ``loss@N,D``, ...); ``--holdout RUN_DIR ...`` (held-out runs of one shape
and budget: a study's ``runs/<group>-holdout/<run>``) adds each replayed design's prediction of that run's
loss, from the law fitted to the design's points, and its error against each run's measurement. ``--law kaplan``:
the design's law (posterior, target, stop rule and held-out prediction) is the joint law of Kaplan et al. 2020
(``analysis.kaplan_joint``) instead of the parametric law.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from analysis import load_runs
from analysis.allocation import predict_loss
from analysis.kaplan_joint import kaplan_prediction
from analysis.parametric import fit_parametric
from analysis.next_run import LAWS, replay
from analysis.next_run_prefixes import Prefixes
from analysis.next_run_criteria import fit_posterior, interval, resolve_target
from scaling.study.adaptive import seed_design
from scaling.study.next_runs import parse_target

POOLS = ("sweep", "inside", "all")


def records(folders: list[Path], params: str, flops: str) -> pd.DataFrame:
    """The completed runs of every folder (the first folder's are the fixed design: ``fixed``), one row per run;
    ``own``: the FLOPs a run trains itself (a WSD branch its cooldown), ``role``: trunk, branch or run."""
    frames = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, folder in enumerate(folders):
            frames.append(load_runs(folder, params=params, flops=flops).assign(fixed=i == 0))
    runs = pd.concat(frames).drop_duplicates("run_id").reset_index(drop=True)
    runs["width"] = runs["width"].astype(int)
    own = runs[f"own_flops_{flops}"] if f"own_flops_{flops}" in runs else pd.Series(np.nan, index=runs.index)
    runs["own"] = own.fillna(runs["C"])
    runs["role"] = runs["role"].fillna("run") if "role" in runs else "run"
    if (runs.role == "branch").any():  # the trunk's FLOPs up to the branch point, 6 N D as the sweep counts
        runs["prefix"] = 6 * runs.N * runs.branch_tokens.astype(float)
    return runs


def design_flops(runs: pd.DataFrame) -> float:
    """What a design's runs cost: each run's own FLOPs, and each WSD trunk once, to its furthest branch point."""
    return float(runs.own.sum()) + trunks_of(runs).unpaid()


def trunks_of(pool: pd.DataFrame) -> Prefixes:
    """The WSD trunks the pool's branches share (none for separate runs), nothing paid yet."""
    if "prefix" not in pool:
        return Prefixes(None, None, len(pool))
    branches = pool.role == "branch"
    return Prefixes(pool.trunk.where(branches, None).tolist(), pool.prefix.where(branches, 0.0), len(pool))


def branch_pool(folder: Path, params: str, flops: str, fixed_runs: pd.DataFrame, midpoints: bool) -> pd.DataFrame:
    """The WSD branches of ``folder`` as candidates: trunk (group), prefix (the trunk's FLOPs to the branch
    point, 6 N D as the sweep counts), own (the cooldown's FLOPs), budget (``with_budgets_of`` the fixed design
    ``fixed_runs``); the branches at the sweep's budgets may seed (``fixed``), and with ``midpoints`` the
    branches at the budgets between them are candidates too (the study's ``--pool budgets``)."""
    runs = records([folder], params, flops)
    branches = runs[runs.role == "branch"].drop_duplicates(["width", "C"])  # a folder moved and relaunched: once
    branches = with_budgets_of(branches.reset_index(drop=True), fixed_runs)
    own = np.isin(branches.budget, grid(fixed_runs)[0])
    return branches[own | midpoints].reset_index(drop=True).assign(fixed=own[own | midpoints])


def grid(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The sweep's budgets (the fixed runs' C clustered within 5%, 3 significant digits) and their geometric
    midpoints."""
    budgets: list[float] = []
    for c in sorted(runs.loc[runs.fixed, "C"]):
        if not budgets or c > budgets[-1] * 1.05:
            budgets.append(float(f"{c:.3g}"))
    mids = [math.sqrt(a * b) for a, b in zip(budgets, budgets[1:])]
    return np.array(budgets), np.array(sorted(budgets + mids))


def with_budgets_of(pool: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each of ``pool``'s runs with its budget: the nearest in log C of the budgets and midpoints of the
    fixed design of ``runs`` (3 significant digits)."""
    _, levels = grid(runs)
    near = np.abs(np.log(pool["C"].to_numpy())[:, None] - np.log(levels)).argmin(axis=1)
    return pool.assign(budget=[float(f"{levels[k]:.3g}") for k in near])


def pool_of(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    fixed = runs[runs.fixed]
    if name == "sweep":
        keep = runs.fixed
    elif name == "inside":
        keep = runs.width.between(fixed.width.min(), fixed.width.max()) & runs.C.between(0.95 * fixed.C.min(), 1.05 * fixed.C.max())
    else:
        keep = runs.fixed | ~runs.fixed
    return runs[keep].reset_index(drop=True)


def seed_mask(pool: pd.DataFrame, n_budgets: int, n_widths: int | None) -> np.ndarray:
    """The seed as the adaptive study takes it (``seed_design``) among the pool's fixed runs."""
    fixed = [SimpleNamespace(shape={"width": r.width, "depth": r.depth}, budget=r.budget, row=i)
             for i, r in pool[pool.fixed].iterrows()]
    mask = np.zeros(len(pool), bool)
    mask[[r.row for r in seed_design(fixed, n_budgets, n_widths)]] = True
    return mask


def parse_rule(text: str) -> dict[str, float]:
    """``width`` -> {}; ``stable=0.5+dof=4`` -> {"stable": 0.5, "min_dof": 4}."""
    out: dict[str, float] = {}
    for part in text.split("+"):
        key, _, value = part.partition("=")
        if key == "stable":
            out["stable"] = float(value)
        elif key == "dof":
            out["min_dof"] = int(value)
        elif key != "width":
            raise SystemExit(f"--rules: {part!r} is not width, stable=S or dof=K")
    return out


def replay_row(pool: pd.DataFrame, init: np.ndarray, fixed: tuple[float, float, float], flops: float,
               criterion: str, rule: dict[str, float], max_share: float, target: object = "a",
               holdout: pd.DataFrame | None = None, law: str = "parametric") -> dict[str, object]:
    """One replay to the fixed width under ``rule``, seed and added runs together within ``max_share`` of the
    fixed FLOPs (the study's ``--max-flops``): share of the fixed FLOPs, the interval and the runs added.
    A pool with a ``prefix`` column is one of WSD branches (``branch_pool``)."""
    est, lo, hi = fixed
    branches = "prefix" in pool and (pool.role == "branch").all()
    cost = pool["own" if branches else "C"].to_numpy(float)
    shared = dict(groups=pool.trunk.tolist(), shared=pool.prefix.to_numpy(float)) if branches else {}
    seed_cost = (trunks_of(pool) if branches else Prefixes(None, None, len(pool))).pay_each(np.flatnonzero(init), cost)
    t = replay(pool.N.to_numpy(float), pool.D.to_numpy(float), pool.loss.to_numpy(float), init, target, criterion,
               cost=cost, stop_width=hi - lo, budget=max(0.0, max_share * flops - seed_cost), law=law, **rule, **shared)
    last = t.iloc[-1]
    added = [f"w{pool.width[k]}@{pool.budget[k]:.3g}" for k in t.point.iloc[1:]]
    design = init.copy()
    design[t.point.iloc[1:].to_numpy(int)] = True
    return {"holdout": holdout_errors(pool[design], holdout, law), "share": (seed_cost + t.attrs["spent"]) / flops, "seed_share": seed_cost / flops, "reached": t.attrs["reached"],
            "runs": int(init.sum()) + len(added), "a": last.estimate, "low": last.low, "high": last.high,
            "width": last.width, "holds_fixed": bool(last.low <= est <= last.high), "added": ", ".join(added)}


def holdout_runs(dirs: list[Path], params: str, flops: str) -> pd.DataFrame | None:
    """N, D and the measured loss of each held-out run (one shape and budget, measured once or more)."""
    if not dirs:
        return None
    runs = pd.concat([(lambda r: r[r.run_id == d.name])(records([d.parent], params, flops)) for d in dirs])
    if len(runs) != len(dirs) or runs[["N", "D"]].nunique().max() > 1:
        raise SystemExit("--holdout: give completed run folders of one held-out shape and budget")
    return runs


def holdout_errors(design: pd.DataFrame, holdout: pd.DataFrame | None, law: str = "parametric") -> str:
    """The design's prediction of the held-out loss (its fit of ``law``) and its error against each measurement."""
    if holdout is None:
        return ""
    N, D, L = (design[c].to_numpy(float) for c in ("N", "D", "loss"))
    hN, hD = holdout.N.iloc[0], holdout.D.iloc[0]
    if law == "kaplan":
        pred = kaplan_prediction(N, D, L, hN, hD)
    else:
        pred = float(predict_loss(fit_parametric(N, D, L), [hN], [hD]).loss.iloc[0])
    return f"{pred:.4f} (" + " / ".join(f"{100 * (pred / m - 1):+.2f}%" for m in holdout.loss) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="the fixed study's run folder first, then more run folders")
    p.add_argument("--seeds", default="2xall,2x3,3x2", help="KxM: the K smallest budgets, M widths each (all: every width)")
    p.add_argument("--pools", default=",".join(POOLS), help=f"of {', '.join(POOLS)}, and branches and branches-budgets "
                   "(with --branches)")
    p.add_argument("--branches", type=Path, help="a WSD study's run folder: its cooldown branches at the sweep's budgets "
                   "are the pool 'branches', with those at the midpoint budgets the pool 'branches-budgets'")
    p.add_argument("--rules", default="width,dof=4,stable=0.5,stable=0.5+dof=4")
    p.add_argument("--criterion", default="variance")
    p.add_argument("--law", default="parametric", choices=LAWS, help="the design's law")
    p.add_argument("--target", default="a", help="the target, spelled as scaling-study --target (a, loss@N,D, ...)")
    p.add_argument("--holdout", nargs="*", type=Path, default=[], help="held-out run folders of one shape and budget")
    p.add_argument("--max-share", type=float, default=1.0,
                   help="FLOPs the design may spend, as a share of the fixed design's (default 1: the study's --max-flops default)")
    p.add_argument("--params", default="total")
    p.add_argument("--flops", default="6nd_total")
    args = p.parse_args()
    runs = records(args.folders, args.params, args.flops)
    runs = runs[runs.role != "trunk"].reset_index(drop=True)  # a WSD design is fitted on its branches
    flops = design_flops(runs[runs.fixed])
    runs = with_budgets_of(runs, runs)
    fixed_runs = runs[runs.fixed]
    post = fit_posterior(*(fixed_runs[c].to_numpy(float) for c in ("N", "D", "loss")), law=args.law)
    target = parse_target(args.target)
    fixed = interval(post, resolve_target(target, args.law))
    holdout = holdout_runs(args.holdout, args.params, args.flops)
    measured = "" if holdout is None else f"; held-out loss measured {' and '.join(f'{m:.4f}' for m in holdout.loss)}"
    print(f"fixed design: {len(fixed_runs)} runs, {flops:.3g} FLOPs, {args.target} = {fixed[0]:.4f} ({fixed[1]:.4f} to {fixed[2]:.4f}, "
          f"width {fixed[2] - fixed[1]:.4f}); {len(runs) - len(fixed_runs)} more records; law {args.law}; criterion {args.criterion}; "
          f"at most {args.max_share:g} x its FLOPs{measured}\n")
    print(f"| seed | pool | stop rule | share of fixed FLOPs | runs | {args.target} (95% Laplace) | width | holds the fixed "
          f"estimate | held-out predicted (error) | added |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed in args.seeds.split(","):
        k, _, m = seed.partition("x")
        for name in args.pools.split(","):
            if name.startswith("branches") and args.branches is None:
                raise SystemExit(f"--pools {name} needs --branches DIR")
            pool = branch_pool(args.branches, args.params, args.flops, runs, name == "branches-budgets") \
                if name.startswith("branches") else pool_of(runs, name)
            init = seed_mask(pool, int(k), None if m == "all" else int(m))
            for rule in args.rules.split(","):
                r = replay_row(pool, init, fixed, flops, args.criterion, parse_rule(rule), args.max_share, target, holdout,
                               args.law)
                share = f"{100 * r['share']:.1f}%" + ("" if r["reached"] else " (not reached)")
                print(f"| {seed} ({100 * r['seed_share']:.0f}%) | {name} | {rule} | {share} | {r['runs']} | "
                      f"{r['a']:.3f} ({r['low']:.3f} to {r['high']:.3f}) | {r['width']:.3f} | "
                      f"{'yes' if r['holds_fixed'] else 'no'} | {r['holdout']} | {r['added']} |", flush=True)


if __name__ == "__main__":
    main()
