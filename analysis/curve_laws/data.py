"""Loss curves in, checked: one ``Curve`` per run (steps, losses, the lr at every step).

Accepted: a long DataFrame (one row per run and step: ``run_id``, ``step``, ``loss`` and, unless a
schedule is given, ``lr``), a single run's frame without a run column, or a mapping run id -> frame.
The curves of this harness's runs (``load_curves``: a ``path`` column to each run folder) get each run's
lr rebuilt from its ``config.yaml`` unless a schedule is given; runs of several model sizes (an ``N``
column with several values) are refused.
``read_curves`` also reads a CSV / Parquet table, a folder of tables (one file per run, the run id being
the file name) and a folder of this harness's run records (``load_curves``, with each run's schedule
rebuilt from its ``config.yaml``).

Bad input is one line naming the run and the column: no lr (and no schedule), an lr <= 0 (0 is allowed
only once a decay has reached it), a single point, steps not increasing or repeated, NaN or non-positive
losses. Warnings: rows at step 0 are left out; an lr logged only every k steps (or every k rows) is
interpolated linearly, from 0 at step 0, and a warning says when the warmup was not logged; a given
schedule that disagrees with the logged lr.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.curve_laws import schedules as sch

TABLES = (".csv", ".tsv", ".parquet", ".pq")


@dataclass
class Curve:
    """One run: logged ``steps`` (increasing), ``loss`` there, and ``lrs`` indexed by step (0 .. last step)."""

    run_id: str
    steps: np.ndarray
    loss: np.ndarray
    lrs: np.ndarray
    lr_source: str  # "schedule" (given or rebuilt from a config) or "interpolated" (from the logged lr)
    logged_lr: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return int(self.steps[-1])


def _where(run: str, col: str) -> str:
    return f"run {run}: column {col!r}"


def as_frames(curves: Any, run_col: str = "run_id") -> dict[str, pd.DataFrame]:
    """run id -> that run's rows, in the order given."""
    if isinstance(curves, Mapping):
        out = {}
        for rid, frame in curves.items():
            if not isinstance(frame, pd.DataFrame):
                frame = pd.DataFrame(frame)
            out[str(rid)] = frame
        if not out:
            raise AnalysisInputError("curves: empty mapping; give at least one run")
        return out
    if not isinstance(curves, pd.DataFrame):
        raise AnalysisInputError(f"curves: expected a DataFrame (run_id, step, lr, loss) or a mapping run id -> "
                                 f"DataFrame, got {type(curves).__name__}")
    if curves.empty:
        raise AnalysisInputError("curves: no rows")
    if run_col not in curves.columns:
        return {"run": curves}
    if curves[run_col].isna().any():
        raise AnalysisInputError(f"curves: column {run_col!r} has missing run ids")
    return {str(rid): g for rid, g in curves.groupby(run_col, sort=False)}


def prepare(curves: Any, schedules: Mapping[str, Any] | None = None, *, run_col: str = "run_id",
            step_col: str = "step", lr_col: str = "lr", loss_col: str = "loss") -> list[Curve]:
    """Checked ``Curve`` of every run (see the module docstring)."""
    frames = as_frames(curves, run_col)
    schedules = dict(schedules or {})
    unknown = [k for k in schedules if str(k) not in frames]
    if unknown:
        raise AnalysisInputError(f"schedules: run(s) {', '.join(map(str, unknown))} are not in the curves "
                                 f"(runs: {', '.join(frames)})")
    schedules = {str(k): v for k, v in schedules.items()}
    if isinstance(curves, pd.DataFrame) and run_col in curves.columns:
        _one_size(curves, run_col)
        if "path" in curves.columns and run_col == "run_id":  # this harness's runs (load_curves): lr from config.yaml
            rebuilt, notes = harness_schedules(curves)
            for note in notes:
                warnings.warn(note, stacklevel=3)
            schedules = {**rebuilt, **schedules}  # a given schedule wins
    return [_curve(rid, frame, schedules.get(rid), step_col, lr_col, loss_col) for rid, frame in frames.items()]


def _one_size(curves: pd.DataFrame, run_col: str) -> None:
    """A curve law describes one model: runs of several sizes (an ``N`` column, as load_curves gives) are refused."""
    if "N" not in curves.columns:
        return
    sizes = pd.to_numeric(curves.groupby(run_col, sort=False)["N"].first(), errors="coerce").dropna().unique()
    if len(sizes) > 1:
        shown = ", ".join(f"{n:.4g}" for n in sorted(sizes)[:6]) + (", ..." if len(sizes) > 6 else "")
        raise AnalysisInputError(f"curves: column 'N' holds {len(sizes)} model sizes ({shown}); a curve law describes "
                                 f"one model: keep one size, e.g. curves[curves.N == {sorted(sizes)[0]:.0f}] or "
                                 f"--filter 'N == {sorted(sizes)[0]:.0f}'")


def _column(run: str, frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        raise AnalysisInputError(f"{_where(run, col)} is missing (columns: {', '.join(map(str, frame.columns))})")
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values) & frame[col].notna().to_numpy()
    if bad.any():
        raise AnalysisInputError(f"{_where(run, col)} has {int(bad.sum())} value(s) that are not numbers "
                                 f"(first: {frame[col][bad].iloc[0]!r})")
    return values


def _steps_loss(run: str, frame: pd.DataFrame, step_col: str, loss_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked steps (whole, increasing, >= 1) and losses (finite, > 0); the rows kept (step 0 is dropped)."""
    steps = _column(run, frame, step_col)
    loss = _column(run, frame, loss_col)
    if not np.isfinite(steps).all():
        raise AnalysisInputError(f"{_where(run, step_col)} has missing or infinite steps")
    keep = steps != 0
    if not keep.all():  # an initial evaluation before any optimizer step: the laws start at step 1
        warnings.warn(f"{_where(run, step_col)}: the row(s) at step 0 are left out (the laws need at least one "
                      "optimizer step)", stacklevel=5)
        steps, loss = steps[keep], loss[keep]
    if len(steps) < 2:
        at = f"step {steps[0]:g}" if len(steps) else "no step"
        raise AnalysisInputError(f"{_where(run, step_col)}: a single point ({at}); a curve needs at least 2 "
                                 "logged steps")
    bad = np.flatnonzero((steps != np.round(steps)) | (steps < 1))
    if bad.size:
        raise AnalysisInputError(f"{_where(run, step_col)}: {steps[bad[0]]:g} is not a whole step >= 1")
    back = np.flatnonzero(np.diff(steps) <= 0)
    if back.size:
        i = int(back[0])
        what = "is repeated" if steps[i + 1] == steps[i] else f"comes after {steps[i]:g}"
        raise AnalysisInputError(f"{_where(run, step_col)} is not increasing (step {steps[i + 1]:g} {what}); "
                                 "sort the rows and drop repeated steps")
    nan = np.flatnonzero(~np.isfinite(loss))
    if nan.size:
        raise AnalysisInputError(f"{_where(run, loss_col)} is NaN or infinite at {nan.size} step(s) (first: step "
                                 f"{steps[nan[0]]:g}); drop those rows or choose another loss column")
    bad = np.flatnonzero(loss <= 0)
    if bad.size:
        raise AnalysisInputError(f"{_where(run, loss_col)} is not positive at step {steps[bad[0]]:g} "
                                 f"({loss[bad[0]]:g}); losses must be > 0")
    return steps.astype(np.int64), loss, keep


def _curve(run: str, frame: pd.DataFrame, schedule: Any, step_col: str, lr_col: str, loss_col: str) -> Curve:
    steps, loss, keep = _steps_loss(run, frame, step_col, loss_col)
    logged = _column(run, frame, lr_col)[keep] if lr_col in frame.columns else None
    if logged is not None and np.isnan(logged).all():
        logged = None
    if schedule is not None:
        lrs = schedule_array(run, schedule, int(steps[-1]))
        if logged is not None:
            _check_logged(run, steps, logged, lrs, lr_col)
        return Curve(run, steps, loss, lrs, "schedule", logged)
    if logged is None:
        raise AnalysisInputError(f"{_where(run, lr_col)} is missing or empty and no schedule was given (columns: "
                                 f"{', '.join(map(str, frame.columns))}); log the lr or pass schedules={{run_id: lr "
                                 "array})")
    return Curve(run, steps, loss, interpolate_lr(run, steps, logged, lr_col), "interpolated", logged)


def _check_logged(run: str, steps: np.ndarray, logged: np.ndarray, lrs: np.ndarray, lr_col: str) -> None:
    """Warn when the given schedule disagrees with the logged lr (a step off, another peak, another run)."""
    have = np.isfinite(logged)
    want = lrs[steps[have]]
    off = np.abs(logged[have] - want) > 1e-3 * max(float(lrs.max()), 1e-300) + 1e-6 * np.abs(want)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        warnings.warn(f"{_where(run, lr_col)}: the logged lr differs from the given schedule at {int(off.sum())} "
                      f"step(s) (first: step {steps[have][i]}, logged {logged[have][i]:.4g}, schedule {want[i]:.4g}); "
                      "the schedule is used (it must be indexed by step: lrs[s] is the lr of step s)", stacklevel=5)


def schedule_array(run: str, schedule: Any, last_step: int) -> np.ndarray:
    """A given schedule (array indexed by step, or a spec string) checked against the curve's last step."""
    if isinstance(schedule, str):
        try:
            schedule = sch.parse_schedule(schedule)[1]
        except AnalysisInputError as err:
            raise AnalysisInputError(f"run {run}: {err}") from None
    try:
        lrs = np.asarray(schedule, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"run {run}: schedule: expected an array of lr indexed by step") from None
    if lrs.size <= last_step:
        raise AnalysisInputError(f"run {run}: schedule: {lrs.size} steps (0..{lrs.size - 1}); the curve goes to step "
                                 f"{last_step}")
    lrs = lrs[: last_step + 1]
    if not np.isfinite(lrs).all() or (lrs < 0).any():
        i = int(np.flatnonzero(~np.isfinite(lrs) | (lrs < 0))[0])
        raise AnalysisInputError(f"run {run}: schedule: lr {lrs[i]:g} at step {i}; every lr must be finite and >= 0")
    if not (lrs[1:] > 0).any():
        raise AnalysisInputError(f"run {run}: schedule: every lr is 0")
    return lrs


def interpolate_lr(run: str, steps: np.ndarray, lr: np.ndarray, lr_col: str = "lr") -> np.ndarray:
    """The lr at every step 0 .. last, interpolated linearly between the logged steps from lr 0 at step 0.

    Rows without an lr (NaN: the lr logged only every k rows) are interpolated over like the steps between
    rows. An lr <= 0 is an error, except once the schedule has decayed to 0 and stays there. When the first
    logged lr is already the peak, the warmup was not logged: a linear ramp from 0 is assumed, with a warning.
    """
    have = np.isfinite(lr)
    if not have.any():
        raise AnalysisInputError(f"{_where(run, lr_col)} has no value; log the lr or pass a schedule")
    last = int(steps[-1])
    if not have[-1]:
        warnings.warn(f"{_where(run, lr_col)}: no lr after step {int(steps[have][-1])}; the last logged lr is held "
                      f"to step {last}", stacklevel=5)
    steps, lr = steps[have], lr[have]
    nonpos = np.flatnonzero(lr <= 0)
    if nonpos.size:
        i = int(nonpos[0])
        if lr.min() < 0 or i == 0 or np.any(lr[i:] != 0):  # only a decay that ends at 0 may reach 0
            i = int(np.flatnonzero(lr < 0)[0]) if lr.min() < 0 else i
            raise AnalysisInputError(f"{_where(run, lr_col)} is not positive at step {steps[i]} ({lr[i]:g}); "
                                     "learning rates must be > 0 (0 only at the end of a decay)")
    peak = lr.max()
    if steps[0] > 1 and lr[0] >= peak * (1 - 1e-9):
        warnings.warn(f"{_where(run, lr_col)}: the lr is logged from step {steps[0]} on, already at its peak "
                      f"{peak:g}: the warmup is missing, a linear ramp from 0 over steps 0..{steps[0]} is assumed "
                      "(pass schedules= for the real one)", stacklevel=5)
    return np.interp(np.arange(last + 1), np.r_[0, steps], np.r_[0.0, lr])  # flat after the last logged lr


# ----------------------------------------------------------------------------- files and run folders


def read_curves(source: Any, *, run_col: str = "run_id", loss_col: str | None = None,
                step_col: str = "step", lr_col: str = "lr") -> tuple[pd.DataFrame, dict[str, np.ndarray], list[str]]:
    """Curves from a path: (long frame with run_id, step, lr, loss; schedules rebuilt from run configs; notes).

    source: a folder of run records (``result.json`` + ``metrics.jsonl`` + ``config.yaml``: ``load_curves``,
    the training loss, and each run's lr rebuilt with ``schedule_from_config``); a folder of tables (one
    run per file, the file name without suffix as run id); a table with a ``run_col`` column (or one run).
    """
    path = Path(source)
    if not path.exists():
        raise AnalysisInputError(f"source: {str(path)!r} does not exist; expected a run folder, a folder of CSV "
                                 "files (one per run) or a CSV / Parquet table")
    notes: list[str] = []
    if path.is_dir() and any(path.rglob("result.json")):
        from analysis.load import load_curves

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            curves = load_curves(path, loss=loss_col or "train/loss")
        notes += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        curves = curves[curves["loss"].notna()] if "loss" in curves else curves
        schedules, more = harness_schedules(curves)
        return curves, schedules, notes + more
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLES)
        if not files:
            raise AnalysisInputError(f"source: {str(path)!r} holds no result.json and no {', '.join(TABLES)} files")
        frames = []
        for f in files:
            t = _read_table(f)
            frames.append(t.assign(**{"run_id": f.stem}) if run_col not in t.columns else t.rename(columns={run_col: "run_id"}))
        table = pd.concat(frames, ignore_index=True)
    else:
        table = _read_table(path)
        table = table.rename(columns={run_col: "run_id"}) if run_col in table.columns else table.assign(run_id=path.stem)
    if loss_col:
        if loss_col not in table.columns:
            raise AnalysisInputError(f"loss_col: {loss_col!r} is not a column (columns: {', '.join(map(str, table.columns))})")
        table = table.assign(loss=table[loss_col])
    return table, {}, notes


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in TABLES:
        raise AnalysisInputError(f"source: {str(path)!r}; a file must end in {', '.join(TABLES)}")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as err:  # pandas raises many types for a malformed file
        raise AnalysisInputError(f"source: {str(path)!r} could not be read ({type(err).__name__}: {err})") from None


def harness_schedules(curves: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each run's lr at every step, rebuilt from its ``config.yaml`` (``schedule_from_config``).

    A WSD branch ran its trunk's schedule up to its branch point: its array is the trunk's up to there and
    its own after. Runs whose config cannot be read keep the logged lr (interpolated), with a note.
    """
    from analysis.records import read_config, read_json

    out: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if "path" not in curves.columns:
        return out, notes
    meta = curves.groupby("run_id", sort=False).first()
    for rid, row in meta.iterrows():
        run_dir = Path(str(row["path"]))
        if not (run_dir / "config.yaml").is_file():  # not a run folder of this harness: its logged lr is used
            continue
        try:
            config = read_config(run_dir / "config.yaml")
            steps = read_json(run_dir / "result.json").get("steps") if (run_dir / "result.json").is_file() else None
            out[str(rid)] = sch.schedule_from_config(config, steps=steps)
        except (OSError, ValueError, TypeError, AttributeError, AnalysisInputError) as err:
            notes.append(f"run {rid}: lr not rebuilt from its config ({err}); the logged lr is interpolated")
    if "trunk" in meta.columns and "branch_tokens" in meta.columns and "tokens" in curves.columns:
        for rid, row in meta.iterrows():
            trunk = row.get("trunk")
            if not isinstance(trunk, str) or trunk not in out or str(rid) not in out:
                continue
            per_step = _tokens_per_step(curves[curves["run_id"] == rid])
            if not per_step:
                continue
            start = int(round(float(row["branch_tokens"]) / per_step))
            own, base = out[str(rid)], out[trunk]
            head = base[: min(start, base.size - 1) + 1]
            out[str(rid)] = np.concatenate([head, own[head.size:]]) if own.size > head.size else own
    return out, notes


def _tokens_per_step(frame: pd.DataFrame) -> float | None:
    f = frame[(frame["step"] > 0) & frame["tokens"].notna()]
    if f.empty:
        return None
    return float(f["tokens"].iloc[-1]) / float(f["step"].iloc[-1])
