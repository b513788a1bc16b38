"""The study's report: the held-out plot and ``report.md``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scaling.study.fits import _f
from scaling.units import duration


def plot_holdout(path: Path, runs: Any, par: Any, holdout: dict[str, Any]) -> Path:
    """Loss against compute: sweep runs, Approach 3's compute-optimal loss with its band, the held-out run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    from analysis.allocation import optimal_allocation

    C = np.geomspace(runs.C.min() / 1.5, holdout["C"] * 1.5, 60)
    alloc = optimal_allocation(par, C)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pred = runs["predicted"].to_numpy(bool) if "predicted" in runs.columns else np.zeros(len(runs), bool)
    norm = matplotlib.colors.Normalize(np.log10(runs.N).min(), np.log10(runs.N).max())
    sc = ax.scatter(runs.C[~pred], runs.loss[~pred], c=np.log10(runs.N[~pred]), cmap="viridis", norm=norm, s=22,
                    label="sweep runs")
    if pred.any():  # branch points never trained: hollow, in the colour of their size
        ax.scatter(runs.C[pred], runs.loss[pred], facecolors="none", s=26, gid="predicted-points",
                   edgecolors=matplotlib.colormaps["viridis"](norm(np.log10(runs.N[pred]))),
                   label="predicted branch points (never trained)")
    fig.colorbar(sc, ax=ax, label="log10 N")
    ax.plot(C, alloc.loss_opt, color="k", lw=1.2, label="Approach 3: loss at the optimum")
    if "loss_opt_low" in alloc:
        ax.fill_between(C, alloc.loss_opt_low, alloc.loss_opt_high, color="k", alpha=0.12, lw=0)
    lo, hi = holdout.get("predicted_low"), holdout.get("predicted_high")
    if lo is not None and hi is not None:  # the band as drawn from its ends: a point estimate may lie outside a
        # percentile band of few bootstrap resamples, where an error bar around the point cannot be drawn
        ax.vlines(holdout["C"], lo, hi, color="tab:blue", lw=1.2, gid="holdout-band")
        ax.plot([holdout["C"]], [holdout["predicted"]], "s", color="tab:blue", mfc="none", label="held-out: predicted")
    if holdout.get("measured") is not None:
        ax.plot([holdout["C"]], [holdout["measured"]], "*", color="tab:red", ms=12, label="held-out: measured")
    ax.set(xscale="log", xlabel="C (FLOPs)", ylabel="validation loss (nats/token)",
           title="Held-out check at the predicted compute-optimal size")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = path.with_suffix(".png")
    tmp = buf.with_name(f".{buf.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, buf)
    return buf


def markdown(study: dict[str, Any], runs_table: list[dict[str, Any]], fit_report: str) -> str:
    """The study's own sections, then the analysis report (headings one level down)."""
    ex, h = study["exponents"], study["holdout"]
    pct = f"{100 * study['holdout']['level']:g}%"

    def est(approach: str, k: str) -> str:
        if approach not in ex:
            return "not fitted (see Warnings)"
        e = ex[approach][k]
        lo, hi = e["interval"]
        iv = f" ({pct}: {_g(lo)} to {_g(hi)})" if lo is not None else ""
        return f"{_g(e['estimate'])}{iv}"

    runs = study["runs"]
    design = (f"{runs['branches']} IsoFLOP points as cooldown branches of {runs['trunks']} constant-lr trunks"
              if runs.get("branches") else f"{runs['total']} IsoFLOP runs")
    if runs.get("predicted"):
        design += (f" and {runs['predicted']} more predicted from them, never trained (see "
                   f"\"Predicted branch points\")")
    lines = [f"# Scaling study `{study['sweep']}`", "",
             f"{design} ({len(study['budgets'])} budgets x {len(study['sizes'])} sizes) "
             f"on `{study['data']}`, then one held-out run. Trained now: {study['runs']['trained_now']} "
             f"(reused from earlier invocations: {study['runs']['reused']}). Wall time {duration(study['wall_time'])}; "
             f"{study['finished']}.", "",
             "## Result", "",
             f"- Approach 2 (IsoFLOP): N_opt ~ C^a, a = {est('isoflop', 'a')}; D_opt ~ C^b, b = {est('isoflop', 'b')}",
             f"- Approach 3 (parametric): a = {est('parametric', 'a')}, b = {est('parametric', 'b')}; "
             f"alpha = {est('parametric', 'alpha')}, beta = {est('parametric', 'beta')}, E = {est('parametric', 'E')}",
             f"- Held-out run at C = {h['C']:.3g} ({h['factor']:g} x the largest budget), predicted compute-optimal "
             f"N = {h['N_opt']:.3g}, trained as width {h['shape']['width']}, depth {h['shape']['depth']} "
             f"(N = {h['N']:,}, D = {h['D']:,}):", ""]
    lines += ["  | | loss |", "  | --- | --- |",
              f"  | predicted (Approach 3, written before training) | {_g(h['predicted'])} "
              f"({pct}: {_g(h.get('predicted_low'))} to {_g(h.get('predicted_high'))}) |",
              f"  | measured | {_g(h.get('measured'))} |",
              f"  | error (predicted - measured) / measured | {_pct(h.get('rel_error'))} "
              f"({'within' if h.get('within_target') else 'outside'} the 2% target) |",
              f"  | where the measurement falls | {h.get('position') or ''} |", *_measured_only_rows(h, pct), "",
              "![holdout](holdout.png)", ""]
    lines += predicted_lines(study) + cost_lines(study) + wandb_lines(study)
    lines += ["## Runs", "",
              "| budget C | width | depth | role | N | D | own D | steps | val loss | wall time | status |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs_table:
        budget = f"{r['budget']:.3g}" if r.get("budget") is not None else "-"
        lines.append(f"| {budget} | {r['width']} | {r['depth']} | {r.get('role') or 'run'} | {r['N']:,} | {r['D']:,} | "
                     f"{r.get('own_D', r['D']):,} | {r['steps']} | {_g(r.get('val_loss'))}"
                     f"{' (predicted)' if r.get('predicted') else ''} | {duration(r.get('wall_time'))} | "
                     f"{'predicted, not trained' if r.get('predicted') else r['status']}{' (reused)' if r['reused'] else ''} |")
    lines += ["", f"Settings: {study['settings']}", ""]
    body = []
    for line in fit_report.splitlines():
        body.append("#" + line if line.startswith("#") else line)
    return "\n".join(lines + body) + "\n"


def _measured_only_rows(h: dict[str, Any], pct: str) -> list[str]:
    """The held-out table's rows for Approach 3 fitted to the measured points alone (--predict-branches)."""
    mo = h.get("measured_only")
    if not mo:
        return []
    if not mo.get("fitted"):
        return ["  | predicted by Approach 3 on the measured points alone | not fitted (see Predicted branch points) |"]
    return [f"  | predicted by Approach 3 on the measured points alone ({mo['n_points']} points) | "
            f"{_g(mo['predicted'])} ({pct}: {_g(mo.get('predicted_low'))} to {_g(mo.get('predicted_high'))}) |",
            f"  | its error | {_pct(mo.get('rel_error'))} ({'within' if mo.get('within_target') else 'outside'} the "
            f"2% target; {'inside' if mo.get('inside_interval') else 'outside'} its interval) |"]


def predicted_lines(study: dict[str, Any]) -> list[str]:
    """--predict-branches: how many points were predicted, how, what it saved, and each point."""
    p = study.get("predicted_branches")
    if not p:
        return []
    conv = study["costs"]["convention"]
    mo = p["measured_only"]["exponents"]
    a_mo = ", ".join(f"{name} a = {_g(mo[k]['a']['estimate'])}" for k, name in
                     (("isoflop", "Approach 2"), ("parametric", "Approach 3")) if k in mo) or "none fitted"
    lines = ["## Predicted branch points", "",
             f"Each trunk trained {p['trained_per_trunk']} of its cooldown branches (the longest"
             f"{' and the shortest' if p['trained_per_trunk'] > 1 else ''}); the final loss of the other "
             f"{p['n_predicted']} branch points was predicted by the curve law `{p['law']}` fitted to the trunk's and "
             f"its trained branches' {p['fitted_loss']} (evaluated every {p['eval_every']} steps), not measured. "
             f"The fits above use {p['n_measured']} measured and {p['n_predicted']} predicted points; predicted "
             "points are hollow in the plots.", "",
             f"FLOPs ({conv}): the sweep as trained {p['sweep_flops']:.3g}; with every branch trained "
             f"{p['all_branches_flops']:.3g}: **{100 * (p['saved_share'] or 0):.1f}% saved** ({p['saved_flops']:.3g}). "
             "The periodic evaluations the law needs are not in these FLOPs (they cost wall time).", "",
             f"Fitted to the measured points alone: {a_mo}.", ""]
    lines += [f"- {note}" for note in p["measured_only"]["notes"]] + ([""] if p["measured_only"]["notes"] else [])
    lines += ["| budget C | width | N | D | predicted val loss | trunk |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {pt['budget']:.3g} | {pt['width']} | {int(pt['N']):,} | {int(pt['D']):,} | {_g(pt['loss'])}"
              f"{' (extrapolated)' if pt.get('extrapolated') else ''} | {pt['trunk']} |" for pt in p["points"]]
    return lines + [""]


def cost_lines(study: dict[str, Any]) -> list[str]:
    """What the study cost: FLOPs and time per phase, and what the fixed design without branches costs."""
    c, ph = study["costs"], study.get("phases") or study["costs"].get("phases", {})
    conv = c["convention"]
    lines = ["## Cost", "",
             f"| what | FLOPs ({conv}) | wall time |", "| --- | --- | --- |",
             f"| planning (expand and price the sweep) | - | {duration(ph.get('plan'))} |",
             f"| sweep ({study['runs']['total']} runs; each trunk counted once, each branch for its own tokens) | "
             f"{c['sweep_flops']:.3g} | {duration(ph.get('sweep'))} |",
             *([f"| branch predictions (a curve-law fit per trunk) | - | {duration(ph['predict'])} |"]
               if ph.get("predict") is not None else []),
             f"| fits (bootstrap {study['bootstrap']}) | - | {duration(ph.get('fit'))} |",
             f"| held-out run (planned, then trained) | {c['holdout_flops']:.3g} | "
             f"{duration((ph.get('holdout_plan') or 0) + (ph.get('holdout') or 0))} |",
             f"| analysis report, plots, W&B analysis run | - | {duration(ph.get('analysis'))} |",
             f"| study report | - | {duration(ph.get('report'))} |", ""]
    if c.get("fixed_sweep") and c["fixed_sweep"] != study["sweep"]:
        est = c.get("fixed_seconds_estimate")
        lines += [f"The same points as separate runs would cost {c['separate_flops']:.3g} FLOPs. The fixed design "
                  f"without branches (sweep `{c['fixed_sweep']}`, {c['fixed_runs']} separate cosine runs) costs "
                  f"{c['fixed_flops']:.3g} FLOPs: this sweep spent {100 * c['ratio_to_fixed']:.1f}% of it"
                  + (f" (its sweep would take about {duration(est)} at this sweep's FLOPs per second)" if est else "")
                  + ".", ""]
    return lines


def wandb_lines(study: dict[str, Any]) -> list[str]:
    w = study.get("wandb")
    if not w:
        return []
    return ["## W&B", "",
            f"The W&B runs ({w['mode']}) of the sweep, the held-out run and the study's analysis run are in one folder, "
            f"`{w['dir']}`; each run's folder is `offline-run-<time>-<run id>-<suffix>`.", "",
            f"- look at it in the terminal: `{w['view']}`",
            f"- upload it later (after `wandb login`): `{w['sync']}`", ""]


def _g(x: Any) -> str:
    x = _f(x)
    return "n/a" if x is None else f"{x:.4g}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _pct(x: Any) -> str:
    x = _f(x)
    return "n/a" if x is None else f"{100 * x:+.2f}%"


def _settings(cfg: Any) -> str:
    m, o, t = cfg.model, cfg.optim, cfg.train
    return (f"context {m.context}, head dim {m.head_dim}, {m.mlp} MLP, {m.pos} positions, tied head "
            f"{m.tie_embeddings}; AdamW lr {o.lr:g}, {o.schedule} schedule, warmup {o.warmup_fraction:g}, "
            f"final lr {o.final_lr_fraction:g} x peak, weight decay {o.weight_decay:g}; batch {t.batch_size} sequences, "
            f"final evaluation on {t.final_eval_tokens:,} held-out tokens; seed {t.seed}")
