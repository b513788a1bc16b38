"""Kaplan et al. 2020's joint law L(N, D) as a design's law: its fit, gradient, optimum, and the design loop."""

import numpy as np
import pandas as pd
import pytest

from analysis import propose_next
from analysis.errors import AnalysisInputError
from analysis.kaplan_joint import fit_kaplan_joint, kaplan_derived, kaplan_log_loss, kaplan_loss, kaplan_optimum
from analysis.next_run import replay
from analysis.next_run_criteria import fit_posterior, interval, resolve_target

TRUE = np.array([np.log(8.8e13), np.log(5.4e13), 0.076, 0.095])  # Kaplan et al.'s N_c, D_c, alpha_N, alpha_D


def grid(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An IsoFLOP-like grid of 5 sizes x 5 token counts with log-normal noise of ``noise``."""
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e8, 1e10, 5)))
    L = np.exp(kaplan_log_loss(TRUE, N, D)[0] + noise * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L


def test_the_jacobian_is_the_derivative_of_the_log_loss():
    N, D, _ = grid()
    theta = TRUE + np.array([0.3, -0.2, 0.02, -0.01])
    _, J = kaplan_log_loss(theta, N, D)
    h = 1e-6
    numeric = np.stack([(kaplan_log_loss(theta + h * e, N, D)[0] - kaplan_log_loss(theta - h * e, N, D)[0]) / (2 * h)
                        for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(J, numeric, rtol=1e-5, atol=1e-7)


def test_the_fit_recovers_the_law_from_its_own_losses():
    N, D, L = grid()
    theta = fit_kaplan_joint(N, D, L)
    np.testing.assert_allclose(kaplan_log_loss(theta, N, D)[0], np.log(L), atol=1e-6)
    est = kaplan_derived(theta[None])
    assert est["alpha_N"][0] == pytest.approx(0.076, rel=1e-3)
    assert est["a"][0] == pytest.approx(0.095 / (0.076 + 0.095), rel=1e-3)


def test_the_optimum_is_the_least_loss_along_the_budget():
    C = 1e20
    opt = kaplan_optimum(TRUE[None], C)
    Ns = np.geomspace(opt["N_opt"][0] / 3, opt["N_opt"][0] * 3, 2001)
    losses = np.exp(kaplan_log_loss(TRUE, Ns, C / (6 * Ns))[0])
    assert Ns[losses.argmin()] == pytest.approx(opt["N_opt"][0], rel=2e-3)
    assert opt["N_opt"][0] * opt["D_opt"][0] * 6 == pytest.approx(C)


def test_the_laplace_interval_on_a_covers_the_true_value_and_narrows_with_more_points():
    """Over 40 noise draws (log-normal, sd 5e-4: inside Huber's quadratic zone) the 95% interval holds the
    true a about as often as it says (21 residual dof: t's 2.08 against z's 1.96, so a little under 95%)."""
    tgt, a = resolve_target("a", "kaplan"), 0.095 / 0.171
    held, widths = [], []
    for seed in range(40):
        N, D, L = grid(noise=5e-4, seed=seed)
        _, lo, hi = interval(fit_posterior(N, D, L, start=TRUE, law="kaplan"), tgt)
        _, lo_few, hi_few = interval(fit_posterior(N[::2], D[::2], L[::2], start=TRUE, law="kaplan"), tgt)
        held.append(lo < a < hi)
        widths.append((hi - lo, hi_few - lo_few))
    assert 0.8 <= np.mean(held) <= 1.0
    full, half = np.median(widths, axis=0)
    assert full < 0.8 * half  # twice the points: about 1 / sqrt(2) of the width


def test_propose_next_under_kaplan_ranks_candidates_and_a_replay_stops_on_its_interval():
    N, D, L = grid(noise=0.01, seed=1)
    runs = pd.DataFrame({"N": N[:12], "D": D[:12], "loss": L[:12]})
    table = propose_next(runs, pd.DataFrame({"N": N[12:], "D": D[12:]}), "a", law="kaplan")
    assert len(table) == 13 and table["score"].is_monotonic_decreasing
    assert (table["width"] <= table.attrs["interval"][1] - table.attrs["interval"][0] + 1e-12).all()
    full = interval(fit_posterior(N, D, L, law="kaplan"), resolve_target("a", "kaplan"))
    init = np.zeros(N.size, bool)
    init[:12] = True
    t = replay(N, D, L, init, "a", law="kaplan", stop_width=1.25 * (full[2] - full[1]))
    assert t.attrs["reached"] and t.attrs["steps"] < 13
    assert t["width"].iloc[-1] <= 1.25 * (full[2] - full[1])


@pytest.mark.parametrize("kwargs, text", [
    (dict(target="E"), "target: parameter 'E' is not in Kaplan's law"),
    (dict(target="a", mixture=True), "mixture: the mixture over separate optima is the parametric law's"),
    (dict(target="a", bootstrap=50), "bootstrap: the Kaplan law's posterior is the Laplace one"),
])
def test_what_kaplan_does_not_have_is_a_one_line_error(kwargs, text):
    N, D, L = grid(noise=0.01)
    runs = pd.DataFrame({"N": N, "D": D, "loss": L})
    with pytest.raises(AnalysisInputError, match=text.replace("(", r"\(").replace(")", r"\)")):
        propose_next(runs, runs[["N", "D"]], law="kaplan", **kwargs)


def test_the_loss_target_is_the_law_at_that_point():
    tgt = resolve_target({"loss": (3e7, 2e9)}, "kaplan")
    assert tgt.value(TRUE) == pytest.approx(float(kaplan_loss(TRUE[None], 3e7, 2e9)[0]))
    assert tgt.value(TRUE) == pytest.approx(float(np.exp(kaplan_log_loss(TRUE, np.array([3e7]), np.array([2e9]))[0][0])))
