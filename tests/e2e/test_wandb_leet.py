"""A study's W&B folder in `wandb leet`, W&B's terminal dashboard, driven in a real terminal (tmux).

A small study (the quick family at three budgets and three widths, W&B offline) writes its sweep's runs,
its held-out run and its analysis run into one folder, ``runs/<group>/wandb``. `wandb leet` on that folder
must list every run by a name that says which run it is, and draw their loss curves in the first panels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers import BIN, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

BRAILLE = range(0x2801, 0x2900)  # leet draws its curves in braille dots (U+2800 is the empty cell)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("leet") / "study"
    proc = run_cli("scaling-study", "--quick", "--out", str(out), "--bootstrap", "20",
                   "sweep.budgets=[2.5e10,1.25e10,6.25e9]",
                   "sweep.shapes=[{width:8,depth:2},{width:16,depth:2},{width:24,depth:2}]",
                   "sweep.min_steps=20", cwd=out.parent, env={"WANDB_MODE": "offline"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "study.json").read_text())


def _pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, predicate, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = _pane(session)
        if predicate(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"wandb leet did not show what was expected within {timeout:g} s; the pane:\n{text}")


@pytest.fixture
def leet(study, tmp_path):
    """``wandb leet <the study's W&B folder>`` in a detached 250 x 60 tmux session; yields its name."""
    session = f"leet-{uuid.uuid4().hex[:8]}"
    folder = study["wandb"]["dir"]
    env = {"TERM": "xterm-256color", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}  # not the user's layout
    cmd = " ".join([*(f"{k}={v}" for k, v in env.items()), str(BIN / "wandb"), "leet", folder])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "250", "-y", "60", cmd], check=True,
                   env={**os.environ, **env})
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_the_study_names_one_wandb_folder_with_every_run(study):
    w = study["wandb"]
    folder = Path(w["dir"])
    assert folder.name == "wandb" and folder.parent == Path(study["holdout"]["run_dir"]).parents[1] / folder.parent.name
    runs = sorted(p.name for p in folder.glob("offline-run-*"))
    sweep_ids = [Path(r["run_dir"]).name for r in json.loads((folder.parent / "summary.json").read_text())["rows"]
                 if r["status"] == "completed"]
    hold_id = Path(study["holdout"]["run_dir"]).name
    for run_id in [*sweep_ids, hold_id, f"analysis-{folder.parent.name}"]:  # named by run id, all in one folder
        assert any(f"-{run_id}-" in name for name in runs), (run_id, runs)
    assert len(runs) == len(sweep_ids) + 2
    assert str(folder) in (folder.parent / "summary.md").read_text()
    report = (Path(study["out"]) / "report.md").read_text()
    assert w["view"] == f"wandb leet {folder}" and w["view"] in report and w["sync"] in report


def test_wandb_leet_lists_the_runs_and_draws_their_loss_curves_first(study, leet):
    folder = Path(study["wandb"]["dir"])
    n_runs = len(list(folder.glob("offline-run-*")))
    screen = _wait_for(leet, lambda s: f"Runs [{n_runs} items]" in s and "Loss/train" in s)
    # The first panels of the metrics grid are the losses, with a curve drawn in each.
    header = next(line for line in screen.splitlines() if "Loss/train" in line)
    titles = [t.strip("│╭╮ ") for t in header.split("││")]
    assert "Loss/train" in titles[0] and "Loss/val" in header, header
    grid = "\n".join(line.split("│", 1)[1] for line in screen.splitlines() if "│" in line)
    assert sum(1 for ch in grid if ord(ch) in BRAILLE) > 20, screen
    # Every run is listed by a name that says which run it is (the folder is named by the run id).
    listed = [line.split("│")[0] for line in screen.splitlines()]
    for role in ("-trunk-", "-branch-", "analysis-"):
        assert any(role in line for line in listed), (role, screen)
    # The newest run, selected at start, is the held-out run (the analysis run is logged before it trains).
    hold_id = Path(study["holdout"]["run_dir"]).name
    assert f"Name: {hold_id}" in screen, screen
    # Move to the next run (the analysis run) and back: the overview follows the cursor.
    subprocess.run(["tmux", "send-keys", "-t", leet, "Down"], check=True)
    _wait_for(leet, lambda s: "Name: analysis-" in s, timeout=10)
    subprocess.run(["tmux", "send-keys", "-t", leet, "Up"], check=True)
    _wait_for(leet, lambda s: f"Name: {hold_id}" in s, timeout=10)
    subprocess.run(["tmux", "send-keys", "-t", leet, "q"], check=True)
