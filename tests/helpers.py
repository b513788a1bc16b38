"""Helpers for tests that run the real command-line programs in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PROJECT_ROOT

BIN = Path(sys.executable).parent

# A tiny but real run: trains in seconds on two CPU cores.
TINY = [
    "model=tiny", "train.batch_size=8", "train.tokens=40000", "train.eval_every=0",
    "train.eval_tokens=4096", "train.final_eval_tokens=16384", "train.threads=1",
    "data.max_bytes=2000000", "logger=none",
]


def run_cli(program: str, *args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run one of the project's console scripts and capture its output."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(BIN / program), *args], cwd=cwd or PROJECT_ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{program} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_dirs(runs_dir: Path) -> list[Path]:
    return sorted(p.parent for p in runs_dir.rglob("config.yaml") if p.parent.name != ".hydra")


def read_result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def last_step(run_dir: Path) -> int:
    """The step of the last line of a run's metrics.jsonl (0 while there is none)."""
    try:
        return read_metrics(run_dir)[-1]["step"]
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def kill_after_checkpoint(runs_dir: Path, *overrides: str, min_step: int = 40, timeout: float = 300) -> Path:
    """Start ``scaling-train`` into ``runs_dir``, SIGKILL it once it has a checkpoint and has logged
    ``min_step`` steps, and return its (unfinished) run directory."""
    args = [str(BIN / "scaling-train"), *TINY, f"runs_dir={runs_dir}", *overrides]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        dirs = run_dirs(runs_dir) if runs_dir.exists() else []
        if dirs and list((dirs[0] / "checkpoints").glob("step_*.pt")) and last_step(dirs[0]) >= min_step:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = run_dirs(runs_dir)
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    return killed
