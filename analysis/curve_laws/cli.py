"""``scaling-fit CURVES --approach curve``: the command-line side of the loss-curve laws.

    scaling-fit runs/wsd --approach curve --law multipower --predict cosine:steps=72000,final=0.1 --out fit/
    scaling-fit curves.csv --approach curve --law tissue --json         # run_id, step, lr, loss columns
    scaling-fit csv_400/ --approach curve --filter "run_id in ['cosine_24000', 'constant_24000']"

CURVES: a folder of run records (their lr rebuilt from each config.yaml), a folder of CSV files (one run
per file, named by the file), or a CSV / Parquet table with run_id, step, lr, loss columns.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd

from analysis.curve_laws.summary import finals
from analysis.errors import AnalysisInputError


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The options of the curve approach (added to scaling-fit's parser)."""
    group.add_argument("--law", choices=("multipower", "tissue", "mpexp"),
                       help="curve approach: Multi-Power Law (default), Tissue et al.'s momentum law, or mpexp "
                            "(the Multi-Power Law with exponential drops)")
    group.add_argument("--warmup", choices=("code", "paper"),
                       help="curve approach: warmup convention, code (released code, default) or paper")
    group.add_argument("--predict", action="append", default=[], metavar="SCHEDULE",
                       help="curve approach: predict the loss along SCHEDULE, e.g. cosine:steps=72000,final=0.1 "
                            "or wsd:steps=24000,cooldown=0.2,shape=sqrt, or a fitted run's id (repeatable; see "
                            "docs/curve_laws.md)")
    group.add_argument("--minima", action="store_true",
                       help="curve approach: refine every start and give each prediction's range over the "
                            "near-optimal minima (loss_minima_low, loss_minima_high; slower)")


def check_arguments(args: argparse.Namespace) -> None:
    """The curve options only with --approach curve, and the options of the other fits not with it."""
    curve_only = [f"--{name}" for name in ("law", "warmup", "predict", "minima") if getattr(args, name)]
    if args.approach != "curve":
        if curve_only:
            raise AnalysisInputError(f"{', '.join(curve_only)}: only with --approach curve (got --approach "
                                     f"{args.approach})")
        return
    others = [flag for flag, used in (("--lr-rule", args.lr_rule is not None), ("--drop-highest", args.drop_highest),
                                      ("--params-col", args.params_col), ("--tokens-col", args.tokens_col),
                                      ("--flops-col", args.flops_col), ("--wandb", args.wandb)) if used]
    if others:
        raise AnalysisInputError(f"{', '.join(others)}: not used by --approach curve (its options: --law, --warmup, "
                                 "--predict, --minima, --loss-col, --filter, --bootstrap, --seed, --level, --delta, --json, --out)")


def run_curve(args: argparse.Namespace, captured) -> int:
    """Fit, print (readable or JSON), and with --out write fit.json, the plot and report.md."""
    from analysis.curve_laws.data import read_curves
    from analysis.curve_laws.fit import fit_loss_curve
    from analysis.curve_laws.schedules import parse_schedule

    notes: list[str] = []
    curves, schedules, more = captured(notes, read_curves, args.source, loss_col=args.loss_col)
    notes += [n for n in more if n not in notes]
    for expr in args.filter:
        try:
            curves = curves.query(expr)
        except Exception as err:  # pandas raises many types for a bad expression
            raise AnalysisInputError(f"--filter {expr!r}: {type(err).__name__}: {err}") from None
        if curves.empty:
            raise AnalysisInputError(f"--filter {expr!r}: no curve row is left")
    keep = set(curves["run_id"].astype(str)) if "run_id" in curves else set()
    schedules = {k: v for k, v in schedules.items() if k in keep}
    for spec in args.predict:  # a bad spec fails before the fit (peak and warmup come from the fit later)
        if spec not in keep:  # a fitted run's id predicts along its own schedule
            _flag("--predict", parse_schedule, spec, {"peak": 1.0})
    res = captured(notes, fit_loss_curve, curves, args.law or "multipower", schedules=schedules or None,
                   warmup=args.warmup or "code", bootstrap=args.bootstrap, seed=args.seed, level=args.level, delta=args.delta,
                   minima=args.minima)
    predictions = []
    for spec in args.predict:
        table = _flag("--predict", captured, notes, res.predict, spec)
        predictions.append(table.assign(schedule=spec))
    if predictions:
        res.tables["predictions"] = pd.concat(predictions, ignore_index=True)
    own = [n for n in notes if n not in res.warnings]  # the fit's warnings: in its summary, JSON and report
    for note in notes if args.json else own:
        print(f"warning: {note}", file=sys.stderr)
    notes = own
    if args.json:
        print(json.dumps({"curve": result_json(res)}, indent=2))
    else:
        print(readable(res))
    if args.out is not None:
        from analysis.report import write_report

        written = captured(notes, write_report, args.out, {"curve": res}, notes=notes, source=str(args.source))
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


def _flag(flag: str, fn, *args: Any) -> Any:
    """``fn(*args)``, its input errors prefixed by the flag they came from."""
    try:
        return fn(*args)
    except AnalysisInputError as err:
        raise AnalysisInputError(f"{flag}: {err}") from None


def result_json(res: Any) -> dict[str, Any]:
    out = res.to_dict()
    out["metrics"] = _records(res.tables.get("metrics"))
    out["predictions"] = _records(finals(res))
    return out


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    return json.loads(df.to_json(orient="records"))


def readable(res: Any) -> str:
    parts = [res.summary()]
    with pd.option_context("display.float_format", "{:.5g}".format, "display.width", 160, "display.max_columns", 20):
        metrics = res.tables.get("metrics")
        if metrics is not None and len(metrics):
            parts.append("fit per run:\n" + metrics.to_string(index=False))
        f = finals(res)
        if len(f):
            parts.append("predicted final loss:\n" + f.to_string(index=False))
    return "\n\n".join(parts)
