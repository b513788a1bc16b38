"""``scaling-study``: a complete scaling study from one command, checked against a held-out larger run.

    scaling-study [--quick] [--out DIR] [--launcher local|basic|slurm] [--jobs J] [OVERRIDE ...]

1. Sweep: the named IsoFLOP sweep (``sweeps/sweep/study.yaml``, or ``study_quick.yaml`` with ``--quick``)
   is launched through Hydra multirun (``scaling-train --multirun``), at most ``--jobs`` runs at a time,
   into ``DIR/runs``. Run directories are config-hashed, so a relaunch returns finished runs unchanged.
2. Fit: Approach 2 (IsoFLOP parabolas) and Approach 3 (parametric law) with bootstrap intervals.
3. Check: one held-out run at ``--holdout-factor`` (4) x the largest budget, at the compute-optimal size
   Approach 3 predicts (rounded to a valid shape of the sweep's family); its loss is predicted before it
   trains and compared with the measurement.
4. Report: ``DIR/report.md`` with its plots, ``DIR/fit.json`` and ``DIR/study.json``.

This is the one module of ``scaling`` that imports ``analysis``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from scaling.errors import ConfigError, report_user_error
from scaling.io import atomic_write_json, atomic_write_text, read_json_object

LAUNCHERS = {"local": ["hydra/launcher=local"], "basic": [], "slurm": ["hydra/launcher=slurm"]}
PRESETS = {  # variant -> (sweep name, default output folder, bootstrap resamples)
    "full": ("study", "study/full", 1000),
    "quick": ("study_quick", "study/quick", 200),
}
OVERHEAD_FLOPS_PER_TOKEN = 5e5  # per-token cost of a small CPU model beyond its FLOPs (for time estimates)

USAGE = """\
usage: scaling-study [--quick] [--out DIR] [--launcher local|basic|slurm] [--jobs J]
                     [--holdout-factor K] [--bootstrap B] [OVERRIDE ...]

Run an IsoFLOP sweep on the embedded corpus through Hydra multirun, fit Approach 2 and Approach 3 with
bootstrap intervals, train one held-out run at K x (default 4) the largest budget at the predicted
compute-optimal size, and write a Markdown report with plots into DIR (default study/full, or study/quick
with --quick). Runs already finished in DIR/runs are reused, so a second invocation only refits.

  --quick            the short variant (sweep study_quick: smaller budgets and sizes, a few minutes)
  --out DIR          output folder: report.md, plots, fit.json, study.json, runs/, logs/
  --launcher L       local (submitit, default), basic (Hydra's, one run at a time, in one process), slurm
  --jobs J           runs at a time on this machine (local: default the number of cores; one thread each)
  --holdout-factor K compute of the held-out run over the sweep's largest budget (default 4, at least 1)
  --bootstrap B      bootstrap resamples of each fit (default 1000, --quick 200)
  OVERRIDE           Hydra overrides for every run, e.g. optim.lr=3e-3 logger=none
"""


# --------------------------------------------------------------------------------------------------
# Options.


@dataclasses.dataclass
class Options:
    variant: str = "full"
    out: Optional[Path] = None
    launcher: str = "local"
    jobs: Optional[int] = None
    holdout_factor: float = 4.0
    bootstrap: Optional[int] = None
    overrides: list[str] = dataclasses.field(default_factory=list)
    help: bool = False

    @property
    def sweep(self) -> str:
        return PRESETS[self.variant][0]


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    i = 0

    def value(flag: str) -> str:
        if i + 1 >= len(argv):
            raise ConfigError(f"{flag} needs a value")
        return argv[i + 1]

    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=")
        if a in ("-h", "--help"):
            opts.help = True
        elif a == "--quick":
            opts.variant = "quick"
        elif flag in ("--out", "--launcher", "--jobs", "--holdout-factor", "--bootstrap"):
            text = inline if eq else value(flag)
            i += 0 if eq else 1
            if flag == "--out":
                opts.out = Path(text).expanduser()
            elif flag == "--launcher":
                if text not in LAUNCHERS:
                    raise ConfigError(f"--launcher={text!r} is unknown: choose {', '.join(LAUNCHERS)}")
                opts.launcher = text
            elif flag == "--holdout-factor":
                opts.holdout_factor = _number(flag, text, minimum=1.0)
            else:
                n = _number(flag, text, minimum=1 if flag == "--jobs" else 0)
                if n != int(n):
                    raise ConfigError(f"{flag}={text!r} is invalid: it must be a whole number")
                setattr(opts, flag[2:], int(n))
        elif a.startswith("-"):
            raise ConfigError(f"option {a!r} is unknown: choose --quick, --out DIR, --launcher "
                              f"{'|'.join(LAUNCHERS)}, --jobs J, --holdout-factor K, --bootstrap B")
        else:
            key = a.partition("=")[0].lstrip("+~")
            if key in ("runs_dir", "group", "sweep") or key.startswith("hydra/launcher"):
                raise ConfigError(f"override {a!r} is set by scaling-study: use --out or --launcher instead")
            opts.overrides.append(a)
        i += 1
    return opts


def _number(flag: str, text: str, minimum: float) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not (math.isfinite(x) and x >= minimum):
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a number >= {minimum:g}")
    return x


def check_out_dir(out: Path) -> Path:
    """Create ``out`` and check that files can be written there (else a ConfigError)."""
    out = out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out={str(out)!r} is not writable ({exc.strerror or exc}): choose a folder you can write") from exc
    return out


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# Planning and launching through Hydra.


def plan(overrides: list[str]) -> tuple[list[Any], list[Any]]:
    """The sweep's runs as ``scaling.plan.PlannedRun`` (run directory, shape, N, D, C, state), and their configs."""
    from scaling.plan import expand, plan_run

    jobs = expand(overrides)
    return [plan_run(cfg, i, job) for i, (job, cfg) in enumerate(jobs)], [cfg for _, cfg in jobs]


def refresh(runs: list[Any]) -> None:
    """Read each run's state again from its directory (after a launch)."""
    from scaling.plan import run_state

    for r in runs:
        r.state = run_state(Path(r.run_dir))


def launch_args(opts: Options, jobs: int) -> list[str]:
    """Hydra arguments that launch the sweep: launcher, runs at a time and threads per run."""
    args = list(LAUNCHERS[opts.launcher])
    if opts.launcher == "local":
        args += [f"hydra.sweeper.max_batch_size={jobs}", "train.threads=1"]
    elif opts.launcher == "basic":
        args += [f"train.threads={jobs}"]
    return args


class Progress:
    """Polls the planned run directories while the launcher runs: which run, how many remain, time left."""

    def __init__(self, runs: list[Any], label: str, every: float = 20.0):
        self.runs, self.label, self.every = runs, label, every
        self.work = {r.run_dir: r.tokens * (r.flops["chinchilla"] / max(r.tokens, 1) + OVERHEAD_FLOPS_PER_TOKEN)
                     for r in runs}
        self.done: set[str] = set()
        self.started: set[str] = set()
        self.t0 = time.time()
        self.last_print = 0.0

    def poll(self, final: bool = False) -> None:
        fraction: dict[str, float] = {}
        for r in self.runs:
            d = Path(r.run_dir)
            result = read_json_object(d / "result.json")
            if result is not None:
                fraction[r.run_dir] = 1.0
                if r.run_dir not in self.done:
                    self.done.add(r.run_dir)
                    loss = result.get("val_loss")
                    what = f"val loss {loss:.4f}" if isinstance(loss, (int, float)) else result.get("status", "?")
                    print(f"[{self.label}] finished {_describe(r)}: {what} "
                          f"({len(self.done)}/{len(self.runs)} done, {len(self.runs) - len(self.done)} remain)",
                          flush=True)
                continue
            tokens = _last_tokens(d / "metrics.jsonl")
            if tokens is not None:
                if r.run_dir not in self.started:
                    self.started.add(r.run_dir)
                    print(f"[{self.label}] training {_describe(r)}", flush=True)
                fraction[r.run_dir] = min(1.0, tokens / max(r.tokens, 1))
        now = time.time()
        if final or now - self.last_print < self.every:
            return
        self.last_print = now
        total = sum(self.work.values())
        done = sum(self.work[k] * f for k, f in fraction.items())
        running = [r for r in self.runs if r.run_dir in fraction and fraction[r.run_dir] < 1.0]
        elapsed = now - self.t0
        eta = "estimating time left" if done <= 0 or elapsed < 5 else \
            f"~{_duration(elapsed * (total - done) / done)} left"
        now_running = ", ".join(f"{_describe(r)} {100 * fraction[r.run_dir]:.0f}%" for r in running)
        print(f"[{self.label}] {len(self.done)}/{len(self.runs)} done, {len(self.runs) - len(self.done)} remain"
              f"{' (running: ' + now_running + ')' if running else ''}; {eta}", flush=True)


def launch(opts: Options, overrides: list[str], runs: list[Any], jobs: int, log_path: Path, label: str) -> float:
    """Run ``scaling-train --multirun`` for the runs left to train, showing progress; returns its wall time."""
    todo = [r for r in runs if r.to_train]
    if not todo:
        return 0.0
    cmd = [sys.executable, "-m", "scaling.train", "--multirun", *overrides, *launch_args(opts, jobs)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(todo, label)
    t0 = time.time()
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                progress.poll()
                time.sleep(1.0)
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)  # runs checkpoint and stop; a rerun resumes them
            proc.wait()
            raise
    progress.poll(final=True)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise StudyError(f"the {label} launch failed (exit {proc.returncode}); relaunch to resume. "
                         f"Log: {log_path}\n" + "\n".join(tail))
    return time.time() - t0


class StudyError(RuntimeError):
    """A sweep or held-out run failed: reported on stderr, exit status 1."""


# --------------------------------------------------------------------------------------------------
# The held-out run.


def holdout_shape(run: Any, n_opt: float, head_dim: int, depth: int, cfg: Any) -> dict[str, int]:
    """Width (a multiple of the head dimension) at the sweep's depth whose N is closest to n_opt in log."""
    from scaling.flops import param_counts
    from scaling.resolvers import PARAMS_OF_CONVENTION, model_config, vocab_size

    base = model_config(cfg)
    vocab = vocab_size(cfg)
    conv = PARAMS_OF_CONVENTION.get(run.convention, "non_embedding")
    best = None
    for width in range(head_dim, 64 * head_dim + 1, head_dim):
        n = param_counts(dataclasses.replace(base, width=width, depth=depth), vocab)[conv]
        score = abs(math.log(n / n_opt))
        if best is None or score < best[0]:
            best = (score, width)
    return {"width": best[1], "depth": depth}


def _family(runs: list[Any]) -> tuple[int, int]:
    """The sweep's head dimension and depth rule (one depth for every size)."""
    depths = {r.shape["depth"] for r in runs}
    if len(depths) != 1:
        raise ConfigError(f"sweep.shapes use depths {sorted(depths)}: the held-out run needs one depth for every size")
    head_dims = {r.shape["width"] // r.shape["heads"] for r in runs}
    return min(head_dims), depths.pop()


# --------------------------------------------------------------------------------------------------
# Fits, report.


def fit_all(runs_dir: Path, convention: str, bootstrap: int, notes: list[str]) -> tuple[Any, dict[str, Any], Any]:
    """Load the sweep's records and fit Approaches 2 and 3 (and Kaplan's L(C) for the loss plot)."""
    from analysis import AnalysisInputError, fit_isoflop, fit_kaplan_table, fit_parametric, load_curves, load_runs
    from scaling.resolvers import PARAMS_OF_CONVENTION

    params = PARAMS_OF_CONVENTION.get(convention, "non_embedding")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_runs(runs_dir, params=params, flops=convention)
        curves = load_curves(runs_dir, params=params, flops=convention)
        results: dict[str, Any] = {}
        try:
            results["isoflop"] = fit_isoflop(runs.N, runs.loss, runs.C, D=runs.D, bootstrap=bootstrap)
        except AnalysisInputError as exc:  # e.g. no budget with its minimum inside the sizes
            notes.append(f"Approach 2 not fitted: {exc}")
        try:
            results["parametric"] = fit_parametric(runs.N, runs.D, runs.loss, bootstrap=bootstrap)
        except AnalysisInputError as exc:
            raise StudyError(f"Approach 3 cannot be fitted to the sweep's runs: {exc}") from exc
        try:
            results["kaplan"] = fit_kaplan_table(runs, xs=("C",))  # for the loss plot; no bootstrap (slow)
        except Exception as exc:  # noqa: BLE001 - an optional law must not lose the study
            notes.append(f"Kaplan L(C) not fitted: {exc}")
    notes += [str(w.message) for w in caught]
    return runs, results, curves


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
    sc = ax.scatter(runs.C, runs.loss, c=np.log10(runs.N), cmap="viridis", s=22, label="sweep runs")
    fig.colorbar(sc, ax=ax, label="log10 N")
    ax.plot(C, alloc.loss_opt, color="k", lw=1.2, label="Approach 3: loss at the optimum")
    if "loss_opt_low" in alloc:
        ax.fill_between(C, alloc.loss_opt_low, alloc.loss_opt_high, color="k", alpha=0.12, lw=0)
    lo, hi = holdout.get("predicted_low"), holdout.get("predicted_high")
    if lo is not None and hi is not None:
        ax.errorbar([holdout["C"]], [holdout["predicted"]], yerr=[[holdout["predicted"] - lo], [hi - holdout["predicted"]]],
                    fmt="s", color="tab:blue", mfc="none", capsize=4, label="held-out: predicted")
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


def _interval(res: Any, name: str) -> list[Optional[float]]:
    iv = res.interval.get(name)
    return [_f(iv[0]), _f(iv[1])] if iv is not None else [None, None]


def _f(x: Any) -> Optional[float]:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def exponents(results: dict[str, Any]) -> dict[str, Any]:
    """Compute-optimal exponents N_opt ~ C^a, D_opt ~ C^b (and the law's alpha, beta, E) with intervals."""
    out: dict[str, Any] = {}
    for approach, names in (("isoflop", ("a", "b")), ("parametric", ("a", "b", "alpha", "beta", "E", "A", "B"))):
        res = results.get(approach)
        if res is None:
            continue
        out[approach] = {k: {"estimate": _f(res.estimates.get(k)), "interval": _interval(res, k)} for k in names}
        out[approach]["level"] = res.level
        out[approach]["warnings"] = list(res.warnings)
    return out


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

    lines = [f"# Scaling study `{study['sweep']}`", "",
             f"{study['runs']['total']} IsoFLOP runs ({len(study['budgets'])} budgets x {len(study['sizes'])} sizes) "
             f"on `{study['data']}`, then one held-out run. Trained now: {study['runs']['trained_now']} "
             f"(reused from earlier invocations: {study['runs']['reused']}). Wall time {_duration(study['wall_time'])}; "
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
              f"  | where the measurement falls | {h.get('position') or ''} |", "",
              "![holdout](holdout.png)", "",
              "## Runs", "",
              "| budget C | width | depth | N | D | steps | val loss | wall time | status |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs_table:
        lines.append(f"| {r['budget']:.3g} | {r['width']} | {r['depth']} | {r['N']:,} | {r['D']:,} | {r['steps']} | "
                     f"{_g(r.get('val_loss'))} | {_duration(r.get('wall_time'))} | {r['status']}{' (reused)' if r['reused'] else ''} |")
    lines += ["", f"Settings: {study['settings']}", ""]
    body = []
    for line in fit_report.splitlines():
        body.append("#" + line if line.startswith("#") else line)
    return "\n".join(lines + body) + "\n"


def _g(x: Any) -> str:
    x = _f(x)
    return "n/a" if x is None else f"{x:.4g}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _pct(x: Any) -> str:
    x = _f(x)
    return "n/a" if x is None else f"{100 * x:+.2f}%"


def _duration(seconds: Any) -> str:
    s = _f(seconds)
    if s is None:
        return "-"
    return f"{s:.0f}s" if s < 90 else f"{int(s // 60)}m{int(s % 60):02d}s"


def _describe(r: Any) -> str:
    b = f"C={r.budget:.3g}" if r.budget is not None else ""
    return f"w{r.shape['width']}-d{r.shape['depth']} {b}".strip()


def _last_tokens(path: Path) -> Optional[int]:
    """Tokens of the last complete line of metrics.jsonl (0 when it exists but is empty)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            return int(json.loads(line)["tokens"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


# --------------------------------------------------------------------------------------------------
# The study.


def run_study(opts: Options) -> dict[str, Any]:
    """Sweep, fit, held-out check and report; returns the ``study.json`` object."""
    t_start = time.time()
    sweep_name, default_out, default_bootstrap = PRESETS[opts.variant]
    out = check_out_dir(opts.out or Path(default_out))
    runs_dir = out / "runs"
    bootstrap = default_bootstrap if opts.bootstrap is None else opts.bootstrap
    jobs = opts.jobs or (cores() if opts.launcher != "slurm" else 1)
    base = [f"+sweep={sweep_name}", f"runs_dir={runs_dir}", *opts.overrides]
    log_path = out / "logs" / "launch.log"

    # 1. The sweep.
    runs, cfgs = plan(base + launch_args(opts, jobs))
    first_cfg = cfgs[0]
    trainable = [r for r in runs if not r.skip_reason]
    if not trainable:
        raise ConfigError(f"sweep {sweep_name}: every run is skipped ({runs[0].skip_reason})")
    reused_dirs = {r.run_dir for r in trainable if not r.to_train}
    reused = len(reused_dirs)
    to_train = len(trainable) - reused
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    sizes = sorted({r.shape["width"] for r in runs})
    convention = runs[0].convention
    print(f"[study] sweep {sweep_name}: {len(runs)} runs ({len(budgets)} budgets x {len(sizes)} sizes, "
          f"{len(runs) - len(trainable)} skipped by its rules) in {runs_dir}", flush=True)
    if to_train:
        how = f"{jobs} at a time" if opts.launcher == "local" else opts.launcher
        print(f"[study] {to_train} to train ({how}, launcher {opts.launcher}); {reused} already completed, reused", flush=True)
    else:
        print(f"[study] all {reused} sweep runs already completed: reusing their records, only refitting", flush=True)
    launch(opts, base, runs, jobs, log_path, "sweep")
    refresh(runs)
    bad = [r for r in runs if not r.skip_reason and r.state != "completed"]
    if bad:
        raise StudyError(f"{len(bad)} sweep run(s) did not complete ({', '.join(_describe(r) + ': ' + (r.state or 'missing') for r in bad)}); "
                         f"see {Path(runs[0].run_dir).parent / 'summary.md'} and {log_path}; relaunch to resume")

    # 2. Fits.
    print(f"[study] fitting Approach 2 and Approach 3 ({bootstrap} bootstrap resamples)", flush=True)
    notes: list[str] = []
    group_dir = Path(runs[0].run_dir).parent
    table, results, curves = fit_all(group_dir, convention, bootstrap, notes)

    # 3. The held-out run: predicted before it trains.
    from analysis.allocation import optimal_allocation, predict_loss
    par = results["parametric"]
    c_hold = opts.holdout_factor * max(budgets)
    alloc = optimal_allocation(par, [c_hold]).iloc[0]
    head_dim, depth = _family(trainable)
    shape = holdout_shape(trainable[0], float(alloc.N_opt), head_dim, depth, first_cfg)
    hold_base = base + [f"group={Path(runs[0].run_dir).parent.name}-holdout", f"sweep.budgets=[{c_hold!r}]",
                        f"sweep.shapes=[{{width:{shape['width']},depth:{shape['depth']}}}]", "sweep.min_steps=1",
                        "sweep.min_tokens_per_param=0", "++sweep.max_tokens_per_param=null"]
    hold_args = launch_args(opts, 1)
    (hold,), _ = plan(hold_base + hold_args)
    if hold.skip_reason:
        raise ConfigError(f"the held-out run (C={c_hold:.3g}, width {shape['width']}) is skipped: {hold.skip_reason}; "
                          f"lower --holdout-factor")
    n_hold = int(hold.params[_params_key(convention)])
    pred = predict_loss(par, [n_hold], [hold.tokens]).iloc[0]
    holdout: dict[str, Any] = {
        "C": float(hold.compute), "factor": opts.holdout_factor, "budget": c_hold, "N_opt": float(alloc.N_opt),
        "D_opt": float(alloc.D_opt), "loss_at_optimum": _f(alloc.loss_opt), "shape": shape, "N": n_hold,
        "D": int(hold.tokens), "run_dir": hold.run_dir, "predicted": float(pred["loss"]),
        "predicted_low": _f(pred.get("loss_low")), "predicted_high": _f(pred.get("loss_high")),
        "level": par.level}
    atomic_write_json(out / "prediction.json", holdout)
    state = "already completed, reused" if not hold.to_train else "training it now (one run)"
    print(f"[study] held-out run: C={hold.compute:.3g} ({opts.holdout_factor:g} x {max(budgets):.3g}), predicted "
          f"N_opt={alloc.N_opt:.3g} -> width {shape['width']} depth {shape['depth']} (N={n_hold:,}, D={hold.tokens:,}); "
          f"predicted loss {pred['loss']:.4f}; {state}", flush=True)
    launch(opts, hold_base, [hold], 1, log_path, "held-out")
    refresh([hold])
    result = read_json_object(Path(hold.run_dir) / "result.json") or {}
    if result.get("status") != "completed":
        raise StudyError(f"the held-out run did not complete ({result.get('status', 'missing')}: {result.get('error', '')}); "
                         f"log: {log_path}")
    measured = float(result["val_loss"])
    holdout["measured"] = measured
    holdout["rel_error"] = (holdout["predicted"] - measured) / measured
    holdout["within_target"] = abs(holdout["rel_error"]) <= 0.02
    lo, hi = holdout["predicted_low"], holdout["predicted_high"]
    if lo is not None and hi is not None:
        holdout["inside_interval"] = lo <= measured <= hi
        quantile = _quantile_in_band(par, n_hold, hold.tokens, measured)
        holdout["quantile"] = quantile
        holdout["position"] = (f"{'inside' if holdout['inside_interval'] else 'outside'} the {100 * par.level:g}% interval"
                               + (f", at its {_ordinal(round(100 * quantile))} percentile of the bootstrap predictions"
                                  if quantile is not None else ""))

    # 4. Report.
    from analysis import write_report

    written = write_report(out, results, runs=table, curves=curves, notes=notes, source=str(group_dir),
                           budgets=budgets + [c_hold])
    fit_report = (out / "report.md").read_text()
    plot_holdout(out / "holdout", table, par, holdout)
    runs_table = []
    for r in trainable:
        res = read_json_object(Path(r.run_dir) / "result.json") or {}
        runs_table.append({"budget": r.budget, "width": r.shape["width"], "depth": r.shape["depth"],
                           "N": int(r.params[_params_key(convention)]), "D": int(r.tokens), "steps": int(r.steps),
                           "val_loss": res.get("val_loss"), "wall_time": res.get("wall_time"),
                           "status": res.get("status", "missing"), "reused": r.run_dir in reused_dirs,
                           "run_dir": r.run_dir})
    study = {
        "sweep": sweep_name, "variant": opts.variant, "out": str(out), "data": str(first_cfg.data.source),
        "convention": convention, "params": _params_key(convention), "budgets": budgets, "sizes": sizes,
        "runs": {"total": len(trainable), "skipped": len(runs) - len(trainable), "trained_now": to_train
                 + (1 if state.startswith("training") else 0), "reused": reused + (0 if state.startswith("training") else 1)},
        "launcher": opts.launcher, "jobs": jobs, "bootstrap": bootstrap, "overrides": opts.overrides,
        "settings": _settings(first_cfg),
        "exponents": exponents(results), "holdout": holdout, "wall_time": time.time() - t_start,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "files": sorted({p.name for p in written.values()} | {"holdout.png", "report.md", "study.json"}),
    }
    atomic_write_text(out / "report.md", markdown(study, runs_table, fit_report))
    atomic_write_json(out / "study.json", study)
    return study


def _params_key(convention: str) -> str:
    from scaling.resolvers import PARAMS_OF_CONVENTION

    return PARAMS_OF_CONVENTION.get(convention, "non_embedding")


def _quantile_in_band(par: Any, N: float, D: float, measured: float) -> Optional[float]:
    """Share of the bootstrap predictions of L(N, D) below the measured loss."""
    import numpy as np

    s = par.samples or {}
    if not all(k in s for k in ("E", "A", "B", "alpha", "beta")):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        preds = s["E"] + s["A"] * N ** -s["alpha"] + s["B"] * D ** -s["beta"]
    preds = preds[np.isfinite(preds)]
    return float((preds < measured).mean()) if preds.size else None


def _settings(cfg: Any) -> str:
    m, o, t = cfg.model, cfg.optim, cfg.train
    return (f"context {m.context}, head dim {m.head_dim}, {m.mlp} MLP, {m.pos} positions, tied head "
            f"{m.tie_embeddings}; AdamW lr {o.lr:g}, {o.schedule} schedule, warmup {o.warmup_fraction:g}, "
            f"final lr {o.final_lr_fraction:g} x peak, weight decay {o.weight_decay:g}; batch {t.batch_size} sequences, "
            f"final evaluation on {t.final_eval_tokens:,} held-out tokens; seed {t.seed}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    try:
        opts = parse_args(argv)
        if opts.help:
            print(USAGE)
            return 0
        study = run_study(opts)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug
        if not report_user_error(exc):
            raise
        return 2
    h = study["holdout"]
    ex = study["exponents"]
    for approach, title in (("isoflop", "Approach 2"), ("parametric", "Approach 3")):
        if approach in ex:
            print(f"[study] {title}: a={_g(ex[approach]['a']['estimate'])}, b={_g(ex[approach]['b']['estimate'])}")
        else:
            print(f"[study] {title}: not fitted (see the report's warnings)")
    print(f"[study] held-out: predicted {_g(h['predicted'])}, measured {_g(h.get('measured'))}, "
          f"error {_pct(h.get('rel_error'))}; {h.get('position', '')}")
    print(f"[study] trained {study['runs']['trained_now']} run(s), reused {study['runs']['reused']}; "
          f"wall time {_duration(study['wall_time'])}")
    print(f"report: {Path(study['out']) / 'report.md'}")
    print(study["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
