"""Learning-rate (and batch-size) rules from an LR sweep: best value per size, then a power law.

Per value of x (N or C): a parabola in log(lr) through the loss near the grid's best point gives lr*
(the grid's best where the parabola does not curve upward or its vertex leaves the grid); then

    lr*(x) = c * x^k      fitted as  log lr* = log c + k log x  (least squares)

The same fit serves batch size (``fit_batch_rule``). Input: a DataFrame (or list of records) with the
columns named by ``x``, ``hparam`` and ``loss``; ``with_hparams`` adds ``lr`` and ``batch_size`` to the
output of ``analysis.load.load_runs`` from each run's ``config.yaml``.

``write_rule`` saves a fitted rule as the small JSON file sweeps read (``${lr_from_rule:PATH}`` of the
training side; the file is the only contract between the two)::

    {"form": "power", "hparam": "lr", "x": "params" | "compute", "convention": "non_embedding",
     "coef": c, "exponent": k, "fitted_from": ..., "n_points": ..., "level": 0.95, "interval": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.columns import PARAMS
from analysis.errors import AnalysisInputError
from analysis.files import atomic_write_text
from analysis.records import read_config
from analysis.result import FitResult

RULE_X = {"N": "params", "C": "compute"}  # the fit's x -> the rule file's x
DEFAULT_CONVENTION = {"N": "non_embedding", "C": "6nd"}  # load_runs' defaults


def with_hparams(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (from ``load_runs`` on run folders) with ``lr`` and ``batch_size`` read from ``config.yaml``."""
    if "path" not in runs:
        raise AnalysisInputError("runs: no 'path' column; load run folders with analysis.load_runs first")
    lrs, batches = [], []
    for path in runs["path"]:
        cfg = read_config(Path(path) / "config.yaml")
        lrs.append(float((cfg.get("optim") or {}).get("lr", np.nan)))
        batches.append(float((cfg.get("train") or {}).get("batch_size", np.nan)))
    return runs.assign(lr=lrs, batch_size=batches)


def best_per_group(runs: Any, x: str = "N", hparam: str = "lr", loss: str = "loss") -> pd.DataFrame:
    """One row per value of ``x``: the best ``hparam`` (``<hparam>_star``), its loss, and ``edge`` (the
    best lies on the grid's edge, so the true optimum may lie outside the grid)."""
    df = _frame(runs, (x, hparam, loss))
    rows = []
    for xv, g in df.groupby(x, sort=True):
        g = g.groupby(hparam, as_index=False)[loss].mean().sort_values(hparam)  # repeated seeds: mean
        h, y = np.log(g[hparam].to_numpy(float)), g[loss].to_numpy(float)
        i = int(np.argmin(y))
        best, best_loss = h[i], y[i]
        if len(h) >= 3 and 0 < i < len(h) - 1:
            lo, hi = max(0, i - 2), min(len(h), i + 3)  # up to 5 points around the minimum
            a, b, c = np.polyfit(h[lo:hi], y[lo:hi], 2)
            if a > 0 and h[lo] <= -b / (2 * a) <= h[hi - 1]:
                best = -b / (2 * a)
                best_loss = c - b * b / (4 * a)
        rows.append({x: xv, f"{hparam}_star": float(np.exp(best)), "loss_star": float(best_loss),
                     "n_values": len(h), "edge": bool(i in (0, len(h) - 1))})
    return pd.DataFrame(rows)


def fit_lr_rule(runs: Any, x: str = "N", lr: str = "lr", loss: str = "loss", level: float = 0.95) -> FitResult:
    """Fit ``lr* = c x^k`` to the best learning rate per value of ``x`` (N or C)."""
    return _fit_rule(runs, x, lr, loss, level)


def fit_batch_rule(runs: Any, x: str = "C", batch: str = "batch_size", loss: str = "loss",
                   level: float = 0.95) -> FitResult:
    """Fit ``B* = c x^k`` to the best batch size per value of ``x`` (usually C)."""
    return _fit_rule(runs, x, batch, loss, level)


def _fit_rule(runs: Any, x: str, hparam: str, loss: str, level: float) -> FitResult:
    from scipy import stats

    best = best_per_group(runs, x, hparam, loss)
    if len(best) < 2:
        raise AnalysisInputError(f"{x}: {len(best)} distinct value(s); a power law needs at least 2")
    lx, ly = np.log(best[x].to_numpy(float)), np.log(best[f"{hparam}_star"].to_numpy(float))
    k, logc = np.polyfit(lx, ly, 1)
    resid = ly - (logc + k * lx)
    n = len(lx)
    estimates = {"c": float(np.exp(logc)), "k": float(k)}
    stderr: dict[str, float] = {}
    interval: dict[str, tuple[float, float]] = {}
    if n > 2:  # ordinary least squares standard errors of the slope and intercept
        s2 = float(resid @ resid) / (n - 2)
        sxx = float(((lx - lx.mean()) ** 2).sum())
        se_k, se_logc = np.sqrt(s2 / sxx), np.sqrt(s2 * (1 / n + lx.mean() ** 2 / sxx))
        t = stats.t.ppf(0.5 + level / 2, n - 2)
        stderr = {"k": float(se_k), "c": float(np.exp(logc) * se_logc)}
        interval = {"k": (float(k - t * se_k), float(k + t * se_k)),
                    "c": (float(np.exp(logc - t * se_logc)), float(np.exp(logc + t * se_logc)))}
    warnings = [f"{x}={v:g}: best {hparam} on the grid's edge; widen the grid" for v in best.loc[best["edge"], x]]

    def predict(xs: Any) -> Any:
        return np.exp(logc) * np.asarray(xs, float) ** k

    return FitResult(approach=f"{hparam}_rule", law=f"{hparam}* = c * {x}^k", estimates=estimates, stderr=stderr,
                     interval=interval, level=level, warnings=warnings, tables={"best": best}, predict_fn=predict,
                     diagnostics={"n_points": n, "rmse_log": float(np.sqrt(np.mean(resid ** 2))), "converged": True,
                                  "bound_hit": [], "x": x, "hparam": hparam})


def rule_json(fit: FitResult, convention: str | None = None, fitted_from: str | None = None) -> dict[str, Any]:
    """The rule file's object for a fit of ``fit_lr_rule`` or ``fit_batch_rule`` with x = N or C.

    convention: the N (non_embedding, with_head, total) or FLOP convention (6nd, chinchilla, ...) the
      fit's x was in; default load_runs' (non_embedding, 6nd). fitted_from: where the runs came from.
    """
    x = fit.diagnostics.get("x")
    if not fit.approach.endswith("_rule") or x not in RULE_X:
        raise AnalysisInputError(f"fit: a {fit.approach} fit with x={x!r} is not a rule of N or C; "
                                 "fit it with fit_lr_rule(runs, x='N') or x='C'")
    convention = convention or DEFAULT_CONVENTION[x]
    if x == "N" and convention not in PARAMS:
        raise AnalysisInputError(f"convention: {convention!r} is not an N convention; choose one of {', '.join(PARAMS)}")
    return {"form": "power", "hparam": fit.diagnostics.get("hparam", "lr"), "x": RULE_X[x], "convention": convention,
            "coef": fit["c"], "exponent": fit["k"], "fitted_from": fitted_from,
            "n_points": fit.diagnostics.get("n_points"), "level": fit.level,
            "interval": {"coef": list(fit.interval.get("c", ())), "exponent": list(fit.interval.get("k", ()))}}


def write_rule(fit: FitResult, path: str | Path, convention: str | None = None,
               fitted_from: str | None = None) -> Path:
    """Save ``rule_json(fit, ...)`` to ``path`` atomically; sweeps then use ``optim.lr=${lr_from_rule:PATH}``."""
    text = json.dumps(rule_json(fit, convention, fitted_from), indent=2) + "\n"
    return atomic_write_text(path, text)


def _frame(runs: Any, columns: Sequence[str]) -> pd.DataFrame:
    df = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame(list(runs))
    for col in columns:
        if col not in df:
            raise AnalysisInputError(f"runs: no {col!r} column; have {', '.join(map(str, df.columns))}")
    df = df[list(columns)].dropna()
    bad = df[(df[columns[0]] <= 0) | (df[columns[1]] <= 0)]
    if len(bad):
        raise AnalysisInputError(f"{columns[1]}: {bad.iloc[0][columns[1]]!r} at {columns[0]}="
                                 f"{bad.iloc[0][columns[0]]!r}; values must be positive")
    if df.empty:
        raise AnalysisInputError("runs: no rows with a finite loss")
    return df
