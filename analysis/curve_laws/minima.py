"""Near-optimal minima of a curve fit: the parameter sets the data do not tell apart from the best.

The grid of starts, each refined, often ends at several distinct minima. With summed Huber objective
f (half the sum of squared residuals where they lie within delta), n points and k free parameters,
2 f_best / (n - k) estimates the residual variance, and a minimum is kept when

    delta_chi2 = (f - f_best) (n - k) / f_best  <=  chi2.ppf(level, k)

the likelihood-ratio bound of the joint confidence region at ``level``. The range of a prediction over
the kept minima is a simultaneous band (it holds for every prediction at once); it sees only minima the
starts reach, so it is a lower bound of the range over that region. It shows what a bootstrap around the
best minimum cannot: where the data leave a drop term unidentified, distinct minima fit equally well and
predict differently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import chi2

SAME = 1e-6  # minima whose objective and parameters agree to this relative tolerance are one


def near_minima(refined: Sequence[tuple[float, np.ndarray]], names: Sequence[str], n_points: int, n_free: int,
                level: float) -> pd.DataFrame:
    """The distinct refined minima within the bound, best first: objective, delta_chi2, one column per
    parameter."""
    finite = sorted(((float(f), np.asarray(p, float)) for f, p in refined if np.isfinite(f)), key=lambda t: t[0])
    best = max(finite[0][0], 1e-300)
    bound = chi2.ppf(level, max(1, n_free))
    rows: list[tuple[float, float, np.ndarray]] = []
    for f, p in finite:
        score = (f - best) * max(1, n_points - n_free) / best
        if score > bound:
            break
        if not any(_same(f, p, g, q) for g, _, q in rows):
            rows.append((f, score, p))
    return pd.DataFrame([{"objective": f, "delta_chi2": s, **dict(zip(names, map(float, p)))} for f, s, p in rows])


def _same(f: float, p: np.ndarray, g: float, q: np.ndarray) -> bool:
    return bool(abs(f - g) <= SAME * abs(g) and np.allclose(p, q, rtol=SAME, atol=0.0))
