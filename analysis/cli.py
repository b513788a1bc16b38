"""``scaling-fit``: fit scaling laws to a run folder or a table from the shell.

    scaling-fit runs/ --approach all --bootstrap 1000 --out fit/
    scaling-fit chinchilla.csv --params-col "Model Size" --flops-col "Training FLOP" --loss-col loss \
        --drop-highest 5 --approach parametric --json
    scaling-fit runs/lr_sweep --lr-rule fit/lr_rule.json     # lr* = c N^k, for optim.lr=${lr_from_rule:...}
    scaling-fit runs/wsd --approach curve --law multipower --predict cosine:steps=72000,final=0.1

Prints a readable table (or, with ``--json``, one JSON object keyed by approach); ``--out DIR`` also
writes ``fit.json``, plots and ``report.md``. Bad input: ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from analysis import columns as col
from analysis.errors import AnalysisInputError

APPROACHES = ("kaplan", "envelope", "isoflop", "parametric")
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


def plot_formats(args: argparse.Namespace) -> tuple[str, ...]:
    """The image formats of the report's plots: PNG, and SVG with ``--svg``."""
    return ("png", "svg") if args.svg else ("png",)


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

        return run_curve(args, _captured)
    notes: list[str] = []
    runs = _captured(notes, _load, args)
    runs = _select(runs, args)
    if args.lr_rule is not None:
        return _lr_rule(args, runs, notes)
    from analysis.objectives import split_by_objective

    by_objective = split_by_objective(runs)
    if len(by_objective) > 1:  # causal and masked LMs: fitted apart, never mixed, then compared
        return _run_objectives(args, by_objective, notes)
    results, curves = _fit_all(args, runs, notes)

    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        from analysis.report import results_json

        print(json.dumps(results_json(results), indent=2))
    else:
        print(_readable(results, runs))
    if args.out is not None:
        from analysis.report import write_report

        written = _captured(notes, write_report, args.out, results, runs=runs, curves=curves, notes=notes,
                            source=str(args.source), formats=plot_formats(args))
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    if args.wandb:
        _log_to_wandb(args, results, runs, written.values() if args.out is not None else ())
    return 0


def _run_objectives(args: argparse.Namespace, by_objective: dict[str, pd.DataFrame], notes: list[str]) -> int:
    """One set of fits per objective (``--out``: a report per objective in DIR/<objective>/), then the
    report of all of them with the section comparing the objectives (exponents, tokens per parameter)."""
    from analysis.objectives import compare_objectives, comparison_budgets
    from analysis.report import results_json, write_report

    fits: dict[str, dict] = {}
    for objective, runs in by_objective.items():
        own: list[str] = []
        try:
            fits[objective], curves = _fit_all(args, runs, own)
        except AnalysisInputError as err:
            notes.append(f"objective {objective}: {err}")
            continue
        notes += [f"{objective}: {n}" for n in own]
        if args.out is not None:
            _captured(own, write_report, args.out / objective, fits[objective], runs=runs, curves=curves, notes=own,
                      source=f"{args.source} (objective {objective})", formats=plot_formats(args))
    if not fits:
        raise AnalysisInputError("approach: no fit applies to any objective; " + "; ".join(notes))
    runs = pd.concat(list(by_objective.values()), ignore_index=True)
    comparison = compare_objectives(fits, comparison_budgets(fits, runs))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({o: results_json(r) for o, r in fits.items()}, indent=2))
    else:
        parts = [f"== objective {o} ==\n" + _readable(r, by_objective[o]) for o, r in fits.items()]
        with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 160):
            parts += [f"objectives compared, {k}:\n{v.to_string(index=False)}" for k, v in comparison.items() if len(v)]
        print("\n\n".join(parts))
    if args.out is not None:
        merged = {f"{name} ({o})": res for o, r in fits.items() for name, res in r.items()}
        written = write_report(args.out, merged, runs=runs, notes=notes, source=str(args.source), comparison=comparison,
                               formats=plot_formats(args))
        print(f"wrote {len(written)} files to {args.out} (one report per objective in its folder)", file=sys.stderr)
    return 0


def _fit_all(args: argparse.Namespace, runs: pd.DataFrame, notes: list[str]) -> tuple[dict, pd.DataFrame | None]:
    """Every requested approach on ``runs`` (one objective); the fits and the curves the envelope used."""
    approaches = APPROACHES if args.approach == "all" else (args.approach,)
    curves = None
    if "envelope" in approaches:
        try:
            curves = _captured(notes, _curves, args, runs)
        except AnalysisInputError as err:
            if args.approach != "all":
                raise
            notes.append(f"envelope skipped: {err}")

    results = {}
    for name in approaches:
        if name == "envelope" and curves is None:
            continue
        try:
            results[name] = _captured(notes, _fit, name, args, runs, curves)
        except AnalysisInputError as err:
            if args.approach != "all":
                raise
            notes.append(f"{name} skipped: {err}")
    if not results:
        raise AnalysisInputError("approach: no fit applies to this data; " + "; ".join(notes))
    return results, curves


def _lr_rule(args: argparse.Namespace, runs: pd.DataFrame, notes: list[str]) -> int:
    """Fit the learning-rate rule of an LR sweep and write its rule file."""
    from analysis.lr_rules import fit_lr_rule, with_hparams, write_rule

    if "lr" not in runs and not Path(str(args.source)).is_dir():
        raise AnalysisInputError(f"--lr-rule: {str(args.source)!r} is not a folder of run records and has no 'lr' "
                                 f"column (columns: {', '.join(map(str, runs.columns))}); an LR sweep needs each run's "
                                 "lr: run folders (the lr of each config.yaml) or a table with an 'lr' column")
    runs = runs if "lr" in runs else with_hparams(runs)  # a table may carry lr; run folders have it in config.yaml
    fit = _captured(notes, fit_lr_rule, runs, x=args.lr_rule_x, level=args.level)
    convention = args.params if args.lr_rule_x == "N" else args.flops
    write_rule(fit, args.lr_rule, convention=convention, fitted_from=str(args.source))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps({"lr_rule": fit.to_dict()}, indent=2) if args.json else fit.summary())
    print(f"wrote the rule to {args.lr_rule}; use it as optim.lr='${{lr_from_rule:{args.lr_rule}}}'", file=sys.stderr)
    return 0


def _log_to_wandb(args: argparse.Namespace, results: dict, runs: pd.DataFrame, files: Iterable[Path]) -> None:
    from analysis.wandb_log import log_fit

    entity, _, project = args.wandb.rpartition("/")
    sweeps = runs["sweep"].dropna().unique() if "sweep" in runs else []
    group = args.wandb_group or (str(sweeps[0]) if len(sweeps) == 1 else None)
    plots = [p for p in files if Path(p).suffix in (".png", ".svg", ".pdf")]
    run_id = log_fit(results, runs, plots, project=project, entity=entity or None, mode=args.wandb_mode,
                     group=group, dir=args.out)
    print(f"logged the fit to W&B run {run_id}" if run_id else "warning: the fit was not logged to W&B",
          file=sys.stderr)


def _load(args: argparse.Namespace) -> pd.DataFrame:
    from analysis.load import load_runs

    return load_runs(args.source, params=args.params, flops=args.flops, loss=args.loss, params_col=args.params_col,
                     tokens_col=args.tokens_col, flops_col=args.flops_col, loss_col=args.loss_col)


def _curves(args: argparse.Namespace, runs: pd.DataFrame) -> pd.DataFrame:
    from analysis.load import WANDB_PREFIX, load_curves

    source = str(args.source)
    if not source.startswith(WANDB_PREFIX) and not Path(source).is_dir():
        raise AnalysisInputError(f"approach: the envelope needs per-step curves; {source!r} is not a run folder, "
                                 f"an offline W&B folder or {WANDB_PREFIX}ENTITY/PROJECT")
    curves = load_curves(source, params=args.params, flops=args.flops, loss="train/loss")
    return curves[curves["run_id"].isin(runs["run_id"])]


def _select(runs: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """Apply --filter and --drop-highest; what they did is kept in ``runs.attrs["selection"]``."""
    attrs = {**runs.attrs, "selection": []}
    if runs.empty:
        raise AnalysisInputError(f"source: {str(args.source)!r} holds no run to fit")
    loaded = len(runs)
    for expr in args.filter:
        try:
            runs = runs.query(expr)
        except Exception as err:  # pandas raises many types for a bad expression
            raise AnalysisInputError(f"--filter {expr!r}: {type(err).__name__}: {err}") from None
        attrs.setdefault("selection", []).append(f"--filter {expr!r}: {len(runs)} runs kept")
    if args.drop_highest < 0:
        raise AnalysisInputError(f"--drop-highest: {args.drop_highest}; must be a whole number >= 0")
    if args.drop_highest:
        if args.drop_highest >= len(runs):
            raise AnalysisInputError(f"--drop-highest: {args.drop_highest}; only {len(runs)} runs are selected")
        runs = runs.drop(index=runs["loss"].nlargest(args.drop_highest).index)
        attrs.setdefault("selection", []).append(f"--drop-highest {args.drop_highest}: {len(runs)} runs kept")
    if runs.empty:
        exprs = " ".join(f"--filter {e!r}" for e in args.filter)
        raise AnalysisInputError(f"{exprs}: none of the {loaded} runs loaded from {str(args.source)!r} matches; "
                                 "loosen the selection")
    runs = runs.reset_index(drop=True)
    runs.attrs.update(attrs)
    return runs


def _fit(name: str, args: argparse.Namespace, runs: pd.DataFrame, curves: pd.DataFrame | None):
    common = {"bootstrap": args.bootstrap, "seed": args.seed, "level": args.level}
    if name == "kaplan":
        from analysis.kaplan import fit_kaplan_table

        return fit_kaplan_table(runs, objective=args.objective, delta=args.delta, **common)
    if name == "envelope":
        from analysis.envelope import fit_envelope

        return fit_envelope(curves, **common)
    if name == "isoflop":
        from analysis.isoflop import fit_isoflop

        return fit_isoflop(runs["N"], runs["loss"], runs["C"], D=runs["D"], window=args.window,
                           robust=args.robust, **common)
    if name == "data-constrained":
        return _fit_data_constrained(args, runs, common)
    try:
        from analysis.parametric import fit_parametric
    except ImportError as err:
        raise AnalysisInputError(f"approach: the parametric fitter is not installed ({err})") from None
    return fit_parametric(runs["N"], runs["D"], runs["loss"], objective=args.objective, delta=args.delta, grid=args.grid,
                          method=args.method, **common)


def _fit_data_constrained(args: argparse.Namespace, runs: pd.DataFrame, common: dict[str, Any]):
    from analysis.data_constrained import fit_data_constrained

    name = args.unique_tokens_col or "unique_tokens"
    if name not in runs.columns:
        raise AnalysisInputError(f"--unique-tokens-col: {name!r} is not a column (columns: {', '.join(map(str, runs.columns))}); "
                                 "the data-constrained fit needs the unique tokens U of every run")
    return fit_data_constrained(runs["N"], runs["D"], pd.to_numeric(runs[name], errors="coerce"), runs["loss"],
                                base=args.base_law, method=args.dc_method, delta=args.delta, **common)


def _captured(sink: list[str], fn, *args: Any, **kwargs: Any):
    """Call ``fn``; its Python warnings become notes (printed once on stderr and put in the report)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message) not in sink:
            sink.append(str(w.message))
    return out


def _readable(results: dict, runs: pd.DataFrame) -> str:
    from analysis.report import allocation_table, budgets_for

    parts = [f"{len(runs)} runs; N {runs['N'].min():.3g} to {runs['N'].max():.3g}, "
             f"C {runs['C'].min():.3g} to {runs['C'].max():.3g} FLOPs"]
    parts += [res.summary() for res in results.values()]
    alloc = allocation_table(results, budgets_for(runs))
    if len(alloc):
        with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 160,
                               "display.max_columns", 20):
            parts.append("compute-optimal allocation:\n" + alloc.to_string(index=False))
    return "\n\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
