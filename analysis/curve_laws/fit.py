"""Fit a loss-curve law to training curves; predict the loss along any schedule, with a bootstrap band.

    from analysis import fit_loss_curve
    res = fit_loss_curve(curves, law="multipower", schedules={"cosine_24000": lrs, ...}, bootstrap=20)
    res.predict("cosine:steps=72000,final=0.1")        # step, lr, loss, loss_low, loss_high
    res.predict(lrs_array, steps=[10000, 72000])

Objective as the Multi-Power Law authors' code: Huber (delta 1e-3) of log(measured) - log(predicted),
summed over every point of every curve (``objective.Problem``). Starts: a grid over the law's nonlinear
parameters, the linear ones (L0, A, and B or C) solved by non-negative least squares for each; the best
starts are refined by trust-region least squares with analytic Jacobians, in logs of the scale
parameters (``objective.minimise``). Bootstrap: resample the runs (fewer than 3: blocks of points within each run),
refit (``lsq``: from the point estimate; ``paper``: the whole procedure); the draws give the intervals
of the parameters and the prediction band.

Methods, on the paper's data (``published``: 3 training curves of <= 24,000 steps, 6 held-out schedules):
- ``lsq`` (default) reaches the minimum of the objective, the same one from every start (also from the
  published parameters): at 400M 7.9e-5, against 5.8e-4 for the published parameters, yet a held-out
  PredE of 0.00216 against 0.00168. With only 3 short curves, L0 and alpha (the long-horizon floor) and
  the drop shape (B, beta: a small beta with a large B lets the drop grow like a logarithm of time) are
  weakly identified; the minimum takes a low L0 (2.30259, no bound and no start: ln 10 by chance) and a
  slowly saturating drop, and predicts cosine_72000 0.025 low at its end. Even fitted on 7 of the 9
  curves, the law misses the 2 left out: the WSD cooldowns by up to 0.0125, or (the two 72,000-step
  curves left out) cosine_72000 by 0.036 at its end.
- ``paper``: the authors' own procedure (``paper_fit``): the simplified law's L0, A, alpha, B, then
  about 100 steps of AdamW from C = 1, beta = 0.5, gamma = 0.5. It gives the published parameters back
  (to 1e-4 relative at 25M, 100M and 400M) and so their held-out metrics. Its advantage is the early
  stop, which keeps B near the simplified law's value, an implicit prior; it is fragile: a stage 1 that
  stops a little early (B at 550, not 541.6) gives PredE 0.00236 at 400M.
No law or method here predicts every held-out run's final loss within 0.010 at every size: the 400M WSD
cooldowns are predicted 0.014-0.032 below their final loss by each (multipower lsq or paper, tissue, beta fixed).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.checks import check_bootstrap, check_level
from analysis.errors import AnalysisInputError
from analysis.result import FitResult
from analysis.curve_laws import data as cdata
from analysis.curve_laws import paper_fit
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.laws import Design, Law, get_law, warmup_convention
from analysis.curve_laws.metrics import curve_metrics, schedules_of
from analysis.curve_laws.model import EXTRAPOLATION, WARMUP_NOTES, CurveModel, curve_law, make_result
from analysis.curve_laws.minima import near_minima
from analysis.curve_laws.objective import Problem, linear_start, minimise

__all__ = ["EXTRAPOLATION", "METHODS", "WARMUP_NOTES", "CurveModel", "curve_law", "fit_loss_curve"]
METHODS = ("lsq", "paper")
RUNS_TO_RESAMPLE = 3  # fewer runs: the bootstrap resamples blocks of points within each run


def fit_loss_curve(
    curves: Any,
    law: str = "multipower",
    *,
    schedules: Mapping[str, Any] | None = None,
    warmup: str = "code",
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    delta: float = 1e-3,
    fix: Mapping[str, float] | None = None,
    starts: Sequence[Mapping[str, float]] | None = None,
    n_refine: int = 6,
    min_step: int | None = None,
    method: str = "lsq",
    minima: bool = False,
    run_col: str = "run_id",
    step_col: str = "step",
    lr_col: str = "lr",
    loss_col: str = "loss",
) -> FitResult:
    """Fit ``law`` (``multipower`` or ``tissue``) to the loss curves of one model size.

    curves: long DataFrame (``run_id``, ``step``, ``loss``, ``lr``; e.g. ``analysis.load_curves``), one run's
      frame, or a mapping run id -> frame.
    schedules: run id -> the lr at every step (array indexed by step, or a spec string); runs left out use
      their logged lr, interpolated (a warning when the warmup was not logged); entries of runs not in
      ``curves`` are ignored.
    warmup: ``code`` (default; the released code's convention, the ramp inside the loss-drop term) or
      ``paper`` (the literal paper: the ramp only in S1). Named in ``diagnostics["warmup"]``.
    bootstrap: resamples of the runs (fewer than 3 runs: blocks of points within each) for intervals and the
      prediction band.
    fix: parameters held at a value, e.g. ``{"decay": 0.999}`` (Tissue et al.'s default).
    starts: nonlinear starting values to use instead of the built-in grid (the linear ones are solved).
    min_step: fit only points at or after this step (default: the points after each run's warmup).
    method: ``lsq`` (default; the minimum of the objective: grid of starts, trust-region refinement) or
      ``paper`` (multipower only: the authors' two-stage, early-stopped AdamW fit, ``paper_fit``; it
      reproduces the published parameters, and predicts held-out schedules better than ``lsq`` there).
    minima: refine every start and keep the minima the data do not tell from the best (``curve_laws.minima``;
      ``tables["minima"]``); ``predict`` adds their range, ``loss_minima_low`` / ``_high`` (lsq; slower).
    Returns a ``FitResult`` (approach ``curve``): ``predict(lrs, steps=None)``; ``tables["data"]`` the points
    with their fitted values, ``tables["metrics"]`` R^2, MAE, RMSE, PredE, WorstE per run.
    """
    t0, lw, warmup = time.perf_counter(), get_law(law), warmup_convention(warmup)
    n_boot, level = check_bootstrap(bootstrap), check_level(level)
    if not (isinstance(delta, (int, float)) and delta > 0):
        raise AnalysisInputError(f"delta: {delta!r}; must be > 0")
    runs, notes = _prepare(curves, schedules, run_col, step_col, lr_col, loss_col)
    fixed = _fixed(lw, fix)
    method = _method(method, lw, fix, starts, minima)
    designs, ys = _designs(runs, warmup, min_step, step_col, paper_fit.RESOLUTION if method == "paper" else 1.0)
    n_points = _count_points(lw, ys, fixed)
    peak = float(max(c.lrs.max() for c in runs))
    problem = Problem(lw, designs, ys, [np.ones(len(y), dtype=np.int64) for y in ys], float(delta), fixed)
    best = _estimate(problem, method, peak, starts, set(fix or {}), 10**6 if minima else n_refine)
    p_hat = best["p"]
    near = _near(best, lw, n_points, len(fixed), level) if minima else None
    draws = _bootstrap(problem, p_hat, peak, n_boot, seed, method) if n_boot else None
    samples = {n: draws[:, i] for i, n in enumerate(lw.params) if i not in fixed} if n_boot else {}
    model = CurveModel(lw, p_hat, warmup=warmup, draws=draws, level=level,
                       schedules={c.run_id: c.lrs for c in runs}, horizon=max(c.horizon for c in runs), peak=peak,
                       warmup_steps=int(np.median([sch.warmup_argument(c.lrs) for c in runs])),
                       minima=None if near is None else near[list(lw.params)].to_numpy(float))
    tables = {**_tables(lw, p_hat, runs, designs, ys), **({"minima": near} if near is not None else {})}
    diag = _diagnostics(lw, best, model, runs, fixed, tables["data"], warmup=warmup, delta=float(delta),
                        n_points=n_points, seconds=time.perf_counter() - t0, method=method)
    if n_boot:
        diag["bootstrap"] = n_boot
        diag["bootstrap_over"] = "runs" if len(ys) >= RUNS_TO_RESAMPLE else "blocks of points within each run"
    return make_result(model, lw.formula, diag, _warnings(notes, best), samples, tables)


def _prepare(curves: Any, schedules: Mapping[str, Any] | None, run_col: str, step_col: str, lr_col: str,
             loss_col: str) -> tuple[list[cdata.Curve], list[str]]:
    """The checked curves, and the input warnings (re-issued here, kept for ``FitResult.warnings``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = cdata.prepare(curves, schedules_of(curves, schedules, run_col), run_col=run_col, step_col=step_col, lr_col=lr_col, loss_col=loss_col)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return runs, notes


def _method(method: str, lw: Law, fix: Mapping[str, float] | None, starts: Any, minima: bool) -> str:
    if method not in METHODS:
        raise AnalysisInputError(f"method: {method!r} is not one of {', '.join(map(repr, METHODS))}")
    if method == "paper" and (lw.name != "multipower" or fix or starts is not None):
        raise AnalysisInputError(f"method: 'paper' is the Multi-Power Law authors' fit of all seven parameters "
                                 f"from their own start; law {lw.name!r}, fix and starts need method='lsq'")
    if minima and method != "lsq":
        raise AnalysisInputError(f"minima=True with method={method!r}: the minima come from the lsq refinements")
    return method


def _near(best: dict[str, Any], lw: Law, n_points: int, n_fixed: int, level: float) -> pd.DataFrame:
    """The near-optimal minima of the refinements (their count joins the diagnostics)."""
    near = near_minima(best["minima"], lw.params, n_points, len(lw.params) - n_fixed, level)
    best["extra"] = {**best.get("extra", {}), "n_minima": len(near)}
    return near


def _fixed(lw: Law, fix: Mapping[str, float] | None) -> dict[int, float]:
    fixed = {}
    for name, value in (fix or {}).items():
        if name not in lw.params:
            raise AnalysisInputError(f"fix: {name!r} is not a parameter of {lw.name} ({', '.join(lw.params)})")
        fixed[lw.params.index(name)] = float(value)
    return fixed


def _designs(runs: list[cdata.Curve], warmup: str, min_step: int | None, step_col: str,
             resolution: float = 1.0) -> tuple[list[Design], list[np.ndarray]]:
    """Per run: the law's design at the fitted steps (after the warmup or ``min_step``) and their losses."""
    designs, ys = [], []
    for c in runs:
        first = sch.warmup_of(c.lrs) if min_step is None else int(min_step)
        sel = c.steps >= max(first, 1)
        if sel.sum() < 1:
            raise AnalysisInputError(f"run {c.run_id}: column {step_col!r}: no point at or after step {first} "
                                     f"(the {'end of warmup' if min_step is None else 'min_step'}); its last step "
                                     f"is {c.horizon}")
        designs.append(Design(c.lrs, c.steps[sel], warmup=warmup, resolution=resolution))
        ys.append(c.loss[sel])
    return designs, ys


def _count_points(lw: Law, ys: list[np.ndarray], fixed: dict[int, float]) -> int:
    n_points, n_free = int(sum(len(y) for y in ys)), len(lw.params) - len(fixed)
    if n_points <= n_free:
        raise AnalysisInputError(f"points: {n_points} after the warmup; the {lw.name} law needs more than {n_free}")
    return n_points


def _estimate(problem: Problem, method: str, peak: float, starts: Any, fix_names: set[str],
              n_refine: int) -> dict[str, Any]:
    """The point estimate: the paper's procedure, or the best of the refined starts."""
    if method == "paper":
        return paper_fit.fit(problem, peak)
    grid = _unique_starts(list(starts) if starts is not None else problem.law.starts(peak), fix_names)
    return minimise(problem, [linear_start(problem, s) for s in grid], peak, n_refine)


def _unique_starts(grid: list[Mapping[str, float]], fix_names: set[str]) -> list[dict[str, float]]:
    """The starts, those that differ only in a fixed parameter counted once."""
    seen, unique = set(), []
    for s in grid:
        key = tuple(sorted((k, v) for k, v in dict(s).items() if k not in fix_names))
        if key not in seen:
            seen.add(key)
            unique.append(dict(s))
    return unique


def _bootstrap(problem: Problem, p_hat: np.ndarray, peak: float, n_boot: int, seed: int, method: str) -> np.ndarray:
    """(n_boot, n_params) refits on resampled runs (NaN where one fails): ``lsq`` from the point estimate,
    ``paper`` by the whole procedure again."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_boot):
        counts = _resample(rng, problem.y)
        bp = Problem(problem.law, problem.designs, problem.y, counts, problem.delta, problem.fixed)
        try:
            rows.append(paper_fit.fit(bp, peak)["p"] if method == "paper" else minimise(bp, [p_hat], peak, 1)["p"])
        except AnalysisInputError:
            rows.append(np.full(len(problem.law.params), np.nan))
    return np.array(rows)


def _resample(rng: np.random.Generator, ys: list[np.ndarray]) -> list[np.ndarray]:
    """Point counts of one bootstrap resample: multinomial counts of the runs (``RUNS_TO_RESAMPLE`` runs or
    more), else of blocks of points within each run (a draw of one or two runs would often hold a single
    run, which cannot identify the law's drop term)."""
    if len(ys) >= RUNS_TO_RESAMPLE:
        counts = rng.multinomial(len(ys), np.full(len(ys), 1.0 / len(ys)))
        return [np.full(len(y), int(k), dtype=np.int64) for y, k in zip(ys, counts)]
    return [_block_counts(rng, len(y)) for y in ys]


def _block_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Counts of the points of one run: 10 blocks of consecutive points, resampled."""
    size = max(1, n // 10)
    blocks = np.arange(n) // size
    nb = int(blocks.max()) + 1
    counts = rng.multinomial(nb, np.full(nb, 1.0 / nb))
    return counts[blocks].astype(np.int64)


def _tables(lw: Law, p_hat: np.ndarray, runs: list[cdata.Curve], designs: list[Design],
            ys: list[np.ndarray]) -> dict[str, pd.DataFrame]:
    """``data``: the fitted points with their fitted values; ``metrics``: the paper's metrics per run."""
    data_rows, metric_rows = [], []
    for c, design, y in zip(runs, designs, ys):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fitted = lw.predict(p_hat, design)
        data_rows.append(pd.DataFrame({"run_id": c.run_id, "step": design.steps, "lr": c.lrs[design.steps],
                                       "loss": y, "fitted": fitted, "lr_source": c.lr_source}))
        metric_rows.append({"run_id": c.run_id, "points": len(y), **curve_metrics(y, fitted),
                            "final_step": int(design.steps[-1]), "final_loss": float(y[-1]),
                            "final_fitted": float(fitted[-1])})
    return {"data": pd.concat(data_rows, ignore_index=True), "metrics": pd.DataFrame(metric_rows)}


def _diagnostics(lw: Law, best: dict[str, Any], model: CurveModel, runs: list[cdata.Curve],
                 fixed: dict[int, float], data: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    return {
        "law_name": lw.name, "warmup": WARMUP_NOTES[extra["warmup"]], "warmup_convention": extra["warmup"],
        "objective": best["objective"], "converged": best["converged"], "bound_hit": best["bound_hit"],
        "n_points": extra["n_points"], "n_runs": len(runs), "n_starts": best["n_starts"],
        "n_refined": best["n_refined"], "iterations": best["nit"], "delta": extra["delta"],
        "fixed": {lw.params[i]: v for i, v in fixed.items()}, "horizon": model.horizon, "peak_lr": model.peak,
        "warmup_steps": model.warmup_steps, "lr_interpolated": [c.run_id for c in runs if c.lr_source == "interpolated"],
        "rmse": float(np.sqrt(np.mean((data["loss"] - data["fitted"]) ** 2))), "message": best["message"],
        "seconds": round(extra["seconds"], 3), "method": extra["method"], **best.get("extra", {}),
    }


def _warnings(notes: list[str], best: dict[str, Any]) -> list[str]:
    out = list(notes)
    if best["bound_hit"]:
        out.append(f"parameter(s) {', '.join(best['bound_hit'])} at a bound of the search; the fit may be poor")
    if not best["converged"]:
        out.append(f"the optimiser did not converge ({best['message']})")
    return out
