"""Which run next, replayed on published points: FLOPs until the interval on a = beta/(alpha+beta) is tight.

Protocol (the same for both data sets): group the points into compute budgets; start from the points of
the three smallest budgets; the rest is the pool. Each step ``analysis.replay`` scores the pool under the
current Laplace posterior of the parametric law (Huber delta 1e-3 on log loss, summed), adds the best
point with its real loss and refits warm from the previous optimum. Stop once the 95% Laplace interval on
``a`` is no wider than RATIO x the full-data 95% Laplace interval (the same definition for both). Report
the pool FLOPs (6ND, or the data set's own FLOPs) spent, as a share of the pool's compute; random: mean
over SEEDS seeds. Each replay runs through the whole pool, so the table also says when the stopped
interval first holds the full-data estimate (the width rule alone cannot see bias).

Checks per row: a cold refit (the full 4,500-start grid) of the stopping set against the warm one, and
the bootstrap percentile interval of the stopping set relative to the full-data bootstrap interval.

    python bench/bench_next_run.py                 # both data sets, 10 seeds for random
    python bench/bench_next_run.py --seeds 3 --bootstrap 0
    python bench/bench_next_run.py --posterior-bootstrap 400   # also the bootstrap-posterior replays
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.next_run import replay
from analysis.next_run_criteria import (
    CRITERIA,
    fit_posterior,
    interval,
    resolve_target,
)
from analysis.next_run_mixture import fit_mixture
from analysis.parametric import fit_parametric

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Hoffmann et al.'s nine IsoFLOP budgets; every Epoch point is assigned to the nearest in log C.
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)
PORIAN_CONFIG = "rw/base/short/chinchilla/standard/val"
PORIAN_KEYS = ("dataset", "hparams", "warmup", "decay", "param_count", "val")


def load_chinchilla(root: Path) -> tuple[np.ndarray, ...]:
    """N, D = C/(6N), loss, C and budget id of Epoch's points without the 5 highest losses."""
    df = pd.read_csv(root / "chinchilla_epoch" / "svg_extracted_data.csv").sort_values("loss").iloc[:-5]
    N, C, L = (df[c].to_numpy() for c in ("Model Size", "Training FLOP", "loss"))
    budget = np.argmin(np.abs(np.log(C)[:, None] - np.log(CHINCHILLA_BUDGETS)[None]), axis=1)
    return N, C / (6 * N), L, C, budget


def load_porian(root: Path, config: str) -> tuple[np.ndarray, ...]:
    """N = n, D = t, loss, C = flops and budget id (rank of the FLOP budget) of one configuration."""
    df = pd.read_csv(root / "porian" / "porian_isoflop_points.csv")
    values = config.split("/")
    if len(values) != len(PORIAN_KEYS):
        sys.exit(f"error: --porian-config: {config!r} needs {len(PORIAN_KEYS)} parts: {'/'.join(PORIAN_KEYS)}")
    mask = np.logical_and.reduce([df[k].astype(str).to_numpy() == v for k, v in zip(PORIAN_KEYS, values)])
    df = df[mask]
    if df.empty:
        sys.exit(f"error: --porian-config: {config!r} matches no rows")
    N, D, L, C = (df[c].to_numpy(dtype=float) for c in ("n", "t", "loss", "flops"))
    return N, D, L, C, np.unique(C, return_inverse=True)[1]


def boot_width(N, D, L, n_boot: int) -> float:
    if n_boot == 0:
        return float("nan")
    lo, hi = fit_parametric(N, D, L, bootstrap=n_boot).interval["a"]
    return hi - lo


def first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def replay_row(N, D, L, C, init, crit, stop, seeds, n_boot, boot_full, a_full) -> dict:
    """Replays of one criterion through the whole pool (several seeds for random), read at the stop rule.

    stop: the first step with width <= stop. "accurate": the first step with width <= stop whose interval
    also holds the full-data estimate. Checks on the stopping set: cold refit, bootstrap width.
    """
    t0 = time.perf_counter()
    runs = [replay(N, D, L, init, "a", crit, cost=C, seed=s) for s in seeds]
    wall = (time.perf_counter() - t0) / len(runs)
    pool = runs[0].attrs["pool_cost"]
    at_stop, shares, accurate, cold_gap, boot_ratio = [], [], [], [], []
    for r in runs:
        width, low, high = (r[c].to_numpy() for c in ("width", "low", "high"))
        i = first(width <= stop)
        j = first((width <= stop) & (low <= a_full) & (a_full <= high))
        at_stop.append(r.iloc[i])
        shares.append(r["spent"].iloc[i] / pool)
        accurate.append(np.nan if j is None else r["spent"].iloc[j] / pool)
        used = init.copy()
        used[r["point"].to_numpy()[1 : i + 1]] = True
        cold = fit_posterior(N[used], D[used], L[used])
        cold_gap.append(abs(resolve_target("a").value(cold.theta) - r["estimate"].iloc[i]))
        boot_ratio.append(boot_width(N[used], D[used], L[used], n_boot) / boot_full)
    return {
        "criterion": crit + (f" (mean of {len(runs)})" if len(runs) > 1 else ""),
        "runs added": f"{np.mean([x['step'] for x in at_stop]):.1f}",
        "pool FLOPs to stop": spread(np.array(shares)),
        "a at stop (95% Laplace)": interval_text(at_stop),
        "full-data a inside": f"{sum(x['low'] <= a_full <= x['high'] for x in at_stop)}/{len(runs)}",
        "pool FLOPs to stop with full-data a inside": spread(np.array(accurate)),
        "cold refit max abs da": f"{max(cold_gap):.1e}",
        "bootstrap width / full": f"{np.nanmean(boot_ratio):.2f}",
        "s / replay (whole pool)": f"{wall:.2f}",
    }


def interval_text(rows: list) -> str:
    """Mean estimate (mean low, mean high) over replay rows."""
    return "{:.3f} ({:.3f}, {:.3f})".format(*(np.mean([x[k] for x in rows]) for k in ("estimate", "low", "high")))


def spread(shares: np.ndarray) -> str:
    """Mean share in percent, with the range where there are several; never reached: n/a."""
    if np.isnan(shares).all():
        return "n/a"
    text = f"{100 * np.nanmean(shares):.1f}%"
    if shares.size > 1:
        text += f" ({100 * np.nanmin(shares):.1f}-{100 * np.nanmax(shares):.1f}"
        text += f"; {int(np.isnan(shares).sum())} never)" if np.isnan(shares).any() else ")"
    return text


def bench(name: str, data: tuple, args) -> None:
    N, D, L, C, budget = data
    init = budget < 3
    tgt = resolve_target("a")
    a_full, lo, hi = interval(fit_posterior(N, D, L), tgt)
    a0, lo0, hi0 = interval(fit_posterior(N[init], D[init], L[init]), tgt)
    boot_full = boot_width(N, D, L, args.bootstrap)
    stop = args.ratio * (hi - lo)
    pool = C[~init].sum()
    print(f"\n### {name}: {N.size} points, {int(budget.max()) + 1} budgets; start {int(init.sum())} points "
          f"(3 smallest budgets, {100 * C[init].sum() / C.sum():.2f}% of all FLOPs); "
          f"pool {int((~init).sum())} points, {pool:.3g} FLOPs")
    print(f"full data: a = {a_full:.4f}, 95% Laplace ({lo:.4f}, {hi:.4f}), width {hi - lo:.4f}; bootstrap width "
          f"{boot_full:.4f}; start: a = {a0:.4f} ({lo0:.4f}, {hi0:.4f}); stop at width <= {stop:.4f} ({args.ratio}x)")
    comps = fit_mixture(N[init], D[init], L[init])
    print(f"separate optima at the start (fit_mixture): {len(comps)}, weight/a "
          + ", ".join(f"{w:.3f}/{tgt.value(c.theta):.3f}" for w, c in comps) + "\n")
    rows = []
    for crit in CRITERIA:
        seeds = range(args.seeds) if crit == "random" else [0]
        rows.append(replay_row(N, D, L, C, init, crit, stop, seeds, args.bootstrap, boot_full, a_full))
    table = pd.DataFrame(rows)
    print("| " + " | ".join(table.columns) + " |")
    print("| " + " | ".join("---" for _ in table.columns) + " |")
    for _, r in table.iterrows():
        print("| " + " | ".join(str(v) for v in r) + " |")


def bench_bootstrap(name: str, data: tuple, args) -> None:
    """The same protocol with the bootstrap posterior (covariance of the refits) for scores and intervals."""
    N, D, L, C, budget = data
    init, tgt, k = budget < 3, resolve_target("a"), args.posterior_bootstrap
    a_full, lo, hi = interval(fit_posterior(N, D, L, bootstrap=k), tgt)
    stop = args.ratio * (hi - lo)
    print(f"\n### {name}, bootstrap posterior ({k} resamples per refit)\nfull data: a = {a_full:.4f}, 95% interval "
          f"({lo:.4f}, {hi:.4f}), width {hi - lo:.4f}; stop at width <= {stop:.4f}\n")
    print("| criterion | runs added | pool FLOPs to stop | a at stop (95%) | full-data a inside | s / replay |")
    print("| --- | --- | --- | --- | --- | --- |")
    for crit in CRITERIA:
        seeds = range(min(args.seeds, 3)) if crit == "random" else [0]
        t0 = time.perf_counter()
        runs = [replay(N, D, L, init, "a", crit, cost=C, stop_width=stop, seed=s, bootstrap=k) for s in seeds]
        last = [r.iloc[-1] for r in runs]
        cells = [
            crit + (f" (mean of {len(runs)})" if len(runs) > 1 else ""),
            f"{np.mean([r.attrs['steps'] for r in runs]):.1f}",
            spread(np.array([r.attrs["share"] if r.attrs["reached"] else np.nan for r in runs])),
            interval_text(last),
            f"{sum(x['low'] <= a_full <= x['high'] for x in last)}/{len(runs)}",
            f"{(time.perf_counter() - t0) / len(runs):.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds of the random baseline")
    p.add_argument("--ratio", type=float, default=1.25, help="stop once the width is <= ratio x the full-data width")
    p.add_argument("--bootstrap", type=int, default=400, help="resamples of the bootstrap check (0: skip)")
    p.add_argument("--posterior-bootstrap", type=int, default=0,
                   help="also replay with the bootstrap posterior, this many resamples per refit (0: skip)")
    p.add_argument("--porian-config", default=PORIAN_CONFIG, help="/".join(PORIAN_KEYS))
    p.add_argument("--data", type=Path, default=SHARED)
    args = p.parse_args()
    if not args.data.is_dir():
        sys.exit(f"error: --data: {args.data} is not a folder; pass the shared data folder")
    t0 = time.perf_counter()
    print(f"command: python bench/bench_next_run.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}; date {dt.date.today()}")
    bench("Epoch Chinchilla", load_chinchilla(args.data), args)
    bench(f"Porian {args.porian_config}", load_porian(args.data, args.porian_config), args)
    if args.posterior_bootstrap:
        bench_bootstrap("Epoch Chinchilla", load_chinchilla(args.data), args)
        bench_bootstrap(f"Porian {args.porian_config}", load_porian(args.data, args.porian_config), args)
    print(f"\nwall {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
