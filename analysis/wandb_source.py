"""Runs from Weights & Biases into the analysis DataFrame: a project through ``wandb.Api``, or offline files.

Both loaders give the same frame as ``analysis.load.load_runs`` on the run records: the training mirror
(``scaling.wandb_mirror``) puts the resolved run config in the W&B config and the final ``result.json``
in the W&B summary, and each W&B run is turned back into that (result, config) pair. The curve loaders
(``load_curves_wandb``, ``load_offline_curves``) give the ``load_curves`` frame: the W&B history holds
every line of ``metrics.jsonl`` under the same keys.

Offline runs are read from their ``.wandb`` files by ``analysis.wandb_files``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.frames import curves_of, runs_frame
from analysis.records import record_row as load_record_row
from analysis.wandb_files import WandbRun, _history_row, read_offline_runs

JOB_TYPE = "train"

EXTRA_CONFIG_KEYS = ("run_id", "shape", "N", "D", "C", "flops_per_token")

WANDB_PREFIX = "wandb:"

LOAD_KWARGS = ("params", "flops", "loss", "keep_failed")  # passed on to analysis.load.load_runs / load_curves

HISTORY = "W&B history"  # what per-step curves are read from, in messages

STATES = ("running", "finished", "crashed", "failed", "killed", "preempting", "preempted")

STATE_STATUS = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed"}


def load_offline_wandb(path: str | Path, **load_kwargs: Any) -> pd.DataFrame:
    """Offline W&B runs under ``path`` (searched for ``*.wandb``) as ``load_runs`` gives run records.

    load_kwargs: passed to ``analysis.load.load_runs`` (``params``, ``flops``, ``loss``, ``keep_failed``).
    Only runs of job type ``train`` are read (an analysis run logged by ``log_fit`` is not a data point).
    """
    rows = [_offline_row(r) for r in _offline_training_runs(path)]
    return runs_frame(pd.DataFrame(rows), **load_kwargs)


def load_offline_curves(path: str | Path, **load_kwargs: Any) -> pd.DataFrame:
    """Per-step curves of the offline W&B training runs under ``path``, as ``load_curves`` gives them.

    load_kwargs: ``params``, ``flops``, ``loss``, ``keep_failed`` (see ``analysis.load.load_curves``).
    """
    runs = {r.path: r for r in _offline_training_runs(path)}
    rows = pd.DataFrame([_offline_row(r) for r in runs.values()])
    return curves_of(rows, lambda row: runs[row["path"]].history, source=str(path), what=HISTORY, **load_kwargs)


def load_runs_wandb(
    source: str,
    *,
    group: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    state: str | list[str] | None = None,
    job_type: str = JOB_TYPE,
    api: Any = None,
    timeout: int = 30,
    **load_kwargs: Any,
) -> pd.DataFrame:
    """Runs of ``"wandb:ENTITY/PROJECT"`` through ``wandb.Api``, as ``load_runs`` gives run records.

    group: keep runs of this group (or of any of these groups).
    tags: keep runs carrying every one of these tags.
    state: keep runs in this W&B state (or any of these): running, finished, crashed, failed, killed, ...
    api: a ``wandb.Api`` (default: a new one, which needs an API key: WANDB_API_KEY or ``wandb login``).
    load_kwargs: passed to ``analysis.load.load_runs`` (``params``, ``flops``, ``loss``, ``keep_failed``).
    """
    found = _api_runs(source, group=group, tags=tags, state=state, job_type=job_type, api=api, timeout=timeout,
                      load_kwargs=load_kwargs)
    return runs_frame(pd.DataFrame([row for row, _ in found.values()]), **load_kwargs)


def load_curves_wandb(
    source: str,
    *,
    group: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    state: str | list[str] | None = None,
    job_type: str = JOB_TYPE,
    api: Any = None,
    timeout: int = 30,
    **load_kwargs: Any,
) -> pd.DataFrame:
    """Per-step curves of the runs of ``"wandb:ENTITY/PROJECT"``, as ``load_curves`` gives them.

    Same filters as ``load_runs_wandb``; each kept run's full history is read with ``Run.scan_history()``.
    load_kwargs: ``params``, ``flops``, ``loss``, ``keep_failed`` (see ``analysis.load.load_curves``).
    """
    found = _api_runs(source, group=group, tags=tags, state=state, job_type=job_type, api=api, timeout=timeout,
                      load_kwargs=load_kwargs)

    def history(row: dict[str, Any]) -> list[dict[str, Any]]:
        with _api_errors(source):
            return [_history_row(r, i)[1] for i, r in enumerate(found[row["path"]][1].scan_history())]

    rows = pd.DataFrame([row for row, _ in found.values()])
    return curves_of(rows, history, source=source, what=HISTORY, **load_kwargs)


def wandb_filters(*, group: Any = None, tags: Any = None, state: Any = None, job_type: str | None = JOB_TYPE
                  ) -> dict[str, Any]:
    """The MongoDB-style filter ``wandb.Api().runs`` takes for these arguments."""
    clauses: list[dict[str, Any]] = []
    if job_type:
        clauses.append({"jobType": job_type})
    if group is not None:
        groups = _names("group", group)
        clauses.append({"group": groups[0]} if len(groups) == 1 else {"group": {"$in": groups}})
    if state is not None:
        states = _names("state", state)
        for s in states:
            if s not in STATES:
                raise AnalysisInputError(f"state: {s!r} is not a W&B run state ({', '.join(STATES)})")
        clauses.append({"state": states[0]} if len(states) == 1 else {"state": {"$in": states}})
    if tags is not None:
        clauses.extend({"tags": {"$in": [t]}} for t in _names("tags", tags))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else {}


def record_row(summary: dict[str, Any], config: dict[str, Any], *, state: str, group: str, name: str,
               path: str) -> dict[str, Any]:
    """The row ``load_runs`` builds from (result.json, config.yaml), rebuilt from a W&B summary and config."""
    extras = {k: config.get(k) for k in EXTRA_CONFIG_KEYS}
    config = {k: v for k, v in config.items() if k not in EXTRA_CONFIG_KEYS and not k.startswith("_")}
    rec = {k: v for k, v in summary.items() if not k.startswith("_")}
    if not isinstance(rec.get("model"), dict) and isinstance(extras["shape"], dict):
        rec["model"] = extras["shape"]  # the run never wrote its record: fall back to what the mirror knew
    if not isinstance(rec.get("params"), dict) and isinstance(extras["N"], dict):
        rec["params"] = extras["N"]
    if not isinstance(rec.get("flops"), dict):
        rec["flops"] = extras["C"] if isinstance(extras["C"], dict) else {}
    if rec.get("tokens") is None:
        rec["tokens"] = extras["D"]
    rec["run_id"] = rec.get("run_id") or extras["run_id"] or name
    status = "stopped" if rec.get("status") == "stopped" else STATE_STATUS.get(state, state)  # train.stop_at_tokens
    return load_record_row(rec, config, path=path, sweep=group, status=status)


def _offline_training_runs(path: str | Path) -> list[WandbRun]:
    runs = [r for r in read_offline_runs(path) if r.job_type in ("", JOB_TYPE)]
    if not runs:
        raise AnalysisInputError(f"source: {str(path)!r}; no W&B training run (job_type {JOB_TYPE!r}) found")
    return runs


def _offline_row(run: WandbRun) -> dict[str, Any]:
    return record_row(run.summary, run.config, state=run.state, group=run.group, name=run.name, path=run.path)


def _api_runs(source: str, *, group: Any, tags: Any, state: Any, job_type: str, api: Any, timeout: int,
              load_kwargs: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Any]]:
    """path -> (run row as ``record_row`` gives it, ``wandb`` Run) for every run matching the filters."""
    unknown = sorted(set(load_kwargs) - set(LOAD_KWARGS))
    if unknown:
        raise AnalysisInputError(f"filters: {', '.join(map(repr, unknown))} not known; W&B sources filter on "
                                 "group, tags, state and job_type")
    project_path = _project_path(source)
    filters = wandb_filters(group=group, tags=tags, state=state, job_type=job_type)
    if api is None:
        api = _default_api(timeout)
    found = {}
    with _api_errors(source):
        for run in api.runs(project_path, filters=filters, per_page=100, lazy=False):
            row = record_row(dict(run.summary_metrics), dict(run.config), state=run.state, group=run.group or "",
                             name=run.name or run.id, path=f"{WANDB_PREFIX}{'/'.join(run.path)}")
            found[row["path"]] = (row, run)
    if not found:
        raise AnalysisInputError(f"source: {source!r}; no W&B run matches the filters {json.dumps(filters)}")
    return found


@contextmanager
def _api_errors(source: str) -> Iterator[None]:
    """Turn any failure inside ``wandb`` (network, authentication, unknown project) into one line."""
    try:
        yield
    except AnalysisInputError:
        raise
    except Exception as err:
        raise AnalysisInputError(f"source: {source!r}; the W&B API request failed "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _project_path(source: str) -> str:
    path = source[len(WANDB_PREFIX):] if source.startswith(WANDB_PREFIX) else source
    parts = path.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise AnalysisInputError(f"source: {source!r}; expected '{WANDB_PREFIX}ENTITY/PROJECT'")
    return "/".join(parts)


def _names(field_name: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise AnalysisInputError(f"{field_name}: {value!r}; expected a non-empty string or list of strings")
    return values


def _default_api(timeout: int) -> Any:
    try:
        import wandb

        return wandb.Api(timeout=timeout)
    except Exception as err:  # no API key configured, or a bad one
        raise AnalysisInputError(f"source: W&B API unavailable ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}); set WANDB_API_KEY or run "
                                 "`wandb login`, or read the offline run folders instead") from None
