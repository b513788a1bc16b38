"""Causal and masked LMs side by side: runs split by pretraining objective, never mixed in one fit, and the
comparison of their fits (exponents, compute-optimal tokens per parameter, the ratio MLM/CLM).

A run's objective is the ``objective`` column (``clm`` or ``mlm``; a record written before the field
existed is ``clm``). Fits are made per objective (``split_by_objective``; ``check_one_objective`` refuses a
mixed table with one line); ``compare_objectives`` then takes one fit per objective and gives, for every
approach fitted under both:

- ``exponents``: a (N_opt ~ C^a) and b (D_opt ~ C^b), with intervals, per objective;
- ``tokens_per_param``: D_opt / N_opt at each budget C per objective, and the ratio MLM / CLM, each with a
  percentile bootstrap interval. The two objectives' bootstraps are independent resamples of independent
  runs, so draw i of one paired with draw i of the other is a draw of the ratio.

    from analysis import load_runs, fit_isoflop
    from analysis.objectives import split_by_objective, compare_objectives
    fits = {obj: {"isoflop": fit_isoflop(r["N"], r["loss"], r["C"], D=r["D"], bootstrap=1000)}
            for obj, r in split_by_objective(load_runs("runs/objectives")).items()}
    compare_objectives(fits, C=[2e11, 4e11, 8e11, 1.6e12])["tokens_per_param"]
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.result import FitResult

OBJECTIVE = "objective"  # column of a run's pretraining objective
DEFAULT = "clm"  # the objective of records that do not name one
CAUSAL, MASKED = "clm", "mlm"


def objectives_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's objective (``clm`` where the record names none)."""
    if OBJECTIVE not in runs.columns:
        return pd.Series(DEFAULT, index=runs.index, dtype=object)
    return runs[OBJECTIVE].where(runs[OBJECTIVE].notna(), DEFAULT).astype(str)


def split_by_objective(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs of each objective (clm first), each with the frame's ``attrs`` (columns, notes)."""
    labels = objectives_of(runs)
    order = sorted(labels.unique(), key=lambda o: (o != CAUSAL, o != MASKED, o))
    out = {}
    for objective in order:
        part = runs[labels == objective].reset_index(drop=True)
        part.attrs = {**runs.attrs, "selection": [*runs.attrs.get("selection", []), f"objective == {objective!r}"]}
        out[objective] = part
    return out


def check_one_objective(runs: pd.DataFrame, what: str = "a scaling-law fit") -> str:
    """The one objective of ``runs``; a one-line ``AnalysisInputError`` when they mix several."""
    counts = objectives_of(runs).value_counts()
    if len(counts) > 1:
        mix = ", ".join(f"{n} {o}" for o, n in counts.items())
        raise AnalysisInputError(f"objective: the runs mix objectives ({mix}); {what} takes one: fit each apart "
                                 "(analysis.objectives.split_by_objective) and compare with compare_objectives")
    return str(counts.index[0]) if len(counts) else DEFAULT


def _lines(res: FitResult, C: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Tokens per parameter at budgets C (m,) and its bootstrap draws (S, m) or None."""
    if res.approach == "parametric":
        from analysis.allocation import optimal_allocation

        point = optimal_allocation(res, C)["tokens_per_param"].to_numpy()
        s = res.samples
        if not s or any(k not in s for k in ("alpha", "beta", "A", "B")):
            return point, None
        alpha, beta, A, B = (np.asarray(s[k], dtype=float)[:, None] for k in ("alpha", "beta", "A", "B"))
        with np.errstate(all="ignore"):
            G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
            n_opt = G * (C[None, :] / 6) ** (beta / (alpha + beta))
            return point, (C[None, :] / 6) / n_opt ** 2
    point = res.predict(C)["tokens_per_param"].to_numpy()
    s = res.samples
    if not s or any(k not in s for k in ("a", "b", "coef_N", "coef_D")):
        return point, None
    a, b, kn, kd = (np.asarray(s[k], dtype=float)[:, None] for k in ("a", "b", "coef_N", "coef_D"))
    with np.errstate(all="ignore"):
        return point, (kd * C[None, :] ** b) / (kn * C[None, :] ** a)


def _band(draws: np.ndarray | None, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the draws (rows) of each column; empty without draws."""
    if draws is None:
        return np.full(0, np.nan), np.full(0, np.nan)
    tail = 100 * (1 - level) / 2
    values = np.where(np.isfinite(draws) & (draws > 0), draws, np.nan)
    with warnings.catch_warnings():  # a column without a finite draw is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(values, [tail, 100 - tail], axis=0)
    return lo, hi


def _exponents(fits: dict[str, FitResult], approach: str) -> list[dict[str, Any]]:
    rows = []
    for objective, res in fits.items():
        for name in ("a", "b", "alpha", "beta"):
            if name in res.estimates:
                lo, hi = res.interval.get(name, (np.nan, np.nan))
                rows.append({"approach": approach, "objective": objective, "name": name,
                             "estimate": res.estimates[name], "low": lo, "high": hi})
    return rows


def _tokens_rows(fits: dict[str, FitResult], approach: str, C: np.ndarray, level: float) -> list[dict[str, Any]]:
    lines = {objective: _lines(res, C) for objective, res in fits.items()}
    rows = []
    for objective, (point, draws) in lines.items():
        lo, hi = _band(draws, level)
        for j, c in enumerate(C):
            rows.append({"approach": approach, "C": c, "what": f"tokens/param {objective}", "estimate": point[j],
                         "low": lo[j] if lo.size else np.nan, "high": hi[j] if hi.size else np.nan})
    if CAUSAL in lines and MASKED in lines:
        (pc, dc), (pm, dm) = lines[CAUSAL], lines[MASKED]
        ratio = None
        if dc is not None and dm is not None:
            k = min(len(dc), len(dm))
            ratio = dm[:k] / dc[:k]
        lo, hi = _band(ratio, level)
        for j, c in enumerate(C):
            rows.append({"approach": approach, "C": c, "what": "ratio mlm/clm", "estimate": pm[j] / pc[j],
                         "low": lo[j] if lo.size else np.nan, "high": hi[j] if hi.size else np.nan})
    return rows


def compare_objectives(fits: dict[str, dict[str, FitResult]], C: Iterable[float],
                       approaches: Iterable[str] = ("isoflop", "parametric", "envelope")) -> dict[str, pd.DataFrame]:
    """Exponents and tokens per parameter of every approach fitted under each objective.

    fits: objective -> approach -> FitResult (one fit per objective, e.g. ``{"clm": {...}, "mlm": {...}}``).
    C: the budgets of the tokens-per-parameter table. Returns ``exponents`` (approach, objective, name,
    estimate, low, high) and ``tokens_per_param`` (approach, C, what, estimate, low, high; ``what`` is
    ``tokens/param <objective>`` or ``ratio mlm/clm``), intervals at the fits' level.
    """
    C = np.asarray(list(C), dtype=float)
    if C.size == 0 or not np.all(np.isfinite(C) & (C > 0)):
        raise AnalysisInputError(f"C: {C.tolist()!r}; give one or more positive compute budgets")
    exp_rows, tok_rows = [], []
    for approach in approaches:
        have = {o: f[approach] for o, f in fits.items() if approach in f}
        if len(have) < 2:
            continue
        level = min(r.level for r in have.values())
        exp_rows += _exponents(have, approach)
        tok_rows += _tokens_rows(have, approach, C, level)
    return {"exponents": pd.DataFrame(exp_rows), "tokens_per_param": pd.DataFrame(tok_rows)}


def comparison_markdown(comparison: dict[str, pd.DataFrame], table) -> list[str]:
    """The report's section comparing the objectives (``table``: the report's DataFrame-to-markdown)."""
    exps, toks = comparison.get("exponents"), comparison.get("tokens_per_param")
    if exps is None or not len(exps):
        return []
    lines = ["## Objectives compared (causal vs masked LM)", "",
             "Each objective's runs are fitted apart. a: N_opt ~ C^a; b: D_opt ~ C^b; tokens/param = D_opt / N_opt "
             "at each budget; ratio = masked over causal tokens per parameter (bootstrap percentile intervals; "
             "the two objectives' resamples are independent). Dervishi et al. (2025) report the ratio at 10 to 100.",
             "", "### Exponents", "", table(exps), ""]
    if toks is not None and len(toks):
        lines += ["### Compute-optimal tokens per parameter", "", table(toks), ""]
    return lines


def comparison_budgets(fits: dict[str, dict[str, FitResult]], runs: pd.DataFrame | None = None) -> np.ndarray:
    """The budgets of the comparison: those of the IsoFLOP fits (any objective, 3 significant digits), else
    decades of the runs' compute."""
    found = set()
    for per_approach in fits.values():
        table = getattr(per_approach.get("isoflop"), "tables", {}).get("budgets")
        if table is not None:
            found |= {float(f"{c:.3g}") for c in table["C"]}
    if found:
        return np.array(sorted(found))
    if runs is None or "C" not in runs or runs["C"].dropna().empty:
        raise AnalysisInputError("C: no IsoFLOP budgets and no runs' compute to compare the objectives at")
    lo, hi = np.floor(np.log10(runs["C"].min())), np.ceil(np.log10(runs["C"].max()))
    return 10.0 ** np.arange(lo, hi + 1)
