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
    cov = noise * _pinv_scaled(J.T @ J) if cov is None else cov
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


def _pinv_scaled(M: np.ndarray) -> np.ndarray:
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


# ---------------------------------------------------------------- mixture over separate optima

# Hoffmann's grid thinned in a, b, e (675 starts): every start runs to convergence, so none is pruned
# before it reaches its own local optimum.
MIXTURE_GRID = {"a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0], "e": [-1.0, 0.0, 1.0],
                "alpha": [0.0, 0.5, 1.0, 1.5, 2.0], "beta": [0.0, 0.5, 1.0, 1.5, 2.0]}
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(24)


def fit_mixture(N: np.ndarray, D: np.ndarray, L: np.ndarray, delta: float = 1e-3,
                min_weight: float = 1e-3) -> list[tuple[float, Posterior]]:
    """Separate local optima of the fit, each with its Laplace posterior and weight, heaviest first.

    Starts: ``MIXTURE_GRID`` plus the global optimum of ``fit_parametric``; optima differing in alpha or
    beta by more than 0.02 are separate; degenerate ones (J^T J singular) are left out. Weight: the
    likelihood ratio exp(-(RSS_k - RSS_best) / 2 s^2), s^2 the noise of the best optimum (no determinant
    term: under a flat prior it would reward the flattest optimum); components below ``min_weight`` go.
    """
    best = fit_posterior(N, D, L, delta=delta)
    obj = Objective(np.log(N), np.log(D), np.log(L), kind="huber", delta=delta)
    starts = np.array([[MIXTURE_GRID[p][i] for p, i in zip(PARAMS, idx)]
                       for idx in np.ndindex(*(len(MIXTURE_GRID[p]) for p in PARAMS))])
    ones = np.ones(N.size)
    run = newton_batched(obj, starts, ones, max_iter=100)  # then refine one start per separate basin
    near = np.isfinite(run.f) & (run.f <= 3 * np.nanmin(np.where(np.isfinite(run.f), run.f, np.nan)))
    reps = _separate(run.theta[near][np.argsort(run.f[near])], [])[:20]
    refined = newton_batched(obj, np.array(reps), ones, max_iter=2000)
    ok = refined.converged & np.isfinite(refined.theta).all(1)
    optima = _separate(refined.theta[ok][np.argsort(refined.f[ok])], [best.theta])
    comps, logw = [], []
    for theta in optima:
        pred, J = jacobian(theta, N, D)
        r = pred - np.log(L)
        M = J.T @ J
        if _well_conditioned(M):  # a degenerate optimum (a term switched off) has no Laplace posterior
            comps.append(Posterior(theta, best.noise * _pinv_scaled(M), best.noise, int(N.size), float(r @ r), True))
            logw.append(-float(r @ r) / (2 * best.noise))
    w = np.exp(np.array(logw) - max(logw))
    w /= w.sum()
    keep = [(float(wk), c) for wk, c in sorted(zip(w, comps), key=lambda x: -x[0]) if wk >= min_weight]
    total = sum(wk for wk, _ in keep)
    return [(wk / total, c) for wk, c in keep]


def _separate(thetas: np.ndarray, kept: list[np.ndarray], tol: float = 0.02) -> list[np.ndarray]:
    """``kept`` plus each row of thetas whose (alpha, beta) differ from all kept ones by more than tol."""
    kept = list(kept)
    for theta in thetas:
        if all(np.abs(theta[3:] - t[3:]).max() > tol for t in kept):
            kept.append(theta)
    return kept


def _well_conditioned(M: np.ndarray, rcond: float = 1e-10) -> bool:
    """Whether the Jacobi-scaled symmetric matrix M has all eigenvalues above rcond x the largest."""
    d = np.sqrt(np.diag(M))
    if not (np.isfinite(M).all() and (d > 1e-150).all()):
        return False
    ev = np.linalg.eigvalsh(M / np.outer(d, d))
    return bool(ev[0] > rcond * ev[-1])


def mixture_moments(comps: list[tuple[float, Posterior]], target: Target) -> tuple[float, float]:
    """Mean and variance of the target under the mixture."""
    w = np.array([wk for wk, _ in comps])
    m = np.array([target.value(c.theta) for _, c in comps])
    v = np.array([float(g @ c.cov @ g) for g, (_, c) in zip((target.gradient(c.theta) for _, c in comps), comps)])
    mean = float(w @ m)
    return mean, float(w @ (v + (m - mean) ** 2))


def mixture_expected_variance(comps: list[tuple[float, Posterior]], target: Target,
                              Nc: np.ndarray, Dc: np.ndarray) -> np.ndarray:
    """Expected mixture variance of the target after observing each candidate (preposterior).

    For an outcome y (log loss) every component updates linearly (mean shift, rank-one covariance) and
    its weight by its predictive density N(y; mu_k, s^2 + j^T Sigma_k j); y is integrated by Gauss-Hermite
    quadrature under each component's predictive, weighted by the component weights.
    """
    w = np.array([wk for wk, _ in comps])[:, None]  # (K, 1)
    mu, S, c, m, v = [], [], [], [], []
    for _, p in comps:
        pred, J = jacobian(p.theta, Nc, Dc)
        g = target.gradient(p.theta)
        CJ = J @ p.cov
        mu.append(pred)
        S.append(p.noise + np.einsum("mi,mi->m", CJ, J))
        c.append(CJ @ g)
        m.append(target.value(p.theta))
        v.append(float(g @ p.cov @ g))
    mu, S, c = np.array(mu), np.array(S), np.array(c)  # (K, M)
    m, v = np.array(m)[:, None], np.array(v)[:, None]
    y = mu[:, None] + np.sqrt(2 * S)[:, None] * _GH_NODES[None, :, None]  # (K sources, Q, M)
    logp = -0.5 * ((y[None] - mu[:, None, None]) ** 2 / S[:, None, None] + np.log(S[:, None, None]))  # (K, K, Q, M)
    lw = np.log(w)[:, None, None] + logp
    post_w = np.exp(lw - lw.max(0))
    post_w /= post_w.sum(0)
    mean_k = m[:, None, None] + (c / S)[:, None, None] * (y[None] - mu[:, None, None])
    var_k = (v - c**2 / S)[:, None, None]
    mix_mean = (post_w * mean_k).sum(0)
    mix_var = (post_w * (var_k + mean_k**2)).sum(0) - mix_mean**2  # (K sources, Q, M)
    return np.einsum("l,q,lqm->m", w[:, 0], _GH_WEIGHTS / math.sqrt(math.pi), mix_var)
