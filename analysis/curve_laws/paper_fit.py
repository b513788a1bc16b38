"""The Multi-Power Law authors' fitting procedure (``fit_loss_curve(..., method="paper")``).

Their code (``src/fitting.py``) fits in two stages, and the second is stopped early:
1. ``initialize_params``: L0, A, alpha, B of the simplified law L = L0 + A S1^-alpha - B (peak - lr), the
   drop taken as instantaneous and full, from a 5 x 3 x 3 x 3 grid (L0 around the lowest loss, A and
   alpha from a line through log(loss - lowest + 0.01) against log S1, B in 100..1000) refined by
   L-BFGS-B with every parameter >= 0.
2. ``mpl_adam_fit``: from there with C = 1, beta = 0.5, gamma = 0.5, AdamW (torch defaults: betas 0.9,
   0.999, eps 1e-8, weight decay 0.01) with lr 5e-2 for L0, A, B, C and 5e-3 for alpha, beta, gamma,
   on the same summed Huber objective, for at most 200 steps, stopping after 20 steps without a new
   lowest objective or at a gradient norm below 1e-5; the parameters after the step from the lowest
   objective seen are kept.

AdamW moves each parameter by about its lr per step, so in 200 steps B (hundreds) stays close to its
stage-1 value, and C, beta and gamma close to their starts: an implicit prior toward the simplified
law's amplitudes, which on the paper's three training curves predicts longer horizons better than the
converged minimum of the same objective. Multi-Power Law only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.stats import linregress

from analysis.errors import AnalysisInputError
from analysis.curve_laws.objective import Problem

ADAMW = {"lr": (5e-2, 5e-3), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "max_steps": 200,
         "patience": 20, "grad_norm": 1e-5}
RESOLUTION = 0.5  # finer bins of the drop sum (``laws.Design``): their code sums every step, and the ~100
# AdamW steps then follow the exact sum's to ~1e-6 (default bins: 400M held-out PredE 0.0016804; 0.5: 0.0016798)
STAGE1_REFINE = 4  # of the 135 grid starts, the best refined to the minimum (the paper refines all 135, ftol 1e-9)
FAST = np.array([True, True, False, True, True, False, False])  # L0, A, B, C at lr 5e-2; the exponents at 5e-3


def _huber_grad(r: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    a = np.abs(r)
    value = float(np.sum(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))))
    return value, np.clip(r, -delta, delta)


def fit(problem: Problem, peak: float) -> dict[str, Any]:
    """Both stages; the result in the form of ``objective.minimise``'s."""
    q = simplified_start(problem, peak)
    out = adamw(problem, np.array([q[0], q[1], q[2], q[3], 1.0, 0.5, 0.5]))
    return {"p": out["p"], "objective": problem.value(out["p"]), "converged": True, "bound_hit": [],
            "message": f"early-stopped AdamW, {out['steps']} steps, from the simplified law's fit",
            "nit": out["steps"], "n_starts": 135, "n_refined": 1,
            "extra": {"stage1": dict(zip(("L0", "A", "alpha", "B"), map(float, q)))}}


def simplified_start(problem: Problem, peak: float) -> np.ndarray:
    """Stage 1: (L0, A, alpha, B) of L0 + A S1^-alpha - B (peak - lr) on the paper's grid, by L-BFGS-B."""
    S1 = np.concatenate([d.S1[rep] for d, rep in zip(problem.designs, problem.rep)])
    gap = np.concatenate([(peak - d.lrs[d.steps])[rep] for d, rep in zip(problem.designs, problem.rep)])
    y = np.concatenate([y[rep] for y, rep in zip(problem.y, problem.rep)])
    logy, low = np.log(y), float(y.min())
    fit = linregress(np.log(S1), np.log(y - low + 0.01))
    delta = problem.delta

    def objective(q: np.ndarray) -> tuple[float, np.ndarray]:
        L0, A, alpha, B = q
        pw = S1 ** -alpha
        pred = L0 + A * pw - B * gap
        if not np.all(pred > 0):
            return 1e10, np.zeros(4)
        value, psi = _huber_grad(logy - np.log(pred), delta)
        J = np.stack([np.ones_like(pw), pw, -A * pw * np.log(S1), -gap], axis=1)
        return value, -(psi / pred) @ J

    best = None
    grid = _grid(np.linspace(low - 0.2, low + 0.2, 5),
                 np.linspace(math.exp(fit.intercept) - 0.1, math.exp(fit.intercept) + 0.1, 3),
                 np.linspace(-fit.slope - 0.1, -fit.slope + 0.1, 3), np.linspace(100, 1000, 3), objective)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for q0 in grid:
            res = minimize(objective, q0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * 4,
                           options={"maxiter": 100000, "ftol": 1e-15, "gtol": 1e-12})
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    if best is None:
        raise AnalysisInputError("method: 'paper': the simplified law fits no start; check the losses")
    return best.x


def _grid(*axes_and_objective: Any) -> list[np.ndarray]:
    """The paper's 135 starts (clipped to >= 0), the ``STAGE1_REFINE`` best by objective first."""
    *axes, objective = axes_and_objective
    starts = [np.maximum(np.array(q), 0.0) for q in itertools.product(*axes)]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = [objective(q)[0] for q in starts]
    order = np.argsort(values, kind="stable")
    return [starts[i] for i in order[:STAGE1_REFINE]]


def adamw(problem: Problem, p0: np.ndarray, settings: dict[str, Any] = ADAMW) -> dict[str, Any]:
    """Stage 2: the paper's early-stopped AdamW on the summed Huber objective, from ``p0`` (raw parameters)."""
    lr = np.where(FAST, settings["lr"][0], settings["lr"][1])
    b1, b2 = settings["betas"]
    p, m, v = p0.astype(float).copy(), np.zeros(p0.size), np.zeros(p0.size)
    best_value, best_p, lowest, stale, steps = math.inf, p.copy(), math.inf, 0, 0
    for step in range(settings["max_steps"]):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r, J = problem.residuals_jac(p)
        value, psi = _huber_grad(r, problem.delta)
        g = J.T @ psi  # d objective / d p: the residuals are log y - log pred, J their Jacobian
        if not (np.isfinite(value) and np.all(np.isfinite(g))):
            break
        t = step + 1
        p = p * (1.0 - lr * settings["weight_decay"])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + settings["eps"])
        steps = t
        if value < lowest:
            lowest, stale = value, 0
        else:
            stale += 1
        if step > settings["patience"] and stale >= settings["patience"]:
            break
        if float(np.linalg.norm(g)) < settings["grad_norm"]:
            break
        if value < best_value:
            best_value, best_p = value, p.copy()
    return {"p": best_p, "steps": steps}
