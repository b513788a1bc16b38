"""``scaling-fit RUNS --lr-rule PATH``: the learning-rate rule of an LR sweep, fitted and written."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from analysis.cli_input import captured
from analysis.errors import AnalysisInputError


def run_lr_rule(args: argparse.Namespace, runs: pd.DataFrame, notes: list[str]) -> int:
    """Fit the learning-rate rule of an LR sweep and write its rule file."""
    from analysis.lr_rules import fit_lr_rule, with_hparams, write_rule

    if "lr" not in runs and not Path(str(args.source)).is_dir():
        raise AnalysisInputError(f"--lr-rule: {str(args.source)!r} is not a folder of run records and has no 'lr' "
                                 f"column (columns: {', '.join(map(str, runs.columns))}); an LR sweep needs each run's "
                                 "lr: run folders (the lr of each config.yaml) or a table with an 'lr' column")
    runs = runs if "lr" in runs else with_hparams(runs)  # a table may carry lr; run folders have it in config.yaml
    fit = captured(notes, fit_lr_rule, runs, x=args.lr_rule_x, level=args.level)
    convention = args.params if args.lr_rule_x == "N" else args.flops
    write_rule(fit, args.lr_rule, convention=convention, fitted_from=str(args.source))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(json.dumps({"lr_rule": fit.to_dict()}, indent=2) if args.json else fit.summary())
    print(f"wrote the rule to {args.lr_rule}; use it as optim.lr='${{lr_from_rule:{args.lr_rule}}}'", file=sys.stderr)
    return 0
