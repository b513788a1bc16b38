"""Plots of runs and fits (matplotlib, no pyplot state: safe on headless machines and in notebooks).

Every function takes data and/or a FitResult and an output path (suffix ignored), writes one file per
format (PNG and SVG by default) and returns the written paths. Log axes, units on labels, runs coloured
by model size N. Points of WSD branching (the ``role`` column of ``load_runs``) have their own marker:
cooldown branches are triangles, trunks squares, other runs circles; points ``predicted`` (a ``predicted``
column: WSD branches never trained, ``predict_branches``) are hollow, with a legend entry of their own;
``plot_branches`` draws each trunk's curve with its branches hanging off it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import ScalarFormatter

from analysis import columns as col
from analysis.errors import AnalysisInputError
from analysis import plot_style as style
from analysis.plot_style import FORMATS
from analysis.result import FitResult

REFERENCES = {"Chinchilla": (0.50, 0.50), "Kaplan": (0.73, 0.27)}  # (a, b) of N_opt ~ C^a, D_opt ~ C^b


def plot_isoflop(res: FitResult, path: str | Path, *, runs: pd.DataFrame | None = None,
                 formats: Iterable[str] = FORMATS) -> list[Path]:
    """IsoFLOP profiles: loss against N per budget, the fitted parabolas and their minima.

    runs: the runs the fit was made from, in its order; their ``role`` marks WSD branch points. Points
    ``predicted`` (in the fit's points or the runs: branches never trained) are hollow markers.
    """
    style.need(res, "isoflop", "plot_isoflop")
    points, budgets = res.tables["points"], res.tables["budgets"]
    roles = style.roles_of(runs) if runs is not None and len(runs) == len(points) else style.roles_of(points)
    pred = points["predicted"].to_numpy(bool) if "predicted" in points.columns else np.zeros(len(points), bool)
    if runs is not None and "predicted" in runs.columns and len(runs) == len(points):
        pred = pred | runs["predicted"].to_numpy(bool)
    points = points.assign(**{col.ROLE: roles.to_numpy(), "predicted": pred})
    fig, ax = style.figure()
    norm = LogNorm(budgets["C"].min(), budgets["C"].max() * 1.0001)
    cmap = style.cmap()
    for b in budgets.itertuples():
        colour = cmap(norm(b.C))
        pts = points[np.isclose(points["budget"], b.C)]
        for (role, never_trained), sub in pts.groupby([col.ROLE, "predicted"]):
            alpha = np.where(sub["in_window"], 1.0, 0.35)
            edges = np.tile(colour, (len(sub), 1))  # hollow: the colour on the edge, faded outside the window
            edges[:, 3] = alpha
            paint = {"facecolors": "none", "edgecolors": edges} if never_trained else {"color": colour, "alpha": alpha}
            gid = f"{'predicted' if never_trained else role}-points-{b.Index}"
            ax.scatter(sub["N"], sub["loss"], s=14 if role == col.RUN else 22, marker=style.MARKERS[role], gid=gid,
                       **paint)
        if np.isfinite(b.c2):
            sel = pts[pts["in_window"]]
            x = np.linspace(np.log(sel["N"].min()), np.log(sel["N"].max()), 100)
            u = x - b.x0
            ax.plot(np.exp(x), b.c0 + b.c1 * u + b.c2 * u * u, color=colour, lw=1.2, ls="-" if b.used else ":")
        if b.used:
            ax.scatter([b.N_opt], [b.loss_opt], marker="*", s=90, color=colour, edgecolor="black", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"IsoFLOP profiles: a = {style.fmt(res, 'a')}")
    style.legend(ax, style.role_proxies(points[col.ROLE]) + (_predicted_proxy() if points["predicted"].any() else []))
    style.colorbar(fig, ax, norm, "C (FLOPs)")
    return style.save(fig, path, formats)


def plot_loss_vs_compute(runs: pd.DataFrame, path: str | Path, *, fit: FitResult | None = None,
                         curves: pd.DataFrame | None = None, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Final loss of every run against its compute, the compute frontier, and a fitted L(C) with its band.

    fit: a ``fit_kaplan`` result with x = C, or a ``fit_kaplan_table`` result (its L(C) is used).
    curves: per-step curves (``load_curves``), drawn faintly behind the final points.
    """
    from analysis.kaplan import frontier, prediction_band

    style.require_columns(runs, ("N", "C", "loss"), "runs")
    fig, ax = style.figure()
    norm = style.size_norm(runs["N"])
    cmap = style.cmap()
    if curves is not None:
        for _, g in curves[curves["loss"].notna()].groupby("run_id"):
            ax.plot(g["C"], g["loss"], color=cmap(norm(g["N"].iloc[0])), lw=0.6, alpha=0.35)
    proxies = _scatter_runs(ax, runs, "C", "loss", norm, s=18, zorder=3)
    front = frontier(runs, "C")
    ax.plot(front["C"], front["loss"], color="black", lw=1, ls="--", label="frontier")
    law = fit.tables["fits"].get("C") if fit is not None and "fits" in fit.tables else fit
    if law is not None:
        C = np.geomspace(runs["C"].min(), runs["C"].max(), 200)
        ax.plot(C, law.predict(C), color="tab:red", lw=1.6, label=f"fit: {law.law}")
        if law.samples:
            lo, hi = prediction_band(law, C)
            ax.fill_between(C, lo, hi, color="tab:red", alpha=0.2, lw=0, label=f"{100 * law.level:g}% band")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("C (training FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    style.legend(ax, proxies)
    style.colorbar(fig, ax, norm, "N (parameters)")
    return style.save(fig, path, formats)


def plot_branches(curves: pd.DataFrame, path: str | Path, *, x: str = "D",
                  formats: Iterable[str] = FORMATS) -> list[Path]:
    """Each WSD trunk's loss curve (solid) with its branches' cooldown curves (dashed) hanging off it at their
    branch points (dots), each ending in its final point (triangle); coloured by N.

    curves: per-step curves of a branching sweep (``load_curves``: ``role``, ``trunk``, ``branch_tokens``).
    x: ``D`` (tokens) or ``C`` (FLOPs).
    """
    style.require_columns(curves, ("run_id", "tokens", "N", x, "loss"), "curves")
    roles = style.roles_of(curves)
    if not (roles == col.BRANCH_ROLE).any() or "branch_tokens" not in curves:
        raise AnalysisInputError("curves: no WSD branch (no run names a trunk); plot_branches needs the curves of "
                                 "a branching sweep (isoflop_wsd, ladder_wsd, wsd_branches)")
    data = curves.assign(**{col.ROLE: roles.to_numpy()})
    data = data[data["loss"].notna()].sort_values("tokens")
    fig, ax = style.figure()
    norm = style.size_norm(data["N"])
    cmap = style.cmap()
    for trunk_id, branches in data[data[col.ROLE] == col.BRANCH_ROLE].groupby("trunk"):
        colour = cmap(norm(branches["N"].iloc[0]))
        trunk = data[data["run_id"] == trunk_id]
        if len(trunk):
            ax.plot(trunk[x], trunk["loss"], color=colour, lw=1.6, gid=f"trunk-{trunk_id}")
        for _, b in branches.groupby("run_id"):
            xs, ys = b[x].to_numpy(float), b["loss"].to_numpy(float)
            if len(trunk):  # from the trunk's curve at the branch point
                start = float(b["branch_tokens"].iloc[0])
                x0 = np.interp(start, trunk["tokens"], trunk[x])
                y0 = np.interp(start, trunk["tokens"], trunk["loss"])
                ax.scatter([x0], [y0], s=12, color=colour, zorder=4, gid="branch-starts")
                xs, ys = np.r_[x0, xs], np.r_[y0, ys]
            ax.plot(xs, ys, color=colour, lw=1, ls="--")
            ax.scatter(xs[-1:], ys[-1:], s=30, marker=style.MARKERS[col.BRANCH_ROLE], color=colour, edgecolor="black",
                       zorder=5, gid="branch-ends")
    ax.set_xscale("log")
    ax.set_xlabel({"D": "D (tokens)", "C": "C (training FLOPs)"}.get(x, x))
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("WSD branching: trunks and their cooldown branches")
    ax.legend(handles=[Line2D([], [], color="gray", lw=1.6, label="trunk (constant lr)"),
                       Line2D([], [], color="gray", lw=1, ls="--", label="cooldown branch"),
                       Line2D([], [], color="gray", ls="", marker="o", ms=4, label="branch point"),
                       Line2D([], [], color="gray", ls="", marker=style.MARKERS[col.BRANCH_ROLE], mec="black",
                              label=style.LABELS[col.BRANCH_ROLE])], fontsize=8)
    style.colorbar(fig, ax, norm, "N (parameters)")
    return style.save(fig, path, formats)


def plot_allocation(results: dict[str, FitResult], path: str | Path, *, C_range: tuple[float, float] | None = None,
                    formats: Iterable[str] = FORMATS) -> list[Path]:
    """N_opt and D_opt against C for each fit (points, fitted lines, bands), with Chinchilla and Kaplan references.

    C_range: the compute range of the lines; by default the range of the fits' per-budget or envelope points.
    """
    if not results:
        raise AnalysisInputError("results: empty; give at least one envelope, isoflop or parametric fit")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    lines: dict[str, pd.DataFrame] = {}
    points = {name: _optimal_points(res) for name, res in results.items()}
    known = [p["C"] for p in points.values() if p is not None and len(p)]
    if C_range is None:
        C_range = (min(c.min() for c in known), max(c.max() for c in known)) if known else (1e17, 1e22)
    C = np.geomspace(*C_range, 100)
    for i, (name, res) in enumerate(results.items()):
        colour = f"C{i}"
        pts = points[name]
        if pts is not None:
            axes[0].scatter(pts["C"], pts["N_opt"], s=16, color=colour)
            axes[1].scatter(pts["C"], pts["D_opt"], s=16, color=colour)
        line = _allocation_line(res, C)
        lines[name] = line
        est = res.estimates
        a = est.get("a", np.nan)
        b = est.get("b", 1 - a if np.isfinite(a) else np.nan)
        axes[0].plot(C, line["N_opt"], color=colour, label=f"{name}: a = {a:.3f}")
        axes[1].plot(C, line["D_opt"], color=colour, label=f"{name}: b = {b:.3f}")
        if {"N_opt_low", "N_opt_high"} <= set(line.columns):
            axes[0].fill_between(C, line["N_opt_low"], line["N_opt_high"], color=colour, alpha=0.15, lw=0)
            axes[1].fill_between(C, line["D_opt_low"], line["D_opt_high"], color=colour, alpha=0.15, lw=0)
    first = next(iter(lines.values()))
    mid = len(first) // 2
    for (ref, (ra, rb)), ls in zip(REFERENCES.items(), ("--", ":")):
        C, c0 = first["C"].to_numpy(), first["C"].iloc[mid]
        axes[0].plot(C, first["N_opt"].iloc[mid] * (C / c0) ** ra, color="gray", ls=ls, label=f"{ref} a = {ra:.2f}")
        axes[1].plot(C, first["D_opt"].iloc[mid] * (C / c0) ** rb, color="gray", ls=ls, label=f"{ref} b = {rb:.2f}")
    for ax, what in zip(axes, ("N_opt (parameters)", "D_opt (tokens)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C (training FLOPs)")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    return style.save(fig, path, formats)


def plot_contours(res: FitResult, path: str | Path, *, runs: pd.DataFrame | None = None,
                  N_range: tuple[float, float] | None = None, D_range: tuple[float, float] | None = None,
                  formats: Iterable[str] = FORMATS) -> list[Path]:
    """Iso-loss contours of a parametric L(N, D) fit, iso-FLOP lines and the efficient frontier."""
    from analysis.allocation import optimal_allocation

    style.need(res, "parametric", "plot_contours")
    if runs is not None:
        style.require_columns(runs, ("N", "D"), "runs")
    N_range = N_range or ((runs["N"].min() / 3, runs["N"].max() * 3) if runs is not None else (1e7, 1e11))
    D_range = D_range or ((runs["D"].min() / 3, runs["D"].max() * 3) if runs is not None else (1e8, 1e13))
    n, d = np.geomspace(*N_range, 160), np.geomspace(*D_range, 160)
    NN, DD = np.meshgrid(n, d)  # (160, 160)
    LL = np.asarray(res.predict(NN.ravel(), DD.ravel()), dtype=float).reshape(NN.shape)
    fig, ax = style.figure()
    cs = ax.contour(NN, DD, LL, levels=np.quantile(LL, np.linspace(0.02, 0.9, 12)), cmap="magma", linewidths=1)
    ax.clabel(cs, fontsize=7, fmt="%.2f")
    c_lo, c_hi = 6 * N_range[0] * D_range[0], 6 * N_range[1] * D_range[1]
    for C in 10.0 ** np.arange(np.ceil(np.log10(c_lo)), np.floor(np.log10(c_hi)) + 1):
        ax.plot(n, C / (6 * n), color="lightgray", lw=0.6, zorder=0)
    opt = optimal_allocation(res, np.geomspace(c_lo, c_hi, 100))
    ax.plot(opt["N_opt"], opt["D_opt"], color="tab:blue", lw=2, label=f"efficient frontier (a = {res.estimates.get('a', np.nan):.3f})")
    if runs is not None:
        pred = _predicted(runs)
        ax.scatter(runs["N"][~pred], runs["D"][~pred], s=10, color="black", label="runs", zorder=3)
        if pred.any():
            ax.scatter(runs["N"][pred], runs["D"][pred], s=12, facecolors="none", edgecolors="black", zorder=3,
                       label="predicted (never trained)", gid="predicted-points")
    ax.set_xlim(*N_range)
    ax.set_ylim(*D_range)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("D (tokens)")
    ax.set_title("iso-loss contours (nats/token); gray: iso-FLOP lines C = 6ND")
    ax.legend(fontsize=8, loc="upper right")
    return style.save(fig, path, formats)


def plot_residuals(runs: pd.DataFrame, res: FitResult, path: str | Path, *, x: str = "C",
                   formats: Iterable[str] = FORMATS) -> list[Path]:
    """Observed minus predicted loss of every run against ``x`` (a parametric fit, or a one-variable law of x)."""
    style.require_columns(runs, ("N", "D", "C", "loss"), "runs")
    if res.approach == "parametric":
        pred = np.asarray(res.predict(runs["N"].to_numpy(), runs["D"].to_numpy()), dtype=float)
    elif res.approach == "kaplan" and res.diagnostics.get("x") in runs.columns:
        pred = np.asarray(res.predict(runs[res.diagnostics["x"]].to_numpy()), dtype=float)
    else:
        raise AnalysisInputError(f"res: a {res.approach} fit does not predict a loss per run; "
                                 "give a parametric fit or a single-variable Kaplan fit")
    resid = runs["loss"].to_numpy() - pred
    fig, ax = style.figure()
    norm = style.size_norm(runs["N"])
    proxies = _scatter_runs(ax, runs.assign(resid=resid), x, "resid", norm, s=16)
    style.legend(ax, proxies)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel({"C": "C (training FLOPs)", "N": "N (parameters)", "D": "D (tokens)"}.get(x, x))
    ax.set_ylabel("observed - predicted loss (nats/token)")
    ax.set_title(f"residuals of {res.law}: rms {np.sqrt(np.mean(resid ** 2)):.4f}")
    style.colorbar(fig, ax, norm, "N (parameters)")
    return style.save(fig, path, formats)


def _predicted(runs: pd.DataFrame) -> np.ndarray:
    """Which rows are predicted points (never trained): their ``predicted`` column, else none."""
    if "predicted" not in runs.columns:
        return np.zeros(len(runs), dtype=bool)
    return runs["predicted"].eq(True).to_numpy()


def _predicted_proxy() -> list[Line2D]:
    return [Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="predicted (never trained)")]


def _scatter_runs(ax, runs: pd.DataFrame, x: str, y: str, norm: LogNorm, **kw) -> list[Line2D]:
    """The measured runs by role (coloured by N); the predicted points hollow, in the colour of their N."""
    pred = _predicted(runs)
    proxies = style.scatter_roles(ax, runs[~pred], x, y, norm, **kw) if (~pred).any() else []
    if not pred.any():
        return proxies
    sub = runs[pred]
    edges = style.cmap()(norm(sub["N"].to_numpy(float)))
    for role in style.MARKERS:
        sel = (style.roles_of(sub) == role).to_numpy()
        if sel.any():
            ax.scatter(sub[x][sel], sub[y][sel], facecolors="none", edgecolors=edges[sel], marker=style.MARKERS[role],
                       gid="predicted-points", **kw)
    return proxies + _predicted_proxy()


def _optimal_points(res: FitResult) -> pd.DataFrame | None:
    """The per-budget (isoflop) or per-grid-point (envelope) optima a fit was drawn through."""
    if res.approach == "isoflop":
        t = res.tables["budgets"]
        return t[t["used"]][["C", "N_opt", "D_opt"]]
    if res.approach == "envelope":
        t = res.tables["envelope"]
        return t[t["used"]].rename(columns={"N": "N_opt", "D": "D_opt"})[["C", "N_opt", "D_opt"]]
    return None


def _allocation_line(res: FitResult, C: np.ndarray) -> pd.DataFrame:
    if res.approach == "parametric":
        from analysis.allocation import optimal_allocation

        return optimal_allocation(res, C)
    if res.approach in ("isoflop", "envelope"):
        return res.predict(C)
    raise AnalysisInputError(f"results: a {res.approach} fit has no optimal allocation")
