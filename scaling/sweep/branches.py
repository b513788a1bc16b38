"""WSD branching inside IsoFLOP and ladder sweeps: resolvers of ``sweeps/sweep/isoflop_wsd.yaml`` and
``ladder_wsd.yaml``.

Per model shape the sweeper adds one job, ``trunk``, to the sweep's points (budgets or multiples). Each
point's tokens D are what the plain sweep gives it (``tokens_for_budget`` or ``tokens_per_param``), and
the same skip rules leave the same points out. The trunk trains at constant lr to the start of the
longest cooldown among the shape's points that train, keeping a checkpoint where each cooldown starts;
each point is a cooldown branch of it (``scaling.run.branch``):

    trunk:   train.tokens = (1 - f) max D,  train.keep_at_tokens = [(1 - f) D for each point]
    point:   train.tokens = D,              train.branch_tokens = (1 - f) D   (whole optimizer steps)

Warmup is shared: ``optim.warmup_fraction`` of the shortest point's steps, so that every branch starts
in the trunk's stable phase. The role of a job is ``sweep.branch``: ``trunk`` or the point's value.
"""

from __future__ import annotations

from typing import Any, Optional

from omegaconf import DictConfig

from scaling.sweep.branch_plan import BranchPlan, plan_branches, tokens_per_step
from scaling.errors import ConfigError
from scaling.sweep.resolvers import skip_reason, tokens_for_budget, tokens_per_param

# The list of points of each sweep kind, and the tokens of one point (as the plain sweep computes them).
POINTS = {"isoflop": "budgets", "ladder": "multiples"}


def point_tokens(root: Any, value: Any) -> int:
    """D of the point ``value`` (a budget or a multiple) for the run's shape."""
    kind = _kind(root)
    if kind == "isoflop":
        return tokens_for_budget(value, root.sweep.get("convention") or "6nd", _root_=root)
    return tokens_per_param(value, root.sweep.get("param_convention") or "non_embedding", _root_=root)


def shape_points(root: Any) -> list[tuple[int, Optional[str]]]:
    """(D, skip reason) of each point of the sweep for the run's shape, in the sweep's order."""
    values = root.sweep.get(POINTS[_kind(root)])
    if not values:
        raise ConfigError(f"sweep.{POINTS[_kind(root)]}={values!r} is empty: give at least one point")
    out = []
    for value in values:
        tokens = point_tokens(root, value)
        out.append((tokens, skip_reason(root, tokens)))
    return out


def shape_plan(root: Any) -> BranchPlan:
    """Trunk and branch points of the run's shape over the points that train (all points when none does)."""
    points = shape_points(root)
    training = [d for d, why in points if why is None] or [d for d, _ in points]
    return plan_branches(training, float(root.sweep.cooldown_fraction), tokens_per_step(root))


def is_trunk(root: Any) -> bool:
    return str(root.sweep.branch) == "trunk"


# --------------------------------------------------------------------------------------------------
# Resolvers (each reads the whole config; the sweep file passes no arguments).


def _tokens(*, _root_: DictConfig) -> int:
    return shape_plan(_root_).trunk_tokens if is_trunk(_root_) else point_tokens(_root_, _root_.sweep.branch)


def _keep(*, _root_: DictConfig) -> list[int]:
    return list(shape_plan(_root_).starts) if is_trunk(_root_) else []


def _branch_tokens(*, _root_: DictConfig) -> Optional[int]:
    if is_trunk(_root_):
        return None
    bp = plan_branches([point_tokens(_root_, _root_.sweep.branch)], float(_root_.sweep.cooldown_fraction),
                       tokens_per_step(_root_))
    return bp.starts[0]


def _warmup(*, _root_: DictConfig) -> int:
    shortest = min(shape_plan(_root_).budgets)
    steps = max(1, round(shortest / tokens_per_step(_root_)))
    return max(1, round(float(_root_.optim.warmup_fraction) * steps))


def _skip(*, _root_: DictConfig) -> Optional[str]:
    if not is_trunk(_root_):
        return skip_reason(_root_)
    points = shape_points(_root_)
    if all(why for _, why in points):
        return f"no branch of this shape trains (the longest: {max(points)[1]})"
    return None


def _kind(root: Any) -> str:
    kind = root.sweep.get("kind")
    if kind not in POINTS:
        raise ConfigError(f"sweep.kind={kind!r} cannot branch: choose {' or '.join(POINTS)}")
    return str(kind)


RESOLVERS = {"wsd_sweep_tokens": _tokens, "wsd_sweep_keep": _keep, "wsd_sweep_branch_tokens": _branch_tokens,
             "wsd_sweep_warmup": _warmup, "wsd_sweep_skip": _skip}
