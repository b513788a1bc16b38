"""Do the branches of one WSD trunk share noise? The Laplace interval of the adaptive study counts each
cooldown branch as an independent point; this checks that assumption on a branch sweep's records.

    python bench/bench_trunk_correlation.py study/full/runs/study-wsd
    python bench/bench_trunk_correlation.py RUNS --target loss@115008,9274880

Fits the law as the study does (N = N_total, C = 6 N_total D; Huber on log loss), then prints each
trunk's mean residual, the residuals' intra-trunk correlation (one-way ANOVA estimate; > 0 when the
branches of a trunk sit on the same side of the law) and, per target, the Laplace standard deviation
beside two robust ones (the sandwich, CR1 small-sample factor): with scores per point (robust to a
misspecified law or unequal noise) and summed per trunk (robust also to branches of one trunk sharing
noise; with few trunks a noisy estimate itself). Reads records only: seconds.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import warnings

import numpy as np
import pandas as pd

from analysis import load_runs
from analysis.next_run_criteria import pinv_scaled, fit_posterior, jacobian, resolve_target
from scaling.errors import ConfigError
from scaling.study.next_runs import parse_target

PARAMS, FLOPS = "with_head", "6nd_total"


def intra_trunk_correlation(resid: np.ndarray, trunk: np.ndarray) -> float:
    """One-way ANOVA estimate of the intra-class correlation of ``resid`` grouped by ``trunk``."""
    frame = pd.DataFrame({"r": resid, "g": trunk})
    groups = frame.groupby("g").r
    sizes = groups.size()
    between = (sizes * (groups.mean() - resid.mean()) ** 2).sum() / (len(sizes) - 1)
    within = ((frame.r - groups.transform("mean")) ** 2).sum() / (len(resid) - len(sizes))
    n0 = (len(resid) - (sizes ** 2).sum() / len(resid)) / (len(sizes) - 1)
    return float((between - within) / (between + (n0 - 1) * within))


def cluster_covariance(J: np.ndarray, resid: np.ndarray, trunk: np.ndarray) -> np.ndarray:
    """CR1 sandwich covariance of the Gauss-Newton estimate with scores summed per trunk."""
    bread = pinv_scaled(J.T @ J)
    scores = np.stack([J[trunk == g].T @ resid[trunk == g] for g in np.unique(trunk)])
    n, k, groups = len(resid), J.shape[1], len(scores)
    factor = groups / (groups - 1) * (n - 1) / (n - k)
    return factor * bread @ (scores.T @ scores) @ bread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="a WSD branch sweep's run folders")
    ap.add_argument("--target", action="append", help="spelled as scaling-study --target: a, alpha, beta, "
                    "N_opt@C, loss@N,D, ... (repeatable)")
    args = ap.parse_args()
    try:
        targets = [resolve_target(parse_target(t)) for t in args.target or ["a", "alpha", "beta"]]
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trunks left out: the branches are the points
        runs = load_runs(args.runs, params=PARAMS, flops=FLOPS)
    if "trunk" not in runs or runs.trunk.isna().all():
        sys.exit(f"error: runs: {args.runs!r} holds no WSD branches (no trunk column); give a branch sweep")
    N, D, L = (runs[c].to_numpy(float) for c in ("N", "D", "loss"))
    trunk = runs.trunk.astype(str).to_numpy()
    post = fit_posterior(N, D, L)
    pred, J = jacobian(post.theta, N, D)
    resid = pred - np.log(L)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, python {platform.python_version()}; date {datetime.date.today()}")
    print(f"points: {len(runs)} branches of {len(np.unique(trunk))} trunks; residual sd (log loss) "
          f"{np.sqrt(post.noise):.4f}; intra-trunk correlation {intra_trunk_correlation(resid, trunk):+.2f}")
    print("| trunk | width | branches | mean residual |")
    print("| --- | --- | --- | --- |")
    for name, part in pd.DataFrame({"trunk": trunk, "w": runs.width.to_numpy(), "r": resid}).groupby("trunk"):
        print(f"| {name} | {part.w.iloc[0]:g} | {len(part)} | {part.r.mean():+.4f} |")
    clustered = cluster_covariance(J, resid, trunk)
    per_point = cluster_covariance(J, resid, np.arange(len(resid)).astype(str))
    print("| target | estimate | Laplace sd | robust sd, per point | robust sd, per trunk | per trunk / Laplace |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tgt in targets:
        g = tgt.gradient(post.theta)
        laplace, point, robust = (np.sqrt(g @ c @ g) for c in (post.cov, per_point, clustered))
        print(f"| {tgt.name} | {tgt.value(post.theta):.4f} | {laplace:.4f} | {point:.4f} | {robust:.4f} | "
              f"{robust / laplace:.2f} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
