"""An estimated final loss while a run trains: ``pred/final_loss`` with its band (docs/forecast.md).

Every ``train.forecast_every`` periodic evaluations, the writing rank fits a loss-curve law
(``analysis.fit_loss_curve``) to the run's validation losses so far, with the exact lr of every step of
the run's own schedule, and predicts the loss at the run's last step with a small bootstrap band. The
estimate goes into that evaluation's metrics row (``pred/final_loss``, ``pred/final_loss_low``,
``pred/final_loss_high``), hence into ``metrics.jsonl``, the W&B mirror and the progress bar.

It plugs into the run layer as an extra hook (``run_training(cfg, run_dir, extra_hooks=forecast_hooks(cfg))``,
as ``scaling-train`` does): the run layer never imports ``analysis``. A forecast never fails or stalls a
run: a failed fit logs nothing for that point (a debug line), and a fit is skipped while the fits so far
plus the expected cost of the next one exceed ``train.forecast_max_share`` of the time the run has trained.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from scaling.run.hooks import HookContext, HookFactory
from scaling.run.loop import StepEvent
from scaling.run.schedule import warmup_steps

log = logging.getLogger("scaling.forecast")

LAW = "tissue"  # Tissue et al.'s law: as close as the Multi-Power Law on one curve here, at about half the cost
MIN_POINTS = 8  # evaluations at or after the end of warmup before the first estimate (the law has 5 parameters)
STARTS = 5  # starts taken evenly from the law's grid, besides the previous fit's estimates (warm start)
REFINE = 2  # best starts refined
BOOTSTRAP = 8  # resamples (blocks of points) for the band
FIRST_FIT_S = 2.0  # expected cost of the first fit (importing analysis, then one fit; measured on 2 CPU cores)
KEYS = ("pred/final_loss", "pred/final_loss_low", "pred/final_loss_high")


def forecast_hooks(cfg: Any) -> list[HookFactory]:
    """The extra hooks of a run with config ``cfg``: the forecast when ``train.forecast_every`` > 0."""
    every = OmegaConf.select(cfg, "train.forecast_every", default=0)
    return [ForecastHook.from_context] if isinstance(every, int) and every > 0 else []


class ForecastHook:
    """Fits the curve so far after every ``every``-th periodic evaluation and adds the estimate to its row.

    fit: ``fit(steps, losses, lrs, previous) -> (estimate, low, high, params)``; default ``fit_curve``
      (the law of ``LAW`` through ``analysis``). ``clock``: seconds, for the time budget; ``first_cost``: the
      expected cost of the first fit.
    """

    def __init__(self, steps: int, lrs: Sequence[float], every: int, max_share: float, warmup: int = 0,
                 history: Iterable[dict[str, Any]] = (), fit: Optional[Callable[..., tuple]] = None,
                 clock: Callable[[], float] = time.perf_counter, first_cost: float = FIRST_FIT_S):
        self.steps, self.every, self.max_share, self.warmup = int(steps), int(every), float(max_share), int(warmup)
        self.lrs = np.asarray(lrs, dtype=float)
        self.fit, self.clock, self.first_cost = fit or fit_curve, clock, float(first_cost)
        self.points = [(int(r["step"]), float(r["val/loss"])) for r in history if _is_point(r, self.steps)]
        self.evals = 0  # periodic evaluations seen by this process
        self.previous: Optional[dict[str, float]] = None  # the last fit's parameters (warm start)
        self.started, self.spent, self.last_cost = clock(), 0.0, None

    @classmethod
    def from_context(cls, context: HookContext) -> Optional["ForecastHook"]:
        """The hook of a run (writing rank only; none for a WSD branch, whose record starts at its branch
        point and so holds no curve from the first step)."""
        t = context.run.train
        if not context.is_main or t.forecast_every <= 0:
            return None
        if t.branch_from:
            log.debug("no forecast for a WSD branch: its record starts at the branch point")
            return None
        try:
            history = context.history()
        except Exception as err:  # an unreadable record: forecast from this process's points only
            log.debug("forecast: earlier rows not read (%s)", err)
            history = []
        return cls(context.steps, context.lrs, t.forecast_every, t.forecast_max_share,
                   warmup_steps(context.run.optim, context.steps), history)

    def after_step(self, ev: StepEvent) -> None:
        row = ev.row
        if row is None or ev.is_last or ev.status == "diverged" or not _is_point(row, self.steps):
            return
        self.points.append((ev.step, float(row["val/loss"])))
        self.evals += 1
        if self.evals % self.every or not self._due(ev.step):
            return
        start = self.clock()
        try:
            estimate = self._estimate()
            row.update(estimate)
            log.debug("forecast at step %d: %s in %.2f s", ev.step, estimate, self.clock() - start)
        except Exception as err:  # never fail the run: no estimate for this point
            log.debug("forecast at step %d: no estimate (%s: %s)", ev.step, type(err).__name__, err)
        finally:
            self.last_cost = self.clock() - start
            self.spent += self.last_cost

    def _due(self, step: int) -> bool:
        """Enough points after warmup, and the time budget allows the next fit."""
        if sum(s >= self.warmup for s, _ in self.points) < MIN_POINTS:
            return False
        expected = self.first_cost if self.last_cost is None else self.last_cost
        budget = self.max_share * (self.clock() - self.started)
        if self.spent + expected > budget:
            log.debug("forecast at step %d skipped: %.1f s of fits (+%.1f s) over %.1f s of budget", step,
                      self.spent, expected, budget)
            return False
        return True

    def _estimate(self) -> dict[str, float]:
        steps = [s for s, _ in self.points]
        losses = [v for _, v in self.points]
        estimate, low, high, params = self.fit(steps, losses, self.lrs, self.previous)
        after = [v for s, v in self.points if s >= self.warmup]
        drop_so_far = after[0] - after[-1]
        if not (math.isfinite(estimate) and 0 < estimate <= max(losses)
                and after[-1] - estimate <= max(drop_so_far, 0.0)):
            raise ValueError(f"implausible estimate {estimate!r} (last loss {after[-1]:.4f}, drop so far "
                             f"{drop_so_far:.4f}: the rest of the run may not drop more)")
        self.previous = params
        out = {KEYS[0]: float(estimate)}
        if math.isfinite(low) and math.isfinite(high):
            out[KEYS[1]], out[KEYS[2]] = float(min(low, estimate)), float(max(high, estimate))
        return out


def fit_curve(steps: Sequence[int], losses: Sequence[float], lrs: np.ndarray,
              previous: Optional[dict[str, float]] = None, law: str = LAW) -> tuple[float, float, float, dict]:
    """Fit ``law`` to one curve (``losses`` at ``steps``, schedule ``lrs`` indexed by step) and predict the
    loss at its last step: ``(estimate, low, high, parameters)``. A few starts of the law's grid plus the
    ``previous`` fit's parameters; a small bootstrap over blocks of points for the band."""
    import pandas as pd

    from analysis import fit_loss_curve
    from analysis.curve_laws import LAWS

    grid = LAWS[law].starts(float(np.max(lrs)))
    starts = [grid[i] for i in np.unique(np.linspace(0, len(grid) - 1, STARTS).round().astype(int))]
    if previous:
        starts.append(dict(previous))
    steps = np.asarray(steps, dtype=np.int64)
    frame = pd.DataFrame({"run_id": "run", "step": steps, "lr": lrs[steps], "loss": np.asarray(losses, float)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fit's notes (bounds, convergence) are for analyses, not a run's log
        res = fit_loss_curve(frame, law=law, schedules={"run": lrs}, starts=starts, n_refine=REFINE,
                             bootstrap=BOOTSTRAP, seed=int(steps[-1]))
        pred = res.predict(lrs, steps=[lrs.size - 1]).iloc[0]
    return float(pred["loss"]), float(pred["loss_low"]), float(pred["loss_high"]), dict(res.estimates)


def _is_point(row: dict[str, Any], steps: int) -> bool:
    """A periodic evaluation's row (the final evaluation, at the last step, is a different set of windows)."""
    loss = row.get("val/loss")
    return isinstance(loss, (int, float)) and math.isfinite(loss) and 0 < int(row.get("step", steps)) < steps
