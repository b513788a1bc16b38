"""Planning and launching the study's runs through Hydra multirun, with progress read from the run directories."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from scaling.run.record import RunRecord
from scaling.study.options import LAUNCHERS, Options, StudyError
from scaling.study.workers import start_worker
from scaling.sweep.expand import expand_values
from scaling.sweep.pricing import plan_run, run_state
from scaling.units import duration

OVERHEAD_FLOPS_PER_TOKEN = 5e5  # per-token cost of a small CPU model beyond its FLOPs (for time estimates)
# Fixed cost of one run inside a worker (composing its config, setting up, resuming, the final evaluation),
# in the same FLOP-equivalents: about 2 s on a 2-core CPU, where one FLOP-equivalent takes about 4e-11 s.
OVERHEAD_FLOPS_PER_RUN = 5e10


def plan(overrides: list[str]) -> tuple[list[Any], list[Any]]:
    """The sweep's runs as ``scaling.sweep.pricing.PlannedRun`` (run directory, shape, N, D, C, state), and their
    configs (without the ``hydra`` node), from one composed config where the jobs differ only in values
    (``expand_values``; the workers compose each job, to the same run)."""
    jobs = expand_values(overrides)
    return [plan_run(cfg, i, job) for i, (job, cfg) in enumerate(jobs)], [cfg for _, cfg in jobs]


def refresh(runs: list[Any]) -> None:
    """Read each run's state again from its directory (after a launch)."""
    for r in runs:
        r.state = run_state(Path(r.run_dir))


def launch_args(opts: Options, jobs: int) -> list[str]:
    """Hydra arguments that launch the sweep: launcher, runs at a time and threads per run."""
    args = list(LAUNCHERS[opts.launcher])
    if opts.launcher == "local":  # worker processes of one thread each (see launch)
        args += ["train.threads=1"]
    elif opts.launcher == "submitit":  # a process per run; a branch waits for its trunk's checkpoints
        args += [f"hydra.sweeper.max_batch_size={jobs}", "train.threads=1", "train.branch_wait_s=3600"]
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
            result = RunRecord(d).read_result()
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
            tokens = RunRecord(d).last_tokens()
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
            f"~{duration(elapsed * (total - done) / done)} left"
        now_running = ", ".join(f"{_describe(r)} {100 * fraction[r.run_dir]:.0f}%" for r in running)
        print(f"[{self.label}] {len(self.done)}/{len(self.runs)} done, {len(self.runs) - len(self.done)} remain"
              f"{' (running: ' + now_running + ')' if running else ''}; {eta}", flush=True)


def launch(opts: Options, overrides: list[str], runs: list[Any], jobs: int, log_path: Path, label: str,
           extra: list[str] | None = None, by_shape: bool = True,
           on_spare_core: Callable[[], None] | None = None) -> float:
    """Train the runs left to train, showing progress; returns the wall time of the launch.

    ``local``: at most ``jobs`` worker processes, each one ``scaling-train --multirun`` with
    ``hydra/launcher=worker`` (Hydra's basic launcher, cheaper per run) over all runs of its model shapes in
    turn (per shape a trunk and its branches, or the shape's separate runs), so that each process imports
    torch once for many runs; the shapes are dealt to the workers longest first, each to the worker with the
    least work so far. ``basic`` and ``slurm``: one ``scaling-train --multirun`` with that launcher.
    """
    todo = [r for r in runs if r.to_train]
    if not todo:
        return 0.0
    extra = list(extra if extra is not None else launch_args(opts, jobs))
    if opts.launcher == "local" and not by_shape:
        cmds = [(label, [*overrides, *POOL_ARGS, *extra])]
    elif opts.launcher == "local":
        cmds = [(f"{label}-{'+'.join(name for name, _ in chain)}",
                 [*overrides, _shapes_override([shape for _, shape in chain]), *POOL_ARGS, *extra])
                for chain in worker_chains(todo, jobs)]
    else:
        cmds = [(label, [*overrides, *extra])]
    t0 = time.time()
    run_pool(cmds, max(1, jobs if opts.launcher == "local" else 1), log_path, Progress(todo, label), label,
             on_spare_core=on_spare_core)
    return time.time() - t0


def run_pool(cmds: list[tuple[str, list[str]]], jobs: int, log_path: Path, progress: Progress, label: str,
             on_spare_core: Callable[[], None] | None = None) -> None:
    """Run the ``scaling-train --multirun`` commands ``cmds`` (name, arguments), ``jobs`` at a time, showing
    ``progress``; on an interrupt or failure every running one is stopped (it checkpoints; a rerun resumes).
    ``on_spare_core`` is called once, in this process, when a worker has ended and others still train with
    nothing left to start: work of the next phase that needs no result of this one (imports, say)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pending = list(cmds)
    running: list[tuple[str, Any, Path]] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name, args = pending.pop(0)
                running.append(_start(name, args, log_path))
            progress.poll()
            time.sleep(1.0)
            for item in list(running):
                if item[1].poll() is not None:
                    running.remove(item)
                    _check(item, label)
                    if on_spare_core is not None and running and not pending:
                        on_spare_core()
                        on_spare_core = None
    except BaseException:
        for _, proc, _ in running:  # runs checkpoint and stop; a rerun resumes them
            _stop(proc)
        for _, proc, _ in running:
            proc.wait()
        raise
    progress.poll(final=True)


# Each worker: Hydra's basic launcher with a cheaper start per run (``hydra/launcher=worker``,
# ``hydra_plugins/scaling_worker``: its runs one after the other in this process, each composed with every
# interpolation parsed once and trained from a resolved snapshot of its config); the end-of-sweep summary
# is written by the study over the whole sweep, not by each worker over its shape.
POOL_ARGS = ["hydra/launcher=worker", "~hydra.callbacks.sweep_summary"]


def shape_work(todo: list[Any]) -> dict[tuple[int, int], float]:
    """Work left per (width, depth), longest first: own FLOPs plus a per-token and a per-run overhead."""
    work: dict[tuple[int, int], float] = {}
    for r in todo:
        key = (r.shape["width"], r.shape["depth"])
        work[key] = work.get(key, 0.0) + _work(r)
    return dict(sorted(work.items(), key=lambda kv: -kv[1]))


def worker_chains(todo: list[Any], jobs: int) -> list[list[tuple[str, dict[str, int]]]]:
    """The shapes with runs left to train dealt to at most ``jobs`` workers (longest processing time first:
    each shape, longest first, to the worker with the least work so far); each worker's shapes longest first."""
    work = shape_work(todo)
    bins: list[tuple[float, list[tuple[int, int]]]] = [(0.0, []) for _ in range(max(1, min(jobs, len(work))))]
    for key, w in work.items():
        i = min(range(len(bins)), key=lambda j: bins[j][0])
        bins[i] = (bins[i][0] + w, bins[i][1] + [key])
    bins.sort(key=lambda b: -b[0])
    return [[(f"w{w}-d{d}", {"width": w, "depth": d}) for w, d in keys] for _, keys in bins]


def _work(r: Any) -> float:
    own = r.own_tokens if r.own_tokens is not None else r.tokens
    return own * (r.flops["chinchilla"] / max(r.tokens, 1) + OVERHEAD_FLOPS_PER_TOKEN) + OVERHEAD_FLOPS_PER_RUN


def _shapes_override(shapes: list[dict[str, int]]) -> str:
    return "sweep.shapes=[" + ",".join(f"{{width:{s['width']},depth:{s['depth']}}}" for s in shapes) + "]"


def _start(name: str, args: list[str], log_path: Path) -> tuple[str, Any, Path]:
    """One worker (``scaling.study.workers``), its command line written to the launch log and its own log."""
    cmd = [sys.executable, "-m", "scaling.cli.train", "--multirun", *args]
    path = log_path.with_name(f"{name}.log") if name != log_path.stem else log_path
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n  (output: {path.name})\n".encode())
    with open(path, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
    return name, start_worker(args, path), path


def _stop(proc: Any) -> None:
    """SIGTERM to a worker's session (its runs checkpoint and stop), or to the worker before it has one."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, AttributeError):
            proc.terminate()


def _check(item: tuple[str, Any, Path], label: str) -> None:
    name, proc, path = item
    if proc.returncode != 0:
        tail = path.read_text(errors="replace").strip().splitlines()[-15:]
        raise StudyError(f"the {label} launch {name} failed (exit {proc.returncode}); relaunch to resume. "
                         f"Log: {path}\n" + "\n".join(tail))


def _describe(r: Any) -> str:
    b = f"C={r.budget:.3g}" if r.budget is not None else ""
    return f"w{r.shape['width']}-d{r.shape['depth']} {b}".strip()
