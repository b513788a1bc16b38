"""Causal vs masked LMs on the study's IsoFLOP design: the compute-optimal tokens per parameter of each and
their ratio MLM/CLM with a bootstrap interval, beside Dervishi et al. (2025)'s 10x to 100x.

Trains ``+sweep=objectives`` (the ``study`` sweep's 4 budgets x 6 widths, crossed with
``model.objective=clm,mlm``) with Hydra's local launcher, two runs at a time (one thread each), then fits
each objective apart (Approach 2, IsoFLOP parabolas; Approach 3, the parametric law; N = N_total and
C = 6 N_total D as the study) and compares them (``analysis.objectives``). Relaunching reuses finished runs.

    python bench/bench_objectives.py                 # ~20-30 min on 2 quiet CPU cores (108M tokens)
    python bench/bench_objectives.py --quick         # +sweep=objectives_quick: 13M tokens
    python bench/bench_objectives.py --fit-only      # refit the records of a previous launch
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import fit_isoflop, fit_parametric, load_runs
from analysis.objectives import compare_objectives, comparison_budgets, split_by_objective
from analysis.report import _table, write_report

BIN = Path(sys.executable).parent
PUBLISHED = "10x to 100x (Dervishi et al., EMNLP 2025, as stated in their abstract: compute-optimal encoders " \
            "train on 10 to 100 times more tokens per parameter than causal models)"


def launch(runs_dir: Path, jobs: int, sweep: str) -> float:
    t0 = time.time()
    cmd = [str(BIN / "scaling-train"), "--multirun", f"+sweep={sweep}", "hydra/launcher=local",
           f"hydra.sweeper.max_batch_size={jobs}", f"runs_dir={runs_dir}", "logger=none"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


def fit(runs_dir: Path, bootstrap: int, notes: list[str]) -> tuple[dict, dict, pd.DataFrame]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(runs_dir, params="total", flops="6nd_total")
        fits: dict[str, dict] = {}
        for objective, part in split_by_objective(runs).items():
            fits[objective] = {}
            try:
                fits[objective]["isoflop"] = fit_isoflop(part.N, part.loss, part.C, D=part.D, bootstrap=bootstrap)
            except Exception as exc:  # noqa: BLE001 - report it, keep the other fits
                notes.append(f"{objective}: Approach 2 not fitted: {exc}")
            fits[objective]["parametric"] = fit_parametric(part.N, part.D, part.loss, bootstrap=bootstrap)
    notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    comparison = compare_objectives(fits, comparison_budgets(fits, runs))
    return fits, comparison, runs


def budget_table(fits: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Per objective and budget: runs, the lowest loss and its N, the IsoFLOP vertex status."""
    rows = []
    for objective, per in fits.items():
        part = runs[runs["objective"] == objective]
        iso = per.get("isoflop")
        status = {} if iso is None else {float(f"{c:.3g}"): s for c, s in zip(iso.tables["budgets"]["C"],
                                                                             iso.tables["budgets"]["status"])}
        for c, g in part.groupby(part["C"].map(lambda v: float(f"{v:.3g}"))):
            best = g.loc[g["loss"].idxmin()]
            rows.append({"objective": objective, "C": c, "runs": len(g), "best N": best["N"], "best loss": best["loss"],
                         "best D/N": best["D"] / best["N"],
                         "vertex": next((s for k, s in status.items() if abs(k / c - 1) < 0.06), "-")})
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_objectives"))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--fit-only", action="store_true", help="fit the records already under --out")
    p.add_argument("--quick", action="store_true",
                   help="the objectives_quick sweep (study_quick's family at half its budgets, widths 8 to 48)")
    args = p.parse_args()
    sweep, group = ("objectives_quick", "objectives-quick") if args.quick else ("objectives", "objectives")
    runs_dir = args.out / "runs"
    wall = None if args.fit_only else launch(runs_dir, args.jobs, sweep)
    t0, notes = time.time(), []
    fits, comparison, runs = fit(runs_dir / group, args.bootstrap, notes)
    fit_s = time.time() - t0
    merged = {f"{name} ({o})": res for o, per in fits.items() for name, res in per.items()}
    write_report(args.out / "report", merged, runs=runs, notes=notes, comparison=comparison)
    print(f"python {platform.python_version()}, {len(runs)} completed runs"
          + (f", sweep wall time {wall / 60:.1f} min" if wall else "") + f", fits {fit_s:.0f} s "
          f"(bootstrap {args.bootstrap}); report in {args.out / 'report'}\n")
    print("### Budgets\n\n" + _table(budget_table(fits, runs)) + "\n")
    for key, table in comparison.items():
        print(f"### {key}\n\n{_table(table)}\n")
    ratio = comparison["tokens_per_param"]
    ratio = ratio[ratio["what"] == "ratio mlm/clm"]
    for approach, g in ratio.groupby("approach"):
        geo = float(np.exp(np.log(g["estimate"]).mean()))
        print(f"{approach}: ratio mlm/clm over the budgets {', '.join(f'{v:.3g}' for v in g['estimate'])} "
              f"(geometric mean {geo:.3g}); published: {PUBLISHED}")
    for note in notes:
        print(f"- note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
