"""Launching on a real Slurm cluster (Debian's slurm-wlm + munge), through the submitit launcher.

The session fixture uses a reachable cluster, or starts the single-node one of tests/slurm/ and stops it
at the end; it skips with the reason when Slurm cannot be installed or started here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, TINY, read_metrics, read_result, run_dirs
from slurm.cluster import Cluster, ensure_cluster

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def slurm() -> Cluster:
    cluster, reason = ensure_cluster()
    if cluster is None:
        pytest.skip(reason)
    yield cluster
    cluster.stop()


def slurm_args(cluster: Cluster, runs_dir: Path, *overrides: str) -> list[str]:
    return [str(BIN / "scaling-train"), "--multirun", "hydra/launcher=slurm",
            f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", *TINY, f"runs_dir={runs_dir}", "group=g", *overrides]


def multirun(cluster: Cluster, runs_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(slurm_args(cluster, runs_dir, *overrides), cwd=runs_dir.parent, env=cluster.env,
                          capture_output=True, text=True, timeout=timeout)


def slurm_jobs(runs_dir: Path) -> list[str]:
    """Slurm ids of the jobs submitit made for the multirun: JOB_TASK for array tasks, JOB for one job."""
    return sorted(p.parent.name for p in (runs_dir / "g" / ".submitit").glob("*/*_submitted.pkl"))


def job_logs(runs_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted((runs_dir / "g" / ".submitit").glob("*/*_log.*")))


def test_two_job_multirun_then_a_relaunch_trains_nothing(slurm, tmp_path):
    runs = tmp_path / "runs"
    proc = multirun(slurm, runs, "model.width=32,48")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(runs / "g")
    results = [read_result(d) for d in dirs]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert sorted(r["model"]["width"] for r in results) == [32, 48]
    # Both ran as tasks of one Slurm array job.
    tasks = slurm_jobs(runs)
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, tasks

    before = {d: ((d / "result.json").read_bytes(), (d / "metrics.jsonl").read_bytes()) for d in dirs}
    proc = multirun(slurm, runs, "model.width=32,48")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_dirs(runs / "g") == dirs
    assert {d: ((d / "result.json").read_bytes(), (d / "metrics.jsonl").read_bytes()) for d in dirs} == before
    assert job_logs(runs).count("already completed") == 2


def test_failing_job_beside_a_successful_one(slurm, tmp_path):
    runs = tmp_path / "runs"
    proc = multirun(slurm, runs, f"data.source=stdlib,{tmp_path / 'no-such-corpus.txt'}")
    assert proc.returncode != 0
    assert "no-such-corpus.txt" in proc.stderr
    results = [read_result(d) for d in run_dirs(runs / "g") if (d / "result.json").exists()]
    assert [r["status"] for r in results] == ["completed"]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _steps_logged(runs: Path) -> int:
    found = list(runs.rglob("metrics.jsonl"))
    return len(found[0].read_text().splitlines()) if found else 0


@pytest.mark.slow
def test_preempted_and_requeued_job_resumes_and_matches_the_uninterrupted_run(slurm, tmp_path):
    """SIGUSR2 (submitit's preemption/time-limit signal) and then `scontrol requeue` (SIGTERM)."""
    overrides = ["train.tokens=60000", "train.log_every=1", "train.checkpoint_every=1000"]
    reference = subprocess.Popen([str(BIN / "scaling-train"), *TINY, f"runs_dir={tmp_path / 'straight'}",
                                  *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs"
    launcher = subprocess.Popen(slurm_args(slurm, runs, *overrides), cwd=tmp_path, env=slurm.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _steps_logged(runs) >= 5, 120, "training to start on Slurm")
        (task,) = slurm_jobs(runs)
        slurm.run("scancel", "--signal=USR2", task)  # what Slurm sends before a time limit or on preemption
        _wait(lambda: "Requeued job" in job_logs(runs), 60, "submitit to requeue the job")
        first = _steps_logged(runs)
        _wait(lambda: _steps_logged(runs) >= first + 5, 120, "the requeued job to train again")
        slurm.run("scontrol", "requeue", task)  # SIGTERM, then the job is queued again
        out, err = launcher.communicate(timeout=240)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, err[-3000:]
    assert reference.wait(timeout=120) == 0, reference.stderr.read()[-2000:]

    (run_dir,) = run_dirs(runs / "g")
    result, straight = read_result(run_dir), read_result(run_dirs(tmp_path / "straight")[0])
    assert result["status"] == "completed"
    assert result["val_loss"] == straight["val_loss"]  # CPU, one thread: bit for bit
    assert result["train_loss"] == straight["train_loss"]
    steps = [row["step"] for row in read_metrics(run_dir)]
    assert steps == list(range(1, result["steps"] + 1)), "a step missing or logged twice"
    logs = job_logs(runs)
    resumed = [int(s) for s in re.findall(r"from step (\d+)", logs)]
    assert len(resumed) == 2 and 0 < resumed[0] < resumed[1] < result["steps"], logs[-3000:]
    assert "received SIGUSR2" in logs and "received SIGTERM" in logs


def test_unreachable_controller_fails_before_submitting(tmp_path):
    if not shutil.which("sinfo"):
        pytest.skip("Slurm client commands (sinfo) are not installed")
    conf = tmp_path / "slurm.conf"  # a cluster whose controller nobody runs
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort=1\nMessageTimeout=1\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost\n")
    proc = subprocess.run([str(BIN / "scaling-train"), "--multirun", "hydra/launcher=slurm", *TINY,
                           f"runs_dir={tmp_path / 'runs'}"], env={**os.environ, "SLURM_CONF": str(conf)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: no Slurm controller reachable (sinfo: ")
    assert line.endswith("): start slurmctld or use hydra/launcher=local")
    assert not (tmp_path / "runs").exists(), "something was submitted"


@pytest.mark.parametrize("override, words", [
    ("hydra.launcher.cpus_per_task=-1", "hydra.launcher.cpus_per_task=-1: must be a positive integer"),
    ("hydra.launcher.partition=no_such_partition", "hydra.launcher.partition='no_such_partition': no such partition"),
    ("hydra.launcher.cpus_per_task=4096", "4096 CPUs per node, but nodes of partition"),
])
def test_invalid_resources_fail_before_submitting(slurm, tmp_path, override, words):
    queued = slurm.run("squeue", "-h", "-o", "%i").stdout
    proc = subprocess.run([*slurm_args(slurm, tmp_path / "runs"), override], env=slurm.env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line
    assert not (tmp_path / "runs").exists(), "something was submitted"
    assert slurm.run("squeue", "-h", "-o", "%i").stdout == queued
