"""Scaling-law analysis: load runs into pandas, fit laws, plot, report. Runs without torch.

    from analysis import load_runs, fit_isoflop
    runs = load_runs("runs/", params="non_embedding", flops="6nd")
    res = fit_isoflop(runs.N, runs.loss, runs.C, D=runs.D)
    print(res)          # estimates a, b with intervals
"""

from analysis.envelope import fit_envelope
from analysis.errors import AnalysisInputError
from analysis.isoflop import fit_isoflop
from analysis.kaplan import fit_kaplan, fit_kaplan_table
from analysis.load import load_curves, load_runs
from analysis.report import allocation_table, write_report
from analysis.result import FitResult

from analysis.allocation import optimal_allocation, predict_loss
from analysis.data_constrained import (MUENNIGHOFF_C4_BASE, constrained_allocation, effective_tokens, epoch_table,
                                       epoch_value, extra_epoch_value, fit_data_constrained, predict_data_constrained)
from analysis.holdout import holdout_validation
from analysis.next_run import propose_next, replay as replay_design
from analysis.parametric import HOFFMANN_GRID, fit_parametric
from analysis.curve_laws import curve_law, fit_loss_curve, predict_branches, schedule_from_config
from analysis.curve_laws import schedules as lr_schedules  # built-in schedules: constant, cosine, linear, wsd, step

__all__ = ["AnalysisInputError", "FitResult", "HOFFMANN_GRID", "MUENNIGHOFF_C4_BASE", "allocation_table",
           "constrained_allocation", "effective_tokens", "epoch_table", "epoch_value", "extra_epoch_value",
           "fit_data_constrained", "fit_envelope", "fit_isoflop", "predict_data_constrained",
           "fit_kaplan", "fit_kaplan_table", "fit_parametric", "holdout_validation", "load_curves", "load_runs",
           "optimal_allocation", "predict_loss", "propose_next", "replay_design", "write_report",
           "curve_law", "fit_loss_curve", "lr_schedules", "predict_branches", "schedule_from_config"]
