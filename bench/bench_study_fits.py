"""How robust is the study's held-out prediction? Refit Approach 3 to a study's sweep runs under several
fit choices and subsets (each budget, each width left out), and compare each prediction of a held-out run with its measured loss.
Beside Approach 3 (Hoffmann et al.'s L = E + A N^-alpha + B D^-beta), the joint law of Kaplan et al. 2020 (eq. 1.5,
L = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D, its exponents in the alpha and beta columns) on all runs,
and with ``--random K`` both laws on K random subsets of 10 to 14 runs (the spread a design's choice of points
alone gives the prediction).

    python bench/bench_study_fits.py study/full/runs/study-wsd study/full/runs/study-wsd-holdout/w64-d2-*
    python bench/bench_study_fits.py RUNS HOLDOUT_RUN --budgets 2e11,4e11,8e11 --widths 16,32,48,64,80   # a subset
    python bench/bench_study_fits.py RUNS HOLDOUT_RUN --random 200

RUNS: the sweep's run folders (``scaling-study`` puts them in ``OUT/runs/<group>``); HOLDOUT_RUN: one
finished run folder. N = N_total and C = 6 N_total D, the conventions of the study sweep. Reads records
only (nothing trains): seconds.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import warnings

import numpy as np
import pandas as pd

from analysis import fit_parametric, load_runs
from analysis.allocation import predict_loss
from analysis.kaplan_joint import fit_kaplan_joint, kaplan_loss, kaplan_prediction

PARAMS, FLOPS = "with_head", "6nd_total"


def budget_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's IsoFLOP budget: its compute rounded to 2 significant digits."""
    return runs.C.map(lambda c: float(f"{c:.2g}"))


def variants(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame, dict]]:
    """(label, runs, fit options) of every refit: fit choices on all runs, then subsets of the runs."""
    out = [("Huber (the study's fit)", runs, {}), ("least squares", runs, {"objective": "lsq"}),
           ("Huber, delta 1e-2", runs, {"delta": 1e-2})]
    budgets = budget_of(runs)
    for b in sorted(budgets.unique()):
        out.append((f"without budget {b:g}", runs[budgets != b], {}))
    for w in sorted(runs.width.unique()):
        out.append((f"without width {w:g}", runs[runs.width != w], {}))
    for d in (2e5, 5e5):
        out.append((f"only runs with D >= {d:g}", runs[runs.D >= d], {}))
    return out


def errors(subset: pd.DataFrame, h: pd.Series, start: np.ndarray) -> tuple[float, float]:
    """The held-out errors (%) of Approach 3 and of the Kaplan law fitted to ``subset`` (from ``start``)."""
    fit = fit_parametric(subset.N, subset.D, subset.loss)
    chin = float(predict_loss(fit, [h.N], [h.D]).iloc[0]["loss"])
    kap = kaplan_prediction(*(subset[c].to_numpy(float) for c in ("N", "D", "loss")), h.N, h.D, starts=[start])
    return 100 * (chin / h.loss - 1), 100 * (kap / h.loss - 1)


def random_subsets(runs: pd.DataFrame, h: pd.Series, k: int, start: np.ndarray, seed: int = 0) -> str:
    """Both laws' held-out errors over ``k`` random subsets of 10 to 14 runs (the Kaplan law refitted from
    ``start``, its fit to all runs): quartiles and the share within 2%."""
    rng = np.random.default_rng(seed)
    errs = np.array([errors(runs.iloc[np.sort(rng.choice(len(runs), rng.integers(10, 15), replace=False))], h, start)
                     for _ in range(k)])
    rows = [f"{name}: median {np.median(e):+.2f}%, quartiles {np.percentile(e, 25):+.2f}% to {np.percentile(e, 75):+.2f}%, "
            f"within 2%: {np.mean(np.abs(e) <= 2):.0%}" for name, e in zip(("Approach 3", "Kaplan L(N, D)"), errs.T)]
    return f"{k} random subsets of 10 to 14 runs (seed {seed}):\n" + "\n".join(f"- {r}" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="the sweep's run folders")
    ap.add_argument("holdout", help="the held-out run's folder")
    ap.add_argument("--budgets", help="use only these budgets (comma-separated FLOPs)")
    ap.add_argument("--widths", help="use only these model widths (comma-separated)")
    ap.add_argument("--random", type=int, default=0, help="also refit both laws to this many random subsets")
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # runs left out etc.: the table says what was used
        runs = load_runs(args.runs, params=PARAMS, flops=FLOPS)
        hold = load_runs(args.holdout, params=PARAMS, flops=FLOPS)
    if args.budgets:
        keep = [float(f"{float(b):.2g}") for b in args.budgets.split(",")]
        runs = runs[budget_of(runs).isin(keep)]
    if args.widths:
        runs = runs[runs.width.isin([int(w) for w in args.widths.split(",")])]
    if len(hold) != 1:
        sys.exit(f"error: holdout: {args.holdout!r} holds {len(hold)} finished runs; give one run folder")
    h = hold.iloc[0]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, python {platform.python_version()}; date {datetime.date.today()}")
    print(f"sweep: {len(runs)} runs, budgets {', '.join(f'{b:g}' for b in sorted(budget_of(runs).unique()))}; "
          f"held-out: N {h.N:,.0f}, D {h.D:,.0f}, C {h.C:.3g} ({h.C / runs.C.max():.1f}x the largest budget), "
          f"measured loss {h.loss:.4f}")
    print("| fit | runs | alpha | beta | E | predicted | error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, subset, options in variants(runs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_parametric(subset.N, subset.D, subset.loss, **options)
        pred = float(predict_loss(fit, [h.N], [h.D]).iloc[0]["loss"])
        e = fit.estimates
        print(f"| {label} | {len(subset)} | {e['alpha']:.3f} | {e['beta']:.3f} | {e['E']:.3f} | {pred:.4f} | "
              f"{100 * (pred - h.loss) / h.loss:+.2f}% |")
    theta = fit_kaplan_joint(*(runs[c].to_numpy(float) for c in ("N", "D", "loss")))
    pred = float(kaplan_loss(theta[None], h.N, h.D)[0])
    print(f"| Kaplan et al. 2020 L(N, D), Huber | {len(runs)} | {theta[2]:.3f} | {theta[3]:.3f} | - | {pred:.4f} | "
          f"{100 * (pred - h.loss) / h.loss:+.2f}% |")
    if args.random:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print("\n" + random_subsets(runs, h, args.random, theta))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
