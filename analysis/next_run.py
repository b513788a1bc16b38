"""Which run next: rank candidate runs by how much each would shrink a target's interval per FLOP.

    from analysis import load_runs, propose_next
    runs = load_runs("runs/")
    table = propose_next(runs, pool, target="a")                 # pool: N, D (, cost) per candidate
    table = propose_next(runs, pool, {"N_opt": 1e21}, budget=3e19, n=4)   # a greedy batch of 4

The posterior is the Laplace approximation of the parametric law's Huber fit (``analysis.next_run_criteria``;
or the covariance of bootstrap refits, or a mixture over separate optima); a candidate's score is the
expected reduction of the target's variance (or of log det Sigma, or of the mean predictive variance) after
adding it, by the linearised Fisher update, divided by its cost in FLOPs. ``replay`` runs the sequential
design on points whose losses are already known (the benchmark). Guide: docs/next_run.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.checks import (
    as_positive,
    check_bootstrap,
    check_level,
    choice,
    same_length,
)
from analysis.errors import AnalysisInputError
from analysis.next_run_criteria import (
    CRITERIA,
    LAW_PARAMS,
    Posterior,
    Target,
    expected_variance,
    fit_posterior,
    interval,
    jacobian,
    rank_one_update,
    resolve_target,
    scores,
    theta_from,
    z_value,
)
from analysis.next_run_mixture import fit_mixture, mixture_expected_variance, mixture_moments
from analysis.next_run_prefixes import Prefixes
from analysis.result import FitResult

LAWS = ("parametric", "kaplan")  # Approach 3 (Hoffmann et al.); the joint law of Kaplan et al. 2020


def propose_next(
    runs: Any,
    candidates: Any,
    target: Any,
    budget: float | None = None,
    law: str = "parametric",
    criterion: str = "variance",
    *,
    n: int | None = None,
    level: float = 0.95,
    cost_col: str = "cost",
    prefix_cols: tuple[str, str] = ("trunk", "prefix"),
    reference: Any = None,
    start: Any = None,
    seed: int = 0,
    bootstrap: int = 0,
    mixture: bool = False,
) -> pd.DataFrame:
    """Rank the candidate runs for ``target`` under ``criterion``; the best first.

    runs: finished runs, a table with columns N, D, loss (``load_runs`` gives them).
    candidates: the pool, a table with N, D and ``cost_col`` (FLOPs; missing: 6ND). With ``prefix_cols`` (WSD
      branches: the trunk's label, the FLOPs of the trunk to the branch point) a candidate costs ``cost_col``
      plus the part of its trunk the runs with those columns (and in a batch the earlier picks) did not pay.
    target: ``"a"``, ``"alpha"``, ... or ``{"param": name}``, ``{"N_opt": C}``, ``{"D_opt": C}`` (log N_opt /
      log D_opt, so the interval is relative), ``{"loss": (N, D)}``.
    budget: FLOPs available: dearer candidates are left out; with ``n``, the cumulative cost of the batch.
    law: ``parametric`` (Approach 3, E + A N^-alpha + B D^-beta) or ``kaplan`` (Kaplan et al. 2020's joint law,
      ``analysis.kaplan_joint``: targets a, b, alpha_N, alpha_D, N_opt, D_opt, loss).
    criterion: ``variance`` (of the target), ``d-optimal``, ``v-optimal`` (mean predictive variance of
      log loss over ``reference`` = (N, D) arrays, default the candidates), ``random``, ``cheapest``.
    n: None ranks every affordable candidate by its own gain; a number picks a greedy batch of up to n,
      each conditioned on the earlier picks (no loss is needed for the Fisher update).
    start: theta (a, b, e, alpha, beta) or an earlier table of this function: refit warm from there
      instead of the full start grid.
    bootstrap: 0, the Laplace posterior; > 0, the covariance of that many bootstrap refits (seed ``seed``).
    mixture: the posterior is a mixture over the fit's separate local optima (``fit_mixture``) and the
      variance criterion integrates over the new run's outcome; only with criterion variance and n None.

    Columns: candidate (index label in ``candidates``), N, D, cost, low, high, width (the target's expected
    interval at ``level`` after adding the candidate, or the batch so far), gain, score. ``attrs`` holds
    target, estimate, interval (now), criterion, level, theta, noise (and components: (weight, target
    value) per optimum, with ``mixture``).
    """
    level = _checked_options(law, criterion, level, mixture)
    tgt = resolve_target(target, law)
    N, D, L = _runs_arrays(runs)
    cand, Nc, Dc, cost = _pool_arrays(candidates, cost_col)
    prefixes = _trunks(runs, candidates, prefix_cols)
    keep = _affordable(cost + prefixes.extra(), budget)
    _warn_extrapolation(N, D, Nc, Dc)
    idx = np.flatnonzero(keep)
    if mixture:
        comps, (est, var), (order, var_after, gain, score, paid) = _mixture_ranking(
            N, D, L, tgt, Nc[idx], Dc[idx], (cost + prefixes.extra())[idx], criterion, n)
        post = comps[0][1]
    else:
        post = fit_posterior(N, D, L, start=_start_theta(start, law), bootstrap=check_bootstrap(bootstrap), seed=seed, law=law)
        ref = None if reference is None else jacobian(post.theta, *_reference(reference))[1]
        rank = _rank_single if n is None else _rank_greedy
        order, var_after, gain, score, paid = rank(post, tgt, Nc[idx], Dc[idx], cost[idx], criterion, ref,
                                                   np.random.default_rng(seed), n=None if n is None else _count(n),
                                                   budget=budget, prefixes=prefixes.subset(idx))
        est, var = tgt.value(post.theta), float(tgt.gradient(post.theta) @ post.cov @ tgt.gradient(post.theta))
    table = _result_table(cand[idx[order]], Nc[idx[order]], Dc[idx[order]], paid, est, var, var_after, level)
    table["gain"], table["score"] = gain, score
    table.attrs.update(target=tgt.name, criterion=criterion, theta=post.theta.tolist(), noise=post.noise)
    if mixture:
        table.attrs["components"] = [(w, tgt.value(c.theta)) for w, c in comps]
    return table


def _result_table(cand, N, D, cost, est: float, var: float, var_after: np.ndarray, level: float) -> pd.DataFrame:
    """The candidates with the target's expected interval after each; attrs estimate, interval, level."""
    z = z_value(level)
    half = z * np.sqrt(np.maximum(var_after, 0.0))
    table = pd.DataFrame({"candidate": cand, "N": N, "D": D, "cost": cost,
                          "low": est - half, "high": est + half, "width": 2 * half})
    table.attrs.update(estimate=est, interval=(est - z * math.sqrt(var), est + z * math.sqrt(var)), level=level)
    return table


def _rank_single(post: Posterior, tgt: Target, Nc, Dc, cost, criterion: str, ref, rng, prefixes: Prefixes, **_: Any):
    """Candidates by score, each with the target variance after adding it alone, its gain, score and cost."""
    g = tgt.gradient(post.theta)
    J = jacobian(post.theta, Nc, Dc)[1]
    cost = cost + prefixes.extra()
    gain, score = scores(criterion, post, g, J, cost, ref, rng)
    order = np.argsort(-score, kind="stable")
    return order, expected_variance(post.cov, post.noise, g, J)[order], gain[order], score[order], cost[order]


def _mixture_ranking(N, D, L, tgt: Target, Nc, Dc, cost, criterion: str, n: int | None):
    """The mixture posterior's components, the target's (mean, variance) under it, and the candidates by
    the expected drop of the mixture variance per FLOP (integrated over the outcome)."""
    if criterion != "variance" or n is not None:
        raise AnalysisInputError(
            f"mixture: True is not allowed with criterion {criterion!r} and n={n!r}; use criterion 'variance' and n=None"
        )
    comps = fit_mixture(N, D, L)
    var_now = mixture_moments(comps, tgt)
    var_after = mixture_expected_variance(comps, tgt, Nc, Dc)
    gain = var_now[1] - var_after
    order = np.argsort(-gain / cost, kind="stable")
    return comps, var_now, (order, var_after[order], gain[order], (gain / cost)[order], cost[order])


def _rank_greedy(post: Posterior, tgt: Target, Nc, Dc, cost, criterion: str, ref, rng, n: int, budget: float | None,
                 prefixes: Prefixes):
    """Up to n picks, each scored under the covariance updated by the picks before it (and at the cost left
    after their trunks), within budget."""
    g = tgt.gradient(post.theta)
    J = jacobian(post.theta, Nc, Dc)[1]
    state, left = post, math.inf if budget is None else float(budget)
    free = np.ones(cost.size, bool)
    rows: list[tuple[int, float, float, float, float]] = []  # (pick, variance after the batch, gain, score, cost)
    for _ in range(min(n, cost.size)):
        now = cost + prefixes.extra()
        ok = free & (now <= left)
        if not ok.any():
            break
        gain, score = scores(criterion, state, g, J, now, ref, rng)
        k = int(np.flatnonzero(ok)[np.argmax(score[ok])])
        state = replace(state, cov=rank_one_update(state.cov, post.noise, J[k]))
        paid = prefixes.pay(k, cost)
        rows.append((k, float(g @ state.cov @ g), float(gain[k]), float(score[k]), paid))
        free[k], left = False, left - paid
    order, var_after, gain, score, paid = (np.array(c) for c in zip(*rows))
    return order.astype(int), var_after, gain, score, paid


# ---------------------------------------------------------------- inputs


def _runs_arrays(runs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    df = _table("runs", runs, ("N", "D", "loss"))
    N, D, L = (as_positive(f"runs.{c}", df[c]) for c in ("N", "D", "loss"))
    same_length(N=N, D=D, loss=L)
    return N, D, L


def _pool_arrays(candidates: Any, cost_col: str):
    df = _table("candidates", candidates, ("N", "D"))
    if len(df) == 0:
        raise AnalysisInputError("candidates: the pool is empty; give at least one candidate run (N, D)")
    N, D = as_positive("candidates.N", df["N"]), as_positive("candidates.D", df["D"])
    cost = as_positive(f"candidates.{cost_col}", df[cost_col]) if cost_col in df else 6 * N * D
    return df.index.to_numpy(), N, D, cost


def _trunks(runs: Any, candidates: Any, cols: tuple[str, str]) -> Prefixes:
    """The candidates' shared trunks (none without the ``cols`` columns), the finished runs' parts paid."""
    pool, done = _table("candidates", candidates, ()), _table("runs", runs, ())
    if not all(c in pool for c in cols):
        return Prefixes(None, None, len(pool))
    prefixes = Prefixes(pool[cols[0]].tolist(), pool[cols[1]], len(pool))
    return prefixes.paid_by(done[cols[0]].tolist(), done[cols[1]]) if all(c in done for c in cols) else prefixes


def _table(field: str, value: Any, needed: tuple[str, ...]) -> pd.DataFrame:
    df = value if isinstance(value, pd.DataFrame) else pd.DataFrame(value)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise AnalysisInputError(f"{field}: missing column(s) {', '.join(missing)}; columns {', '.join(needed)} are needed")
    return df


def _affordable(cost: np.ndarray, budget: float | None) -> np.ndarray:
    if budget is None:
        return np.ones(cost.size, bool)
    b = float(budget)
    if not (math.isfinite(b) and b >= cost.min()):
        raise AnalysisInputError(f"budget: {budget!r} FLOPs is not allowed; the cheapest candidate costs {cost.min():.4g}")
    return cost <= b


def _warn_extrapolation(N, D, Nc, Dc) -> None:
    out = (Nc < N.min()) | (Nc > N.max()) | (Dc < D.min()) | (Dc > D.max())
    if out.any():
        warnings.warn(
            f"candidates: {int(out.sum())} of {out.size} lie outside the runs' range (N {N.min():.3g}..{N.max():.3g}, "
            f"D {D.min():.3g}..{D.max():.3g}); their scores extrapolate the fitted law",
            UserWarning, stacklevel=3,
        )


def _checked_options(law: str, criterion: str, level: float, mixture: bool) -> float:
    """``propose_next``'s law, criterion, level (returned) and mixture, checked."""
    choice("law", law, LAWS)
    choice("criterion", criterion, CRITERIA)
    if mixture and law != "parametric":
        raise AnalysisInputError(f"mixture: the mixture over separate optima is the parametric law's; law {law!r} needs mixture=False")
    return check_level(level)


def _start_theta(start: Any, law: str = "parametric") -> np.ndarray | None:
    if start is None:
        return None
    if isinstance(start, pd.DataFrame):
        start = start.attrs.get("theta")
    if isinstance(start, FitResult):
        start = theta_from(start.estimates)
    theta = np.asarray(start, dtype=float).ravel() if start is not None else np.zeros(0)
    if theta.size != LAW_PARAMS[law] or not np.isfinite(theta).all():
        raise AnalysisInputError(
            f"start: {start!r} is not allowed; give theta ((a, b, e, alpha, beta); law kaplan: (log N_c, log D_c, "
            "alpha_N, alpha_D)), a parametric FitResult or a table of propose_next"
        )
    return theta


def _reference(reference: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        Nr, Dr = reference
    except (TypeError, ValueError):
        raise AnalysisInputError(f"reference: {reference!r} is not allowed; give a pair of arrays (N, D)") from None
    Nr, Dr = np.broadcast_arrays(as_positive("reference N", Nr), as_positive("reference D", Dr))
    return Nr, Dr


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise AnalysisInputError(f"n: {n!r} is not allowed; use a whole number >= 1")
    return int(n)


# ---------------------------------------------------------------- replay


def replay(
    N: Any, D: Any, L: Any, initial: Any, target: Any, criterion: str = "variance", *,
    cost: Any = None, stop_width: float | None = None, level: float = 0.95, seed: int = 0,
    max_steps: int | None = None, bootstrap: int = 0, stable: float | None = None, min_dof: int = 0,
    budget: float | None = None, groups: Any = None, shared: Any = None, law: str = "parametric",
) -> pd.DataFrame:
    """Run the sequential design on points whose losses are known: the benchmark of ``propose_next``.

    Start from the points where the boolean mask ``initial`` is true; the rest are the pool. Each step
    scores the pool under the current posterior, adds the best point with its real loss and refits warm
    from the previous optimum; it stops once ``goal_met`` holds (the target's interval, estimate +- z sd, at most
    ``stop_width`` wide, with ``stable`` and ``min_dof`` as there; None: never), after ``max_steps`` or when the
    pool is empty. The v-optimal reference is the pool. budget: FLOPs the added points may spend (None: no
    cap); a point dearer than what is left is passed over, and the replay stops once none is affordable, as
    the adaptive study does with ``--max-flops``.
    bootstrap > 0: the posterior (scores and interval) is the covariance of that many bootstrap refits.
    law: the design's law, ``parametric`` or ``kaplan`` (as ``propose_next``).
    groups, shared: points that share a prefix of training, as the cooldown branches of one WSD trunk do:
    a label per point (points of one label share a prefix; None for a point on its own) and the FLOPs of
    that prefix the point needs (its trunk up to its branch point). A point then costs ``cost`` (its own
    part, the cooldown) plus the part of its prefix that no point chosen before, initial ones included,
    has paid; scores and the budget use that cost.

    Rows: step (0 = the initial fit), point (index into the arrays, -1 at step 0), N, D, cost, spent
    (cumulative pool FLOPs), estimate, low, high, width. attrs: pool_cost (all of the pool: with prefixes,
    the parts the initial points did not pay), initial_cost (the initial points with their prefixes), spent,
    share (spent / pool_cost), reached (the stop rule held at the end), steps.
    """
    choice("criterion", criterion, CRITERIA)
    choice("law", law, LAWS)
    tgt, level = resolve_target(target, law), check_level(level)
    N, D, L = (as_positive(k, v) for k, v in (("N", N), ("D", D), ("L", L)))
    same_length(N=N, D=D, L=L)
    cost = 6 * N * D if cost is None else as_positive("cost", cost)
    used = _initial_mask(initial, N.size)
    prefixes = Prefixes(groups, shared, N.size)
    initial_cost = prefixes.pay_each(np.flatnonzero(used), cost)
    pool0 = np.flatnonzero(~used)
    pool_cost = float(cost[pool0].sum()) + prefixes.unpaid()
    ref_N, ref_D = N[pool0], D[pool0]
    rng = np.random.default_rng(seed)
    bootstrap = check_bootstrap(bootstrap)
    post = fit_posterior(N[used], D[used], L[used], bootstrap=bootstrap, seed=seed, law=law)
    rows = [_replay_row(0, -1, math.nan, math.nan, math.nan, 0.0, *interval(post, tgt, level))]
    limit = pool0.size if max_steps is None else min(int(max_steps), pool0.size)
    left = _replay_budget(budget)
    for step in range(1, limit + 1):
        if stop_width is not None and goal_met(rows, stop_width, int(used.sum()), stable=stable, min_dof=min_dof,
                                               n_params=post.theta.size):
            break
        now = cost + prefixes.extra()  # what each point would cost after the points chosen so far
        pool = np.flatnonzero(~used & (now <= left))
        if pool.size == 0:
            break
        J = jacobian(post.theta, N[pool], D[pool])[1]
        ref = jacobian(post.theta, ref_N, ref_D)[1] if criterion == "v-optimal" else None
        _, score = scores(criterion, post, tgt.gradient(post.theta), J, now[pool], ref, rng)
        k = int(pool[np.argmax(score)])
        paid = prefixes.pay(k, cost)
        used[k], left = True, left - paid
        post = fit_posterior(N[used], D[used], L[used], start=post.theta, bootstrap=bootstrap, seed=seed + step, law=law)
        rows.append(_replay_row(step, k, N[k], D[k], paid, rows[-1]["spent"] + paid, *interval(post, tgt, level)))
    table = pd.DataFrame(rows)
    spent = float(table["spent"].iloc[-1])
    reached = stop_width is not None and goal_met(rows, stop_width, int(used.sum()), stable=stable, min_dof=min_dof,
                                                  n_params=post.theta.size)
    table.attrs.update(pool_cost=pool_cost, initial_cost=initial_cost, spent=spent, share=spent / pool_cost, reached=reached,
                       steps=len(table) - 1, budget=budget, target=tgt.name, criterion=criterion)
    return table


def _initial_mask(initial: Any, n: int) -> np.ndarray:
    """``replay``'s initial points as a fresh boolean mask (filled in as points are added)."""
    used = np.array(initial, dtype=bool).ravel()
    if used.size != n or not used.any() or used.all():
        raise AnalysisInputError(
            f"initial: a mask of {used.size} with {int(used.sum())} true is not allowed; give one flag per point, some true and some false"
        )
    return used


def _replay_budget(budget: float | None) -> float:
    left = math.inf if budget is None else float(budget)
    if not left >= 0:
        raise AnalysisInputError(f"budget: {budget!r} FLOPs is not allowed; give a number >= 0, or None for no cap")
    return left


def goal_met(rounds: list[dict[str, float]], goal: float, n_runs: int, *, stable: float | None = None,
             min_dof: int = 0, n_params: int = 5) -> bool:
    """The sequential design's stop rule on its rounds so far (dicts with estimate, low, high, oldest first).

    The last interval is at most ``goal`` wide; the fit of ``n_runs`` runs has at least ``min_dof`` residual
    degrees of freedom (n_runs - n_params: the noise estimate behind the width); with ``stable``, the estimate moved
    by at most ``stable`` x the last half-width since the round before (none before: not stable). The width
    alone cannot see a biased fit; a fit still moving is the part of the bias a design can notice.
    """
    last = rounds[-1]
    half = (last["high"] - last["low"]) / 2
    if 2 * half > goal or n_runs - n_params < min_dof:
        return False
    if stable is None:
        return True
    return len(rounds) > 1 and abs(last["estimate"] - rounds[-2]["estimate"]) <= stable * half


def _replay_row(step: int, point: int, N: float, D: float, cost: float, spent: float,
                est: float, lo: float, hi: float) -> dict[str, float]:
    return {"step": step, "point": point, "N": N, "D": D, "cost": cost, "spent": spent,
            "estimate": est, "low": lo, "high": hi, "width": hi - lo}
