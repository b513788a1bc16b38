"""The adaptive study (``scaling-study --adaptive``): train a small seed design of the sweep, then alternate
fit -> propose -> train until the target's interval is as narrow as asked or the FLOPs budget is spent; then
the held-out check, and the FLOPs used against the fixed design (the whole sweep).

1. Seed: the points of the sweep's ``seed_budgets`` smallest budgets, with ``seed_widths`` only that many widths
   of each. A point is a separate run (``--design cosine``) or a cooldown branch of a WSD trunk (``--design
   wsd``, the study's default): a trunk is trained (``train.stop_at_tokens``) only as far as the branches
   chosen so far start, so a branch costs its cooldown plus the part of its trunk not trained yet.
2. Rounds: fit the parametric law to the finished runs (its Laplace posterior, as ``analysis.propose_next``
   scores with), stop when the target's interval is at most ``width`` wide (and, with ``stable`` and
   ``min_dof``, the estimate has settled and the noise estimate has the degrees of freedom:
   ``analysis.next_run.goal_met``); else choose the greedy batch of ``batch`` candidates not yet trained that
   shrinks it most per FLOP within the FLOPs left, cut after the first run expected to reach the width, and
   train exactly them (one ``scaling-train --multirun`` per run, ``jobs`` at a time; the trunks they need
   first).
3. Check: the study's own fits and held-out run (``scaling.study.study``) on the design's runs (copies of
   their records in ``DIR/design``).
4. Report: ``DIR/adaptive.json`` and ``DIR/adaptive.md``: rounds, FLOPs and widths against the fixed design
   (its interval and FLOPs from the records of a fixed study, ``fixed``, of either design) and the whole sweep of
   this design, the held-out error.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.io import atomic_write_json, atomic_write_text
from scaling.study.fits import fit_all
from scaling.study.launch import (
    POOL_ARGS,
    Progress,
    launch,
    launch_args,
    plan,
    refresh,
    run_pool,
)
from scaling.study.adaptive_design import (
    design_flops,
    design_points,
    fixed_design,
    trunk_commands,
    trunk_stops,
    unpaid_trunks,
)
from scaling.study.next_runs import (
    candidate_pool,
    choose,
    finished_runs,
    launch_overrides,
    parse_target,
    target_interval,
    widened_grid,
    with_prefixes,
)
from scaling.study.options import Options, StudyError
from scaling.study.study import Study, _setup, holdout_phase


@dataclasses.dataclass
class Adaptive:
    """The adaptive study's own settings (``scaling-study --adaptive ...``)."""

    target: str = "a"
    width: float | None = None  # stop once the interval is at most this wide; None: the fixed design's width
    fixed: Path | None = None  # a fixed study's output folder of the same sweep: its width and the comparison
    max_flops: float | None = None  # FLOPs the design may spend; None: the fixed design's
    # The defaults: the setting measured on study_quick (bench/RESULTS.md, "Inside the sweep's range").
    seed_budgets: int = 3
    seed_widths: int | None = 2  # per seed budget, this many widths spread from the smallest to the largest; None: all
    batch: int = 1  # runs per round (a batch is cut after its first run expected to reach the width)
    criterion: str = "variance"
    level: float = 0.95
    pool: str | None = None  # candidates: "sweep", its points; "budgets"/"inside"/"wide", its grid widened
    # (widened_grid); None: inside for separate runs, sweep for WSD branches (POOL)
    stable: float | None = 0.5  # stop only once the estimate moved by at most this x the half-width (goal_met)
    min_dof: int = 4  # stop only once the fit has this many residual degrees of freedom (runs - the law's parameters)
    law: str = "parametric"  # the design's law (analysis.propose_next): parametric (Approach 3) or kaplan


POOLS = ("inside", "sweep", "wide", "budgets")
POOL = {"cosine": "inside", "wsd": "sweep"}  # the default pool of each design
WSD_POOLS = ("sweep", "budgets")  # a WSD design's candidates are branches of its own trunks: no new widths
SEED_POINTS = 6  # the fewest points the posterior of the law's 5 parameters takes (fit_posterior)


def run_adaptive(opts: Options, ad: Adaptive) -> dict[str, Any]:
    """Seed, rounds, fits, held-out check and report; returns the ``adaptive.json`` object."""
    from analysis.next_run_criteria import CRITERIA

    t_start = time.time()
    if ad.criterion not in CRITERIA:
        raise ConfigError(f"--criterion={ad.criterion!r} is unknown: choose {', '.join(CRITERIA)}")
    design_name = opts.resolved_design
    ad = dataclasses.replace(ad, pool=resolved_pool(ad.pool, design_name))
    suffix = "-adaptive" if design_name == "wsd" else "-cosine-adaptive"
    opts = dataclasses.replace(opts, design=design_name, out=opts.out or Path(f"study/{opts.variant}{suffix}"))
    st = _setup(opts)
    st.runs, st.cfgs = plan(st.base + launch_args(opts, st.jobs))
    st.trainable = [r for r in st.runs if not r.skip_reason]
    points = design_points(st.runs)
    if not points:
        raise ConfigError(f"sweep {st.preset.sweep}: every run is skipped ({st.runs[0].skip_reason})")
    target, convention = parse_target(ad.target, ad.law), st.runs[0].convention
    fixed = fixed_design(st, ad.fixed, target, ad.level, ad.law)
    whole = {"runs": len(points), "flops": design_flops(points), "design": design_name}
    goal = ad.width if ad.width is not None else fixed.get("width")
    if goal is None:
        raise ConfigError("--adaptive needs the interval to reach: give --width W or --fixed DIR (a fixed study's folder)")
    max_flops = ad.max_flops if ad.max_flops is not None else fixed["flops"]
    budgets = sorted({r.budget for r in points})
    seed = seed_design(points, ad.seed_budgets, ad.seed_widths)
    if len(seed) < SEED_POINTS:
        raise ConfigError(f"--seed-budgets={ad.seed_budgets} --seed-widths={ad.seed_widths or 'all'}: the seed design has "
                          f"{len(seed)} points; the law's 5 parameters need at least {SEED_POINTS}: give more budgets or widths")
    if design_flops(seed) > max_flops:
        raise ConfigError(f"--max-flops={max_flops:.3g} is smaller than the seed design's {design_flops(seed):.3g} FLOPs")
    print(f"[adaptive] sweep {st.preset.sweep} ({design_name} design): seed {len(seed)} points (budgets "
          f"{', '.join(f'{b:.3g}' for b in budgets[:ad.seed_budgets])}); stop when {ad.target} is at most {goal:.4g} "
          f"wide or {max_flops:.3g} FLOPs are spent (the fixed design: {fixed['flops']:.3g}; this whole sweep: "
          f"{whole['flops']:.3g})", flush=True)
    extra = pool_overrides(st, ad)
    pool = candidate_runs(st, extra)
    n_candidates = len(design_points(pool)) - len(seed)
    print(f"[adaptive] candidates: {n_candidates} points ({ad.pool} pool; the sweep's own: {len(points) - len(seed)})",
          flush=True)
    design = list(seed)
    train(st, extra, seed, seed, pool, "seed")
    rounds = loop(st, ad, extra, pool, design, target, goal, max_flops)
    notes: list[str] = []
    folder = design_folder(st, design)
    results = fit_all(folder, convention, st.bootstrap, notes)[1]
    holdout = law_holdout(holdout_phase(st, results)[0], finished_runs(folder, convention), ad.law)
    used = design_flops(design)
    last = rounds[-1]
    summary = {
        "sweep": st.preset.sweep, "variant": opts.variant, "out": str(st.out), "convention": convention,
        "target": ad.target, "law": ad.law, "criterion": ad.criterion, "level": ad.level, "goal_width": goal, "max_flops": max_flops,
        "pool": ad.pool, "candidates": n_candidates, "stable": ad.stable, "min_dof": ad.min_dof,
        "design_name": design_name, "seed": {"budgets": ad.seed_budgets, "widths": ad.seed_widths, "runs": len(seed),
                                             "flops": design_flops(seed)},
        "reached": last["width"] <= goal, "rounds": rounds, "runs": len(design),
        "design": [{"width": r.shape["width"], "depth": r.shape["depth"], "budget": r.budget, "cost": r.own_compute,
                    "run_id": r.run_id, "trunk": r.trunk} for r in design],
        "flops": used, "fixed": fixed, "flops_share": used / fixed["flops"], "whole_sweep": whole,
        "whole_sweep_share": used / whole["flops"], "estimate": last["estimate"],
        "interval": [last["low"], last["high"]], "width": last["width"], "holdout": holdout,
        "wall_time": time.time() - t_start}
    atomic_write_json(st.out / "adaptive.json", summary)
    atomic_write_text(st.out / "adaptive.md", markdown(summary))
    return summary


def resolved_pool(pool: str | None, design_name: str) -> str:
    """The candidate pool: the one asked for, else the design's default (``POOL``); ConfigError for an unknown
    pool or one the design cannot take."""
    pool = pool or POOL[design_name]
    if pool not in POOLS:
        raise ConfigError(f"--pool={pool!r} is unknown: choose {', '.join(POOLS)}")
    if design_name == "wsd" and pool not in WSD_POOLS:
        raise ConfigError(f"--pool={pool} with --design wsd is not supported: the candidates of a WSD design are "
                          "cooldown branches of its own trunks (--pool sweep or budgets), or choose --design cosine")
    return pool


def pool_overrides(st: Study, ad: Adaptive) -> list[str]:
    """The overrides that widen the sweep's grid into the pool (none for ``sweep``): ``budgets`` adds the midpoint
    budgets, ``inside`` also the widths between, ``wide`` also those beside. Every launch of the study carries
    them, so that a WSD trunk keeps a checkpoint where each candidate branch starts."""
    if ad.pool == "sweep":
        return []
    return widened_grid(st.cfgs[0], beside=ad.pool == "wide", widths=ad.pool != "budgets")


def candidate_runs(st: Study, extra: list[str]) -> list[Any]:
    """The planned runs a round may choose from: the sweep's, and with a widened pool (``extra``:
    ``pool_overrides``) the widened grid's runs its rules do not skip (the same run of both plans once: run
    directories are config-hashed, so a WSD sweep's trunks are the same runs in both)."""
    if not extra:
        return list(st.runs)
    wide, _ = plan(st.base + launch_args(st.opts, st.jobs) + extra)
    known = {r.run_id for r in st.runs}
    return list(st.runs) + [r for r in wide if r.run_id not in known and not r.skip_reason]


def loop(st: Study, ad: Adaptive, extra: list[str], pool_runs: list[Any], design: list[Any], target: Any,
         goal: float, max_flops: float) -> list[dict[str, Any]]:
    """Fit -> stop? -> propose (from ``pool_runs``, launched with ``extra``) -> train, until the interval is at
    most ``goal`` wide or the FLOPs are spent.

    Only the design's runs count (``design``, extended in place): records of other runs of the sweep in the
    folder (a fixed study sharing it) are reused when a round chooses them, so a rerun retraces the rounds."""
    from analysis.next_run import LAW_PARAMS, goal_met

    rounds: list[dict[str, Any]] = []
    batch = ad.batch
    while True:
        refresh(pool_runs)
        bad = [r for r in design if r.state != "completed"]
        if bad:
            raise StudyError(f"{len(bad)} run(s) of the design did not complete ({', '.join(r.run_id + ': ' + (r.state or 'missing') for r in bad)}); "
                             f"see {st.log_path}; relaunch to resume")
        done = list(design)
        ids = {r.run_id for r in done}
        runs = finished_runs(st.group_dir, st.runs[0].convention)
        runs = with_prefixes(runs[runs["run_id"].isin(ids)], done)
        est, lo, hi = target_interval(runs, target, ad.level, ad.law)
        used = design_flops(done)
        row = {"round": len(rounds), "runs": len(done), "flops": used, "estimate": est, "low": lo, "high": hi,
               "width": hi - lo, "added": []}
        rounds.append(row)
        print(f"[adaptive] round {row['round']}: {len(done)} runs, {used:.3g} FLOPs: {ad.target} = {est:.4g} "
              f"({lo:.4g} to {hi:.4g}, width {hi - lo:.4g}; goal {goal:.4g})", flush=True)
        if goal_met(rounds, goal, len(done), stable=ad.stable, min_dof=ad.min_dof, n_params=LAW_PARAMS[ad.law]):
            row["stop"] = "reached"
            return rounds
        pool = candidate_pool(pool_runs, ids, finished=True)
        if len(pool) == 0 or max_flops - used < (pool["cost"] + unpaid_trunks(pool, done)).min():
            row["stop"] = "pool empty" if len(pool) == 0 else "budget spent"
            return rounds
        table, warns = choose(runs, pool, target, criterion=ad.criterion, budget=max_flops - used, n=batch,
                              level=ad.level, sweep=f"sweep {st.preset.sweep}", law=ad.law)
        for w in warns:
            print(f"[adaptive] warning: {w}", flush=True)
        table = up_to_goal(table, goal)
        chosen = [pool_runs[i] for i in table["candidate"]]
        row["added"] = [{"width": r.shape["width"], "budget": r.budget, "cost": float(c)}
                        for r, c in zip(chosen, table["cost"])]  # a branch: its cooldown and the trunk it adds
        row["expected_width"] = float(table["width"].iloc[-1])
        design += chosen
        train(st, extra, chosen, design, pool_runs, f"round {row['round'] + 1}")


def law_holdout(holdout: dict[str, Any], runs: Any, law: str) -> dict[str, Any]:
    """The held-out check under the design's ``law``: with ``kaplan``, its fit to the design's ``runs`` predicts the
    held-out run (Approach 3's prediction kept as ``predicted_parametric``, with the run chosen by its N_opt)."""
    if law != "kaplan":
        return holdout
    from analysis.kaplan_joint import kaplan_prediction

    pred = kaplan_prediction(*(runs[c].to_numpy(float) for c in ("N", "D", "loss")), holdout["N"], holdout["D"])
    out = {k: v for k, v in holdout.items() if k not in ("inside_interval", "quantile", "position")}  # Approach 3's band
    out.update(law=law, predicted_parametric=holdout["predicted"], predicted=pred, predicted_low=None, predicted_high=None)
    if holdout.get("measured") is not None:
        out["rel_error"] = pred / holdout["measured"] - 1
        out["within_target"] = abs(out["rel_error"]) <= 0.02
    return out


def seed_design(trainable: list[Any], n_budgets: int, n_widths: int | None) -> list[Any]:
    """The seed: the runs of the ``n_budgets`` smallest budgets; with ``n_widths``, per budget that many of its
    widths spread evenly from the smallest to the largest (a cheaper seed, still spanning the shapes)."""
    import numpy as np

    budgets = sorted({r.budget for r in trainable})[:n_budgets]
    seed = []
    for b in budgets:
        runs = sorted((r for r in trainable if r.budget == b), key=lambda r: (r.shape["width"], r.shape["depth"]))
        if n_widths is not None and n_widths < len(runs):
            runs = [runs[i] for i in np.unique(np.round(np.linspace(0, len(runs) - 1, n_widths)).astype(int))]
        seed += runs
    return seed


def up_to_goal(table: Any, goal: float) -> Any:
    """The batch up to and including its first run expected to bring the interval to ``goal`` (the rest would be
    spent past the goal: near it the design goes one run at a time)."""
    reached = (table["width"] <= goal).to_numpy()
    return table.iloc[: int(reached.argmax()) + 1] if reached.any() else table


def design_folder(st: Study, design: list[Any]) -> Path:
    """``DIR/design/<group>``: copies of the design's records (no checkpoints), the folder its fits read."""
    import shutil

    folder = st.out / "design" / st.group_dir.name
    shutil.rmtree(folder, ignore_errors=True)
    for r in design:
        shutil.copytree(r.run_dir, folder / Path(r.run_dir).name, ignore=shutil.ignore_patterns("checkpoints", "wandb"))
    return folder


def train(st: Study, extra: list[str], runs: list[Any], design: list[Any], planned: list[Any], label: str) -> None:
    """Train exactly ``runs`` of ``design`` (which ends with them), launched with the pool's ``extra`` overrides:
    first the trunks its branches need trained further (``trunk_stops``: each stopped at the furthest branch
    point of the design), then the runs."""
    base = st.base + extra
    stops = trunk_stops(design, planned)
    launch_each(st, trunk_commands(base, stops), [t for t, _ in stops], f"{label} trunks")
    todo = [r for r in runs if r.to_train]
    launch_each(st, launch_overrides(base, todo, grouped=False), todo, label)


def launch_each(st: Study, commands: list[list[str]], todo: list[Any], label: str) -> None:
    """One ``scaling-train --multirun`` per run, ``st.jobs`` at a time (``local``), or one launch after the other
    through the study's launcher."""
    if not todo:
        return
    if st.opts.launcher != "local":
        for cmd, r in zip(commands, todo):
            launch(st.opts, cmd, [r], st.jobs, st.log_path, label, by_shape=False)
        return
    extra = [*POOL_ARGS, *launch_args(st.opts, st.jobs)]
    pending = [(f"{label.replace(' ', '')}-{r.run_id}", [*cmd, *extra]) for cmd, r in zip(commands, todo)]
    run_pool(pending, st.jobs, st.log_path, Progress(todo, label), label)


def markdown(s: dict[str, Any]) -> str:
    """``adaptive.md``: the rounds, the comparison with the fixed design and the held-out check."""
    f, w, h, pct = s["fixed"], s["whole_sweep"], s["holdout"], f"{100 * s['level']:g}%"
    points = "cooldown branches (each trunk counted once)" if w["design"] == "wsd" else "runs"
    lines = [f"# Adaptive study `{s['sweep']}` ({w['design']} design)", "",
             f"Target {s['target']} ({pct} Laplace interval of the {s.get('law', 'parametric')} law), criterion {s['criterion']}, {s['pool']} "
             f"pool, seed {s['seed']['runs']} points: stop at width {s['goal_width']:.4g}{_rule(s)} or {s['max_flops']:.3g} "
             f"FLOPs. {'Reached' if s['reached'] else 'Not reached'} "
             f"with {s['runs']} {points} and {s['flops']:.3g} FLOPs: {100 * s['flops_share']:.1f}% of the fixed design "
             f"({f['design']}, {f['runs']} runs, {f['flops']:.3g} FLOPs) and {100 * s['whole_sweep_share']:.1f}% of this "
             f"sweep's whole design ({w['runs']} points, {w['flops']:.3g} FLOPs).", "",
             "| round | runs | FLOPs | estimate | interval | width | added next |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in s["rounds"]:
        added = ", ".join(f"w{a['width']} at {a['budget']:.3g}" for a in r["added"]) or r.get("stop", "")
        lines.append(f"| {r['round']} | {r['runs']} | {r['flops']:.3g} | {r['estimate']:.4g} | {r['low']:.4g} to "
                     f"{r['high']:.4g} | {r['width']:.4g} | {added} |")
    if "width" in f:
        lines += ["", f"Fixed design ({f['design']}, {f['finished']} runs in {f['dir']}): {s['target']} = {f['estimate']:.4g} "
                      f"({f['interval'][0]:.4g} to {f['interval'][1]:.4g}, width {f['width']:.4g})."]
    err = h.get("rel_error")
    lines += ["", f"Held-out run (C = {h['C']:.3g}, width {h['shape']['width']}): predicted {h['predicted']:.4f}, measured "
                  f"{h.get('measured', float('nan')):.4f}, error {100 * err:+.2f}%{_by_law(h)}" if err is not None else "", ""]
    return "\n".join(lines)


def _by_law(h: dict[str, Any]) -> str:
    """Which law predicted the held-out run, where it is not Approach 3 (whose prediction follows)."""
    return f" (by the {h['law']} law; Approach 3 predicted {h['predicted_parametric']:.4f})" if "law" in h else ""


def _rule(s: dict[str, Any]) -> str:
    stable = f", the estimate within {s['stable']:g} x the half-width of the last round's" if s.get("stable") else ""
    dof = f", at least {s['min_dof']} residual degrees of freedom" if s.get("min_dof") else ""
    return stable + dof
