"""Tables of a fitted data-constrained law: what epochs are worth, and the compute-optimal allocation
under a budget of unique tokens (docs/data_constrained.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis import data_constrained_search as search
from analysis.checks import as_positive
from analysis.data_constrained_law import EPOCHS, epoch_value, extra_epoch_value
from analysis.errors import AnalysisInputError
from analysis.result import FitResult


def epoch_table(res: FitResult, epochs: Any = None) -> pd.DataFrame:
    """Per epoch count: ``value`` (D'/D, what the epochs are worth relative to fresh data) with its profile
    and bootstrap intervals where the fit has them, and ``extra_epoch`` (what one more pass adds, in passes
    of fresh data). epochs: default the fit's (``epoch_value_<k>`` estimates)."""
    if epochs is None:
        epochs = [float(k.rsplit("_", 1)[1]) for k in res.estimates if k.startswith("epoch_value_")] or EPOCHS
    epochs = as_positive("epochs", epochs)
    rd = res["R_D_star"]
    out = pd.DataFrame({"epochs": epochs, "value": epoch_value(epochs, rd), "extra_epoch": extra_epoch_value(epochs, rd)})
    if "profile_interval" in res.diagnostics:
        for end, v in zip(("profile_low", "profile_high"), res.diagnostics["profile_interval"]["R_D_star"]):
            out[end] = epoch_value(epochs, v)
    draws = res.samples.get("R_D_star")
    if draws is not None and np.isfinite(draws).sum() > 1:
        values = epoch_value(epochs[None, :], draws[np.isfinite(draws)][:, None])
        tail = 100 * (1 - res.level) / 2
        out["bootstrap_low"], out["bootstrap_high"] = np.percentile(values, [tail, 100 - tail], axis=0)
    return out


def constrained_allocation(res: FitResult, U: Any, C: Any) -> pd.DataFrame:
    """Compute-optimal N, D = C / 6N and epochs D / U for U unique tokens at budgets C (broadcast together).

    Minimises the fitted law over N (a grid over 1e-3 to 1e4 epochs, then refined). Columns U, C, N_opt,
    D_opt, epochs, loss_opt, and value (D'/D at the optimum).
    """
    if res.approach != "data-constrained":
        raise AnalysisInputError(f"res: a {res.approach!r} fit is not allowed; pass a fit_data_constrained result")
    U, C = np.broadcast_arrays(as_positive("U", U), as_positive("C", C))
    rows = []
    for u, c in zip(U, C):
        logN = search.argmin_1d(lambda x, c=c, u=u: np.log(res.predict(np.exp(x), c / (6 * np.exp(x)), u)),
                                math.log(c / (6 * u * 1e4)), math.log(c / (6 * u * 1e-3)))
        n = math.exp(logN)
        d = c / (6 * n)
        rows.append({"U": u, "C": c, "N_opt": n, "D_opt": d, "epochs": d / u,
                     "loss_opt": float(res.predict(n, d, u)), "value": float(epoch_value(d / u, res["R_D_star"]))})
    return pd.DataFrame(rows)
