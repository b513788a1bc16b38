"""Plots of a data-constrained fit: loss against epochs per model size with the fitted law, and the
iso-loss contours in (U, epochs) at a fixed model size.

Both take a ``fit_data_constrained`` result and, optionally, runs (a DataFrame with ``N``, ``D``, ``loss``
and the unique-tokens column ``unique``; default: the points of the fit, ``res.tables["points"]``), write
PNG and SVG by default and return the paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plot_style as style
from analysis.plot_style import FORMATS
from analysis.result import FitResult

APPROACH = "data-constrained"


def plot_loss_vs_epochs(res: FitResult, path: str | Path, *, runs: pd.DataFrame | None = None, unique: str = "U",
                        formats: Iterable[str] = FORMATS) -> list[Path]:
    """Final loss against epochs D / U, runs coloured by N, and the fitted law through every (N, U) group
    of two or more runs (dashed: the base law with every repeated token counted as fresh)."""
    style.need(res, APPROACH, "plot_loss_vs_epochs")
    runs = res.tables["points"] if runs is None else runs
    style.require_columns(runs, ("N", "D", "loss", unique), "runs")
    runs = runs.assign(epochs=runs["D"] / runs[unique])
    fig, ax = style.figure()
    norm = style.size_norm(runs["N"])
    cmap = style.cmap()
    base = res.diagnostics.get("base", {})
    for (n, u), group in runs.groupby(["N", unique]):
        if len(group) < 2:
            continue
        ep = np.geomspace(max(group["epochs"].min(), 1e-3), group["epochs"].max(), 80)
        ax.plot(ep, res.predict(n, u * ep, u), color=cmap(norm(n)), lw=1)
        if base:
            fresh = base["E"] + base["A"] * n ** -base["alpha"] + base["B"] * (u * ep) ** -base["beta"]
            ax.plot(ep, fresh, color=cmap(norm(n)), lw=0.7, ls="--", alpha=0.6)
    ax.scatter(runs["epochs"], runs["loss"], c=runs["N"], cmap=style.CMAP, norm=norm, s=14, zorder=3,
               edgecolor="black", linewidth=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("epochs D / U")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"R_D* = {style.fmt(res, 'R_D_star')}, R_N* = {style.fmt(res, 'R_N_star')}", fontsize=9)
    style.colorbar(fig, ax, norm, "N (parameters)")
    return style.save(fig, path, formats)


def plot_iso_loss(res: FitResult, path: str | Path, *, N: float | None = None, runs: pd.DataFrame | None = None,
                  unique: str = "U", U_range: tuple[float, float] | None = None,
                  epochs_range: tuple[float, float] | None = None, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Iso-loss contours of the fitted law over unique tokens U and epochs at model size N (default: the
    largest run's), with the iso-lines of the epoch value D'/D (dotted) and the runs of that size.
    Ranges default to the runs' (epochs from 1), else U 1e8 to 1e12 and 1 to 100 epochs."""
    from analysis.data_constrained import epoch_value

    style.need(res, APPROACH, "plot_iso_loss")
    runs = res.tables.get("points") if runs is None else runs
    if runs is not None:
        style.require_columns(runs, ("N", "D", unique), "runs")
    N = float(N if N is not None else (runs["N"].max() if runs is not None else 1e9))
    if U_range is None:
        U_range = (runs[unique].min() / 2, runs[unique].max() * 2) if runs is not None else (1e8, 1e12)
    if epochs_range is None:
        epochs_range = (1.0, max(100.0, float((runs["D"] / runs[unique]).max()) * 1.5) if runs is not None else 100.0)
    u, ep = np.geomspace(*U_range, 120), np.geomspace(*epochs_range, 120)
    UU, EE = np.meshgrid(u, ep)
    LL = np.asarray(res.predict(N, UU * EE, UU), dtype=float)
    fig, ax = style.figure()
    cs = ax.contour(UU, EE, LL, levels=np.quantile(LL, np.linspace(0.02, 0.95, 12)), cmap="magma", linewidths=1)
    ax.clabel(cs, fontsize=7, fmt="%.2f")
    value = epoch_value(EE, res["R_D_star"])
    cv = ax.contour(UU, EE, value, levels=[0.5, 0.75, 0.9], colors="gray", linestyles=":", linewidths=0.8)
    ax.clabel(cv, fontsize=7, fmt=lambda v: f"D'/D = {v:g}")
    if runs is not None:
        same = runs[np.isclose(runs["N"], N, rtol=0.05)]
        ax.scatter(same[unique], same["D"] / same[unique], s=14, color="black", zorder=3, label=f"runs at N = {N:.3g}")
        if len(same):
            ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("U (unique tokens)")
    ax.set_ylabel("epochs D / U")
    ax.set_title(f"iso-loss contours (nats/token) at N = {N:.3g}", fontsize=9)
    return style.save(fig, path, formats)
