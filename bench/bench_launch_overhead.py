"""Per-run start-up overhead of a multirun: a process per run (submitit) against runs in one worker process
(Hydra's basic launcher, and ``hydra/launcher=worker``, the basic launcher as ``scaling-study``'s workers run
it: each job composed with every interpolation parsed once and trained from a resolved snapshot), and that
worker started as a new process against one forked from the study's warm server (``scaling.study.workers``).

Launches the same N tiny runs (``model=tiny``, a few dozen steps each, logging to W&B offline or not)
once with ``hydra/launcher=local`` (submitit: every run its own process, one at a time) and once with
``hydra/launcher=basic`` (every run in one process, as each of ``scaling-study``'s worker processes runs
one width's runs), and prints per run: the launch's wall time over N, the training loop's own time (from
metrics.jsonl), and their difference, the overhead (process start, imports, Hydra composition, data
opening, model construction, W&B start, the final evaluation, the record).

    python bench/bench_launch_overhead.py              # 4 runs, W&B offline
    python bench/bench_launch_overhead.py --runs 6 --logger none --launchers basic worker
    python bench/bench_launch_overhead.py --runs 1 --launchers worker forked   # the study's worker start-up
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench_train import loop_seconds  # bench/ is on sys.path when a bench script runs
from scaling.study.workers import start_worker, warm_up

BIN = Path(sys.executable).parent
TINY = ["model=tiny", "train.batch_size=8", "model.context=64", "train.tokens=20480", "train.eval_every=0",
        "train.final_eval_tokens=4096", "train.checkpoint_every=0", "train.threads=1", "data.max_bytes=2000000"]
LAUNCHER_ARGS = {"submitit": ["hydra/launcher=local", "hydra.sweeper.max_batch_size=1"],
                 "basic": ["hydra/launcher=basic"], "worker": ["hydra/launcher=worker"],
                 "forked": ["hydra/launcher=worker"]}
LABELS = {"submitit": "a process per run (hydra/launcher=local, submitit)",
          "basic": "runs in one worker process (hydra/launcher=basic)",
          "worker": "runs in one worker process (hydra/launcher=worker), a new process",
          "forked": "runs in one worker process (hydra/launcher=worker) forked from the warm server, as scaling-study's"}


def launch(launcher: str, runs: int, logger: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        extra = LAUNCHER_ARGS[launcher]
        cmd = [str(BIN / "scaling-train"), "--multirun", *TINY, f"logger={logger}", f"runs_dir={tmp}",
               f"train.seed={','.join(str(i) for i in range(runs))}", *extra]
        os.environ["WANDB_MODE"] = "offline"
        t0 = time.perf_counter()
        if launcher == "forked":
            _forked(cmd[2:], Path(tmp) / "worker.log")
        else:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        dirs = [p.parent for p in Path(tmp).rglob("result.json")]
        assert len(dirs) == runs, dirs
        loop = sum(loop_seconds(d) for d in dirs)
    return {"wall_per_run": wall / runs, "loop_per_run": loop / runs, "overhead_per_run": (wall - loop) / runs}


def warm_server() -> None:
    """Start the study's worker server and wait until it forks (its imports done), as the study does while
    it plans the sweep; the forked launch is then timed from a warm server."""
    with tempfile.TemporaryDirectory() as tmp:
        warm_up()
        _forked(["--help"], Path(tmp) / "help.log")


def _forked(args: list[str], log: Path) -> None:
    proc = start_worker(args, log)
    if proc.wait() != 0:
        raise SystemExit(f"the forked worker failed: {log.read_text()[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--logger", default="wandb", choices=["wandb", "none"])
    p.add_argument("--launchers", nargs="+", default=list(LAUNCHER_ARGS), choices=list(LAUNCHER_ARGS))
    args = p.parse_args()
    if "forked" in args.launchers:
        warm_server()
    rows = {name: launch(name, args.runs, args.logger) for name in args.launchers}
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; date {date.today()}; "
          f"{args.runs} tiny runs (40 steps of model=tiny), logger={args.logger}")
    print("| launch | wall s per run | training loop s per run | overhead s per run |")
    print("| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {LABELS[name]} | {r['wall_per_run']:.2f} | {r['loop_per_run']:.2f} | {r['overhead_per_run']:.2f} |")


if __name__ == "__main__":
    main()
