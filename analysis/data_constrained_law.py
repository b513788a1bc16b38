"""The effective-data law of data-constrained scaling (Muennighoff et al. 2023) and its predictions.

    L = E + A / N'^alpha + B / D'^beta,   D' = U + U R_D* (1 - exp(-R_D / R_D*)),  R_D = max(D/U - 1, 0)
                                          N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), R_N = max(N/U_N - 1, 0)

U_N = min(N_opt(C_U), N): the base law's compute-optimal size at the compute C_U whose optimal data is U.
Parameters as rows ``theta`` of ``THETA``: (log A, log B, log E, alpha, beta, R_D*, R_N*). The fit is
``analysis.data_constrained``; the tables of a fitted law are ``analysis.data_constrained_tables``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis import data_constrained_search as search
from analysis.data_constrained_search import _log_pred, effective_tokens
from analysis.errors import AnalysisInputError
from analysis.result import FitResult

LAW = "L = E + A/N'^alpha + B/D'^beta, D' = U(1 + R_D*(1 - exp(-R_D/R_D*))), N' = U_N(1 + R_N*(1 - exp(-R_N/R_N*)))"
BASE_NAMES = ("A", "B", "E", "alpha", "beta")
THETA = ("a", "b", "e", "alpha", "beta", "R_D_star", "R_N_star")
# The base law of the paper, fitted to Chinchilla's C4 runs (datablations notebook, alpha = beta tied).
MUENNIGHOFF_C4_BASE = {"A": math.exp(6.255414), "B": math.exp(7.3049974), "E": math.exp(0.6254804),
                       "alpha": 0.3526596, "beta": 0.3526596}
EPOCHS = (4, 16, 40)  # epoch counts whose value relative to fresh data is reported by default


def epoch_value(epochs: Any, R_D_star: Any) -> np.ndarray:
    """What ``epochs`` passes over U unique tokens are worth relative to as many fresh tokens: D' / D."""
    epochs = np.asarray(epochs, float)
    return effective_tokens(1.0, epochs, R_D_star) / epochs


def extra_epoch_value(epochs: Any, R_D_star: Any) -> np.ndarray:
    """What one more pass after ``epochs`` passes adds to D', as a fraction of a pass of fresh data."""
    epochs = np.asarray(epochs, float)
    return effective_tokens(1.0, epochs + 1.0, R_D_star) - effective_tokens(1.0, epochs, R_D_star)


def unique_params(U: Any, base: Any) -> np.ndarray:
    """U_N: the base law's compute-optimal N at the compute whose optimal D is U (before the min with N)."""
    a, b, _, alpha, beta = base_theta(base)
    return search.unique_params(np.asarray(U, float), a, b, alpha, beta)


def predict_data_constrained(N: Any, D: Any, U: Any, *, R_D_star: float, R_N_star: float,
                             base: Any = MUENNIGHOFF_C4_BASE) -> np.ndarray:
    """The law's loss at (N, D, U) (broadcast together) for given R_D*, R_N* and base law, e.g. the
    paper's published R_D* = 15.387756, R_N* = 5.309743 on ``MUENNIGHOFF_C4_BASE``."""
    return predict_theta(np.r_[base_theta(base), float(R_D_star), float(R_N_star)], N, D, U)


def predict_theta(theta: np.ndarray, N: Any, D: Any, U: Any) -> np.ndarray:
    """The loss of the law with parameters ``theta`` (one row of ``THETA``) at (N, D, U), broadcast together."""
    N, D, U = np.broadcast_arrays(*(np.asarray(v, float) for v in (N, D, U)))
    return np.exp(_log_pred(theta[None], N.ravel(), D.ravel(), U.ravel())[0]).reshape(N.shape)


def base_theta(base: Any) -> np.ndarray:
    """(a, b, e, alpha, beta) of a base law given as a mapping or a FitResult with A, B, E, alpha, beta."""
    est = base.estimates if isinstance(base, FitResult) else base
    if not hasattr(est, "get"):
        raise AnalysisInputError(f"base: {base!r} is not allowed; pass a mapping with {', '.join(BASE_NAMES)}, "
                                 "a fit_parametric result, 'c4', or None ('joint')")
    missing = [k for k in BASE_NAMES if k not in est]
    if missing:
        raise AnalysisInputError(f"base: missing {', '.join(missing)}; the base law needs {', '.join(BASE_NAMES)}")
    vals = {k: float(est[k]) for k in BASE_NAMES}
    for k, v in vals.items():
        if not (math.isfinite(v) and v > 0):
            raise AnalysisInputError(f"base: {k} = {v!r} is not allowed; every base-law value must be finite and > 0")
    return np.array([math.log(vals["A"]), math.log(vals["B"]), math.log(vals["E"]), vals["alpha"], vals["beta"]])
