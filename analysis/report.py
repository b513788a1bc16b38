"""The report of a fitting session: ``fit.json``, the plots and ``report.md`` in one output folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.files import atomic_write_text
from analysis.plot_style import FORMATS
from analysis.result import FitResult

ALLOCATING = ("envelope", "isoflop", "parametric")  # approaches that give N_opt(C), D_opt(C)


def results_json(results: dict[str, FitResult]) -> dict[str, Any]:
    """The stable JSON object: approach -> FitResult.to_dict() (estimates, stderr, interval, diagnostics...)."""
    return {name: res.to_dict() for name, res in results.items()}


def allocation_table(results: dict[str, FitResult], C: Iterable[float]) -> pd.DataFrame:
    """N_opt, D_opt and tokens per parameter of every allocating fit at each budget C (long format)."""
    C = np.asarray(list(C), dtype=float)
    frames = []
    for name, res in results.items():
        if name not in ALLOCATING:
            continue
        if res.approach == "parametric":
            from analysis.allocation import optimal_allocation

            table = optimal_allocation(res, C)
        else:
            table = res.predict(C)
            s = res.samples
            if s and all(k in s for k in ("a", "b", "coef_N", "coef_D")):  # band from the bootstrap lines
                tail = 100 * (1 - res.level) / 2
                for what, k, e in (("N_opt", "coef_N", "a"), ("D_opt", "coef_D", "b")):
                    ok = np.isfinite(s[k]) & np.isfinite(s[e])
                    if not ok.any():  # every bootstrap refit failed: no band
                        continue
                    draws = s[k][ok, None] * C[None, :] ** s[e][ok, None]  # (draws, budgets)
                    table[f"{what}_low"], table[f"{what}_high"] = np.percentile(draws, [tail, 100 - tail], axis=0)
        frames.append(table.assign(approach=name))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["approach"] + [c for c in out.columns if c != "approach"]]


def budgets_for(runs: pd.DataFrame | None, n_beyond: int = 2) -> np.ndarray:
    """Decades of compute from the smallest run's C to ``n_beyond`` decades past the largest."""
    if runs is None or "C" not in runs or runs["C"].dropna().empty:
        return 10.0 ** np.arange(18, 25)
    lo, hi = np.floor(np.log10(runs["C"].min())), np.ceil(np.log10(runs["C"].max())) + n_beyond
    return 10.0 ** np.arange(lo, hi + 1)


def write_report(
    out_dir: str | Path,
    results: dict[str, FitResult],
    *,
    runs: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
    notes: Iterable[str] = (),
    source: str | None = None,
    budgets: Iterable[float] | None = None,
    comparison: dict[str, pd.DataFrame] | None = None,
    formats: Iterable[str] = FORMATS,
) -> dict[str, Path]:
    """Write ``fit.json``, the plots that apply and ``report.md`` into ``out_dir``; returns name -> path.

    results: approach name -> FitResult (``kaplan`` from ``fit_kaplan_table``, ``envelope``, ``isoflop``,
      ``parametric``). runs / curves: the data, for the plots. notes: loader or selection warnings.
    budgets: the compute values of the allocation table (default: decades over the data and beyond).
    comparison: ``analysis.objectives.compare_objectives`` of per-objective fits, for the section that
      compares causal and masked LMs.
    formats: the image formats of every plot (default PNG only; add ``"svg"`` or ``"pdf"`` for more).
    """
    if not results:
        raise AnalysisInputError("results: empty; nothing to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"fit.json": atomic_write_text(out / "fit.json", json.dumps(results_json(results), indent=2) + "\n")}
    plot_notes: list[str] = []
    images = _plots(out, results, runs, curves, plot_notes, tuple(formats))
    written.update({p.name: p for p in images})
    alloc = allocation_table(results, budgets if budgets is not None else budgets_for(runs))
    text = _markdown(results, runs, list(notes) + plot_notes, source, alloc, [p for p in images if p.suffix == ".png"],
                     comparison)
    written["report.md"] = atomic_write_text(out / "report.md", text)
    return written


def _plots(out: Path, results: dict[str, FitResult], runs: pd.DataFrame | None, curves: pd.DataFrame | None,
           notes: list[str], formats: tuple[str, ...] = FORMATS) -> list[Path]:
    from analysis import plots

    jobs = []
    if "isoflop" in results:
        jobs.append(("isoflop", lambda: plots.plot_isoflop(results["isoflop"], out / "isoflop", runs=runs,
                                                           formats=formats)))
    if any(k in results for k in ALLOCATING):
        alloc = {k: results[k] for k in ALLOCATING if k in results}
        c_range = (runs["C"].min(), runs["C"].max()) if runs is not None else None
        jobs.append(("allocation", lambda: plots.plot_allocation(alloc, out / "allocation", C_range=c_range,
                                                                 formats=formats)))
    if curves is not None and "trunk" in curves and curves["trunk"].notna().any():
        jobs.append(("branches", lambda: plots.plot_branches(curves, out / "branches", formats=formats)))
    if runs is not None:
        kaplan = results.get("kaplan")
        jobs.append(("loss_vs_compute", lambda: plots.plot_loss_vs_compute(runs, out / "loss_vs_compute", fit=kaplan,
                                                                             curves=curves, formats=formats)))
        if "parametric" in results:
            jobs.append(("contours", lambda: plots.plot_contours(results["parametric"], out / "contours", runs=runs,
                                                                 formats=formats)))
            jobs.append(("residuals", lambda: plots.plot_residuals(runs, results["parametric"], out / "residuals",
                                                                   formats=formats)))
    if "data-constrained" in results:
        from analysis import data_constrained_plots as dcp

        dc = results["data-constrained"]
        jobs.append(("loss_vs_epochs", lambda: dcp.plot_loss_vs_epochs(dc, out / "loss_vs_epochs",
                                                                       formats=formats)))
        jobs.append(("iso_loss_epochs", lambda: dcp.plot_iso_loss(dc, out / "iso_loss_epochs", formats=formats)))
    if "curve" in results:
        from analysis.curve_plots import plot_curve_fit

        jobs.append(("curve_fit", lambda: plot_curve_fit(results["curve"], out / "curve_fit")))
    written = []
    for name, job in jobs:
        try:
            written.extend(job())
        except (AnalysisInputError, ValueError) as err:  # a plot that does not apply must not lose the report
            notes.append(f"plot {name} not drawn: {err}")
    return written


def _markdown(results: dict[str, FitResult], runs: pd.DataFrame | None, notes: list[str], source: str | None,
              alloc: pd.DataFrame, images: list[Path], comparison: dict[str, pd.DataFrame] | None = None) -> str:
    lines = ["# Scaling-law fit", ""]
    if source:
        lines.append(f"Source: `{source}`")
    if runs is not None:
        cols = runs.attrs.get("columns", {})
        lines.append(f"Runs: {len(runs)}; N from `{cols.get('N', 'N')}`, D from `{cols.get('D', 'D')}`, "
                     f"C from `{cols.get('C', 'C')}`, loss from `{cols.get('loss', 'loss')}`. "
                     f"N {runs['N'].min():.3g} to {runs['N'].max():.3g}, C {runs['C'].min():.3g} to {runs['C'].max():.3g} FLOPs.")
        lines += [f"Selection: {s}." for s in runs.attrs.get("selection", [])]
    lines.append("")
    for name, res in results.items():
        pct = f"{100 * res.level:g}%"
        lines += [f"## {name}", "", f"Law: `{res.law}`", "", f"| name | estimate | std err | {pct} interval |",
                  "| --- | --- | --- | --- |"]
        for k, v in res.estimates.items():
            se = res.stderr.get(k)
            iv = res.interval.get(k)
            lines.append(f"| {k} | {_g(v)} | {_g(se) if se is not None else ''} | "
                         f"{f'({_g(iv[0])}, {_g(iv[1])})' if iv is not None else ''} |")
        diag = {k: v for k, v in res.diagnostics.items() if not isinstance(v, dict)}
        lines += ["", "Diagnostics: " + ", ".join(f"{k} = {_g(v)}" for k, v in diag.items()), ""]
        status = "converged" if res.success else "**check: " + ("no convergence" if not res.diagnostics.get(
            "converged", True) else f"bound hit ({', '.join(res.diagnostics.get('bound_hit', []))})") + "**"
        lines += [f"Status: {status}", ""]
        lines += [f"- warning: {w}" for w in res.warnings]
        lines.append("")
    if len(alloc):
        lines += ["## Compute-optimal allocation", "", _table(alloc), ""]
    if "data-constrained" in results:
        from analysis.data_constrained import epoch_table

        lines += ["## Value of repeated data", "", "D'/D: what training that many epochs on U unique tokens is "
                  "worth relative to as many fresh tokens; extra_epoch: what one more pass adds.", "",
                  _table(epoch_table(results["data-constrained"])), ""]
    if "curve" in results:
        from analysis.curve_laws.summary import curve_markdown

        lines += curve_markdown(results["curve"], _table)
    if comparison:
        from analysis.objectives import comparison_markdown

        lines += comparison_markdown(comparison, _table)
    if notes:
        lines += ["## Warnings", ""] + [f"- {n}" for n in notes] + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    return "\n".join(lines)


def _table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = ["| " + " | ".join(_g(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _g(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_g(x) for x in v) + "]"
    return str(v)
