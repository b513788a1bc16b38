"""``scaling-study --predict-branches K``: each trunk trains K of its cooldown branches; the others are predicted.

Per trunk the longest cooldown is trained (so that no prediction extrapolates in the cooldown length), with
K = 2 also the shortest. A worker is told which branches to train by the sweeper's own list of roles
(``sweep.budget=trunk,<budgets>``), one command per group of widths that train the same budgets, so every
run keeps the directory and id it has in the whole sweep. The runs evaluate every ``predict_eval_every``
steps on the final evaluation's windows (``eval_tokens = final_eval_tokens``): the curve law is fitted
to those validation losses of the trunk and its trained branches (``analysis.predict_branches``), and the
other branch points' final losses are predicted. Approach 2 and 3 are then fitted on measured + predicted
points, each predicted point marked ``predicted``; the same fits on the measured points alone are kept
beside them for the held-out comparison.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from scaling.conventions import params_of
from scaling.study.fits import _f, exponents
from scaling.study.launch import POOL_ARGS, Progress, _shapes_override, launch, launch_args, run_pool, worker_chains

PREDICT_LAW = "multipower"  # the curve law of the predictions (predict_branches' default)


def eval_overrides(every: int) -> list[str]:
    """Periodic evaluations on the final evaluation's windows (what the curve law fits); no in-run forecast."""
    return [f"train.eval_every={every}", "train.eval_tokens=${train.final_eval_tokens}", "train.forecast_every=0"]


def choose_trained(runs: Sequence[Any], k: int) -> tuple[list[Any], list[Any]]:
    """(the runs to train, the branches to predict) of a planned WSD sweep: per trunk its ``k`` trained
    branches are the longest and (k = 2) the shortest of the branches its rules let train."""
    by_trunk: dict[str, list[Any]] = {}
    for r in runs:
        if r.role == "branch" and not r.skip_reason:
            by_trunk.setdefault(str(r.trunk), []).append(r)
    predicted: set[str] = set()
    for branches in by_trunk.values():
        ordered = sorted(branches, key=lambda r: r.tokens)
        keep = {ordered[-1].run_dir} | ({ordered[0].run_dir} if k >= 2 else set())
        predicted |= {b.run_dir for b in ordered if b.run_dir not in keep}
    return [r for r in runs if r.run_dir not in predicted], [r for r in runs if r.run_dir in predicted]


def budget_override(budgets: Sequence[float]) -> str:
    """The sweeper's roles of a worker: the trunk and the branches of ``budgets`` (command line over the sweep file)."""
    return "sweep.budget=trunk," + ",".join(repr(float(b)) for b in sorted(budgets, reverse=True))


def trained_budgets(runs: Sequence[Any]) -> dict[tuple[int, int], tuple[float, ...]]:
    """(width, depth) -> budgets of the branches that train."""
    out: dict[tuple[int, int], set[float]] = {}
    for r in runs:
        key = (r.shape["width"], r.shape["depth"])
        out.setdefault(key, set())
        if r.role == "branch" and not r.skip_reason:
            out[key].add(float(r.budget))
    return {key: tuple(sorted(b)) for key, b in out.items()}


def worker_commands(trained: Sequence[Any], jobs: int, extra: list[str]) -> list[tuple[str, list[str]]]:
    """Worker commands (name, overrides after the study's base) training ``trained``: the shapes dealt to the
    workers as ``launch`` deals them, each worker's shapes split where the budgets they train change."""
    budgets = trained_budgets(trained)
    rounds: list[list[tuple[str, list[str]]]] = []
    for chain in worker_chains([r for r in trained if r.to_train], jobs):
        groups: list[list[tuple[str, dict[str, int]]]] = []
        for name, shape in chain:
            if groups and _budgets_of(budgets, groups[-1][0][1]) == _budgets_of(budgets, shape):
                groups[-1].append((name, shape))
            else:
                groups.append([(name, shape)])
        for i, group in enumerate(groups):
            if i == len(rounds):
                rounds.append([])
            rounds[i].append((f"sweep-{'+'.join(name for name, _ in group)}",
                              [_shapes_override([s for _, s in group]),
                               budget_override(_budgets_of(budgets, group[0][1])), *POOL_ARGS, *extra]))
    return [cmd for r in rounds for cmd in r]  # every worker's first group first: they start side by side


def _budgets_of(budgets: dict[tuple[int, int], tuple[float, ...]], shape: dict[str, int]) -> tuple[float, ...]:
    return budgets[(shape["width"], shape["depth"])]


def launch_trained(opts: Any, base: list[str], trained: list[Any], jobs: int, log_path: Path) -> None:
    """Train the runs of ``trained`` that are left to train (and no other branch of the sweep)."""
    todo = [r for r in trained if r.to_train]
    if not todo:
        return
    if opts.launcher == "local":
        extra = launch_args(opts, jobs)
        cmds = [(name, [*base, *args]) for name, args in worker_commands(trained, jobs, extra)]
        run_pool(cmds, jobs, log_path, Progress(todo, "sweep"), "sweep")
        return
    budgets = trained_budgets(trained)
    for b in sorted(set(budgets.values())):  # one launch per set of budgets, over the shapes that train it
        shapes = [{"width": w, "depth": d} for (w, d), bs in budgets.items() if bs == b]
        group = [r for r in todo if budgets[(r.shape["width"], r.shape["depth"])] == b]
        if group:
            launch(opts, [*base, _shapes_override(shapes), budget_override(b)], group, jobs, log_path, "sweep")


def predict_points(group_dir: Path, predicted: Sequence[Any], notes: list[str]) -> Any:
    """The predicted IsoFLOP points (``isoflop_rows``: run_id, N, D, C, loss, loss_low, loss_high, role,
    predicted=True, plus budget, width, depth, trunk) of the branches ``predicted``, one curve-law fit per trunk."""
    import pandas as pd

    from analysis import load_curves

    if not predicted:
        return None
    convention = predicted[0].convention
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curves = load_curves(group_dir, loss="val/loss", params=params_of(convention), flops=convention)
        frames = [_trunk_points(curves, trunk, [r for r in predicted if str(r.trunk) == trunk])
                  for trunk in dict.fromkeys(str(r.trunk) for r in predicted)]
    notes += [f"branch predictions: {w.message}" for w in caught]
    return pd.concat(frames, ignore_index=True)


def _trunk_points(curves: Any, trunk: str, targets: list[Any]) -> Any:
    """One trunk's fit (the trunk and its trained branches) and the final loss of each branch in ``targets``."""
    from analysis import predict_branches
    from analysis.curve_laws import isoflop_rows, split_trunk

    rows, branches = split_trunk(curves, trunk=trunk)
    grid = [_branch_steps(r) for r in targets]
    table = predict_branches(rows, branches, branch_points=sorted({p for p, _ in grid}),
                             cooldowns=sorted({c for _, c in grid}), law=PREDICT_LAW)
    wanted = table["predicted"].astype(bool) & _pairs(table).isin(grid)
    table = table[wanted].drop_duplicates(["branch_step", "cooldown_steps"])
    by_pair = {(int(p), int(c)): i for i, (p, c) in enumerate(zip(table["branch_step"], table["cooldown_steps"]))}
    r0 = targets[0]
    n = float(r0.params[params_of(r0.convention)])
    points = isoflop_rows(table, n, flops_per_token=r0.compute / r0.tokens)
    order = [by_pair[g] for g in grid]
    points = points.iloc[order].reset_index(drop=True)
    points["run_id"] = [r.run_id for r in targets]
    points["budget"] = [r.budget for r in targets]
    points["width"] = [r.shape["width"] for r in targets]
    points["depth"] = [r.shape["depth"] for r in targets]
    points["trunk"] = trunk
    points["extrapolated"] = table["extrapolated"].to_numpy()[order]
    return points


def _pairs(table: Any) -> Any:
    """(branch_step, cooldown_steps) of each row of a predict_branches table, as a Series of tuples."""
    import pandas as pd

    return pd.Series(list(zip(table["branch_step"].astype(int), table["cooldown_steps"].astype(int))), index=table.index)


def _branch_steps(r: Any) -> tuple[int, int]:
    """(branch point, cooldown) of a planned branch, in optimizer steps."""
    per = r.tokens / r.steps
    start = int(round((r.tokens - r.own_tokens) / per))
    return start, int(r.steps) - start


def flops_saved(trained: Sequence[Any], predicted: Sequence[Any]) -> dict[str, Any]:
    """FLOPs of the sweep as trained and as it would be with every branch trained (each trunk once)."""
    spent = sum(r.own_compute for r in trained if not r.skip_reason)
    saved = sum(r.own_compute for r in predicted)
    return {"sweep_flops": spent, "all_branches_flops": spent + saved, "saved_flops": saved,
            "saved_share": saved / (spent + saved) if spent + saved else None}


def predicted_summary(k: int, eval_every: int, trained: Sequence[Any], predicted: Sequence[Any], points: Any,
                      measured_only: dict[str, Any]) -> dict[str, Any]:
    """``study.json``'s ``predicted_branches``: how the points were predicted, what that saved, each point, and
    the exponents of the fits on the measured points alone."""
    branches = [r for r in trained if r.role == "branch" and not r.skip_reason]
    cols = ["run_id", "trunk", "budget", "width", "depth", "N", "D", "C", "loss", "loss_low", "loss_high", "extrapolated"]
    rows = [{c: (_f(v) if c in ("loss", "loss_low", "loss_high", "C", "budget") else v.item() if hasattr(v, "item") else v)
             for c, v in row.items()} for row in points[cols].to_dict("records")]
    return {"trained_per_trunk": k, "law": PREDICT_LAW, "fitted_loss": "val/loss", "eval_every": eval_every,
            "n_predicted": len(predicted), "n_measured": len(branches), **flops_saved(trained, predicted),
            "points": rows, "measured_only": {"exponents": exponents(measured_only.get("results", {})),
                                              "notes": list(measured_only.get("notes", []))}}
