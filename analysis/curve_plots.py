"""Plots of loss-curve law fits: the fitted and predicted curves against the data, and their schedules.

    from analysis.curve_plots import plot_curve_fit
    plot_curve_fit(res, "out/curve_fit", predictions={"cosine 72k": res.predict("cosine:steps=72000")})

Like ``analysis.plots``: matplotlib without pyplot state, one file per format, the written paths returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.errors import AnalysisInputError
from analysis.files import atomic_write
from analysis.result import FitResult

FORMATS = ("png", "svg")


def plot_curve_fit(res: FitResult, path: str | Path, *, predictions: Mapping[str, pd.DataFrame] | pd.DataFrame | None = None,
                   measured: pd.DataFrame | None = None, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Left: each fitted run's loss (points) and the law's curve (line); predicted schedules dashed, with
    their bootstrap band. Right: the lr of the same runs and schedules.

    res: a curve FitResult (``fit_loss_curve``). predictions: label -> ``res.predict(...)`` table, or one
      long table with a ``schedule`` column (default: ``res.tables["predictions"]`` when present).
    measured: optional long table (run_id, step, loss) of held-out runs, drawn as grey points under the
      predictions of the same label.
    """
    if res.approach != "curve" or "data" not in res.tables:
        raise AnalysisInputError(f"res: a {res.approach} fit; plot_curve_fit needs a fitted curve law "
                                 "(fit_loss_curve)")
    data = res.tables["data"]
    if predictions is None:
        predictions = res.tables.get("predictions")
    if isinstance(predictions, pd.DataFrame):
        predictions = {str(k): g for k, g in predictions.groupby("schedule", sort=False)} if "schedule" in predictions \
            else {"prediction": predictions}
    predictions = dict(predictions or {})
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(1, 2, width_ratios=(3, 2))
    cmap = colormaps["tab10"]
    runs = list(dict.fromkeys(data["run_id"]))
    model = res.tables.get("model")
    full = getattr(model, "schedules", {}) or {}  # each fitted run's lr at every step, warmup included
    for i, rid in enumerate(runs):
        g = data[data["run_id"] == rid]
        colour = cmap(i % 10)
        ax.scatter(g["step"], g["loss"], s=6, color=colour, alpha=0.6, lw=0, gid=f"data-{rid}")
        ax.plot(g["step"], g["fitted"], color=colour, lw=1.3, label=f"{rid} (fitted)")
        lrs = full.get(rid)
        if lrs is not None:
            ax_lr.plot(np.arange(1, len(lrs)), lrs[1:], color=colour, lw=1.0)
        else:
            ax_lr.plot(g["step"], g["lr"], color=colour, lw=1.0)
    for j, (label, table) in enumerate(predictions.items()):
        colour = cmap((len(runs) + j) % 10)
        if measured is not None and "run_id" in measured and label in set(measured["run_id"].astype(str)):
            m = measured[measured["run_id"].astype(str) == label]
            ax.scatter(m["step"], m["loss"], s=6, color="0.55", lw=0, gid=f"measured-{label}")
        ax.plot(table["step"], table["loss"], color=colour, lw=1.3, ls="--", label=f"{label} (predicted)")
        if np.isfinite(table["loss_low"]).any():
            ax.fill_between(table["step"], table["loss_low"], table["loss_high"], color=colour, alpha=0.2, lw=0)
        ax_lr.plot(table["step"], table["lr"], color=colour, lw=1.0, ls="--")
    all_loss = pd.concat([data["loss"]] + [t["loss"] for t in predictions.values()])
    lo, hi = np.nanpercentile(all_loss, [0.5, 97])
    pad = 0.08 * (hi - lo) if hi > lo else 0.1
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    law = res.diagnostics.get("law_name", "curve law")
    ax.set_title(f"{law} fit ({res.diagnostics.get('warmup_convention', '')} warmup): "
                 f"RMSE {res.diagnostics.get('rmse', float('nan')):.4f}")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="gray", ls="", marker="o", ms=3, label="logged loss (points)"))
    if measured is not None:
        handles.append(Line2D([], [], color="0.55", ls="", marker="o", ms=3, label="measured, not fitted"))
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("schedules (solid: fitted runs, dashed: predicted)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _save(fig, path, formats)


def _save(fig: Figure, path: str | Path, formats: Iterable[str]) -> list[Path]:
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = base.with_suffix(f".{fmt}")
        atomic_write(out, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=120))
        written.append(out)
    return written


def plot_branch_predictions(table: pd.DataFrame, path: str | Path, *, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Predicted final loss of WSD branches (``predict_branches``) against the branch point, one line per
    cooldown length, with bands; trained branches as triangles at their measured loss."""
    need = {"branch_step", "cooldown_steps", "loss", "predicted"}
    if not need <= set(table.columns):
        raise AnalysisInputError(f"table: columns {', '.join(sorted(need - set(table.columns)))} are missing; "
                                 "give the table of predict_branches")
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    pred = table[table["predicted"]]
    lengths = sorted(pred["cooldown_steps"].unique())
    for i, cool in enumerate(lengths):
        g = pred[pred["cooldown_steps"] == cool].sort_values("branch_step")
        colour = cmap(i / max(1, len(lengths) - 1))
        ax.plot(g["branch_step"], g["loss"], color=colour, marker="o", ms=3, lw=1.2, label=f"cooldown {cool} steps")
        if np.isfinite(g["loss_low"]).any():
            ax.fill_between(g["branch_step"], g["loss_low"], g["loss_high"], color=colour, alpha=0.2, lw=0)
    trained = table[~table["predicted"]]
    if len(trained):
        ax.scatter(trained["branch_step"], trained["measured"], marker="^", s=40, color="black", zorder=5,
                   label="trained branch (measured)")
    ax.set_xlabel("branch point (step)")
    ax.set_ylabel("final loss (nats/token)")
    ax.set_title("WSD branches: predicted final loss")
    ax.legend(fontsize=8)
    return _save(fig, path, formats)
