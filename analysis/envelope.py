"""Approach 1 (training-curve envelope): at log-spaced compute values, the lowest loss over all runs.

Each run's curve is interpolated linearly in log C; at each grid value C the run with the lowest loss
gives N_opt (its size) and D_opt (its tokens at C). Points won by the smallest or largest size are
flagged as edges and left out (the optimum may lie beyond the sampled sizes). Then N_opt = coef_N C^a
and D_opt = coef_D C^b are least-squares lines in log-log. Bootstrap: resample runs.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from analysis import columns as col
from analysis.checks import as_positive, check_bootstrap, check_level
from analysis.errors import AnalysisInputError
from analysis.allocation import allocation_predictor
from analysis.result import FitResult, summarize_samples


def fit_envelope(
    curves: pd.DataFrame,
    *,
    n_points: int = 50,
    drop_edges: bool = True,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    run_col: str = "run_id",
) -> FitResult:
    """Envelope fit of N_opt = coef_N C^a and D_opt = coef_D C^b from per-step curves.

    curves: long table with ``run_id``, ``N``, ``D`` (tokens so far), ``C`` (FLOPs so far) and ``loss``
      per logged step, as ``load_curves`` gives; rows with no loss are ignored.
    n_points: log-spaced compute values between the first and the last logged C of any run.
    drop_edges: leave out grid values won by the smallest or the largest run.
    bootstrap: resamples of the runs (with replacement); each redoes the envelope and the lines.
    Estimates ``a``, ``b``, ``coef_N``, ``coef_D``; ``tables["envelope"]`` holds the grid (C, loss,
    run_id, N, D, edge, used). ``predict(C)`` gives a DataFrame of C, N_opt, D_opt, tokens_per_param.
    """
    level, bootstrap = check_level(level), check_bootstrap(bootstrap)
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 3:
        raise AnalysisInputError(f"n_points: {n_points!r}; must be a whole number >= 3")
    runs = _runs(curves, run_col, drop_edges)
    grid, loss, logd = _on_grid(runs, n_points)
    sizes = np.array([g[col.N].iloc[0] for g in runs], dtype=float)
    ids = [g[run_col].iloc[0] for g in runs]
    table = _envelope(loss, logd, sizes, np.arange(len(runs)), grid, drop_edges)
    table["run_id"] = [ids[i] if i >= 0 else None for i in table.pop("run")]
    used = table["used"].to_numpy()
    if used.sum() < 3:
        raise AnalysisInputError(f"curves: only {int(used.sum())} envelope point(s) away from the smallest and "
                                 "largest sizes; sample sizes around the optimum or set drop_edges=False")
    est = _lines(table.loc[used, "C"].to_numpy(), table.loc[used, "N"].to_numpy(), table.loc[used, "D"].to_numpy())
    samples = _bootstrap(loss, logd, sizes, grid, drop_edges, bootstrap, seed, list(est)) if bootstrap else {}
    stderr, interval = summarize_samples(samples, level) if samples else ({}, {})
    return FitResult(
        approach="envelope", law="N_opt = coef_N C^a, D_opt = coef_D C^b (lowest loss over runs at each C)",
        estimates=est, stderr=stderr, interval=interval, level=level,
        diagnostics={"converged": True, "bound_hit": [], "n_runs": len(runs), "n_points": n_points,
                     "n_used": int(used.sum()), "n_sizes_winning": int(table.loc[used, "N"].nunique())},
        warnings=_warnings(table, used), samples=samples, tables={"envelope": table},
        predict_fn=allocation_predictor(est))


def _runs(curves: pd.DataFrame, run_col: str, drop_edges: bool) -> list[pd.DataFrame]:
    """Each run's logged losses sorted by C (runs with fewer than two are left out), checked."""
    if not isinstance(curves, pd.DataFrame):
        raise AnalysisInputError(f"curves: expected a DataFrame (from load_curves), got {type(curves).__name__}")
    missing = [c for c in (run_col, col.N, col.D, col.C, col.LOSS) if c not in curves.columns]
    if missing:
        raise AnalysisInputError(f"curves: missing column(s) {', '.join(missing)} "
                                 f"(columns: {', '.join(map(str, curves.columns))}); load them with load_curves")
    df = curves[curves[col.LOSS].notna()]
    for name in (col.N, col.D, col.C, col.LOSS):
        as_positive(f"curves.{name}", df[name].to_numpy())
    runs = [g.sort_values(col.C) for _, g in df.groupby(run_col, sort=True)]
    runs = [g for g in runs if len(g) >= 2]
    if len(runs) < 2 + 2 * drop_edges:
        raise AnalysisInputError(f"curves: {len(runs)} run(s) with two or more logged losses; the envelope needs "
                                 f"at least {2 + 2 * drop_edges} runs of different sizes")
    return runs


def _on_grid(runs: list[pd.DataFrame], n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log-C grid and each run's loss and log D on it (runs x grid; NaN outside a run's range)."""
    lc_all = np.log(np.concatenate([g[col.C].to_numpy() for g in runs]))
    grid = np.linspace(lc_all.min(), lc_all.max(), n_points)  # log C
    loss = np.full((len(runs), n_points), np.nan)
    logd = np.full((len(runs), n_points), np.nan)
    for r, g in enumerate(runs):
        lc = np.log(g[col.C].to_numpy())
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        loss[r, inside] = np.interp(grid[inside], lc, g[col.LOSS].to_numpy())
        logd[r, inside] = np.interp(grid[inside], lc, np.log(g[col.D].to_numpy()))
    return grid, loss, logd


def _bootstrap(loss: np.ndarray, logd: np.ndarray, sizes: np.ndarray, grid: np.ndarray, drop_edges: bool,
               bootstrap: int, seed: int, names: list[str]) -> dict[str, np.ndarray]:
    """Draws of the lines' estimates, each from the envelope of a resample of the runs."""
    rng = np.random.default_rng(seed)
    draws = np.full((bootstrap, len(names)), np.nan)
    for i in range(bootstrap):
        pick = np.unique(rng.integers(0, len(sizes), len(sizes)))  # duplicate runs do not change a minimum
        t = _envelope(loss, logd, sizes, pick, grid, drop_edges)
        if t["used"].sum() >= 3:
            u = t["used"].to_numpy()
            draws[i] = list(_lines(t.loc[u, "C"].to_numpy(), t.loc[u, "N"].to_numpy(), t.loc[u, "D"].to_numpy()).values())
    return {name: draws[:, j] for j, name in enumerate(names)}


def _warnings(table: pd.DataFrame, used: np.ndarray) -> list[str]:
    out = []
    n_edge = int(table["edge"].sum())
    if n_edge:
        out.append(f"left out {n_edge} of {len(table)} envelope points won by the smallest or largest size")
    if table.loc[used, "N"].nunique() < 3:
        out.append(f"the envelope is won by only {table.loc[used, 'N'].nunique()} distinct size(s); "
                   "a and b are poorly determined")
    return out


def _envelope(loss: np.ndarray, logd: np.ndarray, sizes: np.ndarray, pick: np.ndarray, grid: np.ndarray,
              drop_edges: bool) -> pd.DataFrame:
    """The winning run among ``pick`` at each grid value (run -1 where none covers it)."""
    sub = loss[pick]  # (runs picked, grid)
    covered = np.isfinite(sub).any(axis=0)
    best = np.where(covered, np.nanargmin(np.where(np.isfinite(sub), sub, np.inf), axis=0), 0)
    run = np.where(covered, pick[best], -1)
    cols = np.arange(grid.size)
    N = np.where(covered, sizes[run], np.nan)
    edge = covered & ((N == sizes[pick].min()) | (N == sizes[pick].max())) if drop_edges else np.zeros(grid.size, bool)
    return pd.DataFrame({"C": np.exp(grid), "loss": np.where(covered, sub[best, cols], np.nan), "run": run, "N": N,
                         "D": np.where(covered, np.exp(logd[run, cols]), np.nan), "edge": edge,
                         "used": covered & ~edge})


def _lines(C: np.ndarray, N: np.ndarray, D: np.ndarray) -> dict[str, float]:
    lc = np.log(C)
    a, log_kn = np.polyfit(lc, np.log(N), 1)
    b, log_kd = np.polyfit(lc, np.log(D), 1)
    return {"a": float(a), "b": float(b), "coef_N": float(np.exp(log_kn)), "coef_D": float(np.exp(log_kd))}
