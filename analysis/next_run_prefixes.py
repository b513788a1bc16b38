"""The shared prefixes of a replayed design: points that need a common part of training first, as the
cooldown branches of one WSD trunk need the trunk up to their branch point (``replay(..., groups=,
shared=)``). The prefix is paid once, to the furthest need of a chosen point."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.errors import AnalysisInputError


class Prefixes:
    """The shared prefixes of ``replay``'s points (WSD trunks): what of each is paid, and what a point adds."""

    def __init__(self, groups: Any, shared: Any, n: int):
        if (groups is None) != (shared is None):
            raise AnalysisInputError("groups and shared: give both (a label and a prefix cost per point) or neither")
        self.labels = None if groups is None else _labels(groups, n)
        self.need = np.zeros(n) if shared is None else _prefix_costs(shared, self.labels)
        self.paid: dict[Any, float] = {}

    def extra(self) -> np.ndarray:
        """Per point, the FLOPs of its prefix not paid yet (0 for points on their own)."""
        if self.labels is None:
            return np.zeros(self.need.size)
        return np.array([max(0.0, need - self.paid.get(g, 0.0)) if g is not None else 0.0
                         for g, need in zip(self.labels, self.need)])

    def pay(self, k: int, cost: np.ndarray) -> float:
        """Choose point ``k``: its own cost plus its prefix's unpaid part, now paid."""
        extra = float(self.extra()[k])
        if self.labels is not None and self.labels[k] is not None:
            self.paid[self.labels[k]] = max(self.paid.get(self.labels[k], 0.0), float(self.need[k]))
        return float(cost[k]) + extra

    def pay_each(self, points: Any, cost: np.ndarray) -> float:
        """Choose every one of ``points`` (``pay`` each): what they cost together, each prefix once."""
        return float(sum(self.pay(int(k), cost) for k in points))

    def subset(self, idx: np.ndarray) -> "Prefixes":
        """The same prefixes (and what is paid of them) for the points ``idx`` only."""
        out = Prefixes(None, None, len(idx))
        if self.labels is not None:
            out.labels, out.need = [self.labels[i] for i in idx], self.need[idx]
        out.paid = dict(self.paid)
        return out

    def paid_by(self, groups: Any, shared: Any) -> "Prefixes":
        """Count the prefixes of points already trained (labels, needs) as paid; returns self."""
        labels = _labels(groups, len(groups))
        for g, need in zip(labels, _prefix_costs(shared, labels)):
            if g is not None:
                self.paid[g] = max(self.paid.get(g, 0.0), float(need))
        return self

    def unpaid(self) -> float:
        """The FLOPs of every prefix not paid yet, each to its longest need."""
        if self.labels is None:
            return 0.0
        longest: dict[Any, float] = {}
        for g, need in zip(self.labels, self.need):
            if g is not None:
                longest[g] = max(longest.get(g, 0.0), float(need))
        return sum(max(0.0, need - self.paid.get(g, 0.0)) for g, need in longest.items())


def _labels(groups: Any, n: int) -> list[Any]:
    labels = [None if g is None or (isinstance(g, float) and math.isnan(g)) else g for g in list(groups)]
    if len(labels) != n:
        raise AnalysisInputError(f"groups: {len(labels)} labels for {n} points is not allowed; give one per point")
    return labels


def _prefix_costs(shared: Any, labels: list[Any]) -> np.ndarray:
    """The prefix cost of each point (0, and NaN allowed, for a point on its own)."""
    need = np.asarray(shared, dtype=float).ravel().copy()
    if need.size != len(labels):
        raise AnalysisInputError(f"shared: {need.size} prefix costs for {len(labels)} points is not allowed; give one per point")
    alone = np.array([g is None for g in labels], bool)
    need[alone] = 0.0
    if not np.all(np.isfinite(need) & (need >= 0)):
        raise AnalysisInputError("shared: every prefix cost of a point with a group must be finite and >= 0")
    return need
