"""The study's workers are forked from a server that has imported torch and Hydra already
(``scaling.study.workers``). A forked worker must behave as ``python -m scaling.cli.train --multirun`` in a
new process would: the environment and folder of the launch, its output in its log, the command's exit
status, and a stop that reaches it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scaling.study.launch import Progress, _stop, run_pool
from scaling.study.workers import Worker, start_worker, warm_up

TINY = ["model=tiny", "logger=none", "train.tokens=4096", "train.batch_size=4", "model.context=32",
        "data.max_bytes=200000", "train.final_eval_tokens=2048"]


def _wait(proc, timeout: float = 240.0) -> int:
    end = time.time() + timeout
    while proc.poll() is None and time.time() < end:
        time.sleep(0.2)
    assert proc.poll() is not None, "the worker did not end"
    return proc.returncode


def test_a_forked_worker_trains_in_the_launch_environment_and_folder(tmp_path, monkeypatch):
    warm_up()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDY_TEST_GROUP", "from-env")  # set after the server started: the launch's own
    log = tmp_path / "worker.log"
    proc = start_worker([*TINY, "runs_dir=runs", "group=${oc.env:STUDY_TEST_GROUP}"], log)
    assert isinstance(proc, Worker) and proc.pid != os.getpid()
    assert _wait(proc) == 0, log.read_text()[-3000:]
    (result,) = (tmp_path / "runs" / "from-env").glob("*/result.json")  # relative runs_dir: the launch's folder
    assert json.loads(result.read_text())["status"] == "completed"
    assert "Launching 1 jobs locally" in log.read_text()  # Hydra's output went to the worker's log


def test_a_forked_worker_returns_the_command_exit_status(tmp_path):
    log = tmp_path / "worker.log"
    proc = start_worker([*TINY, f"runs_dir={tmp_path / 'runs'}", "train.tokens=abc"], log)
    assert _wait(proc) != 0
    assert "train.tokens" in log.read_text()


def test_a_stopped_worker_ends(tmp_path):
    proc = start_worker([*TINY, f"runs_dir={tmp_path / 'runs'}", "train.tokens=100000000"], tmp_path / "w.log")
    time.sleep(1.0)
    _stop(proc)
    _wait(proc, timeout=120)  # hours of training left: it ended because it was stopped
    for result in (tmp_path / "runs").rglob("result.json"):
        assert json.loads(result.read_text())["status"] != "completed"


def test_the_next_phase_starts_on_the_core_a_finished_worker_left(tmp_path):
    """``run_pool(on_spare_core=...)``: called once, when one worker has ended while another still trains."""
    calls = []
    cmds = [("help", ["--help"]), ("train", [*TINY, f"runs_dir={tmp_path / 'runs'}", "train.tokens=200000"])]

    def spare() -> None:
        calls.append(len(list((tmp_path / "runs").rglob("result.json"))))  # the training has not finished

    run_pool(cmds, 2, tmp_path / "logs" / "launch.log", Progress([], "test"), "test", on_spare_core=spare)
    assert calls == [0]
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 1


def test_workers_stop_when_the_study_is_killed(tmp_path):
    """A study killed with no time to stop its workers (SIGKILL) must not leave them training unwatched: its
    server ends with it and each worker gets SIGTERM, checkpoints and stops."""
    runs = tmp_path / "runs"
    study = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from scaling.study.workers import start_worker; "
         f"p = start_worker({[*TINY, f'runs_dir={runs}', 'train.tokens=100000000']!r}, "
         f"__import__('pathlib').Path({str(tmp_path / 'w.log')!r})); print(p.pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    worker = int(study.stdout.readline())
    end = time.time() + 240
    while not list(runs.rglob("metrics.jsonl")) and time.time() < end:  # it trains
        time.sleep(0.5)
    assert list(runs.rglob("metrics.jsonl")), (tmp_path / "w.log").read_text()[-3000:]
    study.send_signal(signal.SIGKILL)
    study.wait()
    end = time.time() + 120
    while Path(f"/proc/{worker}").exists() and time.time() < end:
        time.sleep(0.5)
    assert not Path(f"/proc/{worker}").exists(), "the worker trains on after its study was killed"
    for result in runs.rglob("result.json"):
        assert json.loads(result.read_text())["status"] != "completed"
