"""Which run next: ranking on a known law, the Fisher update, targets, greedy batches, replays (synthetic
and on Epoch's Chinchilla points) and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import (
    AnalysisInputError,
    fit_parametric,
    optimal_allocation,
    predict_loss,
    propose_next,
)
from analysis.next_run import goal_met, replay
from analysis.next_run_criteria import (
    Posterior,
    fit_posterior,
    rank_one_update,
    resolve_target,
)
from analysis.next_run_mixture import mixture_expected_variance, mixture_moments

TRUE = {"E": 1.7, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}


def law(N, D):
    return TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]


def synthetic(seed=0, sizes=8, budgets=8, sigma=0.01):
    """Points of the known law on model sizes x compute budgets, log-normal noise; column budget = 0, 1, ..."""
    rng = np.random.default_rng(seed)
    N, C = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, sizes), np.geomspace(1e18, 1e22, budgets)))
    b = np.repeat(np.arange(budgets), sizes)
    D = C / (6 * N)
    return pd.DataFrame({"N": N, "D": D, "C": C, "budget": b, "loss": law(N, D) * np.exp(rng.normal(0, sigma, N.size))})


def full_width(runs):
    """Width of the full-data 95% Laplace interval on a (the reference of the stop rule)."""
    lo, hi = propose_next(runs, runs.iloc[:1], "a").attrs["interval"]
    return hi - lo


@pytest.fixture(scope="module")
def runs():
    return synthetic()


def test_top_ranked_points_really_shrink_the_interval_more(runs):
    # equal costs; add each of the 3 best and 3 worst candidates with its loss from the known law, refit,
    # and compare the realised Laplace widths: the ranking and its expected widths must hold up
    pool = synthetic(seed=5, sizes=7, budgets=7)[["N", "D"]].assign(cost=1e20)
    table = propose_next(runs, pool, "a")
    lo, hi = table.attrs["interval"]
    assert (table.width <= hi - lo + 1e-12).all() and (np.diff(table.score.to_numpy()) <= 0).all()

    def realised(row):
        more = pd.concat([runs, pd.DataFrame({"N": [row.N], "D": [row.D], "loss": [law(row.N, row.D)]})])
        return full_width(more)

    top = [realised(r) for r in table.head(3).itertuples()]
    bottom = [realised(r) for r in table.tail(3).itertuples()]
    assert max(top) < min(bottom)
    np.testing.assert_allclose(top, table.width.head(3), rtol=0.1)
    assert table.N.iloc[0] in (1e7, 1e10)  # the extremes of model size pin the exponents


def test_cost_divides_the_gain(runs):
    pool = pd.DataFrame({"N": [1e10, 1e10], "D": [runs.D.min() * 1.01] * 2, "cost": [4e20, 1e20]})
    table = propose_next(runs, pool, "alpha")
    assert list(table.candidate) == [1, 0]
    assert table.gain.iloc[0] == pytest.approx(table.gain.iloc[1])
    assert table.score.iloc[0] == pytest.approx(4 * table.score.iloc[1])
    assert list(propose_next(runs, pool, "alpha", criterion="cheapest").candidate) == [1, 0]


def test_fisher_update_matches_direct_inverse(runs):
    post = fit_posterior(runs.N.to_numpy(), runs.D.to_numpy(), runs.loss.to_numpy())
    j = np.array([0.3, 0.2, 0.5, -5.0, -4.0])
    direct = np.linalg.inv(np.linalg.inv(post.cov) + np.outer(j, j) / post.noise)
    np.testing.assert_allclose(rank_one_update(post.cov, post.noise, j), direct, rtol=1e-5, atol=1e-12)


def test_targets_match_the_fitted_law(runs):
    pool = runs.iloc[:3][["N", "D"]]
    res = fit_parametric(runs.N, runs.D, runs.loss)
    loss = propose_next(runs, pool, {"loss": (1e9, 2e10)})
    assert loss.attrs["estimate"] == pytest.approx(predict_loss(res, 1e9, 2e10)["loss"][0], rel=1e-6)
    n_opt = propose_next(runs, pool, {"N_opt": 1e21}, criterion="d-optimal")
    assert np.exp(n_opt.attrs["estimate"]) == pytest.approx(optimal_allocation(res, 1e21)["N_opt"][0], rel=1e-5)
    assert propose_next(runs, pool, {"param": "beta"}).attrs["estimate"] == pytest.approx(res["beta"], rel=1e-6)
    warm = propose_next(runs, pool, "a", start=loss)  # warm refit lands on the same optimum
    assert warm.attrs["estimate"] == pytest.approx(res["a"], rel=1e-7)


def test_bootstrap_posterior_matches_the_bootstrap_spread(runs):
    table = propose_next(runs, runs.iloc[:5][["N", "D"]], "a", bootstrap=300, seed=2)
    lo, hi = table.attrs["interval"]
    se = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=300, seed=2).stderr["a"]
    assert (hi - lo) / (2 * 1.959964) == pytest.approx(se, rel=0.1)
    assert (table.width <= hi - lo + 1e-12).all()


def test_greedy_batch_stays_in_budget_and_narrows(runs):
    pool = runs[runs.budget >= 5][["N", "D"]]
    cost = 6 * pool.N * pool.D
    budget = 3 * cost.min() + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pool lies inside the runs' range: no extrapolation warning
        batch = propose_next(runs, pool, {"D_opt": 1e22}, budget=budget, n=10, criterion="v-optimal")
    assert 1 <= len(batch) <= 10 and batch.cost.sum() <= budget
    assert (np.diff(batch.width.to_numpy()) <= 1e-12).all()
    assert batch.candidate.is_unique


def test_small_replay_beats_random_on_average():
    data = synthetic(seed=1, sizes=6, budgets=7, sigma=0.02)
    N, D, L = (data[c].to_numpy() for c in ("N", "D", "loss"))
    init = data.budget.to_numpy() < 3
    stop = 1.25 * full_width(data)
    best = replay(N, D, L, init, "a", "variance", stop_width=stop)
    rand = [replay(N, D, L, init, "a", "random", stop_width=stop, seed=s).attrs["share"] for s in range(5)]
    assert best.attrs["reached"]
    assert best.attrs["share"] < np.mean(rand)
    assert (best.spent.diff().dropna() > 0).all() and best.point.iloc[1:].is_unique


def test_a_replay_within_a_budget_spends_no_more_and_passes_over_dear_points():
    data = synthetic(seed=1, sizes=6, budgets=7, sigma=0.02)
    N, D, L = (data[c].to_numpy() for c in ("N", "D", "loss"))
    init = data.budget.to_numpy() < 3
    free = replay(N, D, L, init, "a", "variance", stop_width=0.0)  # never narrow enough: runs until the pool is empty
    cost = 6 * N * D
    budget = 0.3 * free.attrs["pool_cost"]
    capped = replay(N, D, L, init, "a", "variance", stop_width=0.0, budget=budget)
    assert 0 < capped.attrs["spent"] <= budget < free.attrs["spent"]
    left = budget - capped.attrs["spent"]
    untouched = np.setdiff1d(np.flatnonzero(~init), capped.point.iloc[1:])
    assert (cost[untouched] > left).all()  # it stopped only once nothing left was affordable
    with pytest.raises(AnalysisInputError, match="budget"):
        replay(N, D, L, init, "a", "variance", budget=-1.0)


def wsd_points(seed=1):
    """The synthetic points as WSD branches: one trunk per model size, each point branching off its trunk
    at 80% of its tokens (own cost: the last 20%; prefix: the trunk to the branch point)."""
    data = synthetic(seed=seed, sizes=6, budgets=7, sigma=0.02)
    trunk = 6 * data.N * 0.8 * data.D
    return data, data.N.rank(method="dense").astype(int).to_numpy(), trunk.to_numpy(), (data.C - trunk).to_numpy()


def test_a_replay_of_branches_pays_each_trunk_once_to_its_furthest_branch_point():
    data, groups, trunk, own = wsd_points()
    N, D, L = (data[c].to_numpy() for c in ("N", "D", "loss"))
    init = data.budget.to_numpy() < 3
    whole = replay(N, D, L, init, "a", "variance", cost=own, groups=groups, shared=trunk, stop_width=0.0)
    furthest = {g: trunk[groups == g].max() for g in set(groups)}
    paid_first = {g: trunk[init & (groups == g)].max() for g in set(groups)}
    assert whole.attrs["initial_cost"] == pytest.approx(own[init].sum() + sum(paid_first.values()))
    assert whole.attrs["pool_cost"] == pytest.approx(own[~init].sum() + sum(furthest[g] - paid_first[g] for g in furthest))
    assert whole.attrs["spent"] == pytest.approx(whole.attrs["pool_cost"])  # the whole pool bought: each trunk once
    chosen = whole.iloc[1:]
    assert (chosen.cost.to_numpy() >= own[chosen.point.to_numpy()] - 1e-6).all()
    assert chosen.cost.sum() < (own + trunk)[~init].sum()  # far less than separate runs
    capped = replay(N, D, L, init, "a", "variance", cost=own, groups=groups, shared=trunk, stop_width=0.0,
                    budget=0.2 * whole.attrs["pool_cost"])
    assert capped.attrs["spent"] <= 0.2 * whole.attrs["pool_cost"]
    with pytest.raises(AnalysisInputError, match="groups and shared"):
        replay(N, D, L, init, "a", "variance", groups=groups)
    with pytest.raises(AnalysisInputError, match="shared"):
        replay(N, D, L, init, "a", "variance", groups=groups, shared=trunk[:-1])


@pytest.mark.filterwarnings("ignore:candidates:UserWarning")  # the larger budgets lie beyond the runs' D
def test_branch_candidates_cost_their_cooldown_plus_the_trunk_not_yet_trained():
    data, groups, trunk, own = wsd_points()
    data = data.assign(trunk=groups, prefix=trunk, cost=own)
    runs = data[data.budget < 3]  # every trunk trained to its third budget's branch point
    pool = data[data.budget >= 3]
    ranked = propose_next(runs, pool, "a")
    paid = runs.groupby("trunk").prefix.max()
    expect = pool.cost + (pool.prefix - pool.trunk.map(paid)).clip(lower=0)
    assert ranked.cost.to_numpy() == pytest.approx(expect[ranked.candidate].to_numpy())
    assert (ranked.cost > pool.cost[ranked.candidate].to_numpy()).all()  # every branch needs more trunk
    batch = propose_next(runs, pool, "a", n=len(pool))  # the whole pool, one pick at a time
    assert batch.cost.sum() == pytest.approx(pool.cost.sum() + sum(pool.groupby("trunk").prefix.max() - paid))
    without = propose_next(runs.drop(columns=["trunk", "prefix"]), pool.drop(columns=["trunk", "prefix"]), "a")
    assert without.cost.to_numpy() == pytest.approx(pool.cost[without.candidate].to_numpy())


def rounds(*intervals):
    return [{"estimate": e, "low": e - h, "high": e + h} for e, h in intervals]


def test_the_stop_rule_needs_the_width_and_with_options_the_dof_and_a_settled_estimate():
    assert goal_met(rounds((0.5, 0.1)), 0.2, 6) and not goal_met(rounds((0.5, 0.11)), 0.2, 6)
    assert not goal_met(rounds((0.5, 0.1)), 0.2, 8, min_dof=4) and goal_met(rounds((0.5, 0.1)), 0.2, 9, min_dof=4)
    assert not goal_met(rounds((0.5, 0.1)), 0.2, 9, stable=0.5)  # a first round has nothing to be stable against
    assert goal_met(rounds((0.3, 0.4), (0.34, 0.1)), 0.25, 9, stable=0.5)  # moved 0.04 <= 0.5 x 0.1
    assert not goal_met(rounds((0.3, 0.4), (0.36, 0.1)), 0.25, 9, stable=0.5)  # moved 0.06 > 0.05


def test_a_replay_with_the_stability_rule_stops_no_earlier_and_where_the_rule_holds():
    data = synthetic(seed=1, sizes=6, budgets=7, sigma=0.02)
    N, D, L = (data[c].to_numpy() for c in ("N", "D", "loss"))
    init, stop = data.budget.to_numpy() < 3, 1.25 * full_width(data)
    plain = replay(N, D, L, init, "a", "variance", stop_width=stop)
    strict = replay(N, D, L, init, "a", "variance", stop_width=stop, stable=0.1, min_dof=30)
    assert strict.attrs["steps"] >= plain.attrs["steps"] and init.sum() + strict.attrs["steps"] - 5 >= 30
    assert strict.attrs["reached"] == goal_met(strict.to_dict("records"), stop, init.sum() + strict.attrs["steps"],
                                               stable=0.1, min_dof=30)
    rows = strict.to_dict("records")
    assert not any(goal_met(rows[:k], stop, init.sum() + k - 1, stable=0.1, min_dof=30) for k in range(1, len(rows)))


def test_chinchilla_replay_reaches_the_interval_within_a_quarter_of_the_pool(shared_data):
    df = pd.read_csv(shared_data / "chinchilla_epoch" / "svg_extracted_data.csv").sort_values("loss").iloc[:-5]
    N, C, L = (df[c].to_numpy() for c in ("Model Size", "Training FLOP", "loss"))
    budgets = np.array([6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21])
    init = np.argmin(np.abs(np.log(C)[:, None] - np.log(budgets)), axis=1) < 3
    full = full_width(pd.DataFrame({"N": N, "D": C / (6 * N), "loss": L}))
    for criterion in ("variance", "d-optimal", "v-optimal"):
        r = replay(N, C / (6 * N), L, init, "a", criterion, cost=C, stop_width=1.25 * full)
        assert r.attrs["reached"] and r.attrs["share"] <= 0.25, criterion


def test_mixture_of_one_optimum_is_the_plain_ranking(runs):
    pool = runs.iloc[::9][["N", "D"]]
    plain, mixed = propose_next(runs, pool, "a"), propose_next(runs, pool, "a", mixture=True)
    assert [w for w, _ in mixed.attrs["components"]] == [1.0]
    np.testing.assert_allclose(mixed.width, plain.width, rtol=1e-6)
    assert list(mixed.candidate) == list(plain.candidate)


def test_mixture_values_runs_that_tell_the_optima_apart():
    # two optima that differ in alpha: a run at large N separates them (their losses differ by far more
    # than the noise), one at N = 1 cannot (both predict the same loss there)
    comps = [(0.5, Posterior(np.array([6.0, 7.0, 0.5, a, 0.3]), 1e-8 * np.eye(5), 1e-4, 50, 0.0, True)) for a in (0.3, 0.4)]
    target = resolve_target("a")
    _, var_now = mixture_moments(comps, target)
    after = mixture_expected_variance(comps, target, np.array([1e9, 1.0]), np.array([1e10, 1e10]))
    assert var_now == pytest.approx(0.25 * (0.5 - 0.3 / 0.7) ** 2, rel=1e-3)
    assert after[0] < 0.01 * var_now and after[1] > 0.99 * var_now


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"candidates": pd.DataFrame({"N": [], "D": []})}, "candidates"),
        ({"target": "gamma"}, "target"),
        ({"target": {"H_opt": 1e21}}, "target"),
        ({"target": {"N_opt": -1}}, "target N_opt"),
        ({"target": {"loss": 3.0}}, "target"),
        ({"target": {"loss": (1e9,)}}, "target"),
        ({"target": {"loss": (1e9, 0)}}, "target loss D"),
        ({"budget": 1.0}, "budget"),
        ({"criterion": "bayes"}, "criterion"),
        ({"law": "kaplan-2020"}, "law"),
        ({"n": 0}, "n"),
        ({"bootstrap": -1}, "bootstrap"),
        ({"mixture": True, "criterion": "d-optimal"}, "mixture"),
        ({"runs": pd.DataFrame({"N": [1e8], "D": [1e9]})}, "runs"),
        ({"candidates": pd.DataFrame({"N": [1e8], "D": [-1.0]})}, "candidates.D"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(runs, kwargs, field):
    args = {"runs": runs, "candidates": runs.iloc[:2][["N", "D"]], "target": "a"} | kwargs
    with pytest.raises(AnalysisInputError) as err:
        propose_next(**args)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_extrapolation_warns(runs):
    pool = pd.DataFrame({"N": [1e8, 1e12], "D": [1e10, 1e13]})
    with pytest.warns(UserWarning, match="1 of 2 lie outside"):
        table = propose_next(runs, pool, "a")
    assert len(table) == 2
