"""The Multi-Power Law paper's metrics of a predicted curve, and a per-run evaluation of a curve law.

Per curve: R^2 = 1 - SS_res / SS_tot, MAE = mean |pred - loss|, RMSE, PredE = mean |pred - loss| / loss,
WorstE = max |pred - loss| / loss (the paper's code, ``src/evaluation.py``); the paper averages each
over the test curves.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError

METRICS = ("R2", "MAE", "RMSE", "PredE", "WorstE")
RESOLUTION = 0.25  # finer bins of the drop sum than a fit's: the metrics within about 1e-8 of the exact sum


def curve_metrics(loss: Any, pred: Any) -> dict[str, float]:
    """R2, MAE, RMSE, PredE, WorstE of the prediction ``pred`` of the measured ``loss`` (one curve)."""
    y = np.asarray(loss, dtype=float).reshape(-1)
    p = np.asarray(pred, dtype=float).reshape(-1)
    if y.shape != p.shape or y.size == 0:
        raise AnalysisInputError(f"curve_metrics: {y.size} losses and {p.size} predictions; need the same, > 0")
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "R2": 1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else float("nan"),
        "MAE": float(np.mean(np.abs(err))),
        "RMSE": float(np.sqrt(np.mean(err ** 2))),
        "PredE": float(np.mean(np.abs(err) / y)),
        "WorstE": float(np.max(np.abs(err) / y)),
    }


def schedules_of(curves: Any, schedules: Mapping[str, Any] | None, run_col: str = "run_id") -> dict[str, Any]:
    """The entries of ``schedules`` whose run is in ``curves`` (one mapping may serve several splits)."""
    from analysis.curve_laws import data as cdata

    present = set(cdata.as_frames(curves, run_col))
    return {k: v for k, v in (schedules or {}).items() if str(k) in present}


def evaluate(result: Any, curves: Any, schedules: Mapping[str, Any] | None = None, *, run_col: str = "run_id",
             step_col: str = "step", lr_col: str = "lr", loss_col: str = "loss", mean: bool = True) -> pd.DataFrame:
    """Per-run metrics of a curve law's prediction of ``curves`` (as ``fit_loss_curve`` takes them).

    result: a curve FitResult (``fit_loss_curve`` or ``curve_law``). schedules: run id -> lr array or spec;
    those of runs not in ``curves`` are ignored (one mapping may serve a train and a test split). Columns: run_id, points, R2, MAE,
    RMSE, PredE, WorstE, final_step, final_loss, final_pred, final_error (pred - loss at the last step);
    with ``mean`` a last row ``run_id="mean"`` averages the metrics over the runs, as the paper reports them.
    """
    from analysis.curve_laws import data as cdata

    runs = cdata.prepare(curves, schedules_of(curves, schedules, run_col), run_col=run_col, step_col=step_col, lr_col=lr_col, loss_col=loss_col)
    rows = []
    for c in runs:
        pred = result.predict(c.lrs, c.steps, resolution=RESOLUTION)["loss"].to_numpy()
        m = curve_metrics(c.loss, pred)
        rows.append({"run_id": c.run_id, "points": len(c.steps), **m, "final_step": int(c.steps[-1]),
                     "final_loss": float(c.loss[-1]), "final_pred": float(pred[-1]),
                     "final_error": float(pred[-1] - c.loss[-1])})
    table = pd.DataFrame(rows)
    if mean and len(table) > 1:
        avg = {k: float(table[k].mean()) for k in METRICS}
        avg.update(run_id="mean", points=int(table["points"].sum()),
                   final_error=float(table["final_error"].abs().max()))
        table = pd.concat([table, pd.DataFrame([avg])], ignore_index=True)
    return table
