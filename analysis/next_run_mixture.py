"""The mixture posterior of ``propose_next(mixture=True)``: the fit's separate local optima, each with its
Laplace posterior (``next_run_criteria``) and a likelihood weight, and the expected variance of a target
under that mixture after one more run (a preposterior, by Gauss-Hermite quadrature).
"""

from __future__ import annotations

import math

import numpy as np

from analysis.next_run_criteria import Posterior, Target, fit_posterior, jacobian, pinv_scaled
from analysis.optimize import PARAMS, Objective, newton_batched

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
            comps.append(Posterior(theta, best.noise * pinv_scaled(M), best.noise, int(N.size), float(r @ r), True))
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
