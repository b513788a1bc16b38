"""How a curve-law fit is summarised: the predicted end of each schedule, and the report's section."""

from __future__ import annotations

from typing import Any

import pandas as pd


def finals(res: Any) -> pd.DataFrame:
    """The last step of each --predict schedule: schedule, step, lr, loss, loss_low, loss_high (and the range
    over the near-optimal minima, loss_minima_low and loss_minima_high, of a fit with ``minima``)."""
    table = res.tables.get("predictions")
    if table is None or table.empty:
        return pd.DataFrame()
    last = table.groupby("schedule", sort=False).tail(1)
    cols = ["schedule", "step", "lr", "loss", "loss_low", "loss_high"]
    return last[cols + [c for c in ("loss_minima_low", "loss_minima_high") if c in last]].reset_index(drop=True)


def curve_markdown(res: Any, table) -> list[str]:
    """The report's section of a curve-law fit: the warmup convention, the fit per run, the predictions."""
    d = res.diagnostics
    lines = ["## Loss curves", "", f"Law: {d.get('law_name', '')}, warmup convention {d.get('warmup', '')}. "
             f"{d.get('n_runs', '?')} runs, {d.get('n_points', '?')} points, RMSE {d.get('rmse', float('nan')):.4g}.", ""]
    if d.get("horizon"):
        from analysis.curve_laws.fit import EXTRAPOLATION

        lines += [f"Longest fitted curve: {d['horizon']} steps (peak lr {d.get('peak_lr', float('nan')):.3g}); a "
                  f"prediction beyond {EXTRAPOLATION * d['horizon']:.0f} steps is an extrapolation and warns.", ""]
    if d.get("lr_interpolated"):
        lines += [f"The lr of {', '.join(map(str, d['lr_interpolated']))} is interpolated from the logged values.", ""]
    metrics = res.tables.get("metrics")
    if metrics is not None and len(metrics):
        lines += ["Fit per run (R2, MAE, RMSE, PredE = mean |pred - loss| / loss, WorstE = max):", "", table(metrics), ""]
    f = finals(res)
    if len(f):
        band = f" ({100 * res.level:g}% bootstrap band over {d.get('bootstrap_over', 'runs')})" \
            if f["loss_low"].notna().any() else " (no band: run with --bootstrap N)"
        minima = f"; loss_minima_low/high: the range over the {d['n_minima']} near-optimal minima" \
            if "n_minima" in d else ""
        lines += [f"Predicted loss at the end of each schedule{band}{minima}:", "", table(f), ""]
    return lines
