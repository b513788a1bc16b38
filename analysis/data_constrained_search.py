"""The objective of the data-constrained fit and the optimisers that search it.

``effective_tokens`` (the law's D' and N'), ``_log_pred`` (the law in log-sum-exp form), ``_Data`` (the
summed Huber objective of parameter rows) and ``_Space`` (search coordinates: R*, alpha, beta in log,
clipped to ``_LOG_RANGE``) are what ``analysis.data_constrained`` fits with.

``torch_lbfgs`` is a float64 numpy port of ``torch.optim.LBFGS`` with the strong-Wolfe line search, run
as Muennighoff et al.'s notebook runs it (lr 0.1, history 10, 20 iterations per step, 50 steps): the
paper's fit is defined by where that optimiser stops, so reproducing it needs the same optimiser (scipy's
L-BFGS-B from the same starts leaves the published basin from more starts and finds lower points).

``local_min`` is the same L-BFGS at lr 1 on an objective divided by its starting value (tolerances
relative; scipy's L-BFGS-B spends most of its time in threaded LAPACK calls on these short vectors);
``profile`` minimises every other parameter at each value of one parameter, warm-starting along the grid;
``profile_interval`` finds where a profile crosses a threshold; ``refit_resamples`` is the bootstrap.
Optimisers take ``fg(x) -> (f, gradient)`` on a 1-D vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

FG = Callable[[np.ndarray], tuple[float, np.ndarray]]
PROFILE = 10.0 ** np.linspace(-1.0, 6.0, 113)  # profile grid of R_D* and R_N*, 16 points a decade
_STAR_RANGE = (math.log(PROFILE[0]), math.log(PROFILE[-1]))  # R* of the valley search stay in its range
_LOG_RANGE = {3: (math.log(1e-3), math.log(5.0)), 4: (math.log(1e-3), math.log(5.0)), 5: _STAR_RANGE, 6: _STAR_RANGE}


def effective_tokens(U: Any, epochs: Any, R_D_star: Any) -> np.ndarray:
    """D' of training ``epochs`` passes over ``U`` unique tokens: min(D, U) + U R_D* (1 - exp(-R_D/R_D*))."""
    U, epochs, rd = np.asarray(U, float), np.asarray(epochs, float), np.asarray(R_D_star, float)
    R = np.maximum(epochs - 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # R_D* = inf: no decay; R_D* = 0: repeats worth nothing
        repeats = np.where(np.isinf(rd), R, np.where(R == 0, 0.0, rd * -np.expm1(-R / rd)))
    return U * np.minimum(epochs, 1.0) + U * repeats


def unique_params(U: Any, a: Any, b: Any, alpha: Any, beta: Any) -> np.ndarray:
    """U_N: the compute-optimal N of the base law (a = log A, b = log B) at the compute whose optimal D is U,
    G (U G)^(beta/alpha) with G = (alpha A / (beta B))^(1/(alpha+beta))."""
    logG = (np.log(alpha) + a - np.log(beta) - b) / (alpha + beta)
    return np.exp((beta / alpha) * np.log(U) + (1 + beta / alpha) * logG)


def _log_pred(theta: np.ndarray, N: np.ndarray, D: np.ndarray, U: np.ndarray) -> np.ndarray:
    """log of the predicted loss, (S, n), for parameter rows theta (S, 7) = (a, b, e, alpha, beta, R_D*, R_N*)."""
    a, b, e, alpha, beta, rd, rn = (theta[:, j : j + 1] for j in range(7))
    with np.errstate(all="ignore"):
        UN = np.minimum(N, unique_params(U, a, b, alpha, beta))
        Np, Dp = effective_tokens(UN, N / UN, rn), effective_tokens(U, D / U, rd)
        z = np.stack([a - alpha * np.log(Np), b - beta * np.log(Dp), np.broadcast_to(e, Np.shape)])
        return np.where((rd > 0) & (rn > 0), np.logaddexp.reduce(z, axis=0), np.nan)  # R* <= 0: no law


def _base_log_pred(theta: np.ndarray, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """log of the base law E + A/N^alpha + B/D^beta, every token and parameter counted as fresh."""
    a, b, e, alpha, beta = theta[:5]
    return np.logaddexp.reduce(np.stack([a - alpha * np.log(N), b - beta * np.log(D), np.full(N.shape, e)]), axis=0)


class _Data:
    """Runs of one fit; ``value`` is the summed Huber objective of parameter rows theta (S, 7)."""

    def __init__(self, N, D, U, L, delta):
        self.N, self.D, self.U, self.L, self.delta, self.n = N, D, U, L, delta, N.size
        self.logL = np.log(L)

    def log_pred(self, theta: np.ndarray) -> np.ndarray:
        return _log_pred(theta, self.N, self.D, self.U)

    def value(self, theta: np.ndarray, W: np.ndarray) -> np.ndarray:
        r = np.abs(self.log_pred(theta) - self.logL)
        d = self.delta
        with np.errstate(invalid="ignore"):
            f = (np.where(r <= d, 0.5 * r * r, d * (r - 0.5 * d)) * W).sum(-1)
        return np.where(np.isfinite(f), f, np.inf)


class _Space:
    """Search coordinates x of theta: the free entries; with ``log_stars`` R*, alpha and beta in log,
    clipped to ``_LOG_RANGE`` (flat beyond: the search stops at the edge); some entries held fixed."""

    def __init__(self, base5, log_stars: bool, fixed: dict[int, float] | None = None):
        self.template = np.r_[base5 if base5 is not None else np.zeros(5), 1.0, 1.0]
        self.fixed = dict(fixed or {})
        for i, v in self.fixed.items():
            self.template[i] = v
        self.free = [i for i in range(7) if (base5 is None or i >= 5) and i not in self.fixed]
        self.logged = np.array([log_stars and i >= 3 for i in self.free])
        self.lo, self.hi = (np.array([_LOG_RANGE[i][k] if i in _LOG_RANGE else -np.inf for i in self.free]) for k in (0, 1))
        self.base5, self.log_stars = base5, log_stars

    def theta(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        out = np.tile(self.template, (X.shape[0], 1))
        out[:, self.free] = np.where(self.logged, np.exp(np.clip(X, self.lo, self.hi)), X)
        return out

    def x(self, theta: np.ndarray) -> np.ndarray:
        v = np.asarray(theta, float)[self.free]
        return np.where(self.logged, np.clip(np.log(np.maximum(v, 1e-300)), self.lo, self.hi), v)

    def holding(self, index: int, value: float) -> _Space:
        return _Space(self.base5, self.log_stars, {**self.fixed, index: value})

    def fg(self, data: _Data, W: np.ndarray) -> FG:
        """Objective and central-difference gradient in x, all 2k + 1 evaluations as one batch."""

        def fg(x):
            h = 1e-5 * np.maximum(1.0, np.abs(x))
            X = np.vstack([x, x + np.diag(h), x - np.diag(h)])
            f = data.value(self.theta(X), W)
            k = x.size
            with np.errstate(invalid="ignore"):
                return float(f[0]), (f[1 : k + 1] - f[k + 1 :]) / (2 * h)

        return fg




def torch_lbfgs(fg: FG, x0: np.ndarray, *, lr: float = 0.1, history: int = 10, max_iter: int = 20,
                steps: int = 50, tol_grad: float = 1e-7, tol_change: float = 1e-9) -> tuple[np.ndarray, float, bool]:
    """Minimise ``fg`` from ``x0`` as ``steps`` calls of torch's ``LBFGS.step`` would.

    Returns (x, f, converged): converged is False when the last step ran out of iterations or evaluations.
    """
    x = np.array(x0, dtype=float)
    st: dict = {"n_iter": 0, "dirs": [], "stps": [], "ro": [], "H": 1.0}
    f, limited = np.nan, True
    for _ in range(steps):
        f, g = fg(x)
        if not np.isfinite(f):
            return x, float(f), False
        if np.abs(g).max() <= tol_grad:
            limited = False
            break
        x, f, limited = _lbfgs_step(fg, x, f, g, st, lr, history, max_iter, tol_grad, tol_change)
    return x, float(f), not limited


def _lbfgs_step(fg, x, f, g, st, lr, history, max_iter, tol_grad, tol_change):
    """One ``LBFGS.step``: up to ``max_iter`` iterations and 1.25 x that many evaluations.
    Returns (x, f, limited): limited when it stopped on the iteration or evaluation limit."""
    max_eval, evals = int(max_iter * 1.25), 1
    for n_iter in range(1, max_iter + 1):
        st["n_iter"] += 1
        if st["n_iter"] == 1:
            d = -g
        else:
            y, s = g - st["g_prev"], st["d"] * st["t"]
            ys = y @ s
            if ys > 1e-10:
                if len(st["dirs"]) == history:
                    for k in ("dirs", "stps", "ro"):
                        st[k].pop(0)
                st["dirs"].append(y), st["stps"].append(s), st["ro"].append(1.0 / ys)
                st["H"] = ys / (y @ y)
            d = _two_loop(-g, st)
        st["g_prev"], f_prev = g.copy(), f
        t = min(1.0, 1.0 / np.abs(g).sum()) * lr if st["n_iter"] == 1 else lr
        st["d"], st["t"] = d, t
        gtd = g @ d
        if gtd > -tol_change:
            return x, f, False
        f, g, t, ls_evals = _strong_wolfe(fg, x, t, d, f, g, gtd, tol_change, max_eval - evals)
        x = x + t * d
        st["t"] = t
        evals += ls_evals
        if n_iter == max_iter or evals >= max_eval:
            return x, f, True
        if np.abs(g).max() <= tol_grad or np.abs(d * t).max() <= tol_change or abs(f - f_prev) < tol_change:
            return x, f, False
    return x, f, True


def _two_loop(q: np.ndarray, st: dict) -> np.ndarray:
    al = [0.0] * len(st["dirs"])
    for i in range(len(st["dirs"]) - 1, -1, -1):
        al[i] = (st["stps"][i] @ q) * st["ro"][i]
        q = q - al[i] * st["dirs"][i]
    r = q * st["H"]
    for i in range(len(st["dirs"])):
        r = r + (al[i] - (st["dirs"][i] @ r) * st["ro"][i]) * st["stps"][i]
    return r


def _cubic(x1, f1, g1, x2, f2, g2, bounds=None):
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2sq = d1 * d1 - g1 * g2
    if not d2sq >= 0:
        return (lo + hi) / 2.0
    d2 = np.sqrt(d2sq)
    if x1 <= x2:
        pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(pos, lo), hi)


def _strong_wolfe(fg, x, t, d, f, g, gtd, tol_change, max_ls, c1=1e-4, c2=0.9):
    """torch's ``_strong_wolfe``: bracketing, then zoom by cubic interpolation; returns (f, g, t, evals)."""
    d_norm = np.abs(d).max()
    f_new, g_new = fg(x + t * d)
    evals, gtd_new = 1, g_new @ d
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done, it = False, 0
    while it < max_ls:
        if f_new > f + c1 * t * gtd or (it > 1 and f_new >= f_prev) or not np.isfinite(f_new):
            br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            br, bf, bg, done = [t], [f_new], [g_new], True
            break
        if gtd_new >= 0:
            br, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [gtd_prev, gtd_new]
            break
        t_next = _cubic(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new = fg(x + t * d)
        evals, gtd_new, it = evals + 1, g_new @ d, it + 1
    if it == max_ls:
        br, bf, bg, bgtd = [0.0, t], [f, f_new], [g, g_new], [gtd, gtd_new]
    insuf = False
    low, high = (0, 1) if bf[0] <= bf[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(br[1] - br[0]) * d_norm < tol_change:
            break
        t = _cubic(br[0], bf[0], bgtd[0], br[1], bf[1], bgtd[1])
        eps = 0.1 * (max(br) - min(br))
        if min(max(br) - t, t - min(br)) < eps:
            if insuf or t >= max(br) or t <= min(br):
                t = max(br) - eps if abs(t - max(br)) < abs(t - min(br)) else min(br) + eps
                insuf = False
            else:
                insuf = True
        else:
            insuf = False
        f_new, g_new = fg(x + t * d)
        evals, gtd_new, it = evals + 1, g_new @ d, it + 1
        if f_new > f + c1 * t * gtd or f_new >= bf[low] or not np.isfinite(f_new):
            br[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (br[high] - br[low]) >= 0:
                br[high], bf[high], bg[high], bgtd[high] = br[low], bf[low], bg[low], bgtd[low]
            br[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
    return bf[low], bg[low], br[low], evals


def local_min(fg: FG, x0: np.ndarray, maxiter: int = 3000, tol: float = 1e-14) -> tuple[np.ndarray, float, bool]:
    """L-BFGS (``torch_lbfgs`` at lr 1, one long step) from ``x0`` on the objective divided by its
    starting value, so ``tol`` (on changes of f and x) is relative; returns (x, f, converged)."""
    x0 = np.asarray(x0, dtype=float)
    f0 = fg(x0)[0]
    if not np.isfinite(f0) or f0 <= 0:
        return x0, float(f0), False

    def scaled(x):
        f, g = fg(x)
        return f / f0, g / f0

    x, f, ok = torch_lbfgs(scaled, x0, lr=1.0, max_iter=maxiter, steps=1, tol_grad=tol * 1e3, tol_change=tol)
    return x, f * f0, ok


def multistart(fg: FG, starts: np.ndarray, maxiter: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``local_min`` (at most ``maxiter`` iterations) from every row of ``starts``: x (S, k), f (S,), converged (S,)."""
    runs = [local_min(fg, s, maxiter, tol=1e-11) for s in starts]
    return (np.array([r[0] for r in runs]), np.array([r[1] for r in runs]), np.array([r[2] for r in runs]))


def profile(fg_at: Callable[[float], FG], values: np.ndarray, x0: np.ndarray, at: float) -> tuple[np.ndarray, np.ndarray]:
    """Profile objective at each of ``values`` (ascending): ``fg_at(v)`` is the objective of the other
    parameters with the profiled one held at v, and ``x0`` their optimum at v = ``at``. Sweeps up and
    down from the grid point nearest ``at``, each point warm-started from its neighbour.
    Returns (f (m,), argmin rows (m, k))."""
    m = len(values)
    f, xs = np.full(m, np.inf), np.tile(np.asarray(x0, dtype=float), (m, 1))
    i0 = int(np.argmin(np.abs(np.log(values) - np.log(at))))
    for order in (range(i0, m), range(i0 - 1, -1, -1)):
        x = np.asarray(x0, dtype=float)
        for i in order:
            xi, fi, _ = local_min(fg_at(values[i]), x, maxiter=500, tol=1e-12)
            if np.isfinite(fi):
                f[i], xs[i], x = fi, xi, xi
    return f, xs


def profile_interval(values: np.ndarray, f: np.ndarray, threshold: float,
                     refine: Callable[[float, int], float] | None = None) -> tuple[float, float]:
    """Where the profile ``f`` over ``values`` (ascending, positive) crosses ``threshold`` either side of
    its minimum: between the grid points either side of the crossing, by Brent's method on
    ``refine(v, j)`` (the profile at v, warm-started from point j inside) when given, else interpolated in
    log v. An end still below the threshold at the grid's edge is 0 or inf (open on that side)."""
    from scipy.optimize import brentq

    i = int(np.nanargmin(f))
    lv = np.log(values)

    def cross(idx) -> float:
        prev = i
        for j in idx:
            if f[j] > threshold:
                w = (threshold - f[prev]) / (f[j] - f[prev])
                guess = float(np.exp(lv[prev] + w * (lv[j] - lv[prev])))
                if refine is None:
                    return guess
                try:
                    return float(np.exp(brentq(lambda x, k=prev: refine(np.exp(x), k) - threshold, lv[prev], lv[j],
                                               xtol=1e-6)))
                except ValueError:  # no sign change after re-minimising: keep the interpolation
                    return guess
            prev = j
        return np.nan

    lo, hi = cross(range(i - 1, -1, -1)), cross(range(i + 1, len(values)))
    return (0.0 if np.isnan(lo) else lo), (np.inf if np.isnan(hi) else hi)


def refit_resamples(fg_of: Callable[[np.ndarray], FG], starts: np.ndarray, n: int, n_boot: int,
                    seed: int) -> np.ndarray:
    """Bootstrap refits: for each of ``n_boot`` multinomial resamples of n points (weights W, objective
    ``fg_of(W)``), ``local_min`` from every row of ``starts``, the best kept. Rows (B, k), NaN where all failed."""
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    out = np.full((n_boot, starts.shape[1]), np.nan)
    for k in range(n_boot):
        fits = [local_min(fg_of(W[k]), s) for s in starts]
        x, f, _ = min(fits, key=lambda r: r[1] if np.isfinite(r[1]) else np.inf)
        if np.isfinite(f):
            out[k] = x
    return out


def argmin_1d(fun: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, n: int = 801) -> float:
    """x in [lo, hi] minimising a vectorised ``fun``: the best of an n-point grid, refined between its
    neighbours by bounded Brent."""
    xs = np.linspace(lo, hi, n)
    i = int(np.nanargmin(fun(xs)))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, n - 1)]
    r = minimize_scalar(lambda x: float(fun(np.array([x]))[0]), bounds=(a, b), method="bounded",
                        options={"xatol": 1e-10 * max(1.0, abs(xs[i]))})
    return float(r.x)
