"""Log a scaling-law fit to Weights & Biases as a run of job type ``analysis``.

The dashboard then shows the law beside the training runs: plots as images, the fitted points and the
estimates as Tables, and every estimate as a summary value (``<fit>/<name>``) for run-table columns.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.result import FitResult

JOB_TYPE = "analysis"
MODES = ("auto", "online", "offline", "disabled")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp"}


def log_fit(
    results: Mapping[str, FitResult],
    points: pd.DataFrame,
    plot_paths: Sequence[str | Path] = (),
    *,
    project: str = "scaling",
    entity: str | None = None,
    mode: str = "auto",
    group: str | None = None,
    name: str | None = None,
    dir: str | Path | None = None,
) -> str | None:
    """Log ``results`` (fit name -> FitResult), the fitted ``points`` and the plots as one W&B run.

    mode: ``auto`` (online when an API key is configured and WANDB_MODE does not say otherwise, else
      offline), ``online``, ``offline`` or ``disabled``.
    group: the sweep's W&B group, so the analysis run sits beside its training runs.
    dir: where W&B writes its files (``<dir>/wandb/``); default the working directory.
    Returns the W&B run id; None when disabled or when W&B failed (a warning says why: the fit is not lost).
    """
    plots = _checked(results, points, plot_paths, mode)
    mode = _resolve_mode(mode)
    if mode == "disabled":
        return None
    try:
        import wandb

        run = wandb.init(
            project=project, entity=entity, group=group, job_type=JOB_TYPE, name=name or f"fit-{group or project}",
            dir=str(dir) if dir is not None else None, reinit="create_new",
            config={"fits": {k: {"approach": r.approach, "law": r.law, "level": r.level} for k, r in results.items()},
                    "n_points": len(points), "columns": dict(points.attrs.get("columns", {}))},
            settings=wandb.Settings(mode=mode, init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT") or 60),
                                    x_disable_stats=True, x_disable_meta=True, disable_git=True, save_code=False,
                                    console="off", silent=True),
        )
    except Exception as err:
        warnings.warn(f"W&B logging of the fit failed at init ({type(err).__name__}: {_first_line(err)})",
                      stacklevel=2)
        return None
    try:
        data: dict[str, Any] = {"points": wandb.Table(dataframe=_tableable(points)),
                                "estimates": wandb.Table(dataframe=estimates_table(results))}
        for path in plots:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                data[f"plots/{path.stem}"] = wandb.Image(str(path), caption=path.name)
            else:  # svg, pdf: kept as files of the run (uploaded with it)
                (Path(run.dir) / "plots").mkdir(exist_ok=True)
                shutil.copyfile(path, Path(run.dir) / "plots" / path.name)
        run.log(data)
        run.summary.update(_summary(results))
        run.finish()
        return run.id
    except Exception as err:
        warnings.warn(f"W&B logging of the fit failed ({type(err).__name__}: {_first_line(err)})", stacklevel=2)
        try:
            run.finish(exit_code=1)
        except Exception:
            pass
        return None


def _checked(results: Mapping[str, FitResult], points: pd.DataFrame, plot_paths: Sequence[str | Path],
             mode: str) -> list[Path]:
    """The arguments of ``log_fit`` checked (one-line errors); the plot paths."""
    if mode not in MODES:
        raise AnalysisInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if not isinstance(points, pd.DataFrame):
        raise AnalysisInputError(f"points: expected a pandas DataFrame, got {type(points).__name__}")
    for key, res in results.items():
        if not isinstance(res, FitResult):
            raise AnalysisInputError(f"results[{key!r}]: expected a FitResult, got {type(res).__name__}")
    plots = [Path(p) for p in plot_paths]
    missing = [str(p) for p in plots if not p.is_file()]
    if missing:
        raise AnalysisInputError(f"plot_paths: {', '.join(missing)} not found")
    return plots


def estimates_table(results: Mapping[str, FitResult]) -> pd.DataFrame:
    """One row per (fit, estimate): fit, approach, law, name, estimate, stderr, low, high, level."""
    rows = []
    for key, res in results.items():
        for est_name, value in res.estimates.items():
            low, high = res.interval.get(est_name, (math.nan, math.nan))
            rows.append({"fit": key, "approach": res.approach, "law": res.law, "name": est_name,
                         "estimate": float(value), "stderr": float(res.stderr.get(est_name, math.nan)),
                         "low": float(low), "high": float(high), "level": res.level})
    return pd.DataFrame(rows, columns=["fit", "approach", "law", "name", "estimate", "stderr", "low", "high",
                                       "level"])


def _summary(results: Mapping[str, FitResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, res in results.items():
        for est_name, value in res.estimates.items():
            out[f"{key}/{est_name}"] = _finite(value)
        out[f"{key}/law"] = res.law
        out[f"{key}/success"] = res.success
        if res.warnings:
            out[f"{key}/warnings"] = "; ".join(res.warnings)
    return out


def _tableable(points: pd.DataFrame) -> pd.DataFrame:
    """Scalar columns as they are; anything else (lists, dicts, objects) as text."""
    out = points.reset_index(drop=True).copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: v if v is None or isinstance(v, (str, bool, int, float))
                                          else str(v))
    out.columns = [str(c) for c in out.columns]
    return out


def _resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("offline", "dryrun", "disabled", "online"):
        return "offline" if env_mode == "dryrun" else env_mode
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "online"
    try:
        import wandb
        from wandb.sdk.lib import wbauth

        host = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
        return "online" if wbauth.read_netrc_auth(host=host) else "offline"
    except Exception:
        return "offline"


def _finite(value: Any) -> Any:
    value = float(value) if isinstance(value, (np.floating, np.integer, int, float)) else value
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _first_line(err: Exception) -> str:
    text = str(err)
    return text.splitlines()[0] if text else ""
