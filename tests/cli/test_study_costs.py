"""The study report's price of the fixed design without branches: the same runs and FLOPs as planning that
sweep through Hydra job by job (``scaling-plan``), from one composed config. Planning only, nothing trains."""

import dataclasses
from types import SimpleNamespace

import pytest

from scaling.study.costs import costs
from scaling.study.launch import launch_args, plan
from scaling.study.options import Options
from scaling.sweep.expand import expand, expand_values
from scaling.sweep.pricing import plan_run


def _planned(jobs):
    return [dataclasses.asdict(plan_run(cfg, i, job)) for i, (job, cfg) in enumerate(jobs)]


@pytest.mark.parametrize("variant", ["quick", "full"])
def test_fixed_design_has_the_runs_and_flops_hydra_plans(tmp_path, variant):
    opts = Options(variant=variant, design="wsd")
    preset = opts.preset
    runs_dir = tmp_path / "runs"
    branch = SimpleNamespace(skip_reason=None, role="branch", compute=2e10, own_compute=1e10, convention="6nd_total",
                             run_dir=str(runs_dir / "study-wsd" / "w8-d2-b1"))
    out = costs([branch], SimpleNamespace(compute=4e11), {}, preset, opts)

    args = [f"+sweep={preset.holdout_sweep}", f"runs_dir={runs_dir}", *launch_args(opts, 1)]
    hydra_runs, _ = plan(args)
    trained = [r for r in hydra_runs if not r.skip_reason]
    assert out["fixed_sweep"] == preset.holdout_sweep
    assert out["fixed_runs"] == len(trained) and len(trained) < len(hydra_runs)  # some points are skipped
    assert out["fixed_flops"] == sum(r.compute for r in trained)
    assert out["ratio_to_fixed"] == 1e10 / out["fixed_flops"]


def test_a_task_override_of_a_swept_key_is_composed_job_by_job(tmp_path):
    """``sweep.budget`` given beside the sweep's own budgets wins in every job, as Hydra composes it (applied
    after the job's own budget it would lose): the same runs, field by field."""
    args = ["+sweep=study_quick", f"runs_dir={tmp_path}", "sweep.shapes=[{width:16,depth:2},{width:24,depth:2}]",
            "sweep.budget=2.5e10"]
    fast = _planned(expand_values(args))
    assert fast == _planned(expand(args))
    assert [r["budget"] for r in fast] == [2.5e10, 2.5e10]


def test_a_sweep_of_values_is_the_same_field_by_field_without_composing_each_job(tmp_path):
    args = ["+sweep=study_quick", f"runs_dir={tmp_path}", "sweep.shapes=[{width:16,depth:2},{width:48,depth:2}]",
            "sweep.budgets=[1e11,2.5e10]"]
    fast = _planned(expand_values(args))
    assert fast == _planned(expand(args))
    assert sorted((r["shape"]["width"], r["budget"]) for r in fast) == [(16, 2.5e10), (16, 1e11), (48, 2.5e10),
                                                                       (48, 1e11)]


@pytest.mark.parametrize("sweep", ["study_wsd_quick", "study_quick"])
def test_the_study_plans_the_runs_its_workers_compose(tmp_path, sweep):
    """The study plans its sweep from one composed config; each worker composes its jobs through Hydra: the
    same runs, field by field (run ids, sizes, FLOPs, branch roles), or the study would wait for other ones."""
    args = [f"+sweep={sweep}", f"runs_dir={tmp_path}", *launch_args(Options(variant="quick"), 2)]
    planned, _ = plan(args)
    assert [dataclasses.asdict(r) for r in planned] == _planned(expand(args))


def test_the_fixed_design_priced_on_the_spare_core_is_the_one_the_report_prices(tmp_path):
    """The study prices the fixed design while its sweep's last worker trains (``_on_spare_core``); the report
    then gives the same runs and FLOPs as pricing it there."""
    from scaling.study.study import Study, _on_spare_core

    opts = Options(variant="quick", design="wsd", out=tmp_path)
    base = [f"+sweep={opts.preset.sweep}", f"runs_dir={tmp_path / 'runs'}"]
    runs, cfgs = plan(base + launch_args(opts, 2))
    st = Study(opts, opts.preset, tmp_path, 2, 0, base, tmp_path / "logs" / "launch.log", runs=runs, cfgs=cfgs)
    _on_spare_core(st)
    assert st.fixed is not None and st.fixed["fixed_sweep"] == opts.preset.holdout_sweep
    hold = SimpleNamespace(compute=4e11)
    assert costs(runs, hold, {}, opts.preset, opts, st.fixed) == costs(runs, hold, {}, opts.preset, opts)
