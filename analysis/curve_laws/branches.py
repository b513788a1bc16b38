"""WSD branches never trained: fit a curve law to a trunk and one or two cooldowns, predict the others.

    table = predict_branches(trunk, branches, branch_points=[4000, 8000, 16000], cooldowns=[800, 2000])
    table[["branch_step", "cooldown_steps", "loss", "loss_low", "loss_high", "predicted"]]

The trunk is the constant-lr run (after its warmup); each trained branch leaves it at its branch point
and cools down. The law is fitted to the trunk and the branches together (each branch's lr: the trunk's
up to its branch point, then its own logged lr), then every (branch point, cooldown length) of the grid
is predicted: the trunk's lr up to the branch point, a cooldown of ``shape`` down to ``final`` of the
peak. Rows of the trained branches are in the table too (``predicted=False``, with ``measured``).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.curve_laws import data as cdata
from analysis.curve_laws import schedules as sch
from analysis.curve_laws.fit import fit_loss_curve

BRANCH_SHAPES = sch.SHAPES + ("step",)


def _frame(curve: Any, what: str) -> pd.DataFrame:
    if isinstance(curve, pd.DataFrame):
        return curve
    try:
        return pd.DataFrame(curve)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"{what}: expected a DataFrame with step, lr, loss columns") from None


def _cooldown_lrs(base: np.ndarray, bp: int, cool: int, shape: str, final: float, peak: float) -> np.ndarray:
    """The trunk's lr to step ``bp``, then a cooldown of ``cool`` steps of ``shape`` to ``final * peak``."""
    total = bp + cool
    head = base[: bp + 1] if base.size > bp else np.r_[base, np.full(bp + 1 - base.size, peak)]
    s = np.arange(bp + 1, total + 1, dtype=float)
    if shape == "step":
        tail = np.full(s.size, final * peak)
    else:
        tail = peak * sch.cooldown_shape(shape, (s - bp) / cool, final)
    return np.r_[head, tail]


def _branch_start(rid: str, frame: pd.DataFrame, steps: np.ndarray, lr: np.ndarray | None, peak: float,
                  tokens_per_step: float | None, step_col: str) -> int:
    """The branch point of a trained branch: a ``branch_step`` column, ``branch_tokens`` (harness records),
    else from its lr: the last logged step at the peak, or the line through its first two cooldown points
    extrapolated back to the peak (exact for a linear cooldown)."""
    if "branch_step" in frame.columns and frame["branch_step"].notna().any():
        return int(frame["branch_step"].dropna().iloc[0])
    if "branch_tokens" in frame.columns and frame["branch_tokens"].notna().any():
        per = tokens_per_step
        if per is None and "tokens" in frame.columns:
            f = frame[frame[step_col] > 0]
            per = float(f["tokens"].iloc[-1]) / float(f[step_col].iloc[-1]) if len(f) else None
        if per:
            return int(round(float(frame["branch_tokens"].dropna().iloc[0]) / per))
    if lr is None:
        raise AnalysisInputError(f"run {rid}: column 'lr' is missing, and no branch_step or branch_tokens column "
                                 "tells where the branch leaves the trunk")
    at_peak = np.flatnonzero(lr >= peak * (1 - 1e-9))
    if at_peak.size:
        return int(steps[at_peak[-1]])
    if steps.size >= 2 and lr[1] < lr[0] < peak:
        drop_per_step = (lr[0] - lr[1]) / (steps[1] - steps[0])
        return int(round(steps[0] - (peak - lr[0]) / drop_per_step))
    return int(steps[0]) - 1


def predict_branches(
    trunk_curve: Any,
    branch_curves: Any,
    branch_points: Sequence[int] | None = None,
    cooldowns: Sequence[int] | None = None,
    *,
    cooldown_fraction: float | None = None,
    branch_tokens: Sequence[float] | None = None,
    cooldown_tokens: Sequence[float] | None = None,
    tokens_per_step: float | None = None,
    shape: str = "linear",
    final: float | Sequence[float] | None = None,
    law: str = "multipower",
    warmup: str = "code",
    trunk_schedule: Any = None,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    return_fit: bool = False,
    step_col: str = "step",
    lr_col: str = "lr",
    loss_col: str = "loss",
    run_col: str = "run_id",
    **fit_kwargs: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, Any]:
    """Final loss of WSD cooldowns never trained, from a trunk and one or two trained branches.

    trunk_curve: the trunk's frame (step, lr, loss; constant lr after the warmup).
    branch_curves: the trained branches: a long frame with ``run_col``, a mapping id -> frame, or one frame.
      Each branch's branch point is its ``branch_step`` column, else ``branch_tokens`` (a harness record,
      with ``tokens`` or ``tokens_per_step``), else read off its lr; rows at or before it are ignored.
    branch_points / cooldowns: steps of the grid to predict (every pair). Defaults: the trained branches'
      points and 8 points spread over the trunk; the trained cooldown lengths. ``cooldown_fraction`` f
      instead gives each branch point bp the cooldown f / (1 - f) bp (the harness's branching: the branch of
      budget D starts at (1 - f) D). ``branch_tokens`` / ``cooldown_tokens`` give them in tokens (needs
      ``tokens_per_step`` or a ``tokens`` column).
    shape: cooldown shape of the predicted branches (linear, sqrt, geometric, cosine, or step: an immediate
      drop); final: lr at the end as a fraction of the peak (default: the trained branches' last lr), or
      several (each is a row).
    law, warmup, bootstrap, seed, level, fit_kwargs: as ``fit_loss_curve``; the band needs ``bootstrap``.
    Returns the table: branch_step, cooldown_steps, total_steps (and the same in tokens when known),
    final_fraction, loss (predicted final loss), loss_low, loss_high, predicted, run_id, measured.
    With ``return_fit`` also the fit (a curve ``FitResult``).
    """
    if shape not in BRANCH_SHAPES:
        raise AnalysisInputError(f"shape: {shape!r} is not one of {', '.join(map(repr, BRANCH_SHAPES))}")
    trunk = _frame(trunk_curve, "trunk_curve")
    if isinstance(branch_curves, pd.DataFrame) and run_col not in branch_curves.columns:
        branches = {"branch": branch_curves}
    else:
        branches = cdata.as_frames(branch_curves, run_col)
    if not branches:
        raise AnalysisInputError("branch_curves: give at least one trained branch")
    trunk_id = "trunk"
    if trunk_id in branches:
        raise AnalysisInputError("branch_curves: a branch is named 'trunk'; give the branches other ids")
    trunk_c = cdata.prepare({trunk_id: trunk}, {trunk_id: trunk_schedule} if trunk_schedule is not None else None,
                            step_col=step_col, lr_col=lr_col, loss_col=loss_col)[0]
    base = trunk_c.lrs
    w = sch.warmup_of(base)
    peak = float(base[max(w, 1):].max())
    stable = base[max(w, 1):]
    if np.any(np.abs(stable - peak) > 1e-6 * peak):
        raise AnalysisInputError(f"trunk_curve: column {lr_col!r} is not constant after the warmup (from "
                                 f"{stable.min():g} to {peak:g}); a WSD trunk runs at its peak lr")
    if tokens_per_step is None and "tokens" in trunk.columns:
        f = trunk[trunk[step_col] > 0]
        tokens_per_step = float(f["tokens"].iloc[-1]) / float(f[step_col].iloc[-1]) if len(f) else None

    fit_curves = {trunk_id: trunk}
    schedules = {trunk_id: base}
    trained = []
    for rid, frame in branches.items():
        steps = pd.to_numeric(frame[step_col], errors="coerce").to_numpy(float) if step_col in frame else None
        if steps is None:
            raise AnalysisInputError(f"run {rid}: column {step_col!r} is missing")
        lr = pd.to_numeric(frame[lr_col], errors="coerce").to_numpy(float) if lr_col in frame else None
        bp = _branch_start(rid, frame, steps, lr, peak, tokens_per_step, step_col)
        if bp > trunk_c.horizon:
            raise AnalysisInputError(f"run {rid}: branch point step {bp} is beyond the trunk's last step "
                                     f"{trunk_c.horizon}")
        if bp < w:
            raise AnalysisInputError(f"run {rid}: branch point step {bp} is inside the trunk's {w}-step warmup")
        own = frame[steps > bp]
        if len(own) < 2:
            raise AnalysisInputError(f"run {rid}: column {step_col!r}: fewer than 2 points after its branch point "
                                     f"{bp}; a trained branch needs its cooldown logged")
        own_steps = pd.to_numeric(own[step_col]).to_numpy(np.int64)
        if lr is None:
            raise AnalysisInputError(f"run {rid}: column {lr_col!r} is missing; the branch's cooldown lr is needed")
        own_lr = pd.to_numeric(own[lr_col]).to_numpy(float)
        if np.any(~np.isfinite(own_lr)) or np.any(own_lr < 0):
            raise AnalysisInputError(f"run {rid}: column {lr_col!r} has a NaN or negative lr after the branch point")
        s = np.arange(bp + 1, own_steps[-1] + 1)
        tail = np.interp(s, np.r_[bp, own_steps], np.r_[peak, own_lr])
        schedules[str(rid)] = np.r_[base[: bp + 1], tail]
        fit_curves[str(rid)] = own
        trained.append({"run_id": str(rid), "branch_step": bp, "cooldown_steps": int(own_steps[-1] - bp),
                        "final_fraction": float(own_lr[-1] / peak), "measured": float(pd.to_numeric(own[loss_col]).iloc[-1])})

    res = fit_loss_curve(fit_curves, law, schedules=schedules, warmup=warmup, bootstrap=bootstrap, seed=seed,
                         level=level, step_col=step_col, lr_col=lr_col, loss_col=loss_col, **fit_kwargs)

    per = tokens_per_step
    if branch_tokens is not None or cooldown_tokens is not None:
        if not per:
            raise AnalysisInputError("branch_tokens / cooldown_tokens: tokens_per_step is needed (or a 'tokens' "
                                     "column in the trunk) to turn tokens into steps")
    points = [int(round(float(t) / per)) for t in branch_tokens] if branch_tokens is not None else \
        (list(branch_points) if branch_points is not None else None)
    if points is None:
        grid = np.linspace(max(w + 1, 0.25 * trunk_c.horizon), trunk_c.horizon, 8).round().astype(int)
        points = sorted(set(grid.tolist()) | {t["branch_step"] for t in trained})
    lengths = [int(round(float(t) / per)) for t in cooldown_tokens] if cooldown_tokens is not None else \
        (list(cooldowns) if cooldowns is not None else None)
    if lengths is None and cooldown_fraction is None:
        lengths = sorted({t["cooldown_steps"] for t in trained})
    if cooldown_fraction is not None and not 0 < float(cooldown_fraction) < 1:
        raise AnalysisInputError(f"cooldown_fraction: {cooldown_fraction!r}; must lie in (0, 1)")
    finals = [t["final_fraction"] for t in trained][:1] if final is None else \
        ([float(final)] if np.ndim(final) == 0 else [float(f) for f in final])
    for f in finals:
        if not 0 <= f <= 1:
            raise AnalysisInputError(f"final: {f!r}; must be a fraction of the peak lr in [0, 1]")
    if shape == "geometric" and min(finals) <= 0:
        raise AnalysisInputError("final: 0 with shape 'geometric'; a geometric cooldown needs final > 0")

    rows = []
    for bp in points:
        bp = int(bp)
        if bp < max(w, 1):
            raise AnalysisInputError(f"branch_points: step {bp} is inside the trunk's {w}-step warmup")
        cools = [max(1, int(round(cooldown_fraction / (1 - cooldown_fraction) * bp)))] if cooldown_fraction \
            else [int(c) for c in lengths]
        for cool in cools:
            if cool < 1:
                raise AnalysisInputError(f"cooldowns: {cool}; a cooldown lasts at least 1 step")
            for f in finals:
                lrs = _cooldown_lrs(base, bp, cool, shape, f, peak)
                pred = res.predict(lrs, [bp + cool]).iloc[-1]
                rows.append({"branch_step": bp, "cooldown_steps": cool, "total_steps": bp + cool, "final_fraction": f,
                             "loss": float(pred["loss"]), "loss_low": float(pred["loss_low"]),
                             "loss_high": float(pred["loss_high"]), "predicted": True, "run_id": None,
                             "measured": np.nan})
    if any(r["branch_step"] > trunk_c.horizon for r in rows):
        warnings.warn(f"branch points beyond the trunk's last step {trunk_c.horizon}: the trunk itself is "
                      "extrapolated there", stacklevel=2)
    for t in trained:
        sched = schedules[t["run_id"]]
        pred = res.predict(sched, [sched.size - 1]).iloc[-1]
        rows.append({**{k: t[k] for k in ("branch_step", "cooldown_steps", "final_fraction")},
                     "total_steps": t["branch_step"] + t["cooldown_steps"], "loss": float(pred["loss"]),
                     "loss_low": float(pred["loss_low"]), "loss_high": float(pred["loss_high"]), "predicted": False,
                     "run_id": t["run_id"], "measured": t["measured"]})
    table = pd.DataFrame(rows)
    order = ["branch_step", "cooldown_steps", "total_steps"]
    if per:
        for col in ("branch", "cooldown", "total"):
            table[f"{col}_tokens"] = table[f"{col}_steps"] * per
        order += ["branch_tokens", "cooldown_tokens", "total_tokens"]
    table = table[order + [c for c in table.columns if c not in order]]
    table = table.sort_values(["branch_step", "cooldown_steps", "final_fraction", "predicted"]).reset_index(drop=True)
    return (table, res) if return_fit else table
