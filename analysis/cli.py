"""``scaling-fit``: fit scaling laws to a run folder or a table from the shell.

    scaling-fit runs/ --approach all --bootstrap 1000 --out fit/
    scaling-fit chinchilla.csv --params-col "Model Size" --flops-col "Training FLOP" --loss-col loss \
        --drop-highest 5 --approach parametric --json
    scaling-fit runs/lr_sweep --lr-rule fit/lr_rule.json     # lr* = c N^k, for optim.lr=${lr_from_rule:...}
    scaling-fit runs/wsd --approach curve --law multipower --predict cosine:steps=72000,final=0.1

Prints a readable table (or, with ``--json``, one JSON object keyed by approach); ``--out DIR`` also
writes ``fit.json``, plots and ``report.md``. Bad input: ``error: ...`` on stderr and exit status 2.

This module parses and checks the options and dispatches; the approaches are ``cli_points`` (the fits of
(N, D, loss) points), ``cli_lr_rule`` (``--lr-rule``) and ``curve_laws.cli`` (``--approach curve``), and
``cli_input`` loads and selects the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import columns as col
from analysis.cli_input import captured, load, select
from analysis.cli_lr_rule import run_lr_rule
from analysis.cli_points import APPROACHES, run_points
from analysis.errors import AnalysisInputError

ON_REQUEST = ("data-constrained", "curve")  # approaches that need more than (N, D, loss): never part of "all"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(2, f"error: {message} (see scaling-fit --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scaling-fit", description="Fit scaling laws (Kaplan; Chinchilla approaches 1, 2, 3) "
                "to a folder of run records or a CSV / Parquet table.")
    p.add_argument("source", help="run folder (searched for result.json), .csv/.parquet table, or wandb:ENTITY/PROJECT")
    g = p.add_argument_group("table columns (CSV / Parquet)")
    g.add_argument("--params-col", help="column of N, parameters")
    g.add_argument("--tokens-col", help="column of D, tokens (derived as C/(6N) when only --flops-col is given)")
    g.add_argument("--flops-col", help="column of C, FLOPs (derived as 6ND when only --tokens-col is given)")
    g.add_argument("--loss-col", help="column of the loss (nats/token)")
    g = p.add_argument_group("run records: counting conventions")
    g.add_argument("--params", default="non_embedding", choices=col.PARAMS, help="N convention (default non_embedding)")
    g.add_argument("--flops", default="6nd", help="C convention: 6nd (default), kaplan, chinchilla or another key of the records")
    g.add_argument("--loss", default="val_loss", choices=col.LOSSES, help="final loss used (default val_loss)")
    g = p.add_argument_group("fitting")
    g.add_argument("--approach", default="all", choices=APPROACHES + ON_REQUEST + ("all",),
                   help="which fit(s) (default all; data-constrained and curve only on request; curve: a loss-"
                        "curve law fitted to per-step curves with their lr, see docs/curve_laws.md)")
    g.add_argument("--objective", default="huber", choices=("huber", "lsq"),
                   help="huber on log loss (default) or least squares on raw loss")
    g.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
    g.add_argument("--grid", default="default", choices=("default", "coarse"),
                   help="parametric start grid: Hoffmann's 4,500 starts (default) or 243 (coarse)")
    g.add_argument("--method", default="lbfgs", choices=("lbfgs", "varpro"),
                   help="parametric optimiser (varpro needs --objective lsq)")
    g.add_argument("--window", type=float, default=4.0,
                   help="IsoFLOP: fit parabolas to sizes within this factor of each budget's best (default 4; 0 = all)")
    g.add_argument("--robust", action="store_true", help="IsoFLOP: soft-L1 parabola fits")
    g.add_argument("--unique-tokens-col", metavar="COL",
                   help="data-constrained: column of U, the unique tokens of each run (default unique_tokens)")
    g.add_argument("--base-law", default="joint", choices=("joint", "c4"),
                   help="data-constrained: fit the base law with R_D*, R_N* (joint, default) or fix Muennighoff "
                        "et al.'s C4 law (c4, the paper's two-stage fit)")
    g.add_argument("--dc-method", default="valley", choices=("valley", "paper"),
                   help="data-constrained: search the whole valley (default) or the paper's grid and L-BFGS")
    from analysis.curve_laws.cli import add_arguments as add_curve_arguments

    add_curve_arguments(g)  # --law, --warmup, --predict of --approach curve (loss-curve laws)
    g.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for intervals (default 0)")
    g.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    g.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    g = p.add_argument_group("point selection")
    g.add_argument("--drop-highest", type=int, default=0, metavar="K", help="drop the K runs with the highest loss")
    g.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="keep rows matching a pandas query, e.g. 'N > 1e7' (repeatable; all must hold)")
    g = p.add_argument_group("learning-rate rule (an LR sweep instead of scaling laws)")
    g.add_argument("--lr-rule", type=Path, metavar="PATH",
                   help="fit lr* = c x^k to an LR sweep of run folders (best lr per size) and write the rule to "
                        "PATH, for sweeps to use as optim.lr=${lr_from_rule:PATH}")
    g.add_argument("--lr-rule-x", default="N", choices=("N", "C"),
                   help="x of the rule: N under --params (default) or C under --flops")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object keyed by approach on stdout")
    g.add_argument("--out", type=Path, help="write fit.json, plots and report.md into this folder")
    g.add_argument("--svg", action="store_true", help="with --out: each plot as SVG too (default PNG only)")
    g = p.add_argument_group("Weights & Biases")
    g.add_argument("--wandb", metavar="[ENTITY/]PROJECT",
                   help="also log the fit as a W&B run of job_type 'analysis' (plots, points and estimates as "
                        "Tables); online with an API key, else offline (upload later with `wandb sync`)")
    g.add_argument("--wandb-group", metavar="GROUP", help="W&B group of the analysis run (default: the runs' sweep)")
    g.add_argument("--wandb-mode", default="auto", choices=("auto", "online", "offline"), help="W&B mode")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except AnalysisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, pd.errors.ParserError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> None:
    """Option values the parser cannot check by type alone."""
    if not 0 < args.level < 1:
        raise AnalysisInputError(f"--level: {args.level}; must be strictly between 0 and 1 (e.g. 0.95)")
    if args.bootstrap < 0:
        raise AnalysisInputError(f"--bootstrap: {args.bootstrap}; must be a whole number >= 0")
    if not args.delta > 0:
        raise AnalysisInputError(f"--delta: {args.delta}; must be > 0")
    if args.window and args.window <= 1:
        raise AnalysisInputError(f"--window: {args.window}; must be a factor > 1, or 0 for all points")
    _check_paths(args)
    from analysis.curve_laws.cli import check_arguments

    check_arguments(args)  # --law, --warmup, --predict only with --approach curve, and the reverse


def _check_paths(args: argparse.Namespace) -> None:
    """--out names a folder and --lr-rule a file, checked before any fit (nothing is written on a bad one)."""
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise AnalysisInputError(f"--out: {str(args.out)!r} is a file; give a folder for fit.json, the plots and "
                                 "report.md (created when missing)")
    if args.lr_rule is not None and args.lr_rule.is_dir():
        raise AnalysisInputError(f"--lr-rule: {str(args.lr_rule)!r} is a folder; give the path of the rule file "
                                 "to write (e.g. fit/lr_rule.json)")


def _run(args: argparse.Namespace) -> int:
    _check(args)
    if args.approach == "curve":  # per-step loss curves and their lr, not (N, D, loss) points
        from analysis.curve_laws.cli import run_curve

        return run_curve(args, captured)
    notes: list[str] = []
    runs = captured(notes, load, args)
    runs = select(runs, args)
    if args.lr_rule is not None:
        return run_lr_rule(args, runs, notes)
    return run_points(args, runs, notes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
