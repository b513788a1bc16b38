"""Validation of fit inputs: every bad value becomes a one-line AnalysisInputError naming the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError


def as_positive(name: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D float array; NaN, infinite or non-positive entries are an error."""
    try:
        x = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise AnalysisInputError(f"{name}: values must be numbers ({err})") from None
    if x.size == 0:
        raise AnalysisInputError(f"{name}: no values; at least one point is needed")
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(f"{name}: {int(bad.sum())} value(s) are NaN or infinite (first at row "
                                 f"{point_name(values, i)}: {x[i]}); all must be finite")
    bad = x <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisInputError(f"{name}: {int(bad.sum())} value(s) are not positive (first at row "
                                 f"{point_name(values, i)}: {x[i]:g}); all must be > 0")
    return x


def point_name(values: Any, i: int) -> str:
    """Point ``i`` of ``values`` as a message names it: its position, and its label where ``values`` is a
    pandas Series indexed by labels (e.g. ``runs.set_index("run_id")["loss"]``: the run id)."""
    index = getattr(values, "index", None)
    if index is None or callable(index) or isinstance(index, pd.RangeIndex) or len(index) <= i:
        return str(i)
    return f"{i} ({index[i]!r})"


def same_length(**arrays: np.ndarray) -> int:
    """The common length of the named arrays; different lengths are an error."""
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise AnalysisInputError(f"inputs differ in length: {sizes}; all must have one value per point")
    return next(iter(sizes.values()))


def enough_points(n: int, needed: int, what: str) -> None:
    """At least ``needed`` points for ``what``."""
    if n < needed:
        raise AnalysisInputError(f"points: {n} given; {what} needs at least {needed}")


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else an error listing them."""
    if value not in allowed:
        raise AnalysisInputError(f"{name}: {value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def check_level(level: float) -> float:
    """A confidence level strictly between 0 and 1."""
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise AnalysisInputError(f"level: {level!r}; must be strictly between 0 and 1 (e.g. 0.95)")
    return float(level)


def check_bootstrap(bootstrap: Any) -> int:
    """A non-negative whole number of resamples."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise AnalysisInputError(f"bootstrap: {bootstrap!r}; must be a whole number >= 0")
    return int(bootstrap)
