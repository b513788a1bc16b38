"""The guard of broken run folders: faults replayed on a tiny run, each asserting that the run still ends
with the uninterrupted run's exact loss (or, for a full disk, one line and an intact previous checkpoint).

The faults: a torn ``result.json``, a garbled ``metrics.jsonl`` tail, a stale checkpoint temporary, a
read-only completed run, two processes on one run folder, and a full disk (a small tmpfs; skipped where
mounting is not permitted). Runs train in this process (``run_training``) except the second process.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from scaling.cli import train as train_cli
from scaling.errors import USER_ERRORS, DataError
from scaling.io import StorageError
from scaling.run import identity
from scaling.run.checkpoint import checkpoint_path, list_checkpoints
from scaling.run.lock import run_folder_lock
from scaling.run.training import run_training
from scaling.sweep.expand import compose_run_config

# 32 steps of 128 tokens; a checkpoint every 8 steps, the one of step 8 kept (a "killed" run resumes from it)
RUN = ["model=tiny", "model.context=32", "train.batch_size=4", "train.tokens=4096", "train.eval_every=0",
       "train.eval_tokens=512", "train.final_eval_tokens=1024", "train.threads=1", "logger=none",
       "data.max_bytes=2000000", "train.log_every=4", "train.checkpoint_every=8", "train.keep_at_tokens=[1024]"]
RESUMED_FROM = 8


def train(run_dir: Path) -> dict:
    return run_training(compose_run_config(RUN), run_dir, record_user_errors=False)


def curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(run_dir)
    return run_dir


def killed(straight: Path, run_dir: Path) -> Path:
    """``straight`` as a run killed after its checkpoint of step 8: no record, no later checkpoint, metrics
    past step 8 (which the resume drops and logs again)."""
    shutil.copytree(straight, run_dir)
    (run_dir / "result.json").unlink()
    for step, path in list_checkpoints(run_dir):
        if step != RESUMED_FROM:
            path.unlink()
    return run_dir


def assert_same_run(run_dir: Path, result: dict, straight: Path) -> None:
    expected = json.loads((straight / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["val_loss"] == expected["val_loss"] and result["train_loss"] == expected["train_loss"]
    assert json.loads((run_dir / "result.json").read_text())["val_loss"] == expected["val_loss"]
    assert curve(run_dir) == curve(straight)


def warnings_of(capfd) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning: ")]


def test_a_torn_result_json_is_set_aside_and_the_run_resumes(straight, tmp_path, capfd):
    run_dir = killed(straight, tmp_path / "run")
    torn = b'{"run_id": "run", "status": "compl'
    (run_dir / "result.json").write_bytes(torn)
    assert_same_run(run_dir, train(run_dir), straight)
    assert (run_dir / "result.json.torn-1").read_bytes() == torn
    (line,) = warnings_of(capfd)
    assert "result.json is torn" in line and "result.json.torn-1" in line


def test_a_garbled_metrics_tail_is_dropped_and_kept_aside(straight, tmp_path, capfd):
    run_dir = killed(straight, tmp_path / "run")
    tail = b'{"step": 33, "train/lo\xff\xfe\x00'
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(tail)
    assert_same_run(run_dir, train(run_dir), straight)
    assert (run_dir / "metrics.jsonl.torn-1").read_bytes() == tail
    (line,) = warnings_of(capfd)
    assert "metrics.jsonl ended in a torn line" in line and "metrics.jsonl.torn-1" in line


def test_a_bad_line_amid_good_ones_names_the_file_and_line(straight, tmp_path):
    run_dir = killed(straight, tmp_path / "run")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    garbled = "".join(lines[:2] + ["not json\n"] + lines[2:])
    (run_dir / "metrics.jsonl").write_text(garbled)
    with pytest.raises(DataError, match=r"metrics\.jsonl: line 3 is not a JSON object \('not json'\)"):
        train(run_dir)
    assert (run_dir / "metrics.jsonl").read_text() == garbled, "the file was changed"


def test_stale_temporaries_of_a_killed_write_are_removed(straight, tmp_path, capfd):
    run_dir = killed(straight, tmp_path / "run")
    stale = [run_dir / "checkpoints" / ".step_00000016.pt.k1ll3d.tmp", run_dir / ".result.json.k1ll3d.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert_same_run(run_dir, train(run_dir), straight)
    assert not any(p.exists() for p in stale)
    assert sum("a temporary of a write killed midway" in line for line in warnings_of(capfd)) == 2


HOLDER = """
import sys
from pathlib import Path
from scaling.run.lock import run_folder_lock

with run_folder_lock(sys.argv[1]) as held:
    print("held" if held else "no flock", flush=True)
    sys.stdin.readline()  # until the test has seen the other process wait
    print("nothing written" if not (Path(sys.argv[1]) / "metrics.jsonl").exists() else "trained meanwhile", flush=True)
"""


def test_a_second_process_on_a_run_folder_waits_for_the_first(straight, tmp_path, capfd):
    """Another process holds the run folder (as a training one does): this one says it waits, writes
    nothing while it waits, then trains the run to the uninterrupted run's loss once the folder is free."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    seen: list[str] = []

    def release_once_waiting() -> None:
        deadline = time.time() + 120
        while not any("waiting: another process is training" in e for e in seen) and time.time() < deadline:
            seen.append(capfd.readouterr().err)
            time.sleep(0.1)
        holder.stdin.write("\n")
        holder.stdin.flush()

    releaser = threading.Thread(target=release_once_waiting)
    releaser.start()
    result = train(run_dir)  # blocks on the lock until the holder lets go
    releaser.join()
    assert any("waiting: another process is training" in e for e in seen), seen
    assert holder.communicate(timeout=60)[0].strip() == "nothing written"
    assert_same_run(run_dir, result, straight)


# ---------------------------------------------------------------------------------------------------------
# on a tmpfs of our own: a read-only folder, a full disk


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` (the test is skipped where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def test_a_read_only_completed_run_returns_its_record(straight, tmp_path, capsys, monkeypatch):
    with tmpfs(tmp_path / "mnt", 8 << 20) as runs_dir:
        run_dir = runs_dir / "default" / identity.run_key(compose_run_config(RUN))  # where scaling-train looks
        shutil.copytree(straight, run_dir)
        unfinished = killed(straight, runs_dir / "default" / "unfinished")
        remount(runs_dir, "ro")
        assert train(run_dir) == json.loads((straight / "result.json").read_text())
        monkeypatch.setattr(sys, "argv", ["scaling-train", *RUN, f"runs_dir={runs_dir}"])
        train_cli.main()  # returns (exit status 0) without Hydra writing its files
        assert "already completed; nothing to train" in capsys.readouterr().out
        with pytest.raises(StorageError, match=rf"the run folder: cannot write there \({unfinished}: read-only"):
            train(unfinished)


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_survives(straight, tmp_path):
    ckpt = checkpoint_path(straight, RESUMED_FROM).stat().st_size
    with tmpfs(tmp_path / "mnt", int(1.5 * ckpt) + (64 << 10)) as mnt:  # room for one checkpoint, not two
        run_dir = mnt / "run"
        with pytest.raises(StorageError) as caught:
            train(run_dir)
        message = str(caught.value)
        assert isinstance(caught.value, USER_ERRORS) and "\n" not in message
        assert f"cannot write {checkpoint_path(run_dir, 16)}: the disk is full" in message, message
        assert f"the previous checkpoint {checkpoint_path(run_dir, RESUMED_FROM)} is intact" in message, message
        assert torch.load(checkpoint_path(run_dir, RESUMED_FROM), weights_only=True)["step"] == RESUMED_FROM
        assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_00000008.pt"], "a temporary is left"
        assert not (run_dir / "result.json").exists()
        remount(mnt, f"size={8 << 20}")  # space freed: the same run resumes
        assert_same_run(run_dir, train(run_dir), straight)
