"""Launching on this machine: submitit_local multirun, SIGTERM checkpoint-and-exit, DDP with gloo."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, TINY, read_metrics, read_result, run_cli, run_dirs
from scaling.errors import ConfigError
from scaling.sweep.launch_check import check_launcher

LOCAL_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def test_local_multirun_runs_each_job_and_a_relaunch_trains_nothing(tmp_path):
    args = ["--multirun", "hydra/launcher=local", *TINY, "train.tokens=20000", f"runs_dir={tmp_path}",
            "group=pair", "model.width=32,48"]
    proc = run_cli("scaling-train", *args, cwd=tmp_path, check=True)
    dirs = run_dirs(tmp_path / "pair")
    assert len(dirs) == 2, proc.stdout + proc.stderr
    results = [read_result(d) for d in dirs]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert sorted(r["model"]["width"] for r in results) == [32, 48]
    assert len(list((tmp_path / "pair" / ".submitit").glob("*/*_result.pkl"))) == 2  # ran as submitit jobs

    before = {d: ((d / "result.json").read_bytes(), (d / "metrics.jsonl").read_bytes()) for d in dirs}
    run_cli("scaling-train", *args, cwd=tmp_path, check=True)
    assert run_dirs(tmp_path / "pair") == dirs
    assert {d: ((d / "result.json").read_bytes(), (d / "metrics.jsonl").read_bytes()) for d in dirs} == before


def test_invalid_local_resources_fail_before_launching(tmp_path):
    proc = run_cli("scaling-train", "--multirun", "hydra/launcher=local", "hydra.launcher.cpus_per_task=-2",
                   *TINY, f"runs_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: hydra.launcher.cpus_per_task=-2: must be a positive integer"
    assert not any(tmp_path.iterdir()), "something was launched"


@pytest.mark.parametrize("launcher, words", [
    ({"timeout_min": 0}, "hydra.launcher.timeout_min=0: must be a positive integer"),
    ({"gpus_per_node": -1}, "hydra.launcher.gpus_per_node=-1: must be an integer >= 0"),
    ({"mem_gb": 2.5}, "hydra.launcher.mem_gb=2.5: must be a positive integer"),
    ({"tasks_per_node": True}, "hydra.launcher.tasks_per_node=True: must be a positive integer"),
])
def test_resource_check_names_the_field_and_what_is_allowed(launcher, words):
    with pytest.raises(ConfigError) as err:
        check_launcher({"_target_": LOCAL_TARGET, "cpus_per_task": 1, **launcher})
    assert str(err.value) == words
    check_launcher({"_target_": LOCAL_TARGET, "cpus_per_task": 1, "gpus_per_node": 0, "mem_gb": None})


def test_sigterm_checkpoints_exits_and_a_rerun_matches_the_uninterrupted_run(tmp_path):
    overrides = ["train.tokens=50000", "train.checkpoint_every=1000", "train.log_every=2"]
    straight = subprocess.Popen([str(BIN / "scaling-train"), *TINY, f"runs_dir={tmp_path / 'straight'}",
                                 *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped_root = tmp_path / "stopped"
    args = [str(BIN / "scaling-train"), *TINY, f"runs_dir={stopped_root}", *overrides]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(stopped_root.rglob("metrics.jsonl")):
        time.sleep(0.2)
    (metrics,) = stopped_root.rglob("metrics.jsonl")
    while time.time() < deadline and metrics.stat().st_size == 0:  # training has started
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "run the same command again to resume" in err
    (run_dir,) = run_dirs(stopped_root)
    assert not (run_dir / "result.json").exists()
    (ckpt,) = _checkpoints(run_dir)  # written by the guard: checkpoint_every is beyond the run
    stopped_at = int(ckpt.stem.split("_")[1])

    run_cli("scaling-train", *TINY, f"runs_dir={stopped_root}", *overrides, check=True)
    assert straight.wait(timeout=180) == 0
    result, reference = read_result(run_dir), read_result(run_dirs(tmp_path / "straight")[0])
    assert 0 < stopped_at < result["steps"]
    assert result["status"] == "completed"
    assert result["val_loss"] == reference["val_loss"]  # CPU, one thread: bit for bit
    steps = [row["step"] for row in read_metrics(run_dir)]
    assert steps == sorted(set(steps)), "a step logged twice"


def test_ddp_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    overrides = [*TINY, "train.tokens=20000", "train.log_every=1", "train.device=cpu"]
    single = subprocess.Popen([str(BIN / "scaling-train"), *overrides, f"runs_dir={tmp_path / 'one'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ddp = run_cli("torchrun", "--standalone", "--nproc_per_node", "2", "--no-python", str(BIN / "scaling-train"),
                  *overrides, f"runs_dir={tmp_path / 'two'}", cwd=tmp_path, check=True)
    assert single.wait(timeout=180) == 0, single.stderr.read()
    (one,), (two,) = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    r1, r2 = read_result(one), read_result(two)
    assert (r1["world_size"], r2["world_size"]) == (1, 2), ddp.stderr[-2000:]
    assert r2["tokens"] == r1["tokens"] and r2["steps"] == r1["steps"]
    # Same global batch, gradients averaged over ranks: the same losses up to float32 summation order.
    loss1 = [row["train/loss"] for row in read_metrics(one)]
    loss2 = [row["train/loss"] for row in read_metrics(two)]
    assert len(loss1) == len(loss2) == r1["steps"]
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-4)
