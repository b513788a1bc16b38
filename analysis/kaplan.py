"""Kaplan-style one-variable laws: L(X) = E + A X^-alpha, or L(X) = (X_c / X)^alpha (+ E), X in N, D or C.

Fitted in log space (residual log L_hat - log L, Huber or least squares): a dense grid over alpha with
(E, A) solved exactly per alpha gives the starts, the best few are refined with scipy's least squares; without the irreducible term the law is a line in log-log and is
solved exactly. X is scaled by its geometric mean while fitting, so A is well conditioned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis import columns as col
from analysis.errors import AnalysisInputError
from analysis.checks import as_positive, check_bootstrap, check_level, choice, enough_points, same_length
from analysis.result import FitResult, summarize_samples

FORMS = ("power", "critical")
OBJECTIVES = ("huber", "lsq")
ALPHA_MAX = 5.0
ALPHA_GRID = np.geomspace(0.005, ALPHA_MAX * 0.999, 200)  # dense grid for the starts
N_POLISH = 3  # best grid points refined by least squares


def fit_kaplan(
    X: Any,
    L: Any,
    *,
    irreducible: bool = True,
    form: str = "power",
    objective: str = "huber",
    delta: float = 1e-3,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    name: str = "X",
) -> FitResult:
    """Fit L = E + A X^-alpha (form ``power``) or L = (X_c / X)^alpha + E (form ``critical``).

    irreducible: include E (else E = 0 and the fit is an exact line in log-log).
    objective: ``huber`` (delta on log-loss residuals, robust to outliers) or ``lsq``.
    bootstrap: resamples of the points (each refitted from every start); intervals at ``level``.
    name: what X is (``N``, ``D``, ``C``), used in the law and the summary.
    Estimates: ``E``, ``alpha`` and ``A`` (power) or ``X_c`` (critical). ``predict(X)`` gives L.
    """
    form = choice("form", form, FORMS)
    objective = choice("objective", objective, OBJECTIVES)
    level, bootstrap = check_level(level), check_bootstrap(bootstrap)
    x, y = as_positive(name, X), as_positive("loss", L)
    n = same_length(**{name: x, "loss": y})
    enough_points(n, 3 + int(irreducible), f"a {'3' if irreducible else '2'}-parameter law of L({name})")
    if np.unique(x).size < 2 + int(irreducible):
        raise AnalysisInputError(f"{name}: only {np.unique(x).size} distinct value(s); "
                                 f"a {'3' if irreducible else '2'}-parameter law of L({name}) needs more")

    scale = float(np.exp(np.mean(np.log(x))))
    fit = _fit(x / scale, y, irreducible, objective, delta)
    est = _estimates(fit, scale, form, name)
    diagnostics = {"objective": fit["cost"], "converged": fit["converged"], "bound_hit": fit["bound_hit"],
                   "n_points": n, "n_starts": fit["n_starts"], "loss": objective if irreducible else "lsq", "x": name}
    result_warnings = []
    if fit["bound_hit"]:
        result_warnings.append(f"L({name}) fit: {', '.join(fit['bound_hit'])} at a bound")
    if not fit["converged"]:
        result_warnings.append(f"L({name}) fit: the optimiser did not converge")

    samples = _bootstrap(x, y, scale, irreducible, objective, delta, form, name, bootstrap, seed, list(est)) \
        if bootstrap else {}
    stderr, interval = summarize_samples(samples, level) if samples else ({}, {})

    law = _law_text(form, irreducible, name)
    return FitResult(approach="kaplan", law=law, estimates=est, stderr=stderr, interval=interval, level=level,
                     diagnostics=diagnostics, warnings=result_warnings, samples=samples,
                     predict_fn=_predictor(est.get("E", 0.0), fit["A"] * scale ** fit["alpha"], est["alpha"]))


def _bootstrap(x: np.ndarray, y: np.ndarray, scale: float, irreducible: bool, objective: str, delta: float,
               form: str, name: str, bootstrap: int, seed: int, names: list[str]) -> dict[str, np.ndarray]:
    """Draws of the estimates, each refitted to a resample of the points."""
    rng = np.random.default_rng(seed)
    draws = {k: np.full(bootstrap, np.nan) for k in names}
    for i in range(bootstrap):
        idx = rng.integers(0, x.size, x.size)
        if np.unique(x[idx]).size < 2 + int(irreducible):
            continue
        e = _estimates(_fit(x[idx] / scale, y[idx], irreducible, objective, delta), scale, form, name)
        for k in names:
            draws[k][i] = e[k]
    return draws


def _law_text(form: str, irreducible: bool, name: str) -> str:
    if form == "power":
        return f"L = E + A {name}^-alpha" if irreducible else f"L = A {name}^-alpha"
    return f"L = ({name}_c / {name})^alpha" + (" + E" if irreducible else "")


def _predictor(E: float, A: float, alpha: float):
    def predict(X_new: Any) -> np.ndarray:
        """L = E + A X^-alpha."""
        return E + A * np.asarray(X_new, dtype=float) ** -alpha

    return predict


def _estimates(fit: dict[str, Any], scale: float, form: str, name: str) -> dict[str, float]:
    alpha = fit["alpha"]
    A = fit["A"] * scale**alpha  # back to the original units of X
    est: dict[str, float] = {}
    if fit["irreducible"]:
        est["E"] = fit["E"]
    if form == "power":
        est["A"] = A
    else:
        est[f"{name}_c"] = A ** (1.0 / alpha) if alpha > 0 else math.nan
    est["alpha"] = alpha
    return est


def _fit(x: np.ndarray, y: np.ndarray, irreducible: bool, objective: str, delta: float) -> dict[str, Any]:
    """Best of a grid of starts. Parameters p = (log A, alpha[, E]); x already scaled to ~1."""
    lx, ly = np.log(x), np.log(y)
    if not irreducible:  # log L = log A - alpha log x: a straight line
        slope, intercept = np.polyfit(lx, ly, 1)
        r = intercept + slope * lx - ly
        return {"A": float(np.exp(intercept)), "alpha": float(-slope), "E": 0.0, "irreducible": False,
                "cost": float(0.5 * r @ r), "converged": True, "bound_hit": [], "n_starts": 1}
    e_max = float(y.min()) * (1 - 1e-9)
    loss = "huber" if objective == "huber" else "linear"

    def resid(p):
        # p = (log A, alpha, E); L_hat = E + A x^-alpha
        return np.log(p[2] + np.exp(np.minimum(p[0] - p[1] * lx, 700.0))) - ly

    def jac(p):
        power = np.exp(np.minimum(p[0] - p[1] * lx, 700.0))
        inv = 1.0 / (p[2] + power)
        return np.stack([power * inv, -lx * power * inv, inv], axis=1)  # (n, 3)

    lo, hi = np.array([-np.inf, 0.0, 0.0]), np.array([np.inf, ALPHA_MAX, e_max])
    best = None
    for p0 in _starts(lx, y, e_max, objective, delta):
        p0 = np.clip(p0, lo + 1e-12, hi - 1e-12)
        r = least_squares(resid, p0, jac=jac, bounds=(lo, hi), loss=loss, f_scale=delta,
                          ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=500)
        if best is None or r.cost < best.cost:
            best = r
    logA, alpha, E = best.x
    hit = [k for k, v, b in (("alpha", alpha, 0.0), ("alpha", alpha, ALPHA_MAX), ("E", E, 0.0)) if abs(v - b) < 1e-8]
    if abs(E - e_max) < 1e-6 * e_max:
        hit.append("E")
    return {"A": float(np.exp(logA)), "alpha": float(alpha), "E": float(E), "irreducible": True,
            "cost": float(best.cost), "converged": bool(best.status > 0), "bound_hit": sorted(set(hit)),
            "n_starts": N_POLISH}


def _starts(lx: np.ndarray, y: np.ndarray, e_max: float, objective: str, delta: float) -> list[np.ndarray]:
    """The best few points of a dense alpha grid, (E, A) solved per alpha by weighted least squares.

    For fixed alpha, L_hat = E + A z (z = x^-alpha) is linear; weights 1/y^2 make the raw residual
    approximate the log residual. E is clipped to [0, min L). Returns (log A, alpha, E) starts.
    """
    z = np.exp(-ALPHA_GRID[:, None] * lx[None, :])  # (G, n)
    w = 1.0 / y**2  # (n,)
    sw, swz, swzz = w.sum(), (w * z).sum(1), (w * z * z).sum(1)  # normal equations, per alpha
    swy, swzy = (w * y).sum(), (w * z * y).sum(1)
    det = sw * swzz - swz**2
    with np.errstate(divide="ignore", invalid="ignore"):
        E = np.clip((swzz * swy - swz * swzy) / det, 0.0, e_max)
        A = (swzy - E * swz) / swzz  # best A given the clipped E
        r = np.log(np.maximum(E[:, None] + A[:, None] * z, 1e-300)) - np.log(y)[None, :]  # (G, n)
    cost = (np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)) if objective == "huber"
            else 0.5 * r**2).sum(1)
    cost[~(A > 0) | ~np.isfinite(cost)] = np.inf
    order = [i for i in np.argsort(cost)[:N_POLISH] if np.isfinite(cost[i])]
    return [np.array([np.log(A[i]), ALPHA_GRID[i], E[i]]) for i in order] or [np.array([0.0, 0.3, 0.5 * e_max])]


def prediction_band(res: FitResult, X: Any, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise (low, high) of the predicted L(X) over the bootstrap draws of a Kaplan fit."""
    level = res.level if level is None else level
    if not res.samples:
        raise ValueError("the fit has no bootstrap draws; refit with bootstrap > 0")
    X = np.asarray(X, dtype=float)
    s = res.samples
    E = s.get("E", np.zeros_like(s["alpha"]))
    alpha = s["alpha"]
    crit = [k for k in s if k.endswith("_c")]
    A = s["A"] if "A" in s else s[crit[0]] ** alpha
    ok = np.isfinite(E) & np.isfinite(alpha) & np.isfinite(A)
    curves = E[ok, None] + A[ok, None] * X[None, :] ** -alpha[ok, None]  # (draws, len(X))
    tail = 100 * (1 - level) / 2
    return np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)


# ----------------------------------------------------------------------------- from a run table


def frontier(df: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows a one-variable law of ``x`` is fitted on.

    ``N`` / ``D``: the lowest loss at each distinct N (over D) / D (over N), the variable as the bottleneck.
    ``C``: the compute frontier, runs with a lower loss than every run of smaller or equal compute.
    """
    choice("x", x, ("N", "D", "C"))
    if x in ("N", "D"):
        return df.loc[df.groupby(x)[col.LOSS].idxmin()].sort_values(x)
    ordered = df.sort_values([col.C, col.LOSS])
    keep = ordered[col.LOSS] < ordered[col.LOSS].cummin().shift(fill_value=np.inf)
    return ordered[keep]


def fit_kaplan_table(df: pd.DataFrame, *, xs: tuple[str, ...] = ("N", "D", "C"), **kwargs: Any) -> FitResult:
    """L(N), L(D) and L(C) on their frontiers of a run table, merged into one result.

    Estimate names carry the variable: ``E_N``, ``A_N``, ``alpha_N``, ``alpha_D``, ... ;
    ``tables["fits"]`` maps each variable to its own FitResult, ``tables["points"]`` to its frontier.
    Variables with too few distinct values are skipped with a warning.
    """
    check_level(kwargs.get("level", 0.95)), check_bootstrap(kwargs.get("bootstrap", 0))
    fits, points, notes = {}, {}, []
    for x in xs:
        pts = frontier(df, x)
        try:
            fits[x] = fit_kaplan(pts[x].to_numpy(), pts[col.LOSS].to_numpy(), name=x, **kwargs)
            points[x] = pts
        except AnalysisInputError as err:
            notes.append(f"L({x}) not fitted: {err}")
    if not fits:
        raise AnalysisInputError("kaplan: no law could be fitted; " + "; ".join(notes))
    merged = FitResult(approach="kaplan", law="; ".join(f.law for f in fits.values()),
                       estimates={}, level=next(iter(fits.values())).level)
    for x, f in fits.items():
        merged.estimates.update({f"{k}_{x}": v for k, v in f.estimates.items()})
        merged.stderr.update({f"{k}_{x}": v for k, v in f.stderr.items()})
        merged.interval.update({f"{k}_{x}": v for k, v in f.interval.items()})
        merged.samples.update({f"{k}_{x}": v for k, v in f.samples.items()})
        merged.diagnostics.update({f"{k}_{x}": f.diagnostics[k] for k in ("objective", "n_points", "converged")})
        merged.warnings.extend(f.warnings)
    merged.diagnostics["converged"] = all(f.diagnostics["converged"] for f in fits.values())
    merged.diagnostics["bound_hit"] = [f"{k}_{x}" for x, f in fits.items() for k in f.diagnostics["bound_hit"]]
    merged.warnings.extend(notes)
    merged.tables = {"fits": fits, "points": points}
    merged.predict_fn = lambda x, values: fits[x].predict(values)
    return merged
