"""WSD branches never trained: fit a curve law to a trunk and one or two cooldowns, predict the others.

    trunk, branches = split_trunk(load_curves("runs/wsd", loss="val/loss"))
    table = predict_branches(trunk, branches, branch_points=[4000, 8000, 16000], cooldowns=[800, 2000])

The law is fitted to the constant-lr trunk and the trained branches together (a branch's lr: the trunk's
up to its branch point, then its own); every (branch point, cooldown length) of the grid is then
predicted with the trunk's lr up to the branch point and a cooldown of ``shape`` down to ``final`` of the
peak. Harness records (``load_curves`` frames) get each run's exact lr from its ``config.yaml``, other
tables their logged lr, interpolated; rows without a loss are left out of the fit. Fit ``val/loss``: the
training loss is noisy and below the measured validation loss (bench/RESULTS.md, "WSD cooldowns never trained").
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.curve_laws import data as cdata
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.fit import fit_loss_curve

BRANCH_SHAPES = sch.SHAPES + ("step",)


_Cols = namedtuple("_Cols", "run step lr loss", defaults=("run_id", "step", "lr", "loss"))


@dataclass
class _Run:
    """One run ready to fit: its rows with a loss, the lr at every step, and (a branch) where it leaves the trunk."""

    run_id: str
    rows: pd.DataFrame
    lrs: np.ndarray
    horizon: int
    branch_step: int = 0
    measured: float = float("nan")

    @property
    def cooldown_steps(self) -> int:
        return self.horizon - self.branch_step


@dataclass
class _Trunk(_Run):
    warmup: int = 0
    peak: float = 0.0
    tokens_per_step: float | None = None


def _frame(curve: Any, what: str) -> pd.DataFrame:
    try:
        frame = curve if isinstance(curve, pd.DataFrame) else pd.DataFrame(curve)
    except (TypeError, ValueError):
        frame = None
    if curve is None or frame is None or frame.empty:
        got = "missing" if curve is None else ("no rows" if frame is not None else f"a {type(curve).__name__}")
        raise AnalysisInputError(f"{what}: {got}; expected a DataFrame with step, lr, loss columns")
    return frame


def _numbers(frame: pd.DataFrame, col: str, rid: str) -> np.ndarray:
    if col not in frame.columns:
        raise AnalysisInputError(f"run {rid}: column {col!r} is missing (columns: {', '.join(map(str, frame.columns))})")
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(float)


def _tokens_per_step(frame: pd.DataFrame, step_col: str) -> float | None:
    f = frame[(pd.to_numeric(frame[step_col], errors="coerce") > 0) & frame["tokens"].notna()] \
        if "tokens" in frame.columns else frame.iloc[:0]
    return float(f["tokens"].iloc[-1]) / float(f[step_col].iloc[-1]) if len(f) else None


def _logged_lrs(rid: str, frame: pd.DataFrame, cols: _Cols, last: int, trunk: _Trunk | None = None,
                bp: int = 0) -> np.ndarray:
    """The lr at every step 0..last from the lr logged on any row (loss or not). A branch (``trunk`` given):
    the trunk's lr to its branch point ``bp``, then its own, interpolated from the peak at ``bp``."""
    steps, lr = _numbers(frame, cols.step, rid), _numbers(frame, cols.lr, rid)
    ok = np.isfinite(steps) & np.isfinite(lr) & (steps > bp)
    if not ok.any():
        raise AnalysisInputError(f"run {rid}: column {cols.lr!r} has no value" + (f" after the branch point {bp}"
                                 if trunk else "") + "; the lr is needed (or pass schedules=)")
    lrs = cdata.interpolate_lr(rid, steps[ok].astype(np.int64), lr[ok], cols.lr) if trunk is None else \
        np.r_[trunk.lrs[:bp], np.interp(np.arange(bp, last + 1), np.r_[bp, steps[ok]], np.r_[trunk.peak, lr[ok]])]
    return np.r_[lrs, np.full(max(0, last + 1 - lrs.size), lrs[-1])]


def _loss_rows(rid: str, frame: pd.DataFrame, cols: _Cols) -> pd.DataFrame:
    loss = _numbers(frame, cols.loss, rid)
    rows = frame[np.isfinite(loss)]
    if rows.empty:
        raise AnalysisInputError(f"run {rid}: column {cols.loss!r} has no value (choose another loss column)")
    return rows


def _config_schedules(trunk_id: str, trunk: pd.DataFrame, branches: Mapping[str, pd.DataFrame],
                      cols: _Cols) -> dict[str, np.ndarray]:
    """Exact lr arrays of harness run records (frames with a ``path`` column), rebuilt from each config."""
    frames = {trunk_id: trunk, **branches}
    if cols.step != "step" or not all("path" in f.columns for f in frames.values()):
        return {}
    long = [f.assign(run_id=rid, trunk=None if rid == trunk_id else trunk_id) for rid, f in frames.items()]
    return cdata.harness_schedules(pd.concat(long, ignore_index=True))[0]


def _trunk(rid: str, frame: pd.DataFrame, schedule: Any, cols: _Cols) -> _Trunk:
    rows = _loss_rows(rid, frame, cols)
    last = int(_numbers(rows, cols.step, rid).max())
    lrs = schedule if schedule is not None else _logged_lrs(rid, frame, cols, last)
    curve = cdata.prepare({rid: rows}, {rid: lrs}, step_col=cols.step, lr_col=cols.lr, loss_col=cols.loss)[0]
    w = sch.warmup_of(curve.lrs)
    stable = curve.lrs[max(w, 1):]
    peak = float(stable.max())
    if np.any(np.abs(stable - peak) > 1e-6 * peak):
        raise AnalysisInputError(f"trunk_curve: column {cols.lr!r} is not constant after the warmup (from "
                                 f"{stable.min():g} to {peak:g}); a WSD trunk runs at its peak lr")
    return _Trunk(rid, rows, curve.lrs, curve.horizon, warmup=w, peak=peak,
                  tokens_per_step=_tokens_per_step(frame, cols.step))


def _branch_start(rid: str, frame: pd.DataFrame, trunk: _Trunk, cols: _Cols, tokens_per_step: float | None) -> int:
    """The branch point: a ``branch_step`` or ``branch_tokens`` (harness) column, else read off the lr: the
    last step at the peak, or the line through the first two cooldown points back to the peak."""
    for col in ("branch_step", "branch_tokens"):
        if col in frame.columns and frame[col].notna().any():
            value = float(frame[col].dropna().iloc[0])
            per = 1.0 if col == "branch_step" else (tokens_per_step or _tokens_per_step(frame, cols.step))
            if per:
                return int(round(value / per))
    steps, lr = _numbers(frame, cols.step, rid), _numbers(frame, cols.lr, rid)
    ok = np.isfinite(steps) & np.isfinite(lr)
    steps, lr = steps[ok], lr[ok]
    if not steps.size:
        raise AnalysisInputError(f"run {rid}: column {cols.lr!r} has no value, and no branch_step or branch_tokens "
                                 "column tells where the branch leaves the trunk")
    at_peak = np.flatnonzero(lr >= trunk.peak * (1 - 1e-9))
    if at_peak.size:
        return int(steps[at_peak[-1]])
    if steps.size >= 2 and lr[1] < lr[0] < trunk.peak:
        return int(round(steps[0] - (trunk.peak - lr[0]) * (steps[1] - steps[0]) / (lr[0] - lr[1])))
    return int(steps[0]) - 1


def _check_point(bp: int, trunk: _Trunk, what: str) -> None:
    if bp < max(trunk.warmup, 1) or bp > trunk.horizon:
        where = (f"inside the trunk's {trunk.warmup}-step warmup" if bp <= trunk.horizon else
                 f"beyond the trunk's last step {trunk.horizon}")
        raise AnalysisInputError(f"{what}: step {bp} is {where}; a branch leaves the trunk where it has trained")


def _branch(rid: str, frame: pd.DataFrame, trunk: _Trunk, schedule: Any, cols: _Cols) -> _Run:
    """A trained branch: its rows after its branch point, its lr (the trunk's up to there, then its own)."""
    bp = _branch_start(rid, frame, trunk, cols, trunk.tokens_per_step)
    _check_point(bp, trunk, f"run {rid}: branch point")
    rows = _loss_rows(rid, frame, cols)
    own = rows[_numbers(rows, cols.step, rid) > bp]
    if len(own) < 2:
        raise AnalysisInputError(f"run {rid}: column {cols.loss!r}: {len(own)} point(s) after its branch point "
                                 f"{bp}; a trained branch needs at least 2 points of its cooldown")
    last = int(_numbers(own, cols.step, rid).max())
    if schedule is None:
        schedule = _logged_lrs(rid, frame, cols, last, trunk, bp)
    lrs = cdata.schedule_array(rid, schedule, last)
    return _Run(rid, own, lrs, last, branch_step=bp, measured=float(_numbers(own, cols.loss, rid)[-1]))


def _cooldown_lrs(trunk: _Trunk, bp: int, cool: int, shape: str, final: float) -> np.ndarray:
    """The trunk's lr to step ``bp``, then a cooldown of ``cool`` steps of ``shape`` to ``final * peak``."""
    s = np.arange(bp + 1, bp + cool + 1, dtype=float)
    if shape == "step":
        tail = np.full(s.size, final * trunk.peak)
    else:
        tail = trunk.peak * sch.cooldown_shape(shape, (s - bp) / cool, final)
    return np.r_[trunk.lrs[: bp + 1], tail]


def _shape_of(trunk: _Trunk, trained: Sequence[_Run], final: float) -> str:
    """The cooldown shape that reproduces the trained branches' lr best (exact for the harness's)."""
    shapes = [s for s in BRANCH_SHAPES if s != "geometric" or final > 0]
    return min(shapes, key=lambda shape: sum(float(np.abs(_cooldown_lrs(trunk, b.branch_step, b.cooldown_steps,
                                                                         shape, final) - b.lrs).sum()) for b in trained))


def _steps_of(values: Sequence[float] | None, tokens: Sequence[float] | None, per: float | None,
              what: str) -> list[int] | None:
    if tokens is not None:
        if not per:
            raise AnalysisInputError(f"{what}_tokens: tokens_per_step is needed (or a 'tokens' column in the trunk) "
                                     "to turn tokens into steps")
        return [int(round(float(t) / per)) for t in tokens]
    return None if values is None else [int(v) for v in values]


def _grid(trunk: _Trunk, trained: Sequence[_Run], points: list[int] | None, lengths: list[int] | None,
          cooldown_fraction: float | None) -> list[tuple[int, int]]:
    """Every (branch point, cooldown length) to predict, checked against the trunk."""
    if points is None:
        spread = np.linspace(max(trunk.warmup + 1, 0.25 * trunk.horizon), trunk.horizon, 8).round().astype(int)
        points = sorted(set(spread.tolist()) | {b.branch_step for b in trained})
    if cooldown_fraction is not None and not 0 < float(cooldown_fraction) < 1:
        raise AnalysisInputError(f"cooldown_fraction: {cooldown_fraction!r}; must lie in (0, 1)")
    if lengths is None and cooldown_fraction is None:
        lengths = sorted({b.cooldown_steps for b in trained})
    for cool in lengths or []:
        if cool < 1:
            raise AnalysisInputError(f"cooldowns: {cool} steps; a cooldown lasts at least 1 step")
    grid = []
    for bp in points:
        _check_point(bp, trunk, "branch_points")
        if cooldown_fraction:
            grid.append((bp, max(1, int(round(cooldown_fraction / (1 - cooldown_fraction) * bp)))))
        else:
            grid += [(bp, cool) for cool in lengths]
    return grid


def _finals(final: float | Sequence[float] | None, trunk: _Trunk, trained: Sequence[_Run]) -> list[float]:
    finals = [float(trained[0].lrs[-1] / trunk.peak)] if final is None else [float(f) for f in np.atleast_1d(final)]
    bad = [f for f in finals if not 0 <= f <= 1]
    if bad:
        raise AnalysisInputError(f"final: {bad[0]!r}; must be a fraction of the peak lr in [0, 1]")
    return finals


def _row(res: Any, lrs: np.ndarray, bp: int, f: float, **extra: Any) -> dict[str, Any]:
    pred = res.predict(lrs, [lrs.size - 1]).iloc[-1]
    return {"branch_step": bp, "cooldown_steps": lrs.size - 1 - bp, "total_steps": lrs.size - 1,
            "final_fraction": f, "loss": float(pred["loss"]), "loss_low": float(pred["loss_low"]),
            "loss_high": float(pred["loss_high"]),
            **{k: float(pred[k]) for k in ("loss_minima_low", "loss_minima_high") if k in pred}, **extra}


def _table(rows: list[dict[str, Any]], per: float | None) -> pd.DataFrame:
    table, order = pd.DataFrame(rows), ["branch_step", "cooldown_steps", "total_steps"]
    if per:
        order += [c.split("_")[0] + "_tokens" for c in order]
        table[order[3:]] = table[order[:3]].to_numpy() * per
    table = table[order + [c for c in table.columns if c not in order]]
    return table.sort_values(["branch_step", "cooldown_steps", "final_fraction", "predicted"]).reset_index(drop=True)


def _run_id(frame: pd.DataFrame, run_col: str, default: str, what: str) -> str:
    if run_col not in frame.columns or not frame[run_col].notna().any():
        return default
    ids = list(dict.fromkeys(frame[run_col].dropna().astype(str)))
    if len(ids) > 1:
        raise AnalysisInputError(f"{what}: column {run_col!r} holds {len(ids)} runs ({', '.join(ids[:3])}...); "
                                 "give one trunk")
    return ids[0]


def _branch_frames(branch_curves: Any, run_col: str) -> dict[str, pd.DataFrame]:
    if branch_curves is None or (isinstance(branch_curves, Mapping) and not branch_curves):
        raise AnalysisInputError("branch_curves: give at least one trained branch")
    if isinstance(branch_curves, pd.DataFrame) and run_col not in branch_curves.columns:
        return {"branch": _frame(branch_curves, "branch_curves")}
    return {rid: _frame(f, f"branch_curves: run {rid}") for rid, f in cdata.as_frames(branch_curves, run_col).items()}


def _inputs(trunk_curve: Any, branch_curves: Any, cols: _Cols, schedules: Mapping[str, Any] | None,
            tokens_per_step: float | None) -> tuple[_Trunk, list[_Run]]:
    """The checked trunk and trained branches, each with its lr (given, rebuilt from its config, or logged)."""
    frame = _frame(trunk_curve, "trunk_curve")
    tid = _run_id(frame, cols.run, "trunk", "trunk_curve")
    branches = _branch_frames(branch_curves, cols.run)
    if tid in branches:
        raise AnalysisInputError(f"branch_curves: a branch has the trunk's id {tid!r}; give the branches other ids")
    given = {str(k): v for k, v in (schedules or {}).items()}
    unknown = sorted(set(given) - {tid, *branches})
    if unknown:
        raise AnalysisInputError(f"schedules: run(s) {', '.join(unknown)} are neither the trunk ({tid}) nor a branch")
    scheds = {**_config_schedules(tid, frame, branches, cols), **given}
    trunk = _trunk(tid, frame, scheds.get(tid), cols)
    if tokens_per_step is not None:
        if not (isinstance(tokens_per_step, (int, float)) and tokens_per_step > 0):
            raise AnalysisInputError(f"tokens_per_step: {tokens_per_step!r}; must be a number > 0")
        trunk.tokens_per_step = float(tokens_per_step)
    return trunk, [_branch(rid, f, trunk, scheds.get(rid), cols) for rid, f in branches.items()]


def _predict_grid(res: Any, trunk: _Trunk, trained: Sequence[_Run], grid: list[tuple[int, int]],
                  finals: list[float], shape: str) -> list[dict[str, Any]]:
    """Rows of the predicted grid; ``extrapolated``: a cooldown longer than every trained one (a warning)."""
    rows, longest = [], max(b.cooldown_steps for b in trained)
    for f in finals:
        cool_shape = _shape_of(trunk, trained, f) if shape == "auto" else shape
        if cool_shape == "geometric" and f <= 0:
            raise AnalysisInputError("final: 0 with shape 'geometric'; a geometric cooldown needs final > 0")
        for bp, cool in grid:
            rows.append(_row(res, _cooldown_lrs(trunk, bp, cool, cool_shape, f), bp, f, shape=cool_shape,
                             predicted=True, extrapolated=cool > longest, run_id=None, measured=np.nan))
    beyond = sorted({r["cooldown_steps"] for r in rows if r["extrapolated"]})
    if beyond:
        warnings.warn(f"cooldowns of {', '.join(map(str, beyond))} steps are longer than every trained branch's "
                      f"({longest}): the law extrapolates in the cooldown length, errors of 1-3% on the bench "
                      "(bench/RESULTS.md); train the longest cooldown to predict", stacklevel=3)
    return rows


def predict_branches(
    trunk_curve: Any, branch_curves: Any, branch_points: Sequence[int] | None = None,
    cooldowns: Sequence[int] | None = None, *, cooldown_fraction: float | None = None,
    branch_tokens: Sequence[float] | None = None, cooldown_tokens: Sequence[float] | None = None,
    tokens_per_step: float | None = None, shape: str = "auto", final: float | Sequence[float] | None = None,
    law: str = "multipower", schedules: Mapping[str, Any] | None = None,
    return_fit: bool = False, run_col: str = "run_id", step_col: str = "step", lr_col: str = "lr",
    loss_col: str = "loss", **fit_kwargs: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, Any]:
    """Final loss of WSD cooldowns never trained, from a trunk and one or two trained branches.

    trunk_curve: the trunk's frame (step, lr, loss; constant lr after the warmup).
    branch_curves: the trained branches: a long frame with ``run_col``, a mapping id -> frame, or one frame.
      Its branch point: a ``branch_step`` or ``branch_tokens`` column, else read off its lr.
    branch_points / cooldowns: steps of the grid to predict (every pair). Defaults: the trained branches'
      points and 8 points spread over the trunk; the trained cooldown lengths. ``cooldown_fraction`` f
      instead gives each branch point bp the cooldown f / (1 - f) bp (the harness's branching: the branch of
      budget D starts at (1 - f) D). ``branch_tokens`` / ``cooldown_tokens`` give them in tokens.
    shape: cooldown shape of the predicted branches (linear, sqrt, geometric, cosine, or step: an immediate
      drop; ``auto``: the one that reproduces the trained branches' lr); final: lr at the end as a fraction
      of the peak (default: the first trained branch's), or several (each is a row).
    schedules: run id -> lr at every step (overrides the lr rebuilt from a harness config or the logged one).
    fit_kwargs: to ``fit_loss_curve`` (``warmup``, ``bootstrap`` for the band, ``minima`` for the range over
      the near-optimal minima, ``seed``, ``level``, ...).
    Returns the table: branch_step, cooldown_steps, total_steps (and the same in tokens when known),
    final_fraction, loss (predicted final loss), loss_low, loss_high, shape, predicted, extrapolated (a
    cooldown longer than every trained one: warns), run_id, measured.
    With ``return_fit`` also the fit (a curve ``FitResult``).
    """
    if shape != "auto" and shape not in BRANCH_SHAPES:
        raise AnalysisInputError(f"shape: {shape!r} is not one of 'auto', {', '.join(map(repr, BRANCH_SHAPES))}")
    cols = _Cols(run_col, step_col, lr_col, loss_col)
    trunk, trained = _inputs(trunk_curve, branch_curves, cols, schedules, tokens_per_step)
    per = trunk.tokens_per_step
    grid = _grid(trunk, trained, _steps_of(branch_points, branch_tokens, per, "branch"),
                 _steps_of(cooldowns, cooldown_tokens, per, "cooldown"), cooldown_fraction)
    finals = _finals(final, trunk, trained)
    runs = [trunk, *trained]
    res = fit_loss_curve({r.run_id: r.rows for r in runs}, law, schedules={r.run_id: r.lrs for r in runs},
                         run_col=run_col, step_col=step_col, lr_col=lr_col, loss_col=loss_col, **fit_kwargs)
    rows = _predict_grid(res, trunk, trained, grid, finals, shape)
    rows += [_row(res, b.lrs, b.branch_step, float(b.lrs[-1] / trunk.peak), shape=None, predicted=False,
                  extrapolated=False, run_id=b.run_id, measured=b.measured) for b in trained]
    table = _table(rows, per)
    return (table, res) if return_fit else table


def split_trunk(curves: Any, trunk: str | None = None, *, run_col: str = "run_id") -> tuple[pd.DataFrame, dict]:
    """(the trunk's rows, {branch id: rows}) of harness curves (``load_curves``); ``trunk``: which, if several."""
    frame = _frame(curves, "curves")
    for col in (run_col, "trunk"):
        if col not in frame.columns:
            raise AnalysisInputError(f"curves: column {col!r} is missing; expected harness curves with WSD branches "
                                     "(load_curves of a branching sweep)")
    named = list(dict.fromkeys(frame["trunk"].dropna().astype(str)))
    if not named:
        raise AnalysisInputError("curves: column 'trunk' is empty; no run is a WSD branch")
    tid = named[0] if trunk is None and len(named) == 1 else str(trunk)
    if tid not in named:
        raise AnalysisInputError(f"trunk: {trunk!r}; name the trunk of the branches, one of {', '.join(named)}")
    rows = frame[frame[run_col].astype(str) == tid]
    if rows.empty:
        raise AnalysisInputError(f"curves: the trunk run {tid} of the branches is not in the curves; load it too")
    own = frame[frame["trunk"].astype(str) == tid]
    return rows, {str(rid): g for rid, g in own.groupby(run_col, sort=False)}


def isoflop_rows(table: pd.DataFrame, params: float, *, flops_per_token: float | None = None) -> pd.DataFrame:
    """The predicted rows of a ``predict_branches`` table as IsoFLOP points of one model size: run_id, N, D
    (total tokens), C (``flops_per_token`` x D; default 6 N), loss = val_loss, loss_low, loss_high, role, and
    ``predicted=True``; with ``load_runs(...)`` rows (``predicted=False``) for ``fit_isoflop(predicted=)``."""
    if "total_tokens" not in table.columns or "predicted" not in table.columns:
        raise AnalysisInputError("table: columns predicted and total_tokens are needed; give a predict_branches "
                                 "table of a trunk whose tokens are known (a 'tokens' column or tokens_per_step)")
    for name, value in (("params", params), ("flops_per_token", 6.0 if flops_per_token is None else flops_per_token)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise AnalysisInputError(f"{name}: {value!r}; must be a number > 0")
    per = 6.0 * params if flops_per_token is None else float(flops_per_token)
    pred = table[table["predicted"].astype(bool)]
    rid = [f"predicted-{b}+{c}" for b, c in zip(pred["branch_step"], pred["cooldown_steps"])]
    return pd.DataFrame({"run_id": rid, "N": float(params), "D": pred["total_tokens"].to_numpy(float),
                         "C": per * pred["total_tokens"].to_numpy(float), "loss": pred["loss"].to_numpy(),
                         "val_loss": pred["loss"].to_numpy(), "loss_low": pred["loss_low"].to_numpy(),
                         "loss_high": pred["loss_high"].to_numpy(), "role": "branch", "predicted": True})
