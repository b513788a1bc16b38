"""Approach 3 (Hoffmann et al. 2022): fit L(N, D) = E + A / N^alpha + B / D^beta to every run at once.

Default procedure (Besiroglu et al. 2024's replication): Huber loss (delta 1e-3) on log loss, SUMMED over
points, with the law in log-sum-exp form log L = LSE(a - alpha log N, b - beta log D, e), A = exp(a),
B = exp(b), E = exp(e); minimised from each point of Hoffmann's 4,500-start grid; best objective kept.

    res = fit_parametric(N, D, L, bootstrap=4000)
    res["alpha"], res.stderr["alpha"], res.interval["alpha"], res.predict(N, D)

Methods:
- ``lbfgs``: the grid of starts, every start minimised with analytic gradients. All starts advance
  together through a batched damped Newton method (``analysis.optimize``); starts far behind the leaders
  after a few iterations are dropped, the rest run to convergence, and the best is polished with scipy's
  L-BFGS-B under tolerances scaled to the objective (which is ~1e-3, so default absolute tolerances
  would stop early).
- ``varpro`` (objective ``lsq`` only): variable projection. For fixed (alpha, beta) the law is linear in
  (E, A, B), solved exactly by non-negative least squares; the outer search is over (alpha, beta) only:
  every pair of the grid's alpha and beta values, then Nelder-Mead from the best.

Bootstrap: ``bootstrap`` resamples of the points (multinomial weights), each refitted to convergence
from the full-data optimum by the batched Newton method (tight tolerances, so a warm start cannot stop
early and shrink the errors). Every estimate gets draws, a standard error and a percentile interval.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy.optimize import minimize, nnls

from analysis.checks import point_name
from analysis.errors import AnalysisInputError
from analysis.optimize import PARAMS, Objective, newton_batched
from analysis.result import FitResult, summarize_samples

LAW = "L = E + A/N^alpha + B/D^beta"

HOFFMANN_GRID: dict[str, list[float]] = {
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
    "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
}
# A 3^5 = 243-start grid for quick looks.
COARSE_GRID: dict[str, list[float]] = {"alpha": [0.0, 0.5, 1.0], "beta": [0.0, 0.5, 1.0], "e": [-1.0, 0.0, 1.0],
                                       "a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0]}
NAMED_GRIDS = {"default": HOFFMANN_GRID, "coarse": COARSE_GRID}  # what ``grid=`` and ``scaling-fit --grid`` accept

OBJECTIVES = ("huber", "lsq")
METHODS = ("lbfgs", "varpro")
N_PARAMS = 5
_PRUNE = ((3, 1 / 8, 64), (8, 0.0, 32))  # (iteration, fraction of starts kept, at least this many)


def fit_parametric(
    N: Any,
    D: Any,
    L: Any,
    *,
    objective: str = "huber",
    delta: float = 1e-3,
    grid: dict[str, list[float]] | str | None = None,
    method: str = "lbfgs",
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    n_jobs: int | None = None,
) -> FitResult:
    """Fit the Chinchilla parametric law to parameters N, tokens D and losses L (nats), see module doc.

    objective: ``huber`` (on log loss, summed, ``delta``) or ``lsq`` (least squares on raw loss).
    grid: start values per parameter (``a``, ``b``, ``e``, ``alpha``, ``beta``); missing names take
    Hoffmann's values; or a named grid, ``"default"`` (Hoffmann's 4,500 starts) or ``"coarse"`` (243). bootstrap: number of resamples (0: none); seed: their random seed; level: interval
    coverage; n_jobs: threads sharing the bootstrap refits (default 1).
    """
    t0 = time.perf_counter()
    N, D, L = _validate(N, D, L)
    objective, method, delta, level = _options(objective, method, delta, level, bootstrap)
    grid = _grid(grid)
    obj = Objective(np.log(N), np.log(D), np.log(L) if objective == "huber" else L, kind=objective, delta=delta)
    theta, converged, fmin, diag_method = _minimise(obj, grid, method, np.ones(N.size))
    estimates = {k: float(v[0]) for k, v in _derived(theta[None]).items()}
    bound_hit = _bound_hit(theta, grid, method)
    diagnostics: dict[str, Any] = {
        "objective": fmin, "converged": bool(converged), "bound_hit": bound_hit, "n_points": int(N.size),
        **diag_method, "method": method,
        "loss": objective if objective == "lsq" else f"huber(delta={delta:g}) on log loss, summed",
    }
    warnings = [] if converged else ["the optimiser did not converge from the best start; estimates may be off"]
    for name in bound_hit:
        lo, hi = min(grid[name]), max(grid[name])
        warnings.append(f"{name} = {theta[PARAMS.index(name)]:.4g} lies on or outside the start grid's range [{lo:g}, {hi:g}]")
    samples: dict[str, np.ndarray] = {}
    if bootstrap:
        samples, n_bad = _bootstrap(obj, theta, int(bootstrap), seed, n_jobs)
        diagnostics.update(bootstrap=int(bootstrap), bootstrap_unconverged=n_bad)
        if n_bad:
            warnings.append(f"{n_bad} of {bootstrap} bootstrap refits did not converge and were left out")
    stderr, interval = summarize_samples(samples, level) if samples else ({}, {})
    diagnostics["seconds"] = round(time.perf_counter() - t0, 3)
    return FitResult(approach="parametric", law=LAW, estimates=estimates, stderr=stderr, interval=interval,
                     level=level, diagnostics=diagnostics, warnings=warnings, samples=samples,
                     predict_fn=_predictor(estimates))


def _options(objective: str, method: str, delta: float, level: float, bootstrap: Any) -> tuple[str, str, float, float]:
    """The fit's options, checked: one-line errors naming the option."""
    objective, method = _choice("objective", objective, OBJECTIVES), _choice("method", method, METHODS)
    delta = _positive("delta", delta)
    level = float(level)
    if not 0 < level < 1:
        raise AnalysisInputError(f"level: {level} is not allowed; use a coverage strictly between 0 and 1")
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise AnalysisInputError(f"bootstrap: {bootstrap!r} is not allowed; use a whole number of resamples >= 0")
    if method == "varpro" and objective != "lsq":
        raise AnalysisInputError(
            f"method: 'varpro' with objective '{objective}' is not allowed; variable projection needs objective 'lsq'"
        )
    return objective, method, delta, level


def _minimise(obj: Objective, grid: dict[str, list[float]], method: str, W: np.ndarray
              ) -> tuple[np.ndarray, bool, float, dict[str, int]]:
    """The best of the grid's starts (L-BFGS-like batched Newton, then a polish) or variable projection:
    (theta, converged, objective, diagnostics of the search)."""
    if method == "varpro":
        theta, converged, n_outer = _varpro(obj, grid, W)
        return theta, converged, float(obj.value(theta[None], W)[0]), {"n_starts": n_outer,
                                                                          "n_converged_starts": int(converged)}
    starts = np.array(list(itertools.product(*(grid[p] for p in PARAMS))), dtype=float)  # (S, 5)
    run = newton_batched(obj, starts, W, keep=_pruner(len(starts)))
    best = int(np.nanargmin(np.where(np.isfinite(run.f), run.f, np.nan)))
    theta, converged = _polish(obj, run.theta[best], W)
    fmin = float(obj.value(theta[None], W)[0])
    at_best = run.converged & (run.f <= fmin * (1 + 1e-6) + 1e-300)
    return theta, converged or bool(run.converged[best]), fmin, {
        "n_starts": int(len(starts)),
        "n_starts_refined": int((run.iterations > _PRUNE[-1][0]).sum()),
        "n_converged_starts": int(run.converged.sum()),
        "n_starts_at_best": int(at_best.sum()),
        "iterations": int(run.iterations[best]),
    }


def _predictor(estimates: dict[str, float]):
    E, A, B, alpha, beta = (estimates[k] for k in ("E", "A", "B", "alpha", "beta"))

    def predict(N_new: Any, D_new: Any) -> np.ndarray:
        """Predicted loss E + A / N^alpha + B / D^beta (broadcasting N and D)."""
        N_new, D_new = np.asarray(N_new, dtype=float), np.asarray(D_new, dtype=float)
        return E + A * N_new**-alpha + B * D_new**-beta

    return predict


# ---------------------------------------------------------------- inputs


def _validate(N: Any, D: Any, L: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of equal length, finite and positive, enough points, more than one compute budget."""
    arrays = {}
    for name, v in (("N", N), ("D", D), ("L", L)):
        try:
            arr = np.asarray(v, dtype=float).ravel()
        except (TypeError, ValueError) as exc:
            raise AnalysisInputError(f"{name}: {_brief(v)} is not numeric; pass numbers (an array or a column)") from exc
        arrays[name] = arr
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise AnalysisInputError(
            f"N, D, L: lengths {sizes['N']}, {sizes['D']}, {sizes['L']} differ; all three must have the same length"
        )
    given = {"N": N, "D": D, "L": L}
    for name, arr in arrays.items():
        for bad, allowed in ((~np.isfinite(arr), "finite"), (arr <= 0, "> 0")):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise AnalysisInputError(f"{name}: value {arr[i]:g} at index {point_name(given[name], i)} is not "
                                         f"allowed; values must be {allowed} (leave that run out)")
    n = sizes["N"]
    if n < N_PARAMS:
        raise AnalysisInputError(f"N, D, L: {n} points is too few; the law has {N_PARAMS} parameters, so at least {N_PARAMS} are needed")
    logC = np.log(6 * arrays["N"] * arrays["D"])
    if np.ptp(logC) < 1e-9:
        raise AnalysisInputError(
            f"C = 6ND: every point has the same compute budget ({math.exp(logC[0]):.4g}); points at two or more budgets are needed"
        )
    for name in ("N", "D"):
        if np.ptp(np.log(arrays[name])) < 1e-12:
            raise AnalysisInputError(f"{name}: every point has the value {arrays[name][0]:.4g}; at least two distinct values are needed")
    return arrays["N"], arrays["D"], arrays["L"]


def _grid(grid: dict[str, Any] | str | None) -> dict[str, list[float]]:
    """Start values per parameter: a named grid (``default``, ``coarse``), or Hoffmann's with some replaced."""
    if isinstance(grid, str):
        if grid not in NAMED_GRIDS:
            raise AnalysisInputError(f"grid: {grid!r} is not a named grid; use {', '.join(NAMED_GRIDS)} or a mapping")
        grid = NAMED_GRIDS[grid]
    out = {k: list(v) for k, v in HOFFMANN_GRID.items()}
    for name, values in (grid or {}).items():
        if name not in out:
            raise AnalysisInputError(f"grid: key {name!r} is not allowed; use {', '.join(PARAMS)}")
        vals = np.atleast_1d(np.asarray(values, dtype=float)).ravel()
        if vals.size == 0 or not np.isfinite(vals).all():
            raise AnalysisInputError(f"grid: {name}={_brief(values)} is not allowed; give one or more finite numbers")
        out[name] = vals.tolist()
    return out


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise AnalysisInputError(f"{field}: {value!r} is not allowed; use one of {', '.join(allowed)}")
    return value


def _positive(field: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise AnalysisInputError(f"{field}: {value!r} is not allowed; use a finite number > 0")
    return v


def _brief(v: Any) -> str:
    s = repr(v)
    return s if len(s) < 40 else s[:37] + "..."


# ---------------------------------------------------------------- fitting


def _pruner(n_starts: int):
    """keep(iteration, f): after a few iterations keep only the starts with the lowest objective so far."""

    def keep(it: int, f: np.ndarray) -> np.ndarray:
        mask = np.isfinite(f)
        for at, frac, least in _PRUNE:
            if it == at:
                k = max(least, int(frac * n_starts))
                if k < mask.sum():
                    mask &= f <= np.sort(f[mask])[k - 1]
        return mask

    return keep


def _polish(obj: Objective, theta: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, bool]:
    """L-BFGS-B from theta on the objective divided by its value there (so the tolerances are relative)."""
    f0 = float(obj.value(theta[None], W)[0])
    scale = 1.0 / f0 if f0 > 0 else 1.0

    def fg(t: np.ndarray) -> tuple[float, np.ndarray]:
        f, g, _ = obj(t[None], W)
        return float(f[0]) * scale, g[0] * scale

    r = minimize(fg, theta, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
    if np.all(np.isfinite(r.x)) and r.fun <= f0 * scale:
        return r.x, bool(r.success)
    return theta, False


def _varpro(obj: Objective, grid: dict[str, list[float]], W: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """Least squares by variable projection: outer (alpha, beta), inner non-negative (E, A, B)."""
    sw = np.sqrt(W)

    def inner(ab: np.ndarray) -> tuple[float, np.ndarray]:
        al, be = ab
        X = np.stack([np.ones_like(obj.x), np.exp(-al * obj.x), np.exp(-be * obj.w)], axis=1)  # (n, 3)
        coef, rnorm = nnls(X * sw[:, None], obj.y * sw)
        return rnorm**2, coef  # coef = (E, A, B)

    pairs = [(a, b) for a in grid["alpha"] for b in grid["beta"]]
    rss = [inner(np.array(p))[0] for p in pairs]
    start = np.array(pairs[int(np.argmin(rss))])
    r = minimize(
        lambda ab: inner(ab)[0] / rss[int(np.argmin(rss))],
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-15, "maxiter": 4000},
    )
    _, (E, A, B) = inner(r.x)
    with np.errstate(divide="ignore"):
        theta = np.array([np.log(A), np.log(B), np.log(E), r.x[0], r.x[1]])
    return theta, bool(r.success) and bool(np.all(np.isfinite(theta))), len(pairs)


def _bootstrap(obj: Objective, theta: np.ndarray, n_boot: int, seed: int, n_jobs: int | None) -> tuple[dict[str, np.ndarray], int]:
    """Refit ``n_boot`` multinomial resamples from theta; draws of every estimate (NaN where unconverged)."""
    n = obj.x.size
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # (B, n) resample counts
    if not np.all(np.isfinite(theta)):
        return {k: np.full(n_boot, np.nan) for k in _derived(theta[None])}, n_boot
    block = max(1, min(n_boot, 2_000_000 // n))
    blocks = [slice(i, i + block) for i in range(0, n_boot, block)]

    def refit(sl: slice):
        return newton_batched(obj, np.tile(theta, (W[sl].shape[0], 1)), W[sl])

    workers = max(1, int(n_jobs or 1))
    if workers > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(workers) as pool:
            runs = list(pool.map(refit, blocks))
    else:
        runs = [refit(sl) for sl in blocks]
    thetas = np.concatenate([r.theta for r in runs])
    ok = np.concatenate([r.converged for r in runs]) & np.isfinite(thetas).all(1)
    thetas[~ok] = np.nan
    return _derived(thetas), int((~ok).sum())


def _derived(theta: np.ndarray) -> dict[str, np.ndarray]:
    """E, A, B, alpha, beta and the allocation quantities a, b, G from rows theta (S, 5) = (a, b, e, alpha, beta)."""
    la, lb, e, alpha, beta = theta.T
    A, B, E = np.exp(la), np.exp(lb), np.exp(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = alpha + beta
        G = np.exp((np.log(alpha) + la - np.log(beta) - lb) / s)  # (alpha A / (beta B))^(1/(alpha+beta))
        return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta, "a": beta / s, "b": alpha / s, "G": G}


def _bound_hit(theta: np.ndarray, grid: dict[str, list[float]], method: str) -> list[str]:
    """Names of parameters on or outside the range of the start grid (alpha and beta also at <= 0)."""
    names = ("alpha", "beta") if method == "varpro" else PARAMS
    hit = []
    for name in names:
        v = theta[PARAMS.index(name)]
        lo, hi = min(grid[name]), max(grid[name])
        if not np.isfinite(v) or (lo < hi and not lo < v < hi) or (name in ("alpha", "beta") and v <= 0):
            hit.append(name)
    return hit
