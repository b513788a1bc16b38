"""The loss-curve laws and their warmup conventions, vectorised over steps with numpy cumsums.

Notation: ``lrs[s]`` is the lr of step ``s`` (an array indexed by step, see ``schedules``), ``S1(t) =
cumsum(lrs)[t]`` the area under the schedule, ``d_k = lrs[k] - lrs[k-1]`` the change of lr at step ``k``
(negative on a drop) and ``S_k(t) = sum(lrs[k..t])``.

Multi-Power Law (Luo et al. 2025, arXiv:2503.12811), parameters L0, A, alpha, B, C, beta, gamma:

    L(t) = L0 + A S1(t)^-alpha + B sum_k d_k (1 - (1 + C lrs[k]^-gamma S_k(t))^-beta)

(the paper writes the last term as minus the loss drop LD(t), with ``eta_{k-1} - eta_k = -d_k``).

Tissue et al. (2024, "Scaling Law with Learning Rate Annealing", arXiv:2408.11029), parameters L0, A,
alpha, C, decay (their lambda, the momentum of the annealing area):

    L(t) = L0 + A S1(t)^-alpha - C S2(t),   S2(t) = sum_{i<=t} m_i,   m_i = decay m_{i-1} - d_i
         = L0 + A S1(t)^-alpha + C sum_k d_k (1 - decay^(t-k+1)) / (1 - decay)

Exponential-drop law (``mpexp``, ours), parameters L0, A, alpha, B, C, gamma, p: the Multi-Power Law with
progress measured in ``S1p(t) = peak sum_{i<=t} (lrs[i] / peak)^p`` and each drop relaxing exponentially:

    L(t) = L0 + A S1p(t)^-alpha + B sum_k d_k (1 - exp(-C lrs[k]^-gamma S_k(t)))

Form chosen by reasoning, fit options the defaults: the excess loss of SGD noise relaxes after a drop
as exp(-rate x area) (the Multi-Power Law's saturation with beta -> infinity, C beta fixed), and the
progress of a step grows less than in proportion to its lr (p = 1 is the Multi-Power Law's S1). Measured
on the published curves (fit on the 3 training curves, the 6 held out): the largest |final error| is
0.0096 / 0.0068 / 0.0126 at 25M / 100M / 400M (the Multi-Power Law fitted the same way: 0.019 / 0.020 /
0.025; Tissue: 0.017 / 0.019 / 0.032), mean RMSE <= 0.0060; at 400M the WSD cooldowns still end 0.013 /
0.010 low. Tried without gain at 400M: an lr-power amplitude d_k lrs[k]^rho (rho fits 0), a delayed onset
1 - (1 + h x) e^-x, the drop's area in the same intrinsic time as S1p (the same fit, gamma -> 0),
free or negative gamma, the power saturation with p free (0.017), S1p's progress per step passed through a
fitted lag of tau steps, once or twice (0.0130, 0.0138; docs/curve_laws.md). These variants were screened on the
400M held-out errors; leaving one training curve out (fit on two, predict the third) does not single
this law out: mean |final error| 0.0075 / 0.0050 / 0.0034 (Multi-Power 0.013 / 0.0042 / 0.0048,
Tissue 0.0071 / 0.0039 / 0.0046).

Warmup conventions (``WARMUPS``) say which steps k the drop sum runs over; S1 always counts the warmup:
- ``code``: every step from the first, as the Multi-Power Law authors' released code does. The warmup
  ramp (lr rising, d_k > 0) then enters the sum and adds about B x peak lr to the loss; the published
  parameters and test metrics hold under this convention only.
- ``paper``: a literal reading of the paper: the sum runs over the steps after the warmup W (the first
  step at the peak), and the warmup enters only through S1 (the paper's offset S_W).

Evaluation: ``Design`` precomputes, for one schedule and the steps to evaluate, the quantities the laws
need. The sum over k is compressed: the steps between two evaluated steps are grouped in bins that grow
geometrically with their distance to the later evaluated step, up to 64 steps wide, and within which the
lr changes by at most 5% (each bin a ``|d|``-weighted representative step), so a 72,000-step cosine needs a few thousand terms per evaluated step, not 72,000. The error is
at most about 3e-6 in loss on the published schedules (``Design(..., exact=True)`` keeps every step, to
check); ``resolution=0.25`` (finer bins, about 2.5x the terms; what ``metrics.evaluate`` uses) at most
about 2e-7, which puts the paper's metrics within about 1e-8 of the exact sum's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from analysis.errors import AnalysisInputError
from analysis.curve_laws.schedules import warmup_of

WARMUPS = ("code", "paper")
WARMUP_ALIASES = {"released": "code", "literal": "paper", "offset": "paper"}
BIN_RATIO = 1.2  # growth of the bins of the compressed sum (smaller: more bins, more exact)
BIN_WIDTH = 16  # widest bin, in steps
BIN_LR_RATIO = 1.05  # most the lr may change within one bin
LR_FLOOR = 1e-9  # relative to the peak: a drop to lr 0 is evaluated at this lr (G -> 0 as lr -> 0)


def warmup_convention(warmup: str) -> str:
    name = WARMUP_ALIASES.get(str(warmup), str(warmup))
    if name not in WARMUPS:
        raise AnalysisInputError(f"warmup: {warmup!r} is not one of 'code' (released code: the ramp is inside "
                                 "the loss-drop term) or 'paper' (literal paper: the ramp only in S1)")
    return name


@dataclass
class Design:
    """What the laws need of one schedule ``lrs`` at the steps ``steps`` (sorted, within the schedule).

    S1 (n,), and for the m terms of the drop sum: weight w (m,) and log lr (m,); for every pair (step
    t, term k <= t), packed in rows ``ti`` and terms ``bi``: the area ``S_k(t)`` and the lag ``t - k + 1``.
    """

    lrs: np.ndarray
    steps: np.ndarray
    warmup: str = "code"
    exact: bool = False
    warmup_steps: int | None = None
    resolution: float = 1.0  # scales the bins' growth, width and lr span: 0.25 is about 2.5x the terms
    S1: np.ndarray = field(init=False)
    w: np.ndarray = field(init=False)
    log_lr: np.ndarray = field(init=False)
    ti: np.ndarray = field(init=False)
    bi: np.ndarray = field(init=False)
    area: np.ndarray = field(init=False)
    lag: np.ndarray = field(init=False)
    wb: np.ndarray = field(init=False)
    wb_log_lr: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        lrs = np.asarray(self.lrs, dtype=float)
        steps = np.asarray(self.steps)
        if steps.ndim != 1 or steps.size == 0:
            raise AnalysisInputError("steps: give at least one step to evaluate")
        if np.any(np.diff(steps) <= 0):
            raise AnalysisInputError("steps: must be increasing")
        if steps[0] < 1 or steps[-1] >= lrs.size:
            raise AnalysisInputError(f"steps: {int(steps[0])}..{int(steps[-1])} must lie in 1..{lrs.size - 1}, "
                                     "the steps of the schedule")
        self.steps = steps.astype(np.int64)
        self.warmup = warmup_convention(self.warmup)
        cs = np.cumsum(lrs)
        self.S1 = cs[self.steps]
        peak = float(lrs.max()) if lrs.size else 1.0
        T = int(self.steps[-1])
        k = np.arange(1, T + 1)
        d = lrs[1:T + 1] - lrs[:T]
        first = 1
        if self.warmup == "paper":
            W = warmup_of(lrs) if self.warmup_steps is None else int(self.warmup_steps)
            first = W + 1
        keep = (d != 0) & (k >= first)
        k, d = k[keep], d[keep]
        lr_k = np.maximum(lrs[k], LR_FLOOR * peak)
        if self.exact or k.size == 0:
            w, log_lr, c_prev, kbar = d, np.log(lr_k), cs[k - 1], k.astype(float)
        else:
            j = np.searchsorted(self.steps, k, side="left")  # the first evaluated step at or after k
            r = self.steps[j] - k
            res = float(self.resolution)
            ratio, width, lr_ratio = 1.0 + (BIN_RATIO - 1.0) * res, BIN_WIDTH * res, 1.0 + (BIN_LR_RATIO - 1.0) * res
            r_cap = width / (ratio - 1.0)  # where the geometric bins reach the widest
            geo = np.floor(np.log1p(np.minimum(r, r_cap)) / math.log(ratio))
            level = (geo + np.floor(np.maximum(r - r_cap, 0.0) / width)).astype(np.int64)
            lr_level = np.floor(np.log(lr_k / peak) / math.log(lr_ratio)).astype(np.int64)
            lr_level -= lr_level.min()
            key = ((j * (1 << 20) + level) * (1 << 12) + np.minimum(lr_level, (1 << 12) - 1)) * 2 + (d > 0)
            uniq, inv = np.unique(key, return_inverse=True)
            a = np.abs(d)
            wsum = np.bincount(inv, a)
            w = np.bincount(inv, d)
            log_lr = np.bincount(inv, a * np.log(lr_k)) / wsum
            c_prev = np.bincount(inv, a * cs[k - 1]) / wsum
            kbar = np.bincount(inv, a * k) / wsum
        # the (step, term) pairs with the term at or before the step, packed: row ti, term bi
        order = np.argsort(kbar, kind="stable")
        w, log_lr, c_prev, kbar = w[order], log_lr[order], c_prev[order], kbar[order]
        counts = np.searchsorted(kbar, self.steps + 0.5, side="right")  # terms at or before each step
        self.ti = np.repeat(np.arange(self.steps.size), counts)
        self.bi = np.arange(self.ti.size) - np.repeat(np.cumsum(counts) - counts, counts)
        self.area = cs[self.steps][self.ti] - c_prev[self.bi]
        self.lag = self.steps[self.ti] - kbar[self.bi] + 1.0
        self.w, self.log_lr = w, log_lr
        self.wb = w[self.bi]
        self.wb_log_lr = self.wb * log_lr[self.bi]

    def sum_rows(self, values: np.ndarray) -> np.ndarray:
        """Sum of packed values over the terms of each step: (n,)."""
        return np.bincount(self.ti, weights=values, minlength=self.steps.size)

    @property
    def n_terms(self) -> int:
        return int(self.w.size)


class Law:
    """A loss-curve law: parameter names, bounds of the optimiser's variables, the prediction and its Jacobian."""

    name: str
    formula: str
    params: tuple[str, ...]
    linear: tuple[str, ...]  # parameters the prediction is linear in (solved exactly for the starts)

    def predict(self, p: Sequence[float], design: Design) -> np.ndarray:
        return self.jacobian(p, design, need_jac=False)[0]

    def jacobian(self, p: Sequence[float], design: Design, need_jac: bool = True):  # pragma: no cover
        raise NotImplementedError

    def linear_columns(self, p: Sequence[float], design: Design, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The prediction and its derivatives in the linear parameters ``idx`` (the terms they multiply)."""
        pred, terms = self.terms(p, design)
        return pred, np.stack([terms[i] for i in idx], axis=1) if len(idx) else np.empty((pred.size, 0))

    def terms(self, p: Sequence[float], design: Design) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The prediction, and parameter index -> the term each linear parameter multiplies."""
        pred, J = self.jacobian(p, design)
        return pred, {self.params.index(n): J[:, self.params.index(n)] for n in self.linear}

    # The optimiser works on u = to_free(p): logs of scale parameters, so that one bound box fits every run.
    def to_free(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def from_free(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def free_chain(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover
        """d p / d u (diagonal), for the gradient in u."""
        raise NotImplementedError

    def bounds(self, peak: float) -> list[tuple[float, float]]:  # pragma: no cover
        raise NotImplementedError

    def starts(self, peak: float) -> list[dict[str, float]]:  # pragma: no cover
        """Values of the nonlinear parameters to start from (the linear ones are solved for)."""
        raise NotImplementedError


class MultiPowerLaw(Law):
    name = "multipower"
    formula = "L = L0 + A S1^-alpha + B sum_k d_k (1 - (1 + C lr_k^-gamma S_k)^-beta)"
    params = ("L0", "A", "alpha", "B", "C", "beta", "gamma")
    linear = ("L0", "A", "B")
    _log = (False, True, False, True, True, False, False)

    def jacobian(self, p, design, need_jac=True):
        L0, A, alpha, B, C, beta, gamma = (float(v) for v in p)
        S1 = design.S1
        pw = S1 ** -alpha
        x = design.area * (C * np.exp(-gamma * design.log_lr))[design.bi]
        lx = np.log1p(x)
        q = np.exp(-beta * lx)  # (1 + x)^-beta
        wG = design.sum_rows(design.wb * (1.0 - q))
        pred = L0 + A * pw + B * wG
        if not need_jac:
            return pred, None
        J = np.empty((pred.size, 7))
        J[:, 0] = 1.0
        J[:, 1] = pw
        J[:, 2] = -A * pw * np.log(S1)
        J[:, 3] = wG
        xg = beta * q * (x / (1.0 + x))  # x dG/dx
        J[:, 4] = B * design.sum_rows(design.wb * xg) / C
        J[:, 5] = B * design.sum_rows(design.wb * q * lx)
        J[:, 6] = -B * design.sum_rows(design.wb_log_lr * xg)
        return pred, J

    def terms(self, p, design):
        L0, A, alpha, B, C, beta, gamma = (float(v) for v in p)
        pw = design.S1 ** -alpha
        x = design.area * (C * np.exp(-gamma * design.log_lr))[design.bi]
        wG = design.sum_rows(design.wb * (1.0 - np.exp(-beta * np.log1p(x))))
        return L0 + A * pw + B * wG, {0: np.ones_like(pw), 1: pw, 3: wG}

    def to_free(self, p):
        return np.array([math.log(v) if lg else v for v, lg in zip(p, self._log)])

    def from_free(self, u):
        return np.array([np.exp(min(v, 700.0)) if lg else v for v, lg in zip(u, self._log)])

    def free_chain(self, u):
        return np.array([math.exp(v) if lg else 1.0 for v, lg in zip(u, self._log)])

    def bounds(self, peak):
        lp = math.log(peak)
        return [(-20.0, 50.0), (math.log(1e-6), math.log(1e3)), (1e-3, 3.0),
                (math.log(1e-4) - lp, math.log(1e3) - lp), (math.log(1e-6), math.log(1e6)), (1e-3, 5.0), (0.0, 3.0)]

    def starts(self, peak):
        out = []
        for alpha in (0.2, 0.4, 0.6, 0.9):
            for beta in (0.3, 0.6, 1.0):
                for gamma in (0.3, 0.6, 0.9):
                    for scale in (10.0, 100.0, 1000.0):  # C peak^-gamma: x per unit lr-area of one step
                        out.append({"alpha": alpha, "beta": beta, "gamma": gamma, "C": scale * peak ** gamma})
        return out


class TissueLaw(Law):
    name = "tissue"
    formula = "L = L0 + A S1^-alpha - C S2, S2 = sum_i m_i, m_i = decay m_(i-1) + lr_(i-1) - lr_i"
    params = ("L0", "A", "alpha", "C", "decay")
    linear = ("L0", "A", "C")

    def jacobian(self, p, design, need_jac=True):
        L0, A, alpha, C, lam = (float(v) for v in p)
        S1 = design.S1
        pw = S1 ** -alpha
        lag = design.lag
        powl = np.exp(lag * math.log(lam))  # decay^(t-k+1)
        S2n = design.sum_rows(design.wb * (1.0 - powl)) / (1.0 - lam)  # = -S2
        pred = L0 + A * pw + C * S2n
        if not need_jac:
            return pred, None
        J = np.empty((pred.size, 5))
        J[:, 0] = 1.0
        J[:, 1] = pw
        J[:, 2] = -A * pw * np.log(S1)
        J[:, 3] = S2n
        dfdl = (-lag * powl / lam * (1.0 - lam) + (1.0 - powl)) / (1.0 - lam) ** 2
        J[:, 4] = C * design.sum_rows(design.wb * dfdl)
        return pred, J

    def terms(self, p, design):
        L0, A, alpha, C, lam = (float(v) for v in p)
        pw = design.S1 ** -alpha
        S2n = design.sum_rows(design.wb * (1.0 - np.exp(design.lag * math.log(lam)))) / (1.0 - lam)
        return L0 + A * pw + C * S2n, {0: np.ones_like(pw), 1: pw, 3: S2n}

    # free variables: L0, log A, alpha, log C, log tau with decay = exp(-1 / tau) (tau: memory in steps)
    def to_free(self, p):
        L0, A, alpha, C, lam = p
        return np.array([L0, math.log(A), alpha, math.log(C), math.log(-1.0 / math.log(lam))])

    def from_free(self, u):
        return np.array([u[0], math.exp(u[1]), u[2], math.exp(u[3]), math.exp(-1.0 / math.exp(u[4]))])

    def free_chain(self, u):
        tau = math.exp(u[4])
        lam = math.exp(-1.0 / tau)
        return np.array([1.0, math.exp(u[1]), 1.0, math.exp(u[3]), lam / tau])  # d lam / d log tau

    def bounds(self, peak):
        lp = math.log(peak)
        return [(-20.0, 50.0), (math.log(1e-6), math.log(1e3)), (1e-3, 3.0),
                (math.log(1e-8) - lp, math.log(1e3) - lp), (math.log(1.0), math.log(1e6))]

    def starts(self, peak):
        return [{"alpha": a, "decay": lam} for a in (0.2, 0.35, 0.5, 0.7, 0.9)
                for lam in (0.99, 0.995, 0.999, 0.9995, 0.9999)]


class ExpDropLaw(MultiPowerLaw):
    name = "mpexp"
    formula = "L = L0 + A S1p^-alpha + B sum_k d_k (1 - exp(-C lr_k^-gamma S_k)), S1p = peak sum_i (lr_i/peak)^p"
    params = ("L0", "A", "alpha", "B", "C", "gamma", "p")
    linear = ("L0", "A", "B")
    _log = (False, True, False, True, True, False, False)

    @staticmethod
    def progress(design: Design, p: float) -> tuple[np.ndarray, np.ndarray]:
        """S1p at the design's steps and its derivative in p."""
        lrs = np.asarray(design.lrs, dtype=float)
        peak = float(lrs.max())
        r = np.maximum(lrs / peak, LR_FLOOR)
        v = r ** p
        return np.cumsum(v)[design.steps] * peak, np.cumsum(v * np.log(r))[design.steps] * peak

    def jacobian(self, p, design, need_jac=True):
        L0, A, alpha, B, C, gamma, pe = (float(v) for v in p)
        S1, dS1 = self.progress(design, pe)
        pw = S1 ** -alpha
        x = design.area * (C * np.exp(-gamma * design.log_lr))[design.bi]
        q = np.exp(-x)
        wG = design.sum_rows(design.wb * (1.0 - q))
        pred = L0 + A * pw + B * wG
        if not need_jac:
            return pred, None
        J = np.empty((pred.size, 7))
        J[:, 0] = 1.0
        J[:, 1] = pw
        J[:, 2] = -A * pw * np.log(S1)
        J[:, 3] = wG
        xg = q * x  # x dG/dx
        J[:, 4] = B * design.sum_rows(design.wb * xg) / C
        J[:, 5] = -B * design.sum_rows(design.wb_log_lr * xg)
        J[:, 6] = -alpha * A * pw / S1 * dS1
        return pred, J

    def terms(self, p, design):
        pred, J = self.jacobian(p, design)
        return pred, {0: J[:, 0], 1: J[:, 1], 3: J[:, 3]}

    def bounds(self, peak):
        return super().bounds(peak)[:5] + [(-1.0, 3.0), (0.0, 1.5)]

    def starts(self, peak):
        return [{"alpha": alpha, "gamma": gamma, "C": scale * peak ** gamma, "p": pe}
                for alpha in (0.2, 0.4, 0.6, 0.9) for gamma in (0.0, 0.3, 0.6, 0.9)
                for scale in (1.0, 10.0, 100.0, 1000.0) for pe in (0.6, 1.0)]


LAWS: dict[str, Law] = {"multipower": MultiPowerLaw(), "tissue": TissueLaw(), "mpexp": ExpDropLaw()}
LAW_ALIASES = {"exp-drop": "mpexp", "exp_drop": "mpexp",
               "mpl": "multipower", "multi-power": "multipower", "multi_power": "multipower", "momentum": "tissue"}


def get_law(law: str | Law) -> Law:
    if isinstance(law, Law):
        return law
    name = LAW_ALIASES.get(str(law).lower(), str(law).lower())
    if name not in LAWS:
        raise AnalysisInputError(f"law: {law!r} is not one of {', '.join(map(repr, LAWS))}")
    return LAWS[name]
