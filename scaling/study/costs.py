"""What a study cost (FLOPs and time per phase, against the fixed design without branches), the sweep's
summary over all its runs, and the study's analysis run in the sweep's W&B folder."""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Iterator

from scaling.run.record import RunRecord
from scaling.sweep.expand import expand_values
from scaling.sweep.pricing import plan_run
from scaling.sweep.summary import summarize, write_summary


def costs(runs: list[Any], hold: Any, phases: dict[str, float], preset: Any, opts: Any,
          fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """FLOPs (the sweep's convention) and time of the sweep and the held-out run, and the fixed design's FLOPs.

    ``sweep_flops`` counts each trunk once and each branch only for its own tokens; ``separate_flops`` is what
    the same points would cost as separate runs; ``fixed_flops`` is the sweep without branches that the
    study used before (``study`` / ``study_quick``: one cosine run per point, with its own sizes), and
    ``fixed_seconds_estimate`` its sweep time at this sweep's measured FLOPs per second of training.
    ``fixed``: ``fixed_design``'s result where it was priced already (None: priced here).
    """
    trained = [r for r in runs if not r.skip_reason]
    points = [r for r in trained if r.role != "trunk"]
    sweep_flops = sum(r.own_compute for r in trained)
    train_s = sum(float((RunRecord(Path(r.run_dir)).read_result() or {}).get("wall_time") or 0.0) for r in trained)
    out: dict[str, Any] = {
        "convention": trained[0].convention, "sweep_flops": sweep_flops,
        "separate_flops": sum(r.compute for r in points), "holdout_flops": float(hold.compute),
        "sweep_train_seconds": train_s, "phases": dict(phases)}
    if preset.holdout_overrides:
        out.update(fixed or fixed_design(preset, opts, Path(trained[0].run_dir).parents[1]))
    else:
        out["fixed_sweep"], out["fixed_runs"], out["fixed_flops"] = preset.sweep, len(trained), sweep_flops
    out["ratio_to_fixed"] = sweep_flops / out["fixed_flops"] if out["fixed_flops"] else None
    if train_s > 0 and (phases.get("sweep") or 0) > 5:  # the sweep trained now: its rate is measured
        jobs = max(1, train_s / phases["sweep"])  # runs at a time, as this sweep achieved them
        out["fixed_seconds_estimate"] = out["fixed_flops"] / (sweep_flops / train_s) / jobs
    return out


def fixed_design(preset: Any, opts: Any, runs_dir: Path) -> dict[str, Any]:
    """The fixed design without branches (``preset.holdout_sweep``, with the study's overrides): its runs left
    after the skip rules and their FLOPs, planned as ``scaling-plan`` plans them, but from one composed
    config (``expand_values``: the sweep's jobs differ only in their budget and shape)."""
    from scaling.study.launch import launch_args

    jobs = expand_values([f"+sweep={preset.holdout_sweep}", f"runs_dir={runs_dir}", *opts.overrides,
                          *launch_args(opts, 1)])
    runs = [plan_run(cfg, i, job) for i, (job, cfg) in enumerate(jobs)]
    return {"fixed_sweep": preset.holdout_sweep, "fixed_runs": sum(1 for r in runs if not r.skip_reason),
            "fixed_flops": sum(r.compute for r in runs if not r.skip_reason)}


def write_sweep_summary(group_dir: Path, name: str, runs: list[Any]) -> dict[str, Any]:
    """``summary.md`` / ``summary.json`` over every run of the sweep (the workers each trained a part of it)."""
    planned = [{"index": r.index, "run_dir": r.run_dir, "overrides": r.overrides, "shape": r.shape, "params": r.params,
                "tokens": r.tokens, "convention": r.convention, "budget": r.budget, "planned_skip": r.skip_reason}
               for r in runs]
    summary = summarize(group_dir, name, planned)
    write_summary(group_dir, summary)
    return summary


def log_analysis_run(out: Path, group_dir: Path, cfg: Any, results: dict[str, Any], table: Any,
                     info: dict[str, Any]) -> None:
    """The study's fits as a W&B run of job type ``analysis`` (``analysis.log_fit``) in the sweep's W&B folder,
    with an id that names it (``analysis-<group>-<suffix>``)."""
    from analysis.result import FitResult
    from analysis.wandb_log import log_fit

    fits = {k: v for k, v in results.items() if isinstance(v, FitResult)}
    plots = [out / f"{name}.png" for name in ("isoflop", "allocation", "loss_vs_compute")]
    w = cfg.logger.wandb
    with _run_id(f"analysis-{group_dir.name}-{secrets.token_hex(3)}"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_id = log_fit(fits, table, [p for p in plots if p.is_file()], project=str(w.project),
                         entity=w.get("entity") or None, mode=info["mode"], group=group_dir.name,
                         name=f"analysis-{group_dir.name}", dir=group_dir)
    info["analysis_run"] = run_id
    if run_id is None and caught:
        info["analysis_error"] = str(caught[-1].message)


@contextlib.contextmanager
def _run_id(run_id: str) -> Iterator[None]:
    """W&B reads ``WANDB_RUN_ID`` for a run whose ``init`` names no id."""
    before = os.environ.get("WANDB_RUN_ID")
    os.environ["WANDB_RUN_ID"] = run_id
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_RUN_ID", None)
        else:
            os.environ["WANDB_RUN_ID"] = before
