"""Data-constrained scaling (Muennighoff et al. 2023): the fit of the effective-data law.

The law, ``L = E + A / N'^alpha + B / D'^beta`` with effective data D' and parameters N', is
``analysis.data_constrained_law``; the tables of a fit (``epoch_table``, ``constrained_allocation``) are
``analysis.data_constrained_tables``. Both are importable from here too. Fitted as
log L = LSE(a - alpha log N', b - beta log D', e) under a Huber loss (delta 1e-3) on log loss, summed over runs.

    res = fit_data_constrained(N, D, U, L, base=MUENNIGHOFF_C4_BASE)      # two-stage: R_D*, R_N* only
    res = fit_data_constrained(N, D, U, L)                                  # joint: all seven parameters
    res["R_D_star"], res.diagnostics["profile_interval"]["R_D_star"], res.predict(N, D, U)

Methods: ``paper`` (two-stage only) is the notebook's procedure: starts on the 4 x 4 grid linspace(0, 20, 4)
of (R_D*, R_N*), torch's L-BFGS (``data_constrained_search.torch_lbfgs``), best start kept. ``valley``
(default) searches the whole valley of the objective: L-BFGS in log R* from starts log-spaced over
decades, and a profile over R_D*; the lowest objective found is reported. See docs/data_constrained.md. Intervals: a profile-likelihood
interval (``diagnostics["profile_interval"]``; the Huber loss at delta 1e-3 is nearly an L1 loss, so the
profile is calibrated as a Laplace likelihood with its scale profiled out: 2 n log(F / F_min) <= chi2_1)
and, with ``bootstrap``, percentile intervals from refits of resampled runs (``interval``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

from analysis import data_constrained_search as search
from analysis.checks import as_positive, check_bootstrap, check_level, choice, enough_points, same_length
from analysis.data_constrained_law import (BASE_NAMES, EPOCHS, LAW, MUENNIGHOFF_C4_BASE, THETA, base_theta, epoch_value,
                                           extra_epoch_value, predict_data_constrained, predict_theta, unique_params)
from analysis.data_constrained_search import _LOG_RANGE, _base_log_pred, _Data, _Space, effective_tokens
from analysis.data_constrained_tables import constrained_allocation, epoch_table
from analysis.errors import AnalysisInputError
from analysis.result import FitResult, summarize_samples

__all__ = ["BASE_NAMES", "EPOCHS", "LAW", "METHODS", "MUENNIGHOFF_C4_BASE", "PAPER_GRID", "THETA",
           "constrained_allocation", "effective_tokens", "epoch_table", "epoch_value", "extra_epoch_value",
           "fit_data_constrained", "predict_data_constrained", "unique_params"]

PAPER_GRID = np.linspace(0.0, 20.0, 4)
METHODS = ("valley", "paper")
_LOG_STARTS = 10.0 ** np.linspace(-0.5, 4.0, 10)  # valley starts of R_D* and R_N*, over four decades
_PROFILE = search.PROFILE


def fit_data_constrained(N: Any, D: Any, U: Any, L: Any, *, base: Any = None, method: str = "valley",
                         delta: float = 1e-3, bootstrap: int = 0, seed: int = 0, level: float = 0.95,
                         profile: bool = True, epochs: tuple[float, ...] = EPOCHS) -> FitResult:
    """Fit the effective-data law to parameters N, tokens D, unique tokens U and losses L (nats).

    base: the fixed base law ({A, B, E, alpha, beta}, a ``fit_parametric`` result, or ``"c4"`` for
    ``MUENNIGHOFF_C4_BASE``) for the two-stage fit, or None (``"joint"``) to fit all seven parameters jointly. method: ``valley`` or ``paper`` (see module doc).
    bootstrap: resamples of the runs, refitted for percentile intervals; profile: compute the profile
    intervals of R_D* and R_N*; epochs: epoch counts whose value relative to fresh data is reported.
    """
    t0 = time.perf_counter()
    data = _Data(*_validate(N, D, U, L), delta=_positive("delta", delta))
    method, level, bootstrap = choice("method", method, METHODS), check_level(level), check_bootstrap(bootstrap)
    epochs = tuple(float(k) for k in as_positive("epochs", epochs))
    named = {"joint": None, "c4": MUENNIGHOFF_C4_BASE}  # what scaling-fit --base-law accepts
    base = named.get(base, base) if isinstance(base, str) else base
    base5 = None if base is None else base_theta(base)
    if method == "paper" and base5 is None:
        raise AnalysisInputError("method: 'paper' needs base (the paper fixes the base law first); "
                                 "pass base=MUENNIGHOFF_C4_BASE or use method 'valley'")
    if base5 is None:
        enough_points(data.n, 8, "the joint fit of seven parameters")
    ones = np.ones(data.n)
    if method == "paper":
        theta, info = _paper_fit(data, _Space(base5, log_stars=False), ones)
    else:
        theta, info = _valley_fit(data, _Space(base5, log_stars=True), ones)
    f_min = float(data.value(theta[None], ones)[0])
    space = _Space(base5, log_stars=True)
    prof = _profiles(data, space, theta, f_min, level, info.pop("profile", {})) if profile else None
    draws, n_bad = _bootstrap(data, space, theta, prof, bootstrap, seed) if bootstrap else (None, 0)
    return _result(data, theta, f_min, info, prof, draws, n_bad, method, base5 is None, level, epochs, t0)


def _paper_fit(data: _Data, space: _Space, W: np.ndarray) -> tuple[np.ndarray, dict]:
    """The notebook's two-stage fit: torch's L-BFGS from every (R_D*, R_N*) of the 4 x 4 grid, best kept.
    ``info["starts"]``: where every start ended (R* = NaN where its objective was not finite)."""
    fg = space.fg(data, W)
    grid = np.array([(rd, rn) for rd in PAPER_GRID for rn in PAPER_GRID])
    ends = [search.torch_lbfgs(fg, g) for g in grid]
    f = np.array([e[1] if np.isfinite(e[1]) else np.inf for e in ends])
    x = np.array([e[0] if np.isfinite(e[1]) else (np.nan, np.nan) for e in ends])
    best = int(np.argmin(f))
    starts = pd.DataFrame({"start_R_D_star": grid[:, 0], "start_R_N_star": grid[:, 1], "R_D_star": x[:, 0],
                           "R_N_star": x[:, 1], "objective": np.where(np.isfinite(f), f, np.nan)})
    return space.theta(x[best])[0], {"n_starts": len(grid), "n_starts_failed": int((~np.isfinite(f)).sum()),
                                     "converged": bool(np.isfinite(f[best])), "starts": starts}


def _valley_fit(data: _Data, space: _Space, W: np.ndarray) -> tuple[np.ndarray, dict]:
    """Multi-start L-BFGS over decades of R_D*, R_N* (from a fitted base law when joint), then the
    profile over R_D* along the whole valley; the lowest point found, polished. ``info["profile"]``
    keeps that profile for the intervals."""
    stars = np.array([(rd, rn) for rd in _LOG_STARTS for rn in _LOG_STARTS])
    joint = space.base5 is None
    stars = stars[::4] if joint else stars  # 25 starts of the seven-parameter fit, 100 of the two
    base = _start_base(data) if joint else space.base5
    starts = np.array([space.x(np.r_[base, st]) for st in stars])
    X, f, ok = search.multistart(space.fg(data, W), starts)
    best = int(np.argmin(f))
    table = _profile_table(data, space, 5, space.theta(X[best])[0])
    j = int(table["objective"].idxmin())
    x_best = X[best] if f[best] <= table["objective"][j] else space.x(table.loc[j, list(THETA)].to_numpy(float))
    x_best, _, converged = search.local_min(space.fg(data, W), x_best)
    return space.theta(x_best)[0], {"n_starts": len(starts), "converged": bool(converged or ok[best]),
                                    "profile": {"R_D_star": table}}


def _profile_table(data: _Data, space: _Space, idx: int, theta: np.ndarray) -> pd.DataFrame:
    """Profile objective over theta[idx] on ``_PROFILE``, every other free parameter re-minimised."""
    W = np.ones(data.n)
    x0 = np.delete(space.x(theta), space.free.index(idx))
    f, xs = search.profile(lambda v: space.holding(idx, v).fg(data, W), _PROFILE, x0, theta[idx])
    rows = np.vstack([space.holding(idx, v).theta(x)[0] for v, x in zip(_PROFILE, xs)])
    return pd.DataFrame({"value": _PROFILE, "objective": f, **{k: rows[:, j] for j, k in enumerate(THETA)}})


def _start_base(data: _Data) -> np.ndarray:
    """A base law (a, b, e, alpha, beta) to start the joint fit: Approach 3 on the single-epoch runs."""
    from analysis.parametric import fit_parametric

    fresh = data.D <= data.U
    sel = fresh if fresh.sum() >= 10 and np.ptp(np.log(data.N[fresh] * data.D[fresh])) > 0 else np.ones(data.n, bool)
    grid = {"alpha": [0.2, 0.5], "beta": [0.2, 0.5], "e": [0.0, 0.5, 1.0], "a": [5.0, 10.0], "b": [5.0, 10.0]}
    r = fit_parametric(data.N[sel], data.D[sel], data.L[sel], delta=data.delta, grid=grid)
    return np.array([math.log(r["A"]), math.log(r["B"]), math.log(r["E"]), r["alpha"], r["beta"]])


def _profiles(data: _Data, space: _Space, theta: np.ndarray, f_min: float, level: float, done: dict) -> dict:
    """Profiles over R_D* and R_N* (those in ``done`` reused), their threshold and intervals. The fit is a
    point of both profiles; each crossing of the threshold is refined by root-finding on the profile."""
    W = np.ones(data.n)
    out = {name: done.get(name) for name in ("R_D_star", "R_N_star")}
    for idx, name in ((5, "R_D_star"), (6, "R_N_star")):
        if out[name] is None:
            out[name] = _profile_table(data, space, idx, theta)
    lowest = min(f_min, *(float(t["objective"].min()) for t in out.values()))
    threshold = lowest * math.exp(chi2.ppf(level, 1) / (2 * data.n))
    intervals = {}
    for idx, name in ((5, "R_D_star"), (6, "R_N_star")):
        t = out[name]
        rows = np.vstack([t[list(THETA)].to_numpy(float), theta])
        order = np.argsort(rows[:, idx], kind="stable")
        rows, f = rows[order], np.r_[t["objective"].to_numpy(), f_min][order]

        def at(v, j, idx=idx, rows=rows):
            held = space.holding(idx, v)
            return search.local_min(held.fg(data, W), held.x(rows[j]), maxiter=500, tol=1e-12)[1]

        intervals[name] = search.profile_interval(rows[:, idx], f, threshold, at)
    return {"tables": out, "threshold": threshold, "lowest": lowest, "interval": intervals}


def _bootstrap(data: _Data, space: _Space, theta: np.ndarray, prof: dict | None, n_boot: int, seed: int):
    """Refits of ``n_boot`` resamples from the fit and from the profile's ends of the R_D* interval
    (points along the valley); rows (B, 7), NaN where every refit failed."""
    starts = [space.x(theta)]
    if prof is not None:
        table = prof["tables"]["R_D_star"]
        for end in prof["interval"]["R_D_star"]:
            i = int(np.argmin(np.abs(np.log(_PROFILE) - math.log(min(max(end, _PROFILE[0]), _PROFILE[-1])))))
            starts.append(space.x(table.loc[i, list(THETA)].to_numpy(float)))
    X = search.refit_resamples(lambda W: space.fg(data, W), np.array(starts), data.n, n_boot, seed)
    draws = np.where(np.isfinite(X[:, :1]), space.theta(np.nan_to_num(X)), np.nan)
    return draws, int(np.isnan(draws[:, 0]).sum())


def _named(theta: np.ndarray, joint: bool, epochs: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Estimates of parameter rows (S, 7): R_D*, R_N*, the base law when fitted, the epoch values."""
    out = {"R_D_star": theta[:, 5], "R_N_star": theta[:, 6]}
    if joint:
        out.update(A=np.exp(theta[:, 0]), B=np.exp(theta[:, 1]), E=np.exp(theta[:, 2]), alpha=theta[:, 3], beta=theta[:, 4])
    for k in epochs:
        out[f"epoch_value_{k:g}"] = epoch_value(k, theta[:, 5])
    return out


def _result(data, theta, f_min, info, prof, draws, n_bad, method, joint, level, epochs, t0) -> FitResult:
    starts = info.pop("starts", None)
    estimates = {k: float(v[0]) for k, v in _named(theta[None], joint, epochs).items()}
    samples = _named(draws, joint, epochs) if draws is not None else {}
    stderr, interval = summarize_samples(samples, level) if samples else ({}, {})
    pred = np.exp(data.log_pred(theta[None])[0])
    base_only = np.exp(_base_log_pred(theta, data.N, data.D))
    resid = np.abs(data.log_pred(theta[None])[0] - data.logL)
    diagnostics: dict[str, Any] = {
        "objective": float(f_min), "converged": bool(info.pop("converged")), "bound_hit": _bound_hit(theta, method),
        "n_points": data.n, "method": method, "fit": "joint" if joint else "two-stage", **info,
        "loss": f"huber(delta={data.delta:g}) on log loss, summed",
        "r2": _r2(data.L, pred), "r2_without_repetition": _r2(data.L, base_only),
        "fraction_beyond_delta": float((resid > data.delta).mean()),
        "base": {k: float(v) for k, v in zip(BASE_NAMES, (*np.exp(theta[:3]), theta[3], theta[4]))},
    }
    warnings = []
    tables = {"points": pd.DataFrame({"N": data.N, "D": data.D, "U": data.U, "loss": data.L, "predicted": pred})}
    if starts is not None:
        tables["starts"] = starts
    if prof is not None:
        iv = dict(prof["interval"])
        for k in epochs:  # epoch values rise with R_D*: its interval maps through
            iv[f"epoch_value_{k:g}"] = tuple(float(epoch_value(k, end)) for end in iv["R_D_star"])
        diagnostics.update(profile_interval=iv, profile_threshold=prof["threshold"], profile_lowest=prof["lowest"])
        tables.update({f"profile_{k}": t for k, t in prof["tables"].items()})
        if prof["lowest"] < f_min * (1 - 1e-9):
            warnings.append(f"the profile reaches objective {prof['lowest']:.7g}, below this fit's {f_min:.7g}: "
                            "this is not the minimum of its objective")
        warnings += [f"the profile interval of {k} is open above (objective within the threshold up to "
                     f"{_PROFILE[-1]:.0e})" for k in ("R_D_star", "R_N_star") if not math.isfinite(iv[k][1])]
    if draws is not None:
        diagnostics.update(bootstrap=len(draws), bootstrap_unconverged=n_bad)
        if n_bad:
            warnings.append(f"{n_bad} of {len(draws)} bootstrap refits failed and were left out")
    if not diagnostics["converged"]:
        warnings.append("the optimiser did not converge from the best start; estimates may be off")
    diagnostics["seconds"] = round(time.perf_counter() - t0, 3)

    def predict(N_new: Any, D_new: Any, U_new: Any) -> np.ndarray:
        """Predicted loss at (N, D, U) (broadcast together)."""
        return predict_theta(theta, N_new, D_new, U_new)

    return FitResult(approach="data-constrained", law=LAW, estimates=estimates, stderr=stderr, interval=interval,
                     level=level, diagnostics=diagnostics, warnings=warnings, samples=samples, tables=tables,
                     predict_fn=predict)


def _bound_hit(theta: np.ndarray, method: str) -> list[str]:
    """Names of the parameters the valley search left at an edge of its range (``_LOG_RANGE``)."""
    if method != "valley":
        return []
    return [THETA[i] for i, (lo, hi) in _LOG_RANGE.items() if not lo + 1e-9 < math.log(theta[i]) < hi - 1e-9]


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


# ---------------------------------------------------------------- inputs


def _validate(N, D, U, L) -> tuple[np.ndarray, ...]:
    N, D, U, L = (as_positive(k, v) for k, v in (("N", N), ("D", D), ("U", U), ("L", L)))
    enough_points(same_length(N=N, D=D, U=U, L=L), 3, "the data-constrained fit")
    bad = U > D * (1 + 1e-9)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(f"U: {int(bad.sum())} value(s) exceed D, the tokens trained (first at row {i}: "
                                 f"U = {U[i]:.4g} > D = {D[i]:.4g}); unique tokens must be <= tokens trained")
    if not (D > U * (1 + 1e-9)).any():
        raise AnalysisInputError("U: no run repeats data (D / U = 1 everywhere); R_D* needs runs of more than one epoch")
    return N, D, U, L


def _positive(name: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise AnalysisInputError(f"{name}: {value!r} is not allowed; use a finite number > 0")
    return v
