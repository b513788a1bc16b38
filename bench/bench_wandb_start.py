"""Per-run cost of the W&B mirror in offline mode, as a worker process pays it: N runs one after the other in
one process through ``scaling.run.wandb_mirror`` (``start``, a few ``log`` calls, ``finish``), each timed.

The first run also starts W&B's service process (wandb-core); the later ones are what every further run of a
``scaling-study`` worker pays. Each run's offline folder is checked afterwards: its ``.wandb`` file (what
``wandb sync`` and ``wandb leet`` read) and its ``files/requirements.txt``.

    python bench/bench_wandb_start.py            # 8 runs
    python bench/bench_wandb_start.py --runs 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from omegaconf import OmegaConf

INFO = {"params": {"total": 1000, "non_embedding": 600, "with_head": 1000}, "flops_per_token": {"6nd": 3600.0},
        "flops": {"6nd": 3600.0 * 512}, "tokens": 512, "shape": {"width": 32, "depth": 2}}


def run_config(folder: Path) -> object:
    from scaling.config import RunConfig

    cfg = OmegaConf.structured(RunConfig)
    cfg.group, cfg.logger.wandb.mode, cfg.logger.wandb.project = "bench", "offline", "bench"
    cfg.logger.wandb.dir = str(folder)
    return cfg


def one_run(cfg: object, folder: Path, index: int) -> tuple[float, float]:
    """Seconds of ``start`` and of the rest (10 logged steps and ``finish``) of one mirrored run."""
    from scaling.run import wandb_mirror

    t0 = time.perf_counter()
    mirror = wandb_mirror.start(cfg, folder / f"run-{index}", f"run-{index}", None, INFO)
    t1 = time.perf_counter()
    assert mirror.active, "the W&B mirror did not start"
    for step in range(1, 11):
        mirror.log({"step": step, "tokens": 128 * step, "train/loss": 4.0 / step}, step)
    mirror.finish({"status": "completed", "val_loss": 0.4})
    return t1 - t0, time.perf_counter() - t1


def check_files(folder: Path, runs: int) -> str:
    """What each offline run folder holds (they must all hold the same kinds of file)."""
    run_dirs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == runs, run_dirs
    missing = [d.name for d in run_dirs if not list(d.glob("run-*.wandb"))]
    assert not missing, f"no .wandb file in {missing}"
    requirements = [d for d in run_dirs if (d / "files" / "requirements.txt").is_file()]
    texts = {(d / "files" / "requirements.txt").read_text() for d in requirements}
    return f"{len(run_dirs)} offline runs with a .wandb file; {len(requirements)} with requirements.txt " \
           f"({len(texts)} distinct)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=8)
    args = p.parse_args()
    os.environ.pop("WANDB_MODE", None)
    t0 = time.perf_counter()
    import wandb
    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = run_config(folder)
        times = [one_run(cfg, folder, i) for i in range(args.runs)]
        files = check_files(folder, args.runs)
    later = [s for s, _ in times[1:]]
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; date {date.today()}; "
          f"wandb {wandb.__version__}; {files}")
    print("| import wandb s | first run: start s | later runs: start s (median / mean) "
          "| later runs: 10 logs + finish s |")
    print("| --- | --- | --- | --- |")
    print(f"| {import_s:.2f} | {times[0][0]:.3f} | {statistics.median(later):.3f} / {statistics.mean(later):.3f} | "
          f"{statistics.median(t for _, t in times[1:]):.3f} |")


if __name__ == "__main__":
    main()
