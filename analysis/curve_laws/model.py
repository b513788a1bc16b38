"""A curve law with its parameters: ``CurveModel`` (the ``predict`` of a curve FitResult) and ``curve_law``.

    mpl = curve_law("multipower", **published.PARAMS[400])      # no fit: the published parameters
    mpl.predict("cosine:steps=72000,final=0.1")                  # step, lr, loss, loss_low, loss_high
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.checks import check_level
from analysis.errors import AnalysisInputError
from analysis.result import FitResult, summarize_samples
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.laws import Design, Law, get_law, warmup_convention

EXTRAPOLATION = 10.0  # predicting beyond this many times the longest fitted horizon warns
WARMUP_NOTES = {
    "code": "code (released code: the warmup ramp counts inside the loss-drop term)",
    "paper": "paper (literal paper: the warmup only in S1, the loss-drop sum starts after it)",
}


@dataclass
class CurveModel:
    """A law with its parameters (and bootstrap draws): the ``predict`` of a curve FitResult."""

    law: Law
    params: np.ndarray
    warmup: str = "code"
    draws: np.ndarray | None = None  # (n_draws, n_params)
    level: float = 0.95
    schedules: dict[str, np.ndarray] = field(default_factory=dict)
    horizon: int | None = None  # longest fitted curve, in steps
    peak: float | None = None
    warmup_steps: int | None = None
    minima: np.ndarray | None = None  # (n_minima, n_params): the near-optimal minima (``curve_laws.minima``)

    def schedule(self, lrs: Any) -> tuple[str, np.ndarray]:
        if isinstance(lrs, str):
            if lrs in self.schedules:
                return lrs, self.schedules[lrs]
            return sch.parse_schedule(lrs, {"peak": self.peak, "warmup": self.warmup_steps})
        try:
            arr = np.asarray(lrs, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise AnalysisInputError("lrs: expected an array of lr indexed by step, a schedule spec "
                                     "(e.g. 'cosine:steps=72000,final=0.1') or a fitted run id") from None
        if arr.size < 2 or not np.isfinite(arr).all() or (arr < 0).any() or not (arr[1:] > 0).any():
            raise AnalysisInputError("lrs: an lr array needs at least 2 steps, every lr finite and >= 0, and one > 0")
        return "schedule", arr

    def predict(self, lrs: Any, steps: Any = None, *, level: float | None = None, exact: bool = False,
                resolution: float = 1.0) -> pd.DataFrame:
        """Loss along the schedule ``lrs`` at ``steps``: columns step, lr, loss, loss_low, loss_high (and
        loss_minima_low, loss_minima_high: the range over the near-optimal minima, for a fit with ``minima``).

        lrs: an array of lr indexed by step, a spec (``cosine:steps=72000,final=0.1``; peak and warmup
          default to the fitted runs') or the id of a fitted run (its schedule).
        steps: the steps to evaluate (default: every step up to 512, else 400 from the end of warmup to the
          last). The band is the bootstrap percentile band at ``level`` (NaN without bootstrap draws).
        exact / resolution: every step of the drop sum, or bins finer (< 1) than the default (see ``laws``).
        """
        _, arr = self.schedule(lrs)
        T = arr.size - 1
        if steps is None:
            w = max(1, sch.warmup_of(arr))
            steps = np.arange(1, T + 1) if T <= 512 else np.unique(np.linspace(w, T, 400).round().astype(np.int64))
        else:
            steps = np.unique(np.asarray(steps, dtype=float).reshape(-1))
            if steps.size == 0 or np.any(steps != np.round(steps)) or steps[0] < 1 or steps[-1] > T:
                raise AnalysisInputError(f"steps: must be whole steps in 1..{T} (the schedule's length)")
            steps = steps.astype(np.int64)
        if self.horizon and steps[-1] > EXTRAPOLATION * self.horizon:
            warnings.warn(f"predicting to step {int(steps[-1])}, beyond {EXTRAPOLATION:g}x the longest fitted curve "
                          f"({self.horizon} steps): an extrapolation the fit does not support", stacklevel=3)
        design = Design(arr, steps, warmup=self.warmup, exact=exact, warmup_steps=None, resolution=resolution)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = self.law.predict(self.params, design)
            lo = hi = np.full(steps.size, np.nan)
            if self.draws is not None and len(self.draws) >= 2:
                preds = np.array([self.law.predict(q, design) for q in self.draws if np.all(np.isfinite(q))])
                lev = self.level if level is None else check_level(level)
                tail = 100 * (1 - lev) / 2
                lo, hi = np.percentile(preds, [tail, 100 - tail], axis=0)
                lo, hi = np.minimum(lo, loss), np.maximum(hi, loss)
        table = pd.DataFrame({"step": steps, "lr": arr[steps], "loss": loss, "loss_low": lo, "loss_high": hi})
        if self.minima is not None:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                preds = np.array([loss, *(self.law.predict(q, design) for q in self.minima)])
            table["loss_minima_low"], table["loss_minima_high"] = np.nanmin(preds, axis=0), np.nanmax(preds, axis=0)
        return table


def make_result(model: CurveModel, approach_law: str, diagnostics: dict[str, Any], warnings_: list[str],
            samples: dict[str, np.ndarray] | None = None, tables: dict[str, Any] | None = None) -> FitResult:
    law = model.law
    estimates = {n: float(v) for n, v in zip(law.params, model.params)}
    stderr, interval = summarize_samples(samples, model.level) if samples else ({}, {})
    res = FitResult(approach="curve", law=approach_law, estimates=estimates, stderr=stderr, interval=interval,
                    level=model.level, diagnostics=diagnostics, warnings=warnings_, samples=samples or {},
                    tables=tables or {}, predict_fn=model.predict)
    res.tables["model"] = model
    return res


def curve_law(law: str = "multipower", *, warmup: str = "code", level: float = 0.95, **params: float) -> FitResult:
    """The predictor of ``law`` with the given parameters (no fit), e.g. the published ones:

        mpl = curve_law("multipower", L0=2.3747, A=0.6542, alpha=0.4288, B=523.42, C=2.0246,
                        beta=0.5935, gamma=0.6347)
        mpl.predict(lrs, steps)

    Parameters: multipower ``L0, A, alpha, B, C, beta, gamma``; tissue ``L0, A, alpha, C, decay``.
    """
    lw = get_law(law)
    warmup = warmup_convention(warmup)
    missing = [n for n in lw.params if n not in params]
    extra = [n for n in params if n not in lw.params]
    if missing or extra:
        raise AnalysisInputError(f"{lw.name}: parameters {', '.join(lw.params)} are needed"
                                 + (f"; missing {', '.join(missing)}" if missing else "")
                                 + (f"; unknown {', '.join(extra)}" if extra else ""))
    values = np.array([float(params[n]) for n in lw.params])
    if not np.all(np.isfinite(values)):
        raise AnalysisInputError(f"{lw.name}: every parameter must be a finite number")
    model = CurveModel(lw, values, warmup=warmup, level=check_level(level))
    diag = {"law_name": lw.name, "warmup": WARMUP_NOTES[warmup], "warmup_convention": warmup, "fitted": False}
    return make_result(model, lw.formula, diag, [])
