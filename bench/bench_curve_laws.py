"""The loss-curve laws on the Multi-Power Law paper's curves: held-out metrics and end-of-run errors.

For each model size (25M, 100M, 400M) and each law variant, fits the three training curves
(``cosine_24000``, ``constant_24000``, ``wsdcon_9``), then predicts the six held-out schedules and prints
the paper's metrics (means over the six), each held-out run's end-of-run error (predicted - measured
final loss), the worst of them against the 0.010 target, and, with ``--loo``, the leave-one-out error
of the training split (mean |final error| of the training curve left out when fitting the other two),
a check that uses no held-out curve. Reads ``../shared/data/multipower`` (the paper's repository data).

    python bench/bench_curve_laws.py                              # the default variants, ~2 min
    python bench/bench_curve_laws.py --variants mpexp "mpexp:gamma=0" --sizes 400 --loo

A variant is ``LAW[@METHOD][:NAME=VALUE,...]``: a law of ``fit_loss_curve`` (multipower, tissue, mpexp),
its method (lsq, the default, or paper) and parameters held fixed (``fix=``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from analysis import fit_loss_curve
from analysis.curve_laws import evaluate
from analysis.curve_laws import published as pub

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "multipower"
VARIANTS = ("multipower@paper", "multipower", "tissue", "mpexp", "mpexp:gamma=0")
TARGET = 0.010  # |predicted - measured| final loss on every held-out schedule
RMSE_BOUND = 0.0075


def parse_variant(spec: str) -> tuple[str, str, dict[str, float]]:
    """``LAW[@METHOD][:NAME=VALUE,...]`` -> (law, method, fix)."""
    head, _, fixed = spec.partition(":")
    law, _, method = head.partition("@")
    fix = {}
    for item in filter(None, fixed.split(",")):
        name, _, value = item.partition("=")
        fix[name.strip()] = float(value)
    return law, method or "lsq", fix


def fit(curves, schedules, names, law: str, method: str, fix: dict[str, float]):
    train = curves[curves.run_id.isin(names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_loss_curve(train, law=law, schedules=schedules, method=method, fix=fix or None)


def leave_one_out(curves, schedules, law: str, method: str, fix: dict[str, float]) -> float:
    """Mean |final error| of each training curve predicted by a fit on the other two."""
    errors = []
    for left in pub.TRAIN:
        res = fit(curves, schedules, [n for n in pub.TRAIN if n != left], law, method, fix)
        table = evaluate(res, curves[curves.run_id == left], schedules, mean=False)
        errors.append(abs(float(table["final_error"].iloc[0])))
    return float(np.mean(errors))


def row(size: int, spec: str, curves, schedules, loo: bool) -> str:
    law, method, fix = parse_variant(spec)
    t0 = time.time()
    res = fit(curves, schedules, pub.TRAIN, law, method, fix)
    seconds = time.time() - t0
    table = evaluate(res, curves[curves.run_id.isin(pub.TEST)], schedules).set_index("run_id")
    mean, runs = table.loc["mean"], table.drop("mean").reindex(pub.TEST)
    finals = runs["final_error"].to_numpy()
    worst = float(np.abs(finals).max())
    met = worst <= TARGET and mean["RMSE"] <= RMSE_BOUND
    cells = [f"{size}M", spec, f"{mean['RMSE']:.5f}", f"{mean['PredE']:.5f}", f"{mean['WorstE']:.5f}",
             " ".join(f"{1000 * e:+.1f}" for e in finals), f"{worst:.4f}", "yes" if met else "no",
             f"{leave_one_out(curves, schedules, law, method, fix):.4f}" if loo else "", f"{seconds:.0f}",
             "; ".join(res.warnings)[:120]]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the folder with csv_25, csv_100, csv_400")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(pub.SIZES), choices=pub.SIZES)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="LAW[@METHOD][:NAME=VALUE,...]")
    ap.add_argument("--loo", action="store_true", help="also the leave-one-out error of the training split")
    args = ap.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"error: --root {str(args.root)!r} is not a folder (the Multi-Power Law curves)")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; date {datetime.date.today()}")
    print(f"fitted on {', '.join(pub.TRAIN)}; held out (final errors x 1000, in this order): {', '.join(pub.TEST)}")
    print("| size | variant | RMSE | PredE | WorstE | final errors x 1000 | worst | target met | leave one out "
          "| fit s | warnings |")
    print("| --- " * 11 + "|")
    for size in args.sizes:
        curves, schedules = pub.read_size(args.root, size)
        for spec in args.variants:
            print(row(size, spec, curves, schedules, args.loo), flush=True)
    print(f"target: worst |final error| <= {TARGET} on every held-out schedule, mean RMSE <= {RMSE_BOUND}")


if __name__ == "__main__":
    main()
