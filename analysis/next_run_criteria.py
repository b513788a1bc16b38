"""The pieces of ``propose_next``: the law's Laplace posterior, targets, and the design criteria.

Posterior. The parametric law in log-sum-exp form, log L = LSE(a - alpha log N, b - beta log D, e), fitted
with the Huber objective of ``fit_parametric`` (delta 1e-3 on log loss, summed), is linearised at the
optimum theta = (a, b, e, alpha, beta): J = d log L / d theta per point (Gauss-Newton), noise s^2 = sum of
squared log residuals / (n - 5), covariance Sigma = s^2 (J^T J)^-1 (the Laplace approximation). A
target g(theta) gets var = grad g^T Sigma grad g (delta method) and the interval estimate +- z sd.

Update. A new run at (N, D) with Jacobian row j adds j j^T / s^2 to the precision; by Sherman-Morrison
Sigma' = Sigma - Sigma j j^T Sigma / (s^2 + j^T Sigma j), so every criterion is closed-form per candidate:

    variance    var(g) - var'(g) = (grad g^T Sigma j)^2 / (s^2 + j^T Sigma j)
    d-optimal   log det Sigma - log det Sigma' = log(1 + j^T Sigma j / s^2)
    v-optimal   mean over reference points v of (v^T Sigma j)^2 / (s^2 + j^T Sigma j)

each divided by the candidate's cost (gain per FLOP). ``random`` and ``cheapest`` are the baselines.

``law="kaplan"``: the same posterior, update and criteria for the joint law of Kaplan et al. 2020
(``analysis.kaplan_joint``; theta of 4, told apart from the parametric law's 5 by its length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from analysis.allocation import _allocate, _law
from analysis.errors import AnalysisInputError
from analysis.kaplan_joint import (KAPLAN_TARGETS, N_PARAMS as KAPLAN_PARAMS, kaplan_derived, kaplan_fit,
                                   kaplan_log_loss, kaplan_loss, kaplan_optimum)
from analysis.optimize import PARAMS, Objective, newton_batched
from analysis.parametric import _bootstrap, _derived, _polish, fit_parametric

CRITERIA = ("variance", "d-optimal", "v-optimal", "random", "cheapest")
PARAM_TARGETS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")
TARGET_KINDS = ("param", "N_opt", "D_opt", "loss")
LAW_PARAMS = {"parametric": len(PARAMS), "kaplan": KAPLAN_PARAMS}  # the length of each law's theta


@dataclass
class Posterior:
    """Laplace posterior of the law: theta (5,: the parametric law; 4,: Kaplan's), its covariance, noise s^2 of
    log loss."""

    theta: np.ndarray
    cov: np.ndarray
    noise: float
    n_points: int
    objective: float
    converged: bool

    def estimates(self) -> dict[str, float]:
        """E, A, B, alpha, beta, a, b, G at theta (Kaplan's law: alpha_N, alpha_D, a, b)."""
        derived = kaplan_derived if self.theta.size == KAPLAN_PARAMS else _derived
        return {k: float(v[0]) for k, v in derived(self.theta[None]).items()}


@dataclass
class Target:
    """A scalar function of theta: ``name`` (for tables) and ``fn`` mapping rows (S, 5) to (S,)."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def value(self, theta: np.ndarray) -> float:
        return float(self.fn(theta[None])[0])

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """Central differences of fn at theta (k,)."""
        h = 1e-6 * (1 + np.abs(theta))
        rows = np.concatenate([theta + np.diag(h), theta - np.diag(h)])  # (2k, k)
        v = self.fn(rows)
        return (v[:theta.size] - v[theta.size:]) / (2 * h)


def _parametric_optimum(th: np.ndarray, C: float) -> dict[str, np.ndarray]:
    alloc = _allocate({k: v[:, None] for k, v in _derived(th).items()}, np.array([[C]]))
    return {k: alloc[k][:, 0] for k in ("N_opt", "D_opt")}


def _parametric_loss(th: np.ndarray, N: float, D: float) -> np.ndarray:
    return _law({k: v[:, None] for k, v in _derived(th).items()}, np.array([[N]]), np.array([[D]]))[:, 0]


# per law: its name in messages, its parameter targets, derived values, optimum at C and loss at (N, D)
LAW_TARGETS = {"parametric": ("the law", PARAM_TARGETS, _derived, _parametric_optimum, _parametric_loss),
               "kaplan": ("Kaplan's law", KAPLAN_TARGETS, kaplan_derived, kaplan_optimum, kaplan_loss)}


def resolve_target(target: Any, law: str = "parametric") -> Target:
    """``"a"`` / ``{"param": "a"}`` / ``{"N_opt": C}`` / ``{"D_opt": C}`` / ``{"loss": (N, D)}`` -> Target of
    ``law`` (``parametric``, or ``kaplan``: the targets of ``analysis.kaplan_joint``)."""
    label, names, derived, optimum, loss = LAW_TARGETS[law]
    if isinstance(target, str):
        target = {"param": target}
    if not isinstance(target, dict) or len(target) != 1:
        raise AnalysisInputError(
            f"target: {target!r} is not allowed; use a parameter name or one of {{'param': name}}, "
            "{'N_opt': C}, {'D_opt': C}, {'loss': (N, D)}"
        )
    (kind, value), = target.items()
    if kind == "param":
        if value not in names:
            raise AnalysisInputError(f"target: parameter {value!r} is not in {label}; use one of {', '.join(names)}")
        return Target(str(value), lambda th: derived(th)[value])
    if kind in ("N_opt", "D_opt"):
        C = _positive_number(f"target {kind}", value)
        return Target(f"log {kind}(C={C:.3g})", lambda th: np.log(optimum(th, C)[kind]))  # log: a relative interval
    if kind == "loss":
        if isinstance(value, str) or np.ndim(value) != 1 or len(value) != 2:
            raise AnalysisInputError(f"target: loss={value!r} is not allowed; give a pair (N, D)")
        N, D = (_positive_number(f"target loss {n}", v) for n, v in zip("ND", value))
        return Target(f"loss(N={N:.3g}, D={D:.3g})", lambda th: loss(th, N, D))
    raise AnalysisInputError(f"target: kind {kind!r} is not allowed; use one of {', '.join(TARGET_KINDS)}")


def _positive_number(field: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"{field}: {value!r} is not allowed; use a finite number > 0") from None
    if not (math.isfinite(v) and v > 0):
        raise AnalysisInputError(f"{field}: {value!r} is not allowed; use a finite number > 0")
    return v


# ---------------------------------------------------------------- posterior


def jacobian(theta: np.ndarray, N: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted log L (m,) and d log L / d theta (m, 5) at points (N, D); a theta of 4 is Kaplan's law's."""
    if np.size(theta) == KAPLAN_PARAMS:
        return kaplan_log_loss(theta, N, D)
    x, w = np.log(N), np.log(D)
    z = np.stack([theta[0] - theta[3] * x, theta[1] - theta[4] * w, np.full_like(x, theta[2])], axis=1)
    m = z.max(1, keepdims=True)
    ez = np.exp(z - m)
    s = ez.sum(1, keepdims=True)
    p = ez / s
    J = np.stack([p[:, 0], p[:, 1], p[:, 2], -p[:, 0] * x, -p[:, 1] * w], axis=1)
    return (m + np.log(s))[:, 0], J


def fit_posterior(N: np.ndarray, D: np.ndarray, L: np.ndarray, start: np.ndarray | None = None, delta: float = 1e-3,
                  bootstrap: int = 0, seed: int = 0, law: str = "parametric") -> Posterior:
    """Fit the law (the full start grid, or a warm start from ``start``) and its posterior.

    bootstrap 0: the Laplace covariance s^2 (J^T J)^-1. bootstrap > 0: the covariance of the optima refitted
    to that many multinomial resamples (``fit_parametric``'s bootstrap), still updated by the Fisher rule
    (the parametric law only). ``law="kaplan"``: Kaplan's joint law (4 parameters).
    """
    k = LAW_PARAMS[law]
    if N.size <= k:
        raise AnalysisInputError(f"runs: {N.size} points is too few; the posterior of {k} parameters needs at least {k + 1}")
    if law == "kaplan":
        if bootstrap:
            raise AnalysisInputError("bootstrap: the Kaplan law's posterior is the Laplace one; use bootstrap=0")
        res = kaplan_fit(N, D, L, starts=None if start is None else [start], delta=delta)
        return _posterior(res.x, N, D, L, delta, bool(res.status > 0))
    obj = Objective(np.log(N), np.log(D), np.log(L), kind="huber", delta=delta)
    if start is None:
        res = fit_parametric(N, D, L, delta=delta)
        theta = theta_from(res.estimates)
        converged = bool(res.diagnostics["converged"])
    else:
        run = newton_batched(obj, np.asarray(start, float)[None], np.ones(N.size))
        theta, converged = run.theta[0], bool(run.converged[0])
        if not converged:
            theta, converged = _polish(obj, theta, np.ones(N.size))
    return _posterior(theta, N, D, L, delta, converged, None if not bootstrap else _bootstrap_cov(obj, theta, int(bootstrap), seed))


def _posterior(theta: np.ndarray, N: np.ndarray, D: np.ndarray, L: np.ndarray, delta: float, converged: bool,
               cov: np.ndarray | None = None) -> Posterior:
    """The posterior at the optimum theta: noise from the residuals, covariance Laplace's unless given."""
    pred, J = jacobian(theta, N, D)
    r = pred - np.log(L)
    noise = max(float(r @ r) / (N.size - theta.size), 1e-12)
    cov = noise * pinv_scaled(J.T @ J) if cov is None else cov
    obj_value = float(np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum())
    return Posterior(theta, cov, noise, int(N.size), obj_value, converged)


def theta_from(est: dict[str, Any]) -> np.ndarray:
    """theta (a, b, e, alpha, beta) rows from estimates or draws of E, A, B, alpha, beta."""
    return np.stack([np.log(est["A"]), np.log(est["B"]), np.log(est["E"]), est["alpha"], est["beta"]], axis=-1).astype(float)


def _bootstrap_cov(obj: Objective, theta: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    draws, _ = _bootstrap(obj, theta, n_boot, seed, None)
    rows = theta_from(draws)
    rows = rows[np.isfinite(rows).all(1)]
    if len(rows) < 10:
        raise AnalysisInputError(
            f"bootstrap: only {len(rows)} of {n_boot} refits converged; use the Laplace posterior (bootstrap=0)"
        )
    return np.cov(rows.T)


def pinv_scaled(M: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a symmetric matrix after Jacobi scaling (the parameters differ in scale)."""
    d = np.sqrt(np.abs(np.diag(M))) + 1e-300
    return np.linalg.pinv(M / np.outer(d, d), rcond=1e-12, hermitian=True) / np.outer(d, d)


def z_value(level: float) -> float:
    """Half-width of the central ``level`` interval of a standard normal (1.96 at 0.95)."""
    return float(norm.ppf(0.5 + level / 2))


def interval(post: Posterior, target: Target, level: float = 0.95) -> tuple[float, float, float]:
    """Estimate and Laplace interval (low, high) of the target at ``level``: estimate +- z sd."""
    g = target.gradient(post.theta)
    est = target.value(post.theta)
    half = z_value(level) * math.sqrt(max(float(g @ post.cov @ g), 0.0))
    return est, est - half, est + half


# ---------------------------------------------------------------- criteria


def expected_variance(cov: np.ndarray, noise: float, g: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Target variance after adding each candidate (rows of J), by the rank-one Fisher update."""
    CJ = J @ cov  # (m, 5)
    denom = noise + np.einsum("mi,mi->m", CJ, J)
    return float(g @ cov @ g) - (CJ @ g) ** 2 / denom


def gains(criterion: str, cov: np.ndarray, noise: float, g: np.ndarray, J: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
    """Information gain of each candidate (rows of J) under ``criterion`` (variance, d-optimal, v-optimal)."""
    CJ = J @ cov
    q = np.einsum("mi,mi->m", CJ, J)  # predictive variance of each candidate's log loss, without noise
    if criterion == "variance":
        return (CJ @ g) ** 2 / (noise + q)
    if criterion == "d-optimal":
        return np.log1p(q / noise)
    if criterion == "v-optimal":
        R = J if ref is None else ref
        return ((CJ @ R.T) ** 2).mean(1) / (noise + q)
    raise AnalysisInputError(f"criterion: {criterion!r} is not allowed; use one of {', '.join(CRITERIA)}")


def scores(criterion: str, post: Posterior, g: np.ndarray, J: np.ndarray, cost: np.ndarray,
           ref: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gain, score) per candidate; higher score runs first. Baselines: random order, cheapest first."""
    if criterion == "random":
        return np.full(cost.size, np.nan), rng.random(cost.size)
    if criterion == "cheapest":
        return np.full(cost.size, np.nan), -cost
    gain = gains(criterion, post.cov, post.noise, g, J, ref)
    return gain, gain / cost


def rank_one_update(cov: np.ndarray, noise: float, j: np.ndarray) -> np.ndarray:
    """Covariance after adding one run with Jacobian row j (Sherman-Morrison)."""
    Cj = cov @ j
    return cov - np.outer(Cj, Cj) / (noise + j @ Cj)
