"""The study's fits (Approaches 2 and 3, Kaplan's L(C) for the plot) and the held-out run's shape and place in the band."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, Optional

from scaling.conventions import params_of
from scaling.errors import ConfigError
from scaling.model.counts import param_counts
from scaling.study.options import StudyError
from scaling.sweep.resolvers import model_config, vocab_size


def holdout_shape(run: Any, n_opt: float, head_dim: int, depth: int, cfg: Any) -> dict[str, int]:
    """Width (a multiple of the head dimension) at the sweep's depth whose N is closest to n_opt in log."""
    base = model_config(cfg)
    vocab = vocab_size(cfg)
    conv = params_of(run.convention)
    best = None
    for width in range(head_dim, 64 * head_dim + 1, head_dim):
        n = param_counts(dataclasses.replace(base, width=width, depth=depth), vocab)[conv]
        score = abs(math.log(n / n_opt))
        if best is None or score < best[0]:
            best = (score, width)
    return {"width": best[1], "depth": depth}


def _family(runs: list[Any]) -> tuple[int, int]:
    """The sweep's head dimension and depth rule (one depth for every size)."""
    depths = {r.shape["depth"] for r in runs}
    if len(depths) != 1:
        raise ConfigError(f"sweep.shapes use depths {sorted(depths)}: the held-out run needs one depth for every size")
    head_dims = {r.shape["width"] // r.shape["heads"] for r in runs}
    return min(head_dims), depths.pop()


def fit_all(runs_dir: Path, convention: str, bootstrap: int, notes: list[str],
            predicted: Any = None) -> tuple[Any, dict[str, Any], Any]:
    """Load the sweep's records and fit Approaches 2 and 3 (and Kaplan's L(C) for the loss plot), on the
    measured runs and the ``predicted`` points (``scaling.study.predicted.predict_points``) when given."""
    from analysis import load_curves, load_runs

    params = params_of(convention)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(runs_dir, params=params, flops=convention)
        curves = load_curves(runs_dir, params=params, flops=convention)
        if predicted is not None:
            runs = merge_points(runs, predicted)
        results = fit_laws(runs, bootstrap, notes)
    notes += [str(w.message) for w in caught]
    return runs, results, curves


def fit_laws(runs: Any, bootstrap: int, notes: list[str], *, required: bool = True, kaplan: bool = True) -> dict[str, Any]:
    """Approach 2 (predicted points, a ``predicted`` column, counted apart), Approach 3 (a StudyError when it
    cannot be fitted and ``required``, else a note) and, with ``kaplan``, L(C) for the loss plot."""
    from analysis import AnalysisInputError, fit_isoflop, fit_kaplan_table, fit_parametric

    results: dict[str, Any] = {}
    flags = runs["predicted"].to_numpy(bool) if "predicted" in runs.columns else None
    try:
        results["isoflop"] = fit_isoflop(runs.N, runs.loss, runs.C, D=runs.D, bootstrap=bootstrap, predicted=flags)
    except AnalysisInputError as exc:  # e.g. no budget with its minimum inside the sizes
        notes.append(f"Approach 2 not fitted: {exc}")
    try:
        results["parametric"] = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=bootstrap)
    except AnalysisInputError as exc:
        if required:
            raise StudyError(f"Approach 3 cannot be fitted to the sweep's runs: {exc}") from exc
        notes.append(f"Approach 3 not fitted: {exc}")
    if kaplan:
        try:
            results["kaplan"] = fit_kaplan_table(runs, xs=("C",))  # for the loss plot; no bootstrap (slow)
        except Exception as exc:  # noqa: BLE001 - an optional law must not lose the study
            notes.append(f"Kaplan L(C) not fitted: {exc}")
    return results


def merge_points(measured: Any, predicted: Any) -> Any:
    """The measured runs (``load_runs``) and the predicted points in one table, each row ``predicted`` or not."""
    import pandas as pd

    measured = measured.assign(predicted=False)
    if predicted is None or not len(predicted):
        return measured
    return pd.concat([measured, predicted[[c for c in predicted.columns if c in measured.columns or c in
                                           ("loss_low", "loss_high", "budget", "trunk")]]],
                     ignore_index=True)


def _interval(res: Any, name: str) -> list[Optional[float]]:
    iv = res.interval.get(name)
    return [_f(iv[0]), _f(iv[1])] if iv is not None else [None, None]


def _f(x: Any) -> Optional[float]:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def exponents(results: dict[str, Any]) -> dict[str, Any]:
    """Compute-optimal exponents N_opt ~ C^a, D_opt ~ C^b (and the law's alpha, beta, E) with intervals."""
    out: dict[str, Any] = {}
    for approach, names in (("isoflop", ("a", "b")), ("parametric", ("a", "b", "alpha", "beta", "E", "A", "B"))):
        res = results.get(approach)
        if res is None:
            continue
        out[approach] = {k: {"estimate": _f(res.estimates.get(k)), "interval": _interval(res, k)} for k in names}
        out[approach]["level"] = res.level
        out[approach]["warnings"] = list(res.warnings)
    return out


def _quantile_in_band(par: Any, N: float, D: float, measured: float) -> Optional[float]:
    """Share of the bootstrap predictions of L(N, D) below the measured loss."""
    import numpy as np

    s = par.samples or {}
    if not all(k in s for k in ("E", "A", "B", "alpha", "beta")):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        preds = s["E"] + s["A"] * N ** -s["alpha"] + s["B"] * D ** -s["beta"]
    preds = preds[np.isfinite(preds)]
    return float((preds < measured).mean()) if preds.size else None
