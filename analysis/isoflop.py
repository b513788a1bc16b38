"""Approach 2 (IsoFLOP profiles): per compute budget a parabola of loss in log N; its vertex is N_opt.

Then N_opt = coef_N C^a and D_opt = coef_D C^b are lines in log-log over the budgets. By default each
parabola is fitted to the sizes within a factor ``window`` of the budget's lowest-loss size, where a
parabola describes the profile well; far from the minimum the profile is asymmetric and pulls the vertex.
Budgets whose lowest loss is at the smallest or largest sampled size are flagged and left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.checks import as_positive, check_bootstrap, check_level, enough_points, same_length
from analysis.errors import AnalysisInputError
from analysis.allocation import allocation_predictor
from analysis.result import FitResult, summarize_samples

MIN_SIZES = 3  # a parabola needs three distinct sizes


def fit_isoflop(
    N: Any,
    L: Any,
    C: Any,
    *,
    D: Any = None,
    window: float | None = 4.0,
    robust: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    budget_rtol: float = 0.05,
    predicted: Any = None,
) -> FitResult:
    """IsoFLOP fit of N_opt = coef_N C^a and D_opt = coef_D C^b.

    N, L, C: one value per run (parameters, final loss, training FLOPs). Runs whose C agree within a
      relative ``budget_rtol`` form one budget (its C is their geometric mean).
    D: tokens per run; D_opt is then read off a line of log D on log N within the budget. Without it,
      D_opt = C / (6 N_opt).
    window: fit each parabola to sizes within this factor of the lowest-loss size (e.g. 4: from N_min/4
      to 4 N_min; at least the 3 nearest sizes); None (or 0) fits all of the budget's points.
    robust: soft-L1 regression (scipy) instead of least squares, to damp outlying runs.
    bootstrap: resamples of the points within each budget; each redoes the vertices and the lines.
    predicted: one boolean per run, True where the loss is a prediction (a WSD branch never trained,
      ``predict_branches`` and ``isoflop_rows``): fitted like the others, counted apart in the diagnostics
      (``n_measured``, ``n_predicted``), the points table and a warning.
    Estimates ``a``, ``b``, ``coef_N``, ``coef_D``. ``tables["budgets"]``: per-budget vertices, status,
    parabola coefficients; ``tables["points"]``: the input with its budget and whether it was in the
    window. ``predict(C)`` gives a DataFrame of C, N_opt, D_opt, tokens_per_param.
    """
    level, bootstrap = check_level(level), check_bootstrap(bootstrap)
    window = None if window == 0 and not isinstance(window, bool) else window  # 0: all points, as scaling-fit --window 0
    if window is not None and not (isinstance(window, (int, float)) and window > 1):
        raise AnalysisInputError(f"window: {window!r}; must be a factor > 1 (e.g. 4), or 0 or None for all points")
    n_, l_, c_ = as_positive("N", N), as_positive("loss", L), as_positive("C", C)
    d_ = as_positive("D", D) if D is not None else None
    n = same_length(N=n_, loss=l_, C=c_, **({"D": d_} if d_ is not None else {}))
    pred = _predicted(predicted, n)
    enough_points(n, 2 * MIN_SIZES, "an IsoFLOP fit (two budgets of three sizes)")
    label, budgets = _group_budgets(c_, budget_rtol)
    if len(budgets) < 2:
        raise AnalysisInputError(f"C: every point is at one budget ({budgets[0]:.3g} FLOPs); "
                                 "an IsoFLOP fit needs at least two budgets")
    lx, ld = np.log(n_), (np.log(d_) if d_ is not None else None)
    members = [np.flatnonzero(label == k) for k in range(len(budgets))]

    table, in_window = _vertices(lx, l_, ld, budgets, members, window, robust)
    est = _lines(table.loc[table["used"], ["C", "N_opt", "D_opt"]].to_numpy())
    samples: dict[str, np.ndarray] = {}
    if bootstrap:
        used = np.flatnonzero(table["used"].to_numpy())
        samples = _bootstrap_lines(lx, l_, ld, budgets, [members[k] for k in used], used, window, robust,
                                   bootstrap, seed, list(est))
    stderr, interval = summarize_samples(samples, level) if samples else ({}, {})
    points = pd.DataFrame({"N": n_, "loss": l_, "C": c_, "budget": budgets[label], "in_window": in_window})
    if d_ is not None:
        points["D"] = d_
    points["predicted"] = pred
    return FitResult(
        approach="isoflop", law="N_opt = coef_N C^a, D_opt = coef_D C^b (vertices of parabolas in log N)",
        estimates=est, stderr=stderr, interval=interval, level=level,
        diagnostics={"converged": True, "bound_hit": [], "n_points": n, "n_budgets": len(table),
                     "n_budgets_used": int(table["used"].sum()), "window": window, "robust": robust,
                     "D_from": "data" if d_ is not None else "C/(6N)", "n_measured": int(n - pred.sum()),
                     "n_predicted": int(pred.sum())},
        warnings=_left_out_warning(table) + _predicted_warning(pred), samples=samples,
        tables={"budgets": table, "points": points},
        predict_fn=allocation_predictor(est))


def _vertices(lx: np.ndarray, loss: np.ndarray, ld: np.ndarray | None, budgets: np.ndarray,
              members: list[np.ndarray], window: float | None, robust: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Each budget's parabola vertex (a row per budget, ``used`` where it is interior) and the points used."""
    rows, in_window = [], np.zeros(lx.size, dtype=bool)
    for k, idx in enumerate(members):
        v = _vertex(lx[idx], loss[idx], None if ld is None else ld[idx], budgets[k], window, robust)
        in_window[idx[v.pop("selected")]] = True
        rows.append({"C": budgets[k], **v})
    table = pd.DataFrame(rows)
    table["used"] = table["status"] == "ok"
    if table["used"].sum() < 2:
        raise AnalysisInputError(f"C: only {int(table['used'].sum())} of {len(table)} budgets have an interior "
                                 "minimum; an IsoFLOP fit needs two (sample sizes on both sides of the optimum)")
    return table, in_window


def _bootstrap_lines(lx: np.ndarray, loss: np.ndarray, ld: np.ndarray | None, budgets: np.ndarray,
                     members: list[np.ndarray], used: np.ndarray, window: float | None, robust: bool,
                     bootstrap: int, seed: int, names: list[str]) -> dict[str, np.ndarray]:
    """Draws of the lines' estimates, each from resampling the points within every used budget."""
    rng = np.random.default_rng(seed)
    draws = np.full((bootstrap, len(names)), np.nan)
    for i in range(bootstrap):
        pts = []
        for k, idx0 in zip(used, members):
            idx = rng.choice(idx0, size=idx0.size, replace=True)
            v = _vertex(lx[idx], loss[idx], None if ld is None else ld[idx], budgets[k], window, robust)
            if v["status"] == "ok":
                pts.append((budgets[k], v["N_opt"], v["D_opt"]))
        if len(pts) >= 2:
            draws[i] = list(_lines(np.array(pts)).values())
    return {name: draws[:, j] for j, name in enumerate(names)}


def _predicted(predicted: Any, n: int) -> np.ndarray:
    """The ``predicted`` flags, one per point (all False when not given)."""
    if predicted is None:
        return np.zeros(n, dtype=bool)
    flags = pd.Series(np.asarray(predicted, dtype=object).reshape(-1))
    if len(flags) != n or not flags.isin([True, False]).all():
        raise AnalysisInputError(f"predicted: {len(flags)} values for {n} points; give one True/False per run "
                                 "(True: a predicted loss, never trained)")
    return flags.astype(bool).to_numpy()


def _predicted_warning(pred: np.ndarray) -> list[str]:
    if not pred.any():
        return []
    return [f"{int(pred.sum())} of {pred.size} points are predicted (WSD branches never trained), not measured"]


def _left_out_warning(table: pd.DataFrame) -> list[str]:
    left_out = table[~table["used"]]
    if not len(left_out):
        return []
    why = "; ".join(f"{len(g)} with {status} (C = {', '.join(f'{c:.3g}' for c in g['C'][:4])}"
                    f"{', ...' if len(g) > 4 else ''})" for status, g in left_out.groupby("status"))
    return [f"left out {len(left_out)} of {len(table)} budgets: {why}"]


def _group_budgets(C: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Label each point with its budget: sorted log C split wherever a gap exceeds log(1 + rtol)."""
    order = np.argsort(C)
    lc = np.log(C[order])
    starts = np.concatenate([[True], np.diff(lc) > np.log1p(rtol)])
    sorted_label = np.cumsum(starts) - 1
    label = np.empty_like(sorted_label)
    label[order] = sorted_label
    budgets = np.array([np.exp(lc[sorted_label == k].mean()) for k in range(sorted_label[-1] + 1)])
    return label, budgets


def _vertex(lx: np.ndarray, loss: np.ndarray, ld: np.ndarray | None, C: float, window: float | None,
            robust: bool) -> dict[str, Any]:
    """Parabola loss = c0 + c1 u + c2 u^2 in u = log N - x0 (x0 = log of the lowest-loss size); its vertex."""
    sizes = np.unique(lx)
    out: dict[str, Any] = {"N_opt": np.nan, "D_opt": np.nan, "loss_opt": np.nan, "n_points": lx.size,
                           "n_used": 0, "status": "ok", "x0": np.nan, "c0": np.nan, "c1": np.nan, "c2": np.nan,
                           "selected": np.zeros(lx.size, dtype=bool)}
    if sizes.size < MIN_SIZES:
        out["status"] = f"only {sizes.size} distinct size(s)"
        return out
    x0 = lx[np.argmin(loss)]
    if x0 == sizes[0] or x0 == sizes[-1]:
        out["status"] = "minimum at the " + ("smallest" if x0 == sizes[0] else "largest") + " size"
        return out
    if window is None:
        keep = np.ones(lx.size, dtype=bool)
    else:
        near = sizes[np.abs(sizes - x0) <= np.log(window) + 1e-12]
        if near.size < MIN_SIZES:  # widen to the three sizes nearest the minimum
            i = int(np.searchsorted(sizes, x0))
            lo = min(max(i - 1, 0), sizes.size - MIN_SIZES)
            near = sizes[lo: lo + MIN_SIZES]
        keep = (lx >= near[0]) & (lx <= near[-1])
    u, y = lx[keep] - x0, loss[keep]
    coef = np.polyfit(u, y, 2)[::-1]  # (c0, c1, c2)
    if robust:
        scale = max(1.4826 * np.median(np.abs(y - np.polyval(coef[::-1], u))), 1e-4)
        coef = least_squares(lambda c: c[0] + c[1] * u + c[2] * u * u - y, coef, loss="soft_l1", f_scale=scale).x
    c0, c1, c2 = coef
    out.update(x0=x0, c0=c0, c1=c1, c2=c2, n_used=int(keep.sum()), selected=keep)
    if c2 <= 0:
        out["status"] = "parabola not convex"
        return out
    u_opt = -c1 / (2 * c2)
    if not (sizes[0] <= x0 + u_opt <= sizes[-1]):
        out["status"] = "vertex outside the sampled sizes"
        return out
    x_opt = x0 + u_opt
    if ld is None:
        d_opt = C / (6 * np.exp(x_opt))
    else:  # within a budget log D is (close to) a line in log N
        slope, icpt = np.polyfit(lx, ld, 1)
        d_opt = np.exp(icpt + slope * x_opt)
    out.update(N_opt=float(np.exp(x_opt)), D_opt=float(d_opt), loss_opt=float(c0 - c1 * c1 / (4 * c2)))
    return out


def _lines(pts: np.ndarray) -> dict[str, float]:
    """Least-squares lines log N_opt = log coef_N + a log C and log D_opt = log coef_D + b log C; pts (k, 3)."""
    lc = np.log(pts[:, 0])
    a, log_kn = np.polyfit(lc, np.log(pts[:, 1]), 1)
    b, log_kd = np.polyfit(lc, np.log(pts[:, 2]), 1)
    return {"a": float(a), "b": float(b), "coef_N": float(np.exp(log_kn)), "coef_D": float(np.exp(log_kd))}
