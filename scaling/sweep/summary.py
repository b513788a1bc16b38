"""End-of-sweep summary: a Hydra callback that lists completed, failed, diverged and skipped runs.

Configured by the named sweeps (``hydra.callbacks.sweep_summary``). At the start of a multirun it
expands the sweep exactly as the sweeper will (``scaling.plan.job_overrides``), notes each job's run
directory and checks the budgets (a budget too small for every shape stops the sweep before anything
is launched: ``error: ...``, exit 2). At the end it reads each run's ``result.json`` and prints the
counts and the runs that did not complete, with their reasons, and writes ``summary.json`` and
``summary.md`` into the sweep directory.

Hydra skips ``on_multirun_end`` when a job raised (the basic sweeper re-raises the first failure after
the batch), so the summary is also written at interpreter exit if the sweep ended that way.
"""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from scaling.errors import report_user_error
from scaling.io import atomic_write_json, atomic_write_text, read_json_object

log = logging.getLogger("scaling.sweep.summary")
STATUSES = ("completed", "failed", "diverged", "skipped", "missing")


class SweepSummary(Callback):
    """Hydra callback: plan the sweep at its start, summarise its run records at its end."""

    def __init__(self, print_summary: bool = True) -> None:
        self.print_summary = print_summary
        self._pending: Optional[tuple[Path, str, list[dict[str, Any]]]] = None
        self._errors: dict[str, str] = {}

    # -- Hydra hooks ---------------------------------------------------------------------------------

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        name = OmegaConf.select(config, "sweep.name", default=None) or str(config.get("group", "sweep"))
        try:
            runs = plan_jobs(config)
        except Exception as exc:  # noqa: BLE001
            if report_user_error(exc):  # bad input: stop before anything is launched
                sys.exit(2)
            log.warning("sweep summary: could not expand the sweep (%s: %s); the summary will list the run "
                        "folders found in %s", type(exc).__name__, exc, sweep_dir)
            runs = []
        self._pending = (sweep_dir, name, runs)
        atexit.register(self._finish)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised before its run could write a record gets a ``failed`` one, with the error."""
        if job_return.status != JobStatus.FAILED:
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        exc = job_return._return_value
        error = f"{type(exc).__name__}: {exc}"
        self._errors[str(run_dir.resolve())] = error
        if not (run_dir / "result.json").exists():
            atomic_write_json(run_dir / "result.json", {"run_id": run_dir.name, "group": config.get("group"),
                                                       "status": "failed", "error": error})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    # -- summary -------------------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._pending is None:
            return
        sweep_dir, name, runs = self._pending
        self._pending = None
        summary = summarize(sweep_dir, name, runs, self._errors)
        write_summary(sweep_dir, summary)
        if self.print_summary:
            print(format_summary(summary), flush=True)


def plan_jobs(master: DictConfig) -> list[dict[str, Any]]:
    """Each job of the multirun: overrides, run directory and planned sizes (from the master config)."""
    from hydra.core.global_hydra import GlobalHydra

    from scaling.sweep.expand import job_overrides
    from scaling.sweep.pricing import check_budgets, plan_run

    loader = GlobalHydra.instance().config_loader()
    planned = []
    for index, overrides in enumerate(job_overrides(master, loader)):
        cfg = loader.load_sweep_config(master, list(overrides))
        with open_dict(cfg):  # what the launcher sets before the job's directory is resolved
            cfg.hydra.job.num = index
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{index}"
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        with open_dict(cfg):
            del cfg["hydra"]
        planned.append(plan_run(cfg, index, overrides, run_dir=run_dir))
    check_budgets(planned)
    return [{"index": r.index, "run_dir": r.run_dir, "overrides": r.overrides, "shape": r.shape,
             "params": r.params, "tokens": r.tokens, "convention": r.convention, "budget": r.budget,
             "planned_skip": r.skip_reason} for r in planned]


def summarize(sweep_dir: Path, name: str, runs: list[dict[str, Any]], errors: dict[str, str] | None = None) -> dict:
    """Status and reason of every run of the sweep, read from the run records."""
    errors = errors or {}
    if not runs:  # the expansion failed: fall back to whatever run folders the sweep directory holds
        runs = [{"index": i, "run_dir": str(p.parent)} for i, p in
                enumerate(sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")))]
    rows, seen = [], set()
    for run in runs:
        run_dir = Path(run["run_dir"])
        if run_dir in seen:  # several jobs of one run (a WSD trunk under several cooldown seeds): listed once
            continue
        seen.add(run_dir)
        result = read_json_object(run_dir / "result.json")
        row = {"run_id": run_dir.name, "run_dir": str(run_dir), "overrides": run.get("overrides"),
               "shape": (result or {}).get("model") or run.get("shape"),
               "params": (result or {}).get("params") or run.get("params"),
               "tokens": (result or {}).get("tokens") or run.get("tokens"),
               "convention": run.get("convention"), "budget": run.get("budget")}
        if result is None:
            row["status"] = "missing"
            error = errors.get(str(run_dir.resolve()))
            ckpt = run_dir / "checkpoints"
            row["reason"] = error or ("interrupted: checkpoint kept, relaunch the sweep to resume"
                                      if ckpt.is_dir() and any(ckpt.iterdir()) else
                                      "no result.json: the job did not run or did not finish")
        else:
            row["status"] = str(result.get("status", "completed"))
            row["reason"] = result.get("error") if row["status"] != "completed" else None
            row["val_loss"] = result.get("val_loss")
            row["wall_time"] = result.get("wall_time")
            conv = run.get("convention") or "6nd"
            row["flops"] = (result.get("flops") or {}).get(conv)
        rows.append(row)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}
    for r in rows:
        if r["status"] not in STATUSES:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = {"sweep": name, "sweep_dir": str(sweep_dir), "runs": len(rows), "counts": counts, "rows": rows}
    wandb_dir = Path(sweep_dir) / "wandb"  # the sweep's one W&B folder (scaling.run.wandb_mirror.sweep_folder)
    if wandb_dir.is_dir():
        summary["wandb_dir"] = str(wandb_dir)
    return summary


def _wandb_line(summary: dict) -> list[str]:
    folder = summary.get("wandb_dir")
    return [f"W&B runs: {folder} (view: wandb leet {folder}; upload: wandb sync {folder}/offline-run-*)"] if folder else []


def write_summary(sweep_dir: Path, summary: dict) -> None:
    atomic_write_json(Path(sweep_dir) / "summary.json", summary)
    atomic_write_text(Path(sweep_dir) / "summary.md", format_markdown(summary))


def _counts_line(summary: dict) -> str:
    parts = [f"{n} {s}" for s, n in summary["counts"].items() if n or s in ("completed", "failed", "diverged", "skipped")]
    return f"sweep {summary['sweep']}: {summary['runs']} run(s): " + ", ".join(parts)


def _shape(row: dict) -> str:
    s = row.get("shape") or {}
    return f"w{s['width']} d{s['depth']}" if "width" in s and "depth" in s else ""


def format_summary(summary: dict) -> str:
    """Console text: counts, then every run that did not complete, with its reason."""
    lines = [_counts_line(summary) + f"  ({summary['sweep_dir']})"]
    for r in summary["rows"]:
        if r["status"] != "completed":
            lines.append(f"  {r['status']:<9} {r['run_id']}  {_shape(r)}  {r.get('reason') or ''}".rstrip())
    lines += _wandb_line(summary)
    lines.append(f"summary: {Path(summary['sweep_dir']) / 'summary.md'}")
    return "\n".join(lines)


def format_markdown(summary: dict) -> str:
    head = "| run | status | shape | N (non-emb.) | D | budget | val loss | reason |"
    lines = [f"# Sweep `{summary['sweep']}`", "", _counts_line(summary) + ".", ""]
    folder = summary.get("wandb_dir")
    if folder:
        lines += [f"W&B runs: `{folder}` (view: `wandb leet {folder}`; upload: `wandb sync {folder}/offline-run-*`).", ""]
    lines += [head, "|" + "---|" * 8]
    for r in summary["rows"]:
        n = (r.get("params") or {}).get("non_embedding")
        cells = [f"`{r['run_id']}`", r["status"], _shape(r), f"{n:,}" if n else "",
                 f"{r['tokens']:,}" if r.get("tokens") else "", f"{r['budget']:.3g}" if r.get("budget") else "",
                 f"{r['val_loss']:.4f}" if isinstance(r.get("val_loss"), (int, float)) else "",
                 (r.get("reason") or "").replace("|", "\\|").replace("\n", " ")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
