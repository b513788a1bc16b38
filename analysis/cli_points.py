"""``scaling-fit SOURCE --approach ...``: the fits of (N, D, loss) points (Kaplan, envelope, IsoFLOP,
parametric, data-constrained), one set per objective, printed, reported and logged to W&B."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from analysis.cli_input import captured, envelope_curves
from analysis.errors import AnalysisInputError

APPROACHES = ("kaplan", "envelope", "isoflop", "parametric")


def plot_formats(args: argparse.Namespace) -> tuple[str, ...]:
    """The image formats of the report's plots: PNG, and SVG with ``--svg``."""
    return ("png", "svg") if args.svg else ("png",)


def run_points(args: argparse.Namespace, runs: pd.DataFrame, notes: list[str]) -> int:
    """Fit, print (readable or JSON), with --out write fit.json, the plots and report.md, with --wandb log."""
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

        written = captured(notes, write_report, args.out, results, runs=runs, curves=curves, notes=notes,
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
            captured(own, write_report, args.out / objective, fits[objective], runs=runs, curves=curves, notes=own,
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
            curves = captured(notes, envelope_curves, args, runs)
        except AnalysisInputError as err:
            if args.approach != "all":
                raise
            notes.append(f"envelope skipped: {err}")

    results = {}
    for name in approaches:
        if name == "envelope" and curves is None:
            continue
        try:
            results[name] = captured(notes, _fit, name, args, runs, curves)
        except AnalysisInputError as err:
            if args.approach != "all":
                raise
            notes.append(f"{name} skipped: {err}")
    if not results:
        raise AnalysisInputError("approach: no fit applies to this data; " + "; ".join(notes))
    return results, curves


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
