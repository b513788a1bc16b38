"""Which run of a sweep next: the pool of a sweep's runs, a target spelled on a command line, the choice
(``analysis.propose_next``) and the ``scaling-train --multirun`` command lines that run exactly the chosen runs.

Shared by ``scaling-next`` and the adaptive study (``scaling.study.adaptive``).
"""

from __future__ import annotations

import contextlib
import math
import shlex
import warnings
from collections.abc import Iterator
from typing import Any

from scaling.conventions import params_of
from scaling.errors import ConfigError

TARGETS = "a, b, alpha, beta, E, A, B, G, N_opt@C, D_opt@C or loss@N,D"
FINISHED = ("completed", "diverged")


@contextlib.contextmanager
def analysis_errors() -> Iterator[None]:
    """An ``analysis`` input error becomes a ``ConfigError`` (one line, exit 2), with the same message."""
    from analysis import AnalysisInputError

    try:
        yield
    except AnalysisInputError as exc:
        raise ConfigError(str(exc)) from exc


def parse_target(text: str, law: str = "parametric") -> Any:
    """``a`` -> ``"a"``; ``N_opt@1e12`` -> ``{"N_opt": 1e12}``; ``loss@1e5,2e6`` -> ``{"loss": (1e5, 2e6)}``; a
    parameter name must be one of ``law``'s."""
    from analysis.next_run_criteria import resolve_target

    name, at, arg = text.partition("@")
    if not at:
        with analysis_errors():
            resolve_target(name, law)  # a parameter name: the law says which it has
        return name
    values = [_positive(text, v) for v in arg.split(",")]
    if name in ("N_opt", "D_opt") and len(values) == 1:
        return {name: values[0]}
    if name == "loss" and len(values) == 2:
        return {"loss": tuple(values)}
    raise ConfigError(f"--target={text!r} is not allowed: choose {TARGETS}")


def _positive(text: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"--target={text!r} is not allowed: {value!r} is not a positive number (choose {TARGETS})")
    return x


def finished_runs(folder: Any, convention: str) -> Any:
    """The completed runs under ``folder`` (``analysis.load_runs``): N under the sweep's convention, D, C, loss;
    the loader's warnings (runs left out) one line each in ``attrs["warnings"]``."""
    from analysis import load_runs

    with analysis_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(folder, params=params_of(convention), flops=convention)
    runs.attrs["warnings"] = [str(w.message) for w in caught]
    return runs


POOL_COLUMNS = ["N", "D", "cost", "trunk", "prefix", "width", "depth", "budget", "run_id"]


def candidate_pool(planned: list[Any], done_ids: set[str] | None = None, finished: bool = False) -> Any:
    """The sweep's points still to choose from (its runs, or a WSD sweep's cooldown branches, never its trunks):
    not skipped, not among ``done_ids``, not finished in their folder (``finished``: kept, a design that reuses
    records counts them only once it chooses them).

    One row per point, indexed by its position in ``planned``: N (the sweep's convention), D (tokens the
    optimizer will consume), cost (the C it trains itself under the sweep's convention: a branch's cooldown),
    trunk and prefix (a branch's trunk and the C of the trunk up to its branch point; None and 0 for a run on
    its own), width, depth, budget, run_id.
    """
    import pandas as pd

    done_ids = done_ids or set()
    rows = {}
    for i, r in enumerate(planned):
        if r.skip_reason or r.role == "trunk" or (r.state in FINISHED and not finished) or r.run_id in done_ids:
            continue
        rows[i] = {"N": float(r.params[params_of(r.convention)]), "D": float(r.tokens), "cost": float(r.own_compute),
                   **prefix_of(r), "width": r.shape["width"], "depth": r.shape["depth"], "budget": r.budget,
                   "run_id": r.run_id}
    return pd.DataFrame.from_dict(rows, orient="index", columns=POOL_COLUMNS)


def prefix_of(run: Any) -> dict[str, Any]:
    """A planned point's shared prefix: ``trunk`` (a branch's trunk run id, else None) and ``prefix`` (the C of
    that trunk up to the branch point, under the sweep's convention; 0 for a run on its own)."""
    return {"trunk": run.trunk, "prefix": float(run.compute - run.own_compute) if run.trunk else 0.0}


def with_prefixes(runs: Any, planned: list[Any]) -> Any:
    """``runs`` (finished runs with ``run_id``) with the ``trunk`` and ``prefix`` of their planned points, so that
    ``propose_next`` counts the trunks they trained as paid."""
    by_id = {r.run_id: prefix_of(r) for r in planned}
    out = runs.copy()
    ids = out["run_id"] if "run_id" in out else [None] * len(out)
    out["trunk"] = [by_id.get(i, {}).get("trunk") for i in ids]
    out["prefix"] = [by_id.get(i, {}).get("prefix", 0.0) for i in ids]
    return out


def widened_grid(cfg: Any, beside: bool = True, widths: bool = True) -> list[str]:
    """Overrides that widen a sweep's grid into the adaptive study's candidate pool (the sweep's own points
    plus points between and, with ``beside``, beside them, under the sweep's own rules, so the runs it skips
    stay skipped).

    Budgets: the sweep's and the geometric midpoint of each neighbouring pair (never beyond the largest).
    Shapes, per depth: the sweep's widths, the midpoint of each neighbouring pair rounded to the heads'
    multiple (``model.head_dim``), and (``beside``) one step (the smallest gap) below the smallest and above
    the largest. Without ``beside`` the pool stays inside the sweep's range of widths and budgets; without
    ``widths`` only the budgets are widened (the sweep's shapes: a WSD sweep's trunks stay its own).
    """
    budgets = sorted(float(b) for b in cfg.sweep.budgets)
    budgets += [float(f"{math.sqrt(lo * hi):.3g}") for lo, hi in zip(budgets, budgets[1:])]
    budgets_override = f"sweep.budgets=[{','.join(f'{b:g}' for b in sorted(set(budgets)))}]"
    if not widths:
        return [budgets_override]
    multiple = int(cfg.model.get("head_dim") or 1)
    by_depth: dict[int, set[int]] = {}
    for shape in cfg.sweep.shapes:
        by_depth.setdefault(int(shape.depth), set()).add(int(shape.width))
    shapes = []
    for depth, widths in by_depth.items():
        ws = sorted(widths)
        step = min((b - a for a, b in zip(ws, ws[1:])), default=multiple)
        extra = {multiple * round((a + b) / 2 / multiple) for a, b in zip(ws, ws[1:])}
        extra |= {ws[0] - step, ws[-1] + step} if beside else set()
        shapes += [f"{{width:{w},depth:{depth}}}" for w in sorted(widths | {w for w in extra if w > 0})]
    return [budgets_override, f"sweep.shapes=[{','.join(shapes)}]"]


def choose(runs: Any, pool: Any, target: Any, *, criterion: str = "variance", budget: float | None = None,
           n: int = 1, level: float = 0.95, sweep: str = "the sweep", law: str = "parametric") -> tuple[Any, list[str]]:
    """The greedy batch of up to ``n`` runs of ``pool`` that shrinks ``target``'s interval most per FLOP.

    A WSD branch costs its cooldown plus the part of its trunk that ``runs`` (with ``trunk`` and ``prefix``
    columns: ``with_prefixes``) and the batch's earlier picks have not trained. Returns ``propose_next``'s table
    (with the pool's run_id) and its warnings (one line each, e.g. candidates outside the finished runs' range).
    """
    from analysis import propose_next

    if len(pool) == 0:
        raise ConfigError(f"the pool is empty: every run of {sweep} is skipped or already finished")
    with analysis_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paid = ["trunk", "prefix"] if {"trunk", "prefix"} <= set(runs.columns) else []  # with_prefixes
        table = propose_next(runs[["N", "D", "loss", *paid]], pool[["N", "D", "cost", "trunk", "prefix"]], target,
                             budget=budget, criterion=criterion, n=n, level=level, law=law)
    table["run_id"] = pool.loc[table["candidate"], "run_id"].to_numpy()
    return table, [str(w.message) for w in caught]


def target_interval(runs: Any, target: Any, level: float = 0.95, law: str = "parametric") -> tuple[float, float, float]:
    """(estimate, low, high) of ``target`` under the Laplace posterior of ``law`` (parametric or kaplan) fitted to
    ``runs`` (the posterior ``propose_next`` scores with)."""
    import numpy as np

    from analysis.next_run_criteria import fit_posterior, interval, resolve_target

    with analysis_errors():
        tgt = resolve_target(target, law)
        N, D, L = (np.asarray(runs[c], float) for c in ("N", "D", "loss"))
        return interval(fit_posterior(N, D, L, law=law), tgt, level)


def job_overrides(run: Any) -> dict[str, str]:
    """A planned run's own swept overrides (``sweep.shape={width:32,depth:2}``, ``sweep.budget=4e+11``) by key."""
    out = {}
    for o in run.overrides:
        key, _, value = o.partition("=")
        out[key] = value
    return out


def launch_overrides(base: list[str], chosen: list[Any], grouped: bool = True) -> list[list[str]]:
    """``scaling-train --multirun`` overrides, one list per command, that together run exactly ``chosen``.

    A grid override would run the cartesian product of the chosen shapes and budgets, so each command sets
    the sweep's swept keys itself (after ``base``, so they win over the sweep's own lists): one command per
    run, or (``grouped``) one per group of runs that differ in one swept key, that key then a choice sweep.
    """
    given = set(base)
    jobs = [{k: v for k, v in job_overrides(r).items() if f"{k}={v}" not in given} for r in chosen]
    keys = list(dict.fromkeys(k for j in jobs for k in j))
    if any(set(j) != set(keys) for j in jobs):
        raise ConfigError("the chosen runs do not share their swept keys: launch them one by one")
    groups: list[tuple[dict[str, str], list[str]]] = [({k: j[k] for k in keys}, []) for j in jobs]
    if grouped and keys:
        best = None
        for vary in keys:
            by: dict[tuple, list[str]] = {}
            for j in jobs:
                by.setdefault(tuple((k, j[k]) for k in keys if k != vary), []).append(j[vary])
            if best is None or len(by) < len(best[1]):
                best = (vary, by)
        vary, by = best
        groups = [(dict(fixed), values) for fixed, values in by.items()]
        return [[*base, *(f"{k}={v}" for k, v in fixed.items()), f"{vary}={','.join(values)}"] for fixed, values in groups]
    return [[*base, *(f"{k}={v}" for k, v in fixed.items())] for fixed, _ in groups]


def command_lines(commands: list[list[str]]) -> list[str]:
    """Each command as a shell line: ``scaling-train --multirun 'OVERRIDE' ...``."""
    return [" ".join(["scaling-train", "--multirun", *map(shlex.quote, c)]) for c in commands]


def parse_command_line(line: str) -> list[str]:
    """The overrides of a line written by ``command_lines`` (the inverse, for checks and tests)."""
    words = shlex.split(line)
    if words[:2] != ["scaling-train", "--multirun"]:
        raise ConfigError(f"{line!r} is not a scaling-train --multirun command")
    return words[2:]


def script(lines: list[str], header: list[str]) -> str:
    """A shell script that runs the lines one after the other (``sh FILE``), with comment lines on top."""
    return "\n".join(["#!/bin/sh", *(f"# {h}" for h in header), "set -e", *lines]) + "\n"
