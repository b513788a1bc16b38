"""Loss-curve laws: the loss along a whole learning-rate schedule, fitted to a few training curves.

    from analysis import fit_loss_curve, curve_law, predict_branches
    res = fit_loss_curve(curves, law="multipower")        # or law="tissue"
    res.predict("cosine:steps=72000,final=0.1")            # loss along another schedule, with a band

Modules: ``schedules`` (built-in lr schedules by name, the harness's schedule from a run config),
``laws`` (the Multi-Power Law and Tissue et al.'s law, warmup conventions), ``fit`` (``fit_loss_curve``,
``curve_law``), ``branches`` (``predict_branches``: WSD cooldowns never trained), ``metrics`` (the
paper's R^2, MAE, RMSE, PredE, WorstE), ``data`` (input checks, reading curves from files),
``published`` (the Multi-Power Law paper's data set and numbers). See docs/curve_laws.md.
"""

from analysis.curve_laws.branches import isoflop_rows, predict_branches, split_trunk
from analysis.curve_laws.fit import CurveModel, curve_law, fit_loss_curve
from analysis.curve_laws.laws import LAWS, WARMUPS
from analysis.curve_laws.metrics import curve_metrics, evaluate
from analysis.curve_laws.schedules import (constant, cosine, linear, parse_schedule, schedule_from_config,
                                           step_drops, wsd)

__all__ = ["CurveModel", "LAWS", "WARMUPS", "constant", "cosine", "curve_law", "curve_metrics", "evaluate",
           "fit_loss_curve", "isoflop_rows", "linear", "parse_schedule", "predict_branches", "schedule_from_config",
           "split_trunk", "step_drops", "wsd"]
