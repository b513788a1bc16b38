"""The joint law of Kaplan et al. 2020 (eq. 1.5): L(N, D) = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D.

In logs, log L = alpha_D LSE(u, v) with u = (alpha_N / alpha_D)(log N_c - log N) and v = log D_c - log D;
theta = (log N_c, log D_c, alpha_N, alpha_D). Fitted as Approach 3 is: Huber (delta 1e-3) on log loss, summed,
from a grid of 81 starts (or a warm start), by trust-region least squares with the analytic Jacobian. It has no
irreducible term. At a compute budget C = 6 N D the loss is least at N_opt = (u_r N_c^u_r C / (6 D_c))^(1 / (1 +
u_r)), u_r = alpha_N / alpha_D, so N_opt ~ C^a with a = alpha_D / (alpha_N + alpha_D) and D_opt ~ C^(1 - a).

``analysis.propose_next(..., law="kaplan")`` and ``replay`` use it as the design's law (its Laplace posterior
and targets: ``KAPLAN_TARGETS``).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult, least_squares

KAPLAN_TARGETS = ("a", "b", "alpha_N", "alpha_D")
N_PARAMS = 4  # the length of theta, by which a posterior tells this law from the parametric one's 5
_LOWER, _UPPER = [-50.0, -50.0, 1e-3, 1e-3], [80.0, 80.0, 5.0, 5.0]
_GRID = np.array(np.meshgrid([5.0, 10.0, 15.0], [8.0, 12.0, 16.0], [0.1, 0.3, 0.7], [0.1, 0.3, 0.7])).reshape(4, -1).T


def kaplan_log_loss(theta: np.ndarray, N: np.ndarray, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L at the points (N, D) and its Jacobian (m, 4) in theta."""
    log_nc, log_dc, a_n, a_d = (float(t) for t in theta)
    x, w = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    u, v = (a_n / a_d) * (log_nc - x), log_dc - w
    lse = np.logaddexp(u, v)
    pu = np.exp(u - lse)
    jac = np.stack([a_n * pu, a_d * (1 - pu), pu * (log_nc - x), lse - pu * u], axis=1)
    return a_d * lse, jac


def kaplan_fit(N: np.ndarray, D: np.ndarray, L: np.ndarray, starts: list | None = None, delta: float = 1e-3) -> OptimizeResult:
    """The least-squares result (``x``: theta; ``status`` > 0: converged) of least summed Huber (``delta``) of the
    log-loss residuals, best over ``starts`` (default the grid)."""
    N, D, logL = np.asarray(N, float), np.asarray(D, float), np.log(np.asarray(L, float))
    best = None
    for start in _GRID if starts is None else starts:
        x0 = np.clip(np.asarray(start, float), np.array(_LOWER) + 1e-9, np.array(_UPPER) - 1e-9)
        res = least_squares(lambda t: kaplan_log_loss(t, N, D)[0] - logL, x0, jac=lambda t: kaplan_log_loss(t, N, D)[1],
                            bounds=(_LOWER, _UPPER), loss="huber", f_scale=delta, max_nfev=2000)
        if best is None or res.cost < best.cost:
            best = res
    return best


def fit_kaplan_joint(N: np.ndarray, D: np.ndarray, L: np.ndarray, starts: list | None = None,
                     delta: float = 1e-3) -> np.ndarray:
    """theta minimising the summed Huber (``delta``) of log-loss residuals, from ``starts`` (default the grid)."""
    return kaplan_fit(N, D, L, starts, delta).x


def kaplan_prediction(N: np.ndarray, D: np.ndarray, L: np.ndarray, at_N: float, at_D: float,
                      starts: list | None = None) -> float:
    """The loss at (``at_N``, ``at_D``) of the law fitted to the points (N, D, L)."""
    return float(kaplan_loss(fit_kaplan_joint(N, D, L, starts)[None], at_N, at_D)[0])


def kaplan_derived(theta: np.ndarray) -> dict[str, np.ndarray]:
    """alpha_N, alpha_D, a, b per row of theta (S, 4)."""
    a_n, a_d = theta[:, 2], theta[:, 3]
    return {"alpha_N": a_n, "alpha_D": a_d, "a": a_d / (a_n + a_d), "b": a_n / (a_n + a_d)}


def kaplan_optimum(theta: np.ndarray, C: float) -> dict[str, np.ndarray]:
    """N_opt and D_opt at compute C = 6 N D per row of theta (S, 4)."""
    log_nc, log_dc, a_n, a_d = theta.T
    u = a_n / a_d
    log_n = (np.log(u) + u * log_nc + np.log(C / 6.0) - log_dc) / (1.0 + u)
    return {"N_opt": np.exp(log_n), "D_opt": C / 6.0 / np.exp(log_n)}


def kaplan_loss(theta: np.ndarray, N: float, D: float) -> np.ndarray:
    """L(N, D) per row of theta (S, 4)."""
    return np.exp(np.stack([kaplan_log_loss(t, np.array([N]), np.array([D]))[0][0] for t in theta]))
