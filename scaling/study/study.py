"""A complete scaling study: sweep, fit, held-out check, report (``scaling-study``).

1. Sweep: the named IsoFLOP sweep (``sweeps/sweep/study.yaml``, or ``study_quick.yaml`` with ``--quick``)
   is launched through Hydra multirun (``scaling-train --multirun``), at most ``--jobs`` runs at a time,
   into ``DIR/runs``. Run directories are config-hashed, so a relaunch returns finished runs unchanged.
2. Fit: Approach 2 (IsoFLOP parabolas) and Approach 3 (parametric law) with bootstrap intervals.
3. Check: one held-out run at ``--holdout-factor`` (4) x the largest budget, at the compute-optimal size
   Approach 3 predicts (rounded to a valid shape of the sweep's family); its loss is predicted before it
   trains and compared with the measurement.
4. Report: ``DIR/report.md`` with its plots, ``DIR/fit.json`` and ``DIR/study.json``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scaling.conventions import params_of
from scaling.errors import ConfigError
from scaling.io import atomic_write_json, atomic_write_text
from scaling.run.record import RunRecord
from scaling.study.fits import _f, _family, _quantile_in_band, exponents, fit_all, holdout_shape
from scaling.study.launch import _describe, launch, launch_args, plan, refresh
from scaling.study.options import PRESETS, Options, StudyError, check_out_dir, cores
from scaling.study.report import _ordinal, _settings, markdown, plot_holdout


def run_study(opts: Options) -> dict[str, Any]:
    """Sweep, fit, held-out check and report; returns the ``study.json`` object."""
    t_start = time.time()
    sweep_name, default_out, default_bootstrap = PRESETS[opts.variant]
    out = check_out_dir(opts.out or Path(default_out))
    runs_dir = out / "runs"
    bootstrap = default_bootstrap if opts.bootstrap is None else opts.bootstrap
    jobs = opts.jobs or (cores() if opts.launcher != "slurm" else 1)
    base = [f"+sweep={sweep_name}", f"runs_dir={runs_dir}", *opts.overrides]
    log_path = out / "logs" / "launch.log"

    # 1. The sweep.
    runs, cfgs = plan(base + launch_args(opts, jobs))
    first_cfg = cfgs[0]
    trainable = [r for r in runs if not r.skip_reason]
    if not trainable:
        raise ConfigError(f"sweep {sweep_name}: every run is skipped ({runs[0].skip_reason})")
    reused_dirs = {r.run_dir for r in trainable if not r.to_train}
    reused = len(reused_dirs)
    to_train = len(trainable) - reused
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    sizes = sorted({r.shape["width"] for r in runs})
    convention = runs[0].convention
    print(f"[study] sweep {sweep_name}: {len(runs)} runs ({len(budgets)} budgets x {len(sizes)} sizes, "
          f"{len(runs) - len(trainable)} skipped by its rules) in {runs_dir}", flush=True)
    if to_train:
        how = f"{jobs} at a time" if opts.launcher == "local" else opts.launcher
        print(f"[study] {to_train} to train ({how}, launcher {opts.launcher}); {reused} already completed, reused", flush=True)
    else:
        print(f"[study] all {reused} sweep runs already completed: reusing their records, only refitting", flush=True)
    launch(opts, base, runs, jobs, log_path, "sweep")
    refresh(runs)
    bad = [r for r in runs if not r.skip_reason and r.state != "completed"]
    if bad:
        raise StudyError(f"{len(bad)} sweep run(s) did not complete ({', '.join(_describe(r) + ': ' + (r.state or 'missing') for r in bad)}); "
                         f"see {Path(runs[0].run_dir).parent / 'summary.md'} and {log_path}; relaunch to resume")

    # 2. Fits.
    print(f"[study] fitting Approach 2 and Approach 3 ({bootstrap} bootstrap resamples)", flush=True)
    notes: list[str] = []
    group_dir = Path(runs[0].run_dir).parent
    table, results, curves = fit_all(group_dir, convention, bootstrap, notes)

    # 3. The held-out run: predicted before it trains.
    from analysis.allocation import optimal_allocation, predict_loss
    par = results["parametric"]
    c_hold = opts.holdout_factor * max(budgets)
    alloc = optimal_allocation(par, [c_hold]).iloc[0]
    head_dim, depth = _family(trainable)
    shape = holdout_shape(trainable[0], float(alloc.N_opt), head_dim, depth, first_cfg)
    hold_base = base + [f"group={Path(runs[0].run_dir).parent.name}-holdout", f"sweep.budgets=[{c_hold!r}]",
                        f"sweep.shapes=[{{width:{shape['width']},depth:{shape['depth']}}}]", "sweep.min_steps=1",
                        "sweep.min_tokens_per_param=0", "++sweep.max_tokens_per_param=null"]
    hold_args = launch_args(opts, 1)
    (hold,), _ = plan(hold_base + hold_args)
    if hold.skip_reason:
        raise ConfigError(f"the held-out run (C={c_hold:.3g}, width {shape['width']}) is skipped: {hold.skip_reason}; "
                          f"lower --holdout-factor")
    n_hold = int(hold.params[params_of(convention)])
    pred = predict_loss(par, [n_hold], [hold.tokens]).iloc[0]
    holdout: dict[str, Any] = {
        "C": float(hold.compute), "factor": opts.holdout_factor, "budget": c_hold, "N_opt": float(alloc.N_opt),
        "D_opt": float(alloc.D_opt), "loss_at_optimum": _f(alloc.loss_opt), "shape": shape, "N": n_hold,
        "D": int(hold.tokens), "run_dir": hold.run_dir, "predicted": float(pred["loss"]),
        "predicted_low": _f(pred.get("loss_low")), "predicted_high": _f(pred.get("loss_high")),
        "level": par.level}
    atomic_write_json(out / "prediction.json", holdout)
    state = "already completed, reused" if not hold.to_train else "training it now (one run)"
    print(f"[study] held-out run: C={hold.compute:.3g} ({opts.holdout_factor:g} x {max(budgets):.3g}), predicted "
          f"N_opt={alloc.N_opt:.3g} -> width {shape['width']} depth {shape['depth']} (N={n_hold:,}, D={hold.tokens:,}); "
          f"predicted loss {pred['loss']:.4f}; {state}", flush=True)
    launch(opts, hold_base, [hold], 1, log_path, "held-out")
    refresh([hold])
    result = RunRecord(Path(hold.run_dir)).read_result() or {}
    if result.get("status") != "completed":
        raise StudyError(f"the held-out run did not complete ({result.get('status', 'missing')}: {result.get('error', '')}); "
                         f"log: {log_path}")
    measured = float(result["val_loss"])
    holdout["measured"] = measured
    holdout["rel_error"] = (holdout["predicted"] - measured) / measured
    holdout["within_target"] = abs(holdout["rel_error"]) <= 0.02
    lo, hi = holdout["predicted_low"], holdout["predicted_high"]
    if lo is not None and hi is not None:
        holdout["inside_interval"] = lo <= measured <= hi
        quantile = _quantile_in_band(par, n_hold, hold.tokens, measured)
        holdout["quantile"] = quantile
        holdout["position"] = (f"{'inside' if holdout['inside_interval'] else 'outside'} the {100 * par.level:g}% interval"
                               + (f", at its {_ordinal(round(100 * quantile))} percentile of the bootstrap predictions"
                                  if quantile is not None else ""))

    # 4. Report.
    from analysis import write_report

    written = write_report(out, results, runs=table, curves=curves, notes=notes, source=str(group_dir),
                           budgets=budgets + [c_hold])
    fit_report = (out / "report.md").read_text()
    plot_holdout(out / "holdout", table, par, holdout)
    runs_table = []
    for r in trainable:
        res = RunRecord(Path(r.run_dir)).read_result() or {}
        runs_table.append({"budget": r.budget, "width": r.shape["width"], "depth": r.shape["depth"],
                           "N": int(r.params[params_of(convention)]), "D": int(r.tokens), "steps": int(r.steps),
                           "val_loss": res.get("val_loss"), "wall_time": res.get("wall_time"),
                           "status": res.get("status", "missing"), "reused": r.run_dir in reused_dirs,
                           "run_dir": r.run_dir})
    study = {
        "sweep": sweep_name, "variant": opts.variant, "out": str(out), "data": str(first_cfg.data.source),
        "convention": convention, "params": params_of(convention), "budgets": budgets, "sizes": sizes,
        "runs": {"total": len(trainable), "skipped": len(runs) - len(trainable), "trained_now": to_train
                 + (1 if state.startswith("training") else 0), "reused": reused + (0 if state.startswith("training") else 1)},
        "launcher": opts.launcher, "jobs": jobs, "bootstrap": bootstrap, "overrides": opts.overrides,
        "settings": _settings(first_cfg),
        "exponents": exponents(results), "holdout": holdout, "wall_time": time.time() - t_start,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": sorted({p.name for p in written.values()} | {"holdout.png", "report.md", "study.json"}),
    }
    atomic_write_text(out / "report.md", markdown(study, runs_table, fit_report))
    atomic_write_json(out / "study.json", study)
    return study
