"""Fit a loss-curve law to training curves; predict the loss along any schedule, with a bootstrap band.

    from analysis import fit_loss_curve
    res = fit_loss_curve(curves, law="multipower", schedules={"cosine_24000": lrs, ...}, bootstrap=20)
    res.predict("cosine:steps=72000,final=0.1")        # step, lr, loss, loss_low, loss_high
    res.predict(lrs_array, steps=[10000, 72000])

Objective as the Multi-Power Law authors' code: Huber (delta 1e-3) of log(measured) - log(predicted),
summed over every point of every curve. Starts: a grid over the law's nonlinear parameters, the linear
ones (L0, A, and B or C) solved by non-negative least squares for each; the best starts are refined by
L-BFGS-B with analytic gradients, in logs of the scale parameters. Bootstrap: resample the runs (a
single run: blocks of its points), refit from the point estimate; the draws give the intervals of the
parameters and the prediction band.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from analysis.checks import check_bootstrap, check_level
from analysis.errors import AnalysisInputError
from analysis.result import FitResult, summarize_samples
from analysis.curve_laws import data as cdata
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.laws import Design, Law, get_law, warmup_convention
from analysis.curve_laws.metrics import curve_metrics

EXTRAPOLATION = 10.0  # predicting beyond this many times the longest fitted horizon warns
WARMUP_NOTES = {
    "code": "code (released code: the warmup ramp counts inside the loss-drop term)",
    "paper": "paper (literal paper: the warmup only in S1, the loss-drop sum starts after it)",
}


# ----------------------------------------------------------------------------- objective


@dataclass
class _Problem:
    """The summed Huber objective of the log residuals; ``counts`` repeat points (bootstrap resamples)."""

    law: Law
    designs: list[Design]
    y: list[np.ndarray]
    counts: list[np.ndarray]
    delta: float
    fixed: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = [i for i in range(len(self.law.params)) if i not in self.fixed]
        self.logy = [np.log(y) for y in self.y]
        self.eps = 1e-3 * min(float(y.min()) for y in self.y)
        self.rep = [np.repeat(np.arange(len(c)), c.astype(np.int64)) for c in self.counts]
        self._cache: tuple[bytes, np.ndarray, np.ndarray] | None = None

    def full(self, u_free: np.ndarray, u_all: np.ndarray) -> np.ndarray:
        u = u_all.copy()
        u[self.free] = u_free
        return u

    def residuals_jac(self, p: np.ndarray, need_jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Residuals log y - log pred of every (repeated) point, and their Jacobian in p."""
        rs, Js = [], []
        for design, logy, rep in zip(self.designs, self.logy, self.rep):
            if rep.size == 0:
                continue
            pred, J = self.law.jacobian(p, design, need_jac=need_jac)
            ok = pred > self.eps
            # below eps: log continued linearly, so that a wild trial step is finite and points back
            safe = np.where(ok, pred, 1.0)
            logp = np.where(ok, np.log(safe), math.log(self.eps) + (pred - self.eps) / self.eps)
            rs.append((logy - logp)[rep])
            if need_jac:
                Js.append((-J / np.where(ok, safe, self.eps)[:, None])[rep])
        return np.concatenate(rs), (np.vstack(Js) if need_jac else None)

    def value(self, p: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r, _ = self.residuals_jac(p, need_jac=False)
        a = np.abs(r)
        d = self.delta
        return float(np.sum(np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))))

    def _eval(self, u_free: np.ndarray, u_all: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = u_free.tobytes()
        if self._cache is None or self._cache[0] != key:
            u = self.full(u_free, u_all)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                r, J = self.residuals_jac(self.law.from_free(u))
            J = (J * self.law.free_chain(u)[None, :])[:, self.free]
            bad = ~np.isfinite(r)
            if bad.any():
                r = np.where(bad, 1.0, r)
            J = np.where(np.isfinite(J), J, 0.0)
            self._cache = (key, r, J)
        return self._cache[1], self._cache[2]

    def fun(self, u_free: np.ndarray, u_all: np.ndarray) -> np.ndarray:
        return self._eval(u_free, u_all)[0]

    def jac(self, u_free: np.ndarray, u_all: np.ndarray) -> np.ndarray:
        return self._eval(u_free, u_all)[1]


def _linear_start(problem: _Problem, nonlinear: dict[str, float]) -> np.ndarray | None:
    """Parameters with the linear ones solved (non-negative least squares on the raw loss)."""
    law = problem.law
    p = np.array([nonlinear.get(name, 1.0) for name in law.params], dtype=float)
    for i, v in problem.fixed.items():
        p[i] = v
    lin = [law.params.index(n) for n in law.linear if law.params.index(n) not in problem.fixed]
    rows, rhs = [], []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for design, y, c in zip(problem.designs, problem.y, problem.counts):
            w = c.astype(float)
            if not w.any():
                continue
            q = p.copy()
            q[lin] = 0.0
            # prediction without the linear terms; the Jacobian columns of the linear ones are the terms they multiply
            base, J = law.jacobian(q, design)
            cols = J[:, lin]
            sw = np.sqrt(w)
            rows.append(cols * sw[:, None])
            rhs.append((y - base) * sw)
    if not rows:
        return None
    X, b = np.vstack(rows), np.concatenate(rhs)
    if not np.all(np.isfinite(X)) or not np.all(np.isfinite(b)):
        return None
    # non-negative: a loss floor, a power-law amplitude and a drop amplitude are all >= 0
    scale = np.maximum(np.abs(X).max(0), 1e-300)
    coef, _ = nnls(X / scale, b)
    p[lin] = np.maximum(coef / scale, 1e-12)
    return p


def _bound_hits(u: np.ndarray, bounds: list[tuple[float, float]], free: list[int], names: Sequence[str]) -> list[str]:
    hits = []
    for i in free:
        lo, hi = bounds[i]
        tol = 1e-6 * (hi - lo)
        if u[i] <= lo + tol or u[i] >= hi - tol:
            hits.append(names[i])
    return hits


def _minimise(problem: _Problem, starts: list[np.ndarray], peak: float, n_refine: int,
              max_nfev: int = 400) -> dict[str, Any]:
    """Score the starts, refine the best ``n_refine`` by trust-region least squares with the Huber loss.

    scipy's ``least_squares(loss="huber", f_scale=delta)`` minimises exactly the summed Huber of the
    residuals (0.5 r^2 within delta, delta (|r| - delta / 2) beyond), with Gauss-Newton steps.
    """
    law = problem.law
    bounds = law.bounds(peak)
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    scored = []
    for p in starts:
        if p is None:
            continue
        f = problem.value(p)
        if np.isfinite(f):
            scored.append((f, p))
    if not scored:
        raise AnalysisInputError("fit: no start gives a finite objective; check the losses and schedules")
    scored.sort(key=lambda t: t[0])
    best = None
    refined = 0
    free = problem.free
    for _, p in scored[:max(1, n_refine)]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u_all = np.clip(law.to_free(p), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        res = least_squares(problem.fun, u_all[free], jac=problem.jac, args=(u_all,), bounds=(lo[free], hi[free]),
                            method="trf", loss="huber", f_scale=problem.delta, x_scale="jac", max_nfev=max_nfev,
                            ftol=1e-12, xtol=1e-10, gtol=1e-12)
        refined += 1
        u = problem.full(res.x, u_all)
        f = problem.value(law.from_free(u))
        if best is None or f < best[0]:
            best = (f, res, u)
    f, res, u = best
    return {"p": law.from_free(u), "objective": f, "converged": bool(res.status > 0), "message": str(res.message),
            "nit": int(res.nfev), "bound_hit": _bound_hits(u, bounds, free, law.params),
            "n_starts": len(starts), "n_refined": refined}


# ----------------------------------------------------------------------------- the predictor


@dataclass
class CurveModel:
    """A law with its parameters (and bootstrap draws): the ``predict`` of a curve FitResult."""

    law: Law
    params: np.ndarray
    warmup: str = "code"
    draws: np.ndarray | None = None  # (n_draws, n_params)
    level: float = 0.95
    schedules: dict[str, np.ndarray] = field(default_factory=dict)
    horizon: int | None = None  # longest fitted curve, in steps
    peak: float | None = None
    warmup_steps: int | None = None

    def schedule(self, lrs: Any) -> tuple[str, np.ndarray]:
        if isinstance(lrs, str):
            if lrs in self.schedules:
                return lrs, self.schedules[lrs]
            return sch.parse_schedule(lrs, {"peak": self.peak, "warmup": self.warmup_steps})
        try:
            arr = np.asarray(lrs, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise AnalysisInputError("lrs: expected an array of lr indexed by step, a schedule spec "
                                     "(e.g. 'cosine:steps=72000,final=0.1') or a fitted run id") from None
        if arr.size < 2 or not np.isfinite(arr).all() or (arr < 0).any() or not (arr[1:] > 0).any():
            raise AnalysisInputError("lrs: an lr array needs at least 2 steps, every lr finite and >= 0, and one > 0")
        return "schedule", arr

    def predict(self, lrs: Any, steps: Any = None, *, level: float | None = None, exact: bool = False) -> pd.DataFrame:
        """Loss along the schedule ``lrs`` at ``steps``: columns step, lr, loss, loss_low, loss_high.

        lrs: an array of lr indexed by step, a spec (``cosine:steps=72000,final=0.1``; peak and warmup
          default to the fitted runs') or the id of a fitted run (its schedule).
        steps: the steps to evaluate (default: every step up to 512, else 400 from the end of warmup to the
          last). The band is the bootstrap percentile band at ``level`` (NaN without bootstrap draws).
        """
        _, arr = self.schedule(lrs)
        T = arr.size - 1
        if steps is None:
            w = max(1, sch.warmup_of(arr))
            steps = np.arange(1, T + 1) if T <= 512 else np.unique(np.linspace(w, T, 400).round().astype(np.int64))
        else:
            steps = np.unique(np.asarray(steps, dtype=float).reshape(-1))
            if steps.size == 0 or np.any(steps != np.round(steps)) or steps[0] < 1 or steps[-1] > T:
                raise AnalysisInputError(f"steps: must be whole steps in 1..{T} (the schedule's length)")
            steps = steps.astype(np.int64)
        if self.horizon and steps[-1] > EXTRAPOLATION * self.horizon:
            warnings.warn(f"predicting to step {int(steps[-1])}, beyond {EXTRAPOLATION:g}x the longest fitted curve "
                          f"({self.horizon} steps): an extrapolation the fit does not support", stacklevel=3)
        design = Design(arr, steps, warmup=self.warmup, exact=exact, warmup_steps=None)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = self.law.predict(self.params, design)
            lo = hi = np.full(steps.size, np.nan)
            if self.draws is not None and len(self.draws) >= 2:
                preds = np.array([self.law.predict(q, design) for q in self.draws if np.all(np.isfinite(q))])
                lev = self.level if level is None else check_level(level)
                tail = 100 * (1 - lev) / 2
                lo, hi = np.percentile(preds, [tail, 100 - tail], axis=0)
                lo, hi = np.minimum(lo, loss), np.maximum(hi, loss)
        return pd.DataFrame({"step": steps, "lr": arr[steps], "loss": loss, "loss_low": lo, "loss_high": hi})


def _result(model: CurveModel, approach_law: str, diagnostics: dict[str, Any], warnings_: list[str],
            samples: dict[str, np.ndarray] | None = None, tables: dict[str, Any] | None = None) -> FitResult:
    law = model.law
    estimates = {n: float(v) for n, v in zip(law.params, model.params)}
    stderr, interval = summarize_samples(samples, model.level) if samples else ({}, {})
    res = FitResult(approach="curve", law=approach_law, estimates=estimates, stderr=stderr, interval=interval,
                    level=model.level, diagnostics=diagnostics, warnings=warnings_, samples=samples or {},
                    tables=tables or {}, predict_fn=model.predict)
    res.tables["model"] = model
    return res


def curve_law(law: str = "multipower", *, warmup: str = "code", level: float = 0.95, **params: float) -> FitResult:
    """The predictor of ``law`` with the given parameters (no fit), e.g. the published ones:

        mpl = curve_law("multipower", L0=2.3747, A=0.6542, alpha=0.4288, B=523.42, C=2.0246,
                        beta=0.5935, gamma=0.6347)
        mpl.predict(lrs, steps)

    Parameters: multipower ``L0, A, alpha, B, C, beta, gamma``; tissue ``L0, A, alpha, C, decay``.
    """
    lw = get_law(law)
    warmup = warmup_convention(warmup)
    missing = [n for n in lw.params if n not in params]
    extra = [n for n in params if n not in lw.params]
    if missing or extra:
        raise AnalysisInputError(f"{lw.name}: parameters {', '.join(lw.params)} are needed"
                                 + (f"; missing {', '.join(missing)}" if missing else "")
                                 + (f"; unknown {', '.join(extra)}" if extra else ""))
    values = np.array([float(params[n]) for n in lw.params])
    if not np.all(np.isfinite(values)):
        raise AnalysisInputError(f"{lw.name}: every parameter must be a finite number")
    model = CurveModel(lw, values, warmup=warmup, level=check_level(level))
    diag = {"law_name": lw.name, "warmup": WARMUP_NOTES[warmup], "warmup_convention": warmup, "fitted": False}
    return _result(model, lw.formula, diag, [])


# ----------------------------------------------------------------------------- fitting


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
    run_col: str = "run_id",
    step_col: str = "step",
    lr_col: str = "lr",
    loss_col: str = "loss",
) -> FitResult:
    """Fit ``law`` (``multipower`` or ``tissue``) to the loss curves of one model size.

    curves: long DataFrame (``run_id``, ``step``, ``loss``, ``lr``; e.g. ``analysis.load_curves``), one run's
      frame, or a mapping run id -> frame.
    schedules: run id -> the lr at every step (array indexed by step, or a spec string); runs left out use
      their logged lr, interpolated (a warning when the warmup was not logged).
    warmup: ``code`` (default; the released code's convention, the ramp inside the loss-drop term) or
      ``paper`` (the literal paper: the ramp only in S1). Named in ``diagnostics["warmup"]``.
    bootstrap: resamples of the runs (one run: blocks of points) for intervals and the prediction band.
    fix: parameters held at a value, e.g. ``{"decay": 0.999}`` (Tissue et al.'s default).
    starts: nonlinear starting values to use instead of the built-in grid (the linear ones are solved).
    min_step: fit only points at or after this step (default: the points after each run's warmup).
    Returns a ``FitResult`` (approach ``curve``): ``predict(lrs, steps=None)``; ``tables["data"]`` the points
    with their fitted values, ``tables["metrics"]`` R^2, MAE, RMSE, PredE, WorstE per run.
    """
    t0 = time.perf_counter()
    lw = get_law(law)
    warmup = warmup_convention(warmup)
    n_boot = check_bootstrap(bootstrap)
    level = check_level(level)
    if not (isinstance(delta, (int, float)) and delta > 0):
        raise AnalysisInputError(f"delta: {delta!r}; must be > 0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = cdata.prepare(curves, schedules, run_col=run_col, step_col=step_col, lr_col=lr_col, loss_col=loss_col)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    fixed = {}
    fix_names = set(fix or {})
    for name, value in (fix or {}).items():
        if name not in lw.params:
            raise AnalysisInputError(f"fix: {name!r} is not a parameter of {lw.name} ({', '.join(lw.params)})")
        fixed[lw.params.index(name)] = float(value)

    designs, ys, kept = [], [], []
    for c in runs:
        w_steps = sch.warmup_of(c.lrs)
        first = w_steps if min_step is None else int(min_step)
        sel = c.steps >= max(first, 1)
        if sel.sum() < 1:
            raise AnalysisInputError(f"run {c.run_id}: column {step_col!r}: no point at or after step {first} "
                                     f"(the {'end of warmup' if min_step is None else 'min_step'}); its last step "
                                     f"is {c.horizon}")
        designs.append(Design(c.lrs, c.steps[sel], warmup=warmup))
        ys.append(c.loss[sel])
        kept.append(sel)
    n_points = int(sum(len(y) for y in ys))
    n_free = len(lw.params) - len(fixed)
    if n_points <= n_free:
        raise AnalysisInputError(f"points: {n_points} after the warmup; the {lw.name} law needs more than {n_free}")
    peak = float(max(c.lrs.max() for c in runs))
    ones = [np.ones(len(y), dtype=np.int64) for y in ys]
    problem = _Problem(lw, designs, ys, ones, float(delta), fixed)
    grid = list(starts) if starts is not None else lw.starts(peak)
    seen, unique = set(), []
    for s in grid:  # starts that differ only in a fixed parameter are one start
        key = tuple(sorted((k, v) for k, v in dict(s).items() if k not in fix_names))
        if key not in seen:
            seen.add(key)
            unique.append(dict(s))
    start_params = [_linear_start(problem, s) for s in unique]
    best = _minimise(problem, start_params, peak, n_refine)
    p_hat = best["p"]

    samples: dict[str, np.ndarray] = {}
    draws = None
    boot_note = None
    if n_boot:
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_boot):
            counts = _resample(rng, ys)
            bp = _Problem(lw, designs, ys, counts, float(delta), fixed)
            try:
                rows.append(_minimise(bp, [p_hat], peak, 1)["p"])
            except AnalysisInputError:
                rows.append(np.full(len(lw.params), np.nan))
        draws = np.array(rows)
        samples = {n: draws[:, i] for i, n in enumerate(lw.params) if i not in fixed}
        boot_note = "runs" if len(ys) >= 2 else "blocks of points (a single run)"

    model = CurveModel(lw, p_hat, warmup=warmup, draws=draws, level=level,
                       schedules={c.run_id: c.lrs for c in runs}, horizon=max(c.horizon for c in runs), peak=peak,
                       warmup_steps=int(np.median([sch.warmup_of(c.lrs) for c in runs])))
    data_rows, metric_rows = [], []
    for c, design, y, sel in zip(runs, designs, ys, kept):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fitted = lw.predict(p_hat, design)
        data_rows.append(pd.DataFrame({"run_id": c.run_id, "step": design.steps, "lr": c.lrs[design.steps],
                                       "loss": y, "fitted": fitted, "lr_source": c.lr_source}))
        m = curve_metrics(y, fitted)
        metric_rows.append({"run_id": c.run_id, "points": len(y), **m, "final_step": int(design.steps[-1]),
                            "final_loss": float(y[-1]), "final_fitted": float(fitted[-1])})
    data = pd.concat(data_rows, ignore_index=True)
    metrics = pd.DataFrame(metric_rows)
    warn_list = list(notes)
    if best["bound_hit"]:
        warn_list.append(f"parameter(s) {', '.join(best['bound_hit'])} at a bound of the search; the fit may be poor")
    if not best["converged"]:
        warn_list.append(f"the optimiser did not converge ({best['message']})")
    interp = [c.run_id for c in runs if c.lr_source == "interpolated"]
    diag = {
        "law_name": lw.name, "warmup": WARMUP_NOTES[warmup], "warmup_convention": warmup,
        "objective": best["objective"], "converged": best["converged"], "bound_hit": best["bound_hit"],
        "n_points": n_points, "n_runs": len(runs), "n_starts": best["n_starts"], "n_refined": best["n_refined"],
        "iterations": best["nit"], "delta": float(delta), "fixed": {lw.params[i]: v for i, v in fixed.items()},
        "horizon": model.horizon, "peak_lr": peak, "warmup_steps": model.warmup_steps,
        "lr_interpolated": interp, "rmse": float(np.sqrt(np.mean((data["loss"] - data["fitted"]) ** 2))),
        "message": best["message"], "seconds": round(time.perf_counter() - t0, 3),
    }
    if boot_note:
        diag["bootstrap"] = n_boot
        diag["bootstrap_over"] = boot_note
    return _result(model, lw.formula, diag, warn_list, samples, {"data": data, "metrics": metrics})


def _resample(rng: np.random.Generator, ys: list[np.ndarray]) -> list[np.ndarray]:
    """Point counts of one bootstrap resample: multinomial counts of the runs, or of blocks of one run."""
    if len(ys) >= 2:
        counts = rng.multinomial(len(ys), np.full(len(ys), 1.0 / len(ys)))
        return [np.full(len(y), int(k), dtype=np.int64) for y, k in zip(ys, counts)]
    n = len(ys[0])
    size = max(1, n // 10)
    blocks = np.arange(n) // size
    nb = int(blocks.max()) + 1
    counts = rng.multinomial(nb, np.full(nb, 1.0 / nb))
    return [counts[blocks].astype(np.int64)]
