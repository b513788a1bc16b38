"""A complete scaling study: sweep, fit, held-out check, report (``scaling-study``).

1. Sweep: the named IsoFLOP sweep (default ``sweeps/sweep/study_wsd.yaml``: per width one constant-lr trunk
   with a cooldown branch at every budget; ``--design cosine``: ``study.yaml``, a separate cosine run per
   point; ``--quick``: the ``_quick`` variants) is launched through Hydra multirun into ``DIR/runs``, each
   worker process training one width's runs in turn. Run directories are config-hashed, so a relaunch
   returns finished runs unchanged.
2. Fit: Approach 2 (IsoFLOP parabolas) and Approach 3 (parametric law) with bootstrap intervals.
3. Check: one held-out run at ``--holdout-factor`` (4) x the largest budget, at the compute-optimal size
   Approach 3 predicts (rounded to a valid shape of the sweep's family), trained as an ordinary run with
   the sweep's schedule; its loss is predicted before it trains and compared with the measurement.
4. Report: ``DIR/report.md`` with its plots, ``DIR/fit.json`` and ``DIR/study.json``; the W&B runs of the
   sweep, the held-out run and the study's analysis run in one folder, ``DIR/runs/<group>/wandb``.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from scaling.conventions import params_of
from scaling.errors import ConfigError
from scaling.io import atomic_write_json, atomic_write_text
from scaling.run.record import RunRecord
from scaling.study.costs import costs, fixed_design, log_analysis_run, write_sweep_summary
from scaling.study.fits import _f, _family, _quantile_in_band, exponents, fit_all, fit_laws, holdout_shape
from scaling.study.launch import _describe, launch, launch_args, plan, refresh
from scaling.study.options import Options, Preset, StudyError, check_out_dir, cores, idle_cores
from scaling.study.predicted import (PREDICT_LAW, choose_trained, eval_overrides, launch_trained, predict_points,
                                     predicted_summary)
from scaling.study.report import _ordinal, _settings, markdown, plot_holdout
from scaling.study.workers import warm_up


@dataclasses.dataclass
class Study:
    """What the phases share: options, folders, and what each phase found and spent."""

    opts: Options
    preset: Preset
    out: Path
    jobs: int
    bootstrap: int
    base: list[str]
    log_path: Path
    phases: dict[str, float] = dataclasses.field(default_factory=dict)  # wall seconds per phase
    runs: list[Any] = dataclasses.field(default_factory=list)
    cfgs: list[Any] = dataclasses.field(default_factory=list)
    trainable: list[Any] = dataclasses.field(default_factory=list)
    reused_dirs: set[str] = dataclasses.field(default_factory=set)
    predicted: list[Any] = dataclasses.field(default_factory=list)  # --predict-branches: the branches not trained
    points: Any = None  # their predicted IsoFLOP points
    measured_only: dict[str, Any] = dataclasses.field(default_factory=dict)  # fits without the predicted points
    fixed: dict[str, Any] | None = None  # the fixed design's runs and FLOPs, once priced (costs.fixed_design)

    @property
    def budgets(self) -> list[float]:
        """The sweep's budgets, of its trained and its predicted points."""
        return sorted({r.budget for r in self.runs + self.predicted if r.budget is not None})

    @property
    def group_dir(self) -> Path:
        return Path(self.runs[0].run_dir).parent

    def timed(self, phase: str, t0: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + time.time() - t0


def run_study(opts: Options) -> dict[str, Any]:
    """Sweep, fit, held-out check and report; returns the ``study.json`` object."""
    t_start = time.time()
    st = _setup(opts)
    sweep_phase(st)
    table, results, curves, notes = fit_phase(st)
    analysis: dict[str, Any] = {}
    holdout, hold = holdout_phase(st, results, before_training=lambda holdout: analysis.update(
        analysis_phase(st, table, results, curves, notes, holdout)))
    return report_phase(st, table, results, analysis, holdout, hold, t_start)


def _setup(opts: Options) -> Study:
    opts.check()
    preset = opts.preset
    out = check_out_dir(opts.out or Path(preset.out))
    bootstrap = preset.bootstrap if opts.bootstrap is None else opts.bootstrap
    jobs = opts.jobs or (cores() if opts.launcher != "slurm" else 1)
    base = [f"+sweep={preset.sweep}", f"runs_dir={out / 'runs'}", *opts.overrides]
    if opts.predict_branches:
        base += eval_overrides(preset.predict_eval_every)
    return Study(opts, preset, out, jobs, bootstrap, base, out / "logs" / "launch.log")


def sweep_phase(st: Study) -> None:
    """Plan the sweep, train what is left of it, and check that every run it trains completed."""
    t0 = time.time()
    warm_up()  # the workers' server imports torch and Hydra on another core while the sweep is planned
    planned, st.cfgs = plan(st.base + launch_args(st.opts, st.jobs))
    st.runs, st.predicted = choose_trained(planned, st.opts.predict_branches) if st.opts.predict_branches \
        else (planned, [])
    st.trainable = [r for r in st.runs if not r.skip_reason]
    if not st.trainable:
        raise ConfigError(f"sweep {st.preset.sweep}: every run is skipped ({st.runs[0].skip_reason})")
    st.reused_dirs = {r.run_dir for r in st.trainable if not r.to_train}
    budgets, sizes = st.budgets, sorted({r.shape["width"] for r in st.runs})
    branches = sum(1 for r in st.trainable if r.role == "branch")
    how = (f"{sum(1 for r in st.trainable if r.role == 'trunk')} trunks and {branches} cooldown branches"
           if branches else "separate runs") + (f"; {len(st.predicted)} more branch points predicted, not trained"
                                                 if st.predicted else "")
    print(f"[study] sweep {st.preset.sweep}: {len(st.runs)} runs ({len(budgets)} budgets x {len(sizes)} sizes, {how}; "
          f"{len(st.runs) - len(st.trainable)} skipped by its rules) in {st.group_dir.parent}", flush=True)
    to_train, reused = len(st.trainable) - len(st.reused_dirs), len(st.reused_dirs)
    if to_train:
        where = (f"{st.jobs} worker processes, each training one width's runs in turn" if st.opts.launcher == "local"
                 else f"{st.jobs} at a time" if st.opts.launcher == "submitit" else st.opts.launcher)
        print(f"[study] {to_train} to train ({where}, launcher {st.opts.launcher}); {reused} already completed, reused",
              flush=True)
    else:
        print(f"[study] all {reused} sweep runs already completed: reusing their records, only refitting", flush=True)
    st.timed("plan", t0)
    t0 = time.time()
    if st.opts.predict_branches:
        launch_trained(st.opts, st.base, st.runs, st.jobs, st.log_path)
    else:
        launch(st.opts, st.base, st.runs, st.jobs, st.log_path, "sweep", on_spare_core=lambda: _on_spare_core(st))
    refresh(st.runs)
    write_sweep_summary(st.group_dir, st.preset.sweep, st.runs)
    st.timed("sweep", t0)
    bad = [r for r in st.runs if not r.skip_reason and r.state != "completed"]
    if bad:
        raise StudyError(f"{len(bad)} sweep run(s) did not complete ({', '.join(_describe(r) + ': ' + (r.state or 'missing') for r in bad)}); "
                         f"see {st.group_dir / 'summary.md'} and {st.log_path}; relaunch to resume")


def _on_spare_core(st: Study) -> None:
    """Work of later phases that needs no sweep result, on the core the sweep's first finished worker left
    idle: the fit's imports (pandas, scipy, matplotlib: seconds on a small CPU) and the report's pricing of
    the fixed design without branches."""
    importlib.import_module("analysis")
    if st.preset.holdout_overrides:
        try:
            st.fixed = fixed_design(st.preset, st.opts, st.group_dir.parent)
        except Exception:  # never stop the sweep for it: the report prices it again and says what is wrong
            st.fixed = None


def fit_phase(st: Study) -> tuple[Any, dict[str, Any], Any, list[str]]:
    """Approach 2 and 3 (on measured and predicted points with --predict-branches, and on the measured alone)."""
    notes: list[str] = []
    if st.predicted:
        t0 = time.time()
        print(f"[study] predicting {len(st.predicted)} branch points from their trunks and trained branches "
              f"(curve law {PREDICT_LAW})", flush=True)
        st.points = predict_points(st.group_dir, st.predicted, notes)
        st.timed("predict", t0)
    t0 = time.time()
    print(f"[study] fitting Approach 2 and Approach 3 ({st.bootstrap} bootstrap resamples)", flush=True)
    table, results, curves = fit_all(st.group_dir, st.runs[0].convention, st.bootstrap, notes, predicted=st.points)
    if st.points is not None:
        mo_notes: list[str] = []
        st.measured_only = {"results": fit_laws(table[~table["predicted"]], st.bootstrap, mo_notes, required=False,
                                                kaplan=False), "notes": mo_notes}
    st.timed("fit", t0)
    return table, results, curves, notes


def holdout_phase(st: Study, results: dict[str, Any],
                  before_training: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], Any]:
    """Predict the held-out run's loss, write the prediction (then call ``before_training``), train the run
    and compare."""
    from analysis.allocation import optimal_allocation, predict_loss

    t0 = time.time()
    par, convention = results["parametric"], st.runs[0].convention
    c_hold = st.opts.holdout_factor * max(r.budget for r in st.runs if r.budget is not None)
    alloc = optimal_allocation(par, [c_hold]).iloc[0]
    head_dim, depth = _family(st.trainable)
    shape = holdout_shape(st.trainable[0], float(alloc.N_opt), head_dim, depth, st.cfgs[0])
    logger = [] if any(o.lstrip("+~").startswith("logger=") for o in st.opts.overrides) else \
        [f"logger={'wandb' if st.cfgs[0].logger.wandb.enabled else 'none'}"]  # the sweep's, in its W&B folder
    hold_base = [f"+sweep={st.preset.holdout_sweep}", f"runs_dir={st.out / 'runs'}", *logger, *st.opts.overrides,
                 *st.preset.holdout_overrides, f"group={st.group_dir.name}-holdout", f"sweep.budgets=[{c_hold!r}]",
                 f"sweep.shapes=[{{width:{shape['width']},depth:{shape['depth']}}}]", "sweep.min_steps=1",
                 "sweep.min_tokens_per_param=0", "++sweep.max_tokens_per_param=null",
                 f"++logger.wandb.dir={st.group_dir}"]
    (hold,), _ = plan(hold_base + launch_args(st.opts, 1))
    if hold.skip_reason:
        raise ConfigError(f"the held-out run (C={c_hold:.3g}, width {shape['width']}) is skipped: {hold.skip_reason}; "
                          f"lower --holdout-factor")
    n_hold = int(hold.params[params_of(convention)])
    pred = predict_loss(par, [n_hold], [hold.tokens]).iloc[0]
    holdout: dict[str, Any] = {
        "C": float(hold.compute), "factor": st.opts.holdout_factor, "budget": c_hold, "N_opt": float(alloc.N_opt),
        "D_opt": float(alloc.D_opt), "loss_at_optimum": _f(alloc.loss_opt), "shape": shape, "N": n_hold,
        "D": int(hold.tokens), "run_dir": hold.run_dir, "predicted": float(pred["loss"]),
        "predicted_low": _f(pred.get("loss_low")), "predicted_high": _f(pred.get("loss_high")),
        "level": par.level, "schedule": "wsd" if st.preset.holdout_overrides else "cosine"}
    atomic_write_json(st.out / "prediction.json", holdout)
    state = "already completed, reused" if not hold.to_train else "training it now (one run)"
    print(f"[study] held-out run: C={hold.compute:.3g} ({st.opts.holdout_factor:g} x {c_hold / st.opts.holdout_factor:.3g}), "
          f"predicted N_opt={alloc.N_opt:.3g} -> width {shape['width']} depth {shape['depth']} (N={n_hold:,}, "
          f"D={hold.tokens:,}); predicted loss {pred['loss']:.4f}; {state}", flush=True)
    st.timed("holdout_plan", t0)
    if before_training is not None:
        before_training(holdout)
    t0 = time.time()
    threads = None
    if st.opts.launcher in ("local", "basic") and hold.to_train:
        n = max(1, min(st.jobs, int(idle_cores() + 0.25)))
        threads = [f"train.threads={n}"]
        print(f"[study] held-out run: {n} thread(s) ({st.jobs} cores, the idle ones used)", flush=True)
    holdout["trained_now"] = bool(hold.to_train)  # before the launch: refresh() then reads it as completed
    launch(st.opts, hold_base, [hold], 1, st.log_path, "held-out", extra=threads, by_shape=False)
    refresh([hold])
    st.timed("holdout", t0)
    _measure(holdout, hold, par)
    if st.measured_only:
        holdout["measured_only"] = _measured_only_check(holdout, st.measured_only["results"].get("parametric"))
    return holdout, hold


def _measure(holdout: dict[str, Any], hold: Any, par: Any) -> None:
    result = RunRecord(Path(hold.run_dir)).read_result() or {}
    if result.get("status") != "completed":
        raise StudyError(f"the held-out run did not complete ({result.get('status', 'missing')}: {result.get('error', '')})")
    measured = float(result["val_loss"])
    holdout["measured"] = measured
    holdout["wall_time"] = result.get("wall_time")
    holdout["rel_error"] = (holdout["predicted"] - measured) / measured
    holdout["within_target"] = abs(holdout["rel_error"]) <= 0.02
    lo, hi = holdout["predicted_low"], holdout["predicted_high"]
    if lo is not None and hi is not None:
        holdout["inside_interval"] = lo <= measured <= hi
        quantile = _quantile_in_band(par, holdout["N"], holdout["D"], measured)
        holdout["quantile"] = quantile
        holdout["position"] = (f"{'inside' if holdout['inside_interval'] else 'outside'} the {100 * par.level:g}% interval"
                               + (f", at its {_ordinal(round(100 * quantile))} percentile of the bootstrap predictions"
                                  if quantile is not None else ""))


def _measured_only_check(holdout: dict[str, Any], par: Any) -> dict[str, Any]:
    """The held-out run's loss as Approach 3 fitted to the measured points alone predicts it."""
    from analysis.allocation import predict_loss

    if par is None:
        return {"fitted": False}
    pred = predict_loss(par, [holdout["N"]], [holdout["D"]]).iloc[0]
    out = {"fitted": True, "predicted": float(pred["loss"]), "predicted_low": _f(pred.get("loss_low")),
           "predicted_high": _f(pred.get("loss_high")), "n_points": int(par.diagnostics.get("n_points", 0))}
    out["rel_error"] = (out["predicted"] - holdout["measured"]) / holdout["measured"]
    out["within_target"] = abs(out["rel_error"]) <= 0.02
    if out["predicted_low"] is not None and out["predicted_high"] is not None:
        out["inside_interval"] = out["predicted_low"] <= holdout["measured"] <= out["predicted_high"]
    return out


def analysis_phase(st: Study, table: Any, results: dict[str, Any], curves: Any, notes: list[str],
                   holdout: dict[str, Any]) -> dict[str, Any]:
    """The analysis report and its plots (they need the held-out budget, not its loss), and the study's W&B
    analysis run, logged before the held-out run trains: the held-out run is then the newest run of the
    sweep's W&B folder, the one ``wandb leet`` shows first."""
    from analysis import write_report

    t0 = time.time()
    budgets = st.budgets
    written = write_report(st.out, results, runs=table, curves=curves, notes=notes, source=str(st.group_dir),
                           budgets=budgets + [holdout["budget"]])
    out = {"fit_report": (st.out / "report.md").read_text(), "files": sorted(p.name for p in written.values()),
           "wandb": _wandb_info(st, st.cfgs[0])}
    if out["wandb"]:
        log_analysis_run(st.out, st.group_dir, st.cfgs[0], results, table, out["wandb"])
    st.timed("analysis", t0)
    return out


def report_phase(st: Study, table: Any, results: dict[str, Any], analysis: dict[str, Any],
                 holdout: dict[str, Any], hold: Any, t_start: float) -> dict[str, Any]:
    t0 = time.time()
    plot_holdout(st.out / "holdout", table, par=results["parametric"], holdout=holdout)
    convention = st.runs[0].convention
    runs_table = [_run_row(r, convention, st.reused_dirs) for r in st.trainable]
    runs_table += [_predicted_row(r, convention, st.points) for r in st.predicted]
    trained_hold = holdout.get("trained_now", hold.to_train)
    first_cfg = st.cfgs[0]
    study = {
        "sweep": st.preset.sweep, "variant": st.opts.variant, "design": st.opts.resolved_design, "out": str(st.out),
        "data": str(first_cfg.data.source), "convention": convention, "params": params_of(convention),
        "budgets": st.budgets,
        "sizes": sorted({r.shape["width"] for r in st.runs}),
        "runs": {"total": len(st.trainable), "skipped": len(st.runs) - len(st.trainable),
                 "trunks": sum(1 for r in st.trainable if r.role == "trunk"),
                 "branches": sum(1 for r in st.trainable if r.role == "branch"),
                 "predicted": len(st.predicted), "trained_now": len(st.trainable) - len(st.reused_dirs) + int(trained_hold),
                 "reused": len(st.reused_dirs) + int(not trained_hold)},
        "launcher": st.opts.launcher, "jobs": st.jobs, "bootstrap": st.bootstrap, "overrides": st.opts.overrides,
        "settings": _settings(first_cfg), "exponents": exponents(results), "holdout": holdout,
        "costs": costs(st.runs, hold, st.phases, st.preset, st.opts, st.fixed), "wandb": analysis.get("wandb"),
        "predicted_branches": predicted_summary(st.opts.predict_branches, st.preset.predict_eval_every, st.runs,
                                                st.predicted, st.points, st.measured_only) if st.predicted else None,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": sorted(set(analysis.get("files", [])) | {"holdout.png", "report.md", "study.json"}),
    }
    st.timed("report", t0)
    study["phases"] = dict(st.phases)
    study["wall_time"] = time.time() - t_start
    atomic_write_text(st.out / "report.md", markdown(study, runs_table, analysis.get("fit_report", "")))
    atomic_write_json(st.out / "study.json", study)
    return study


def _run_row(r: Any, convention: str, reused_dirs: set[str]) -> dict[str, Any]:
    res = RunRecord(Path(r.run_dir)).read_result() or {}
    return {"budget": r.budget, "width": r.shape["width"], "depth": r.shape["depth"], "role": r.role,
            "N": int(r.params[params_of(convention)]), "D": int(r.tokens), "own_D": int(r.own_tokens or r.tokens),
            "steps": int(r.steps), "val_loss": res.get("val_loss"), "wall_time": res.get("wall_time"),
            "status": res.get("status", "missing"), "reused": r.run_dir in reused_dirs, "run_dir": r.run_dir,
            "predicted": False}


def _predicted_row(r: Any, convention: str, points: Any) -> dict[str, Any]:
    """A branch point never trained: its planned sizes and predicted final loss (status ``predicted``)."""
    point = points[points["run_id"] == r.run_id].iloc[0]
    return {"budget": r.budget, "width": r.shape["width"], "depth": r.shape["depth"], "role": r.role,
            "N": int(r.params[params_of(convention)]), "D": int(r.tokens), "own_D": int(r.own_tokens),
            "steps": int(r.steps), "val_loss": float(point["loss"]), "wall_time": None, "status": "predicted",
            "reused": False, "run_dir": r.run_dir, "predicted": True}


def _wandb_info(st: Study, cfg: Any) -> dict[str, Any] | None:
    """The sweep's W&B folder and how to look at it, or None when the runs were not mirrored."""
    from scaling.run.wandb_mirror import resolve_mode, wandb_folder

    mode = resolve_mode(cfg.logger.wandb) if "wandb" in cfg.get("logger", {}) else "disabled"
    folder = wandb_folder(st.group_dir)
    if mode == "disabled" or not folder.is_dir():
        return None
    return {"mode": mode, "dir": str(folder), "view": f"wandb leet {folder}",
            "sync": f"wandb sync {folder}/offline-run-*", "project": str(cfg.logger.wandb.project)}
