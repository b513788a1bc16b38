"""The objective of a curve-law fit and its minimiser (used by ``fit.fit_loss_curve``).

Objective as the Multi-Power Law authors' code: Huber (delta 1e-3) of log(measured) - log(predicted),
summed over every point of every curve. Starts: the linear parameters (L0, A, and B or C) solved by
non-negative least squares for each start of the nonlinear ones; the best starts are refined by
trust-region least squares with analytic Jacobians, in logs of the scale parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.optimize import least_squares, nnls

from analysis.errors import AnalysisInputError
from analysis.curve_laws.laws import Design, Law


@dataclass
class Problem:
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
            logp, ok, safe = self.log_pred(pred)
            rs.append((logy - logp)[rep])
            if need_jac:
                Js.append((-J / np.where(ok, safe, self.eps)[:, None])[rep])
        return np.concatenate(rs), (np.vstack(Js) if need_jac else None)

    def log_pred(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log pred, continued linearly below eps (so that a wild trial step is finite and points back)."""
        ok = pred > self.eps
        safe = np.where(ok, pred, 1.0)
        return np.where(ok, np.log(safe), math.log(self.eps) + (pred - self.eps) / self.eps), ok, safe

    def huber(self, r: np.ndarray) -> float:
        a, d = np.abs(r), self.delta
        return float(np.sum(np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))))

    def value(self, p: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r, _ = self.residuals_jac(p, need_jac=False)
        return self.huber(r)

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


def linear_start(problem: Problem, nonlinear: dict[str, float]) -> tuple[np.ndarray | None, float]:
    """Parameters with the linear ones solved (non-negative least squares on the raw loss), and their
    objective (``None, inf`` when the start gives no finite design)."""
    law = problem.law
    p = np.array([nonlinear.get(name, 1.0) for name in law.params], dtype=float)
    for i, v in problem.fixed.items():
        p[i] = v
    lin = [law.params.index(n) for n in law.linear if law.params.index(n) not in problem.fixed]
    q = p.copy()
    q[lin] = 0.0
    parts, rows, rhs = [], [], []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for design, y, logy, c, rep in zip(problem.designs, problem.y, problem.logy, problem.counts, problem.rep):
            if not c.any():
                continue
            # the prediction without the free linear terms, and the terms they multiply
            base, cols = law.linear_columns(q, design, lin)
            sw = np.sqrt(c.astype(float))
            parts.append((base, cols, logy, rep))
            rows.append(cols * sw[:, None])
            rhs.append((y - base) * sw)
        if not rows:
            return None, math.inf
        X, b = np.vstack(rows), np.concatenate(rhs)
        if not np.all(np.isfinite(X)) or not np.all(np.isfinite(b)):
            return None, math.inf
        # non-negative: a loss floor, a power-law amplitude and a drop amplitude are all >= 0
        scale = np.maximum(np.abs(X).max(0), 1e-300)
        coef, _ = nnls(X / scale, b)
        p[lin] = np.maximum(coef / scale, 1e-12)
        r = np.concatenate([(logy - problem.log_pred(base + cols @ p[lin])[0])[rep] for base, cols, logy, rep in parts])
    return p, problem.huber(r)


def bound_hits(u: np.ndarray, bounds: list[tuple[float, float]], free: list[int], names: Sequence[str]) -> list[str]:
    hits = []
    for i in free:
        lo, hi = bounds[i]
        tol = 1e-6 * (hi - lo)
        if u[i] <= lo + tol or u[i] >= hi - tol:
            hits.append(names[i])
    return hits


def minimise(problem: Problem, starts: list[Any], peak: float, n_refine: int,
              max_nfev: int = 400) -> dict[str, Any]:
    """Score the starts (parameter arrays, or ``linear_start``'s (parameters, objective) pairs), refine the
    best ``n_refine`` by trust-region least squares with the Huber loss.

    scipy's ``least_squares(loss="huber", f_scale=delta)`` minimises exactly the summed Huber of the
    residuals (0.5 r^2 within delta, delta (|r| - delta / 2) beyond), with Gauss-Newton steps.
    """
    law = problem.law
    bounds = law.bounds(peak)
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    scored = []
    for start in starts:
        p, f = start if isinstance(start, tuple) else (start, None)
        if p is None:
            continue
        f = problem.value(p) if f is None else f
        if np.isfinite(f):
            scored.append((f, p))
    if not scored:
        raise AnalysisInputError("fit: no start gives a finite objective; check the losses and schedules")
    scored.sort(key=lambda t: t[0])
    best = None
    refined, minima = 0, []
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
        minima.append((f, law.from_free(u)))
        if best is None or f < best[0]:
            best = (f, res, u)
    f, res, u = best
    return {"p": law.from_free(u), "objective": f, "converged": bool(res.status > 0), "message": str(res.message),
            "nit": int(res.nfev), "bound_hit": bound_hits(u, bounds, free, law.params),
            "n_starts": len(starts), "n_refined": refined, "minima": minima}
