"""scaling-study: the quick study end to end (trunks and cooldown branches, fits, held-out check, report, the
W&B folder), its reuse, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers import run_cli


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _records(out: Path) -> dict[Path, tuple[float, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "runs").rglob("result.json")}


@pytest.mark.slow
def test_quick_study_reports_fits_and_holdout_and_a_rerun_trains_nothing(tmp_path):
    out = tmp_path / "study"
    proc = run_cli("scaling-study", "--quick", "--out", str(out), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out.resolve())  # the folder is printed last
    assert "remain" in proc.stdout and "left" in proc.stdout  # progress: runs remaining, time left

    study = json.loads((out / "study.json").read_text())
    assert len(study["budgets"]) >= 3 and len(study["sizes"]) >= 5
    assert study["runs"]["trained_now"] == study["runs"]["total"] + 1  # the sweep, then the held-out run
    # The default design: per width one trunk, a cooldown branch per budget; each trunk paid for once.
    runs = study["runs"]
    assert study["design"] == "wsd" and runs["trunks"] == len(study["sizes"]) and runs["branches"] >= 12
    c = study["costs"]
    assert c["sweep_flops"] < 0.8 * c["separate_flops"] and c["ratio_to_fixed"] == c["sweep_flops"] / c["fixed_flops"]
    assert set(study["phases"]) >= {"plan", "sweep", "fit", "holdout", "report"}
    # At most --jobs worker processes, each training whole widths: one command per worker (not per run or
    # per width), then the held-out run's.
    launches = (out / "logs" / "launch.log").read_text().count("$ ")
    assert launches == min(study["jobs"], len(study["sizes"])) + 1, launches
    # The W&B runs of the sweep, the held-out run and the analysis run in one folder, named in the report.
    wandb_dir = Path(study["wandb"]["dir"])
    assert wandb_dir.name == "wandb" and wandb_dir.parent.parent == Path(study["holdout"]["run_dir"]).parents[1]
    assert len(list(wandb_dir.glob("offline-run-*"))) == runs["total"] + 2
    assert str(wandb_dir) in (out / "report.md").read_text()
    for approach, names in (("isoflop", ("a", "b")), ("parametric", ("a", "b", "alpha", "beta", "E"))):
        for name in names:
            est = study["exponents"][approach][name]
            assert _finite(est["estimate"]), (approach, name, est)
            low, high = est["interval"]
            assert _finite(low) and _finite(high) and low <= high, (approach, name, est)
    a2, a3 = study["exponents"]["isoflop"], study["exponents"]["parametric"]
    assert a2["a"]["estimate"] + a2["b"]["estimate"] == pytest.approx(1.0, abs=0.01)  # C = 6ND (D of whole steps)
    assert 0 < a3["a"]["estimate"] < 1

    h = study["holdout"]
    assert h["C"] >= 4 * max(study["budgets"]) * 0.99
    assert h["shape"]["width"] % 8 == 0 and h["shape"]["depth"] == 2  # the quick family: head dim 8, depth 2
    assert _finite(h["predicted"]) and _finite(h["measured"])
    assert h["predicted_low"] <= h["predicted"] <= h["predicted_high"]
    assert h["rel_error"] == pytest.approx((h["predicted"] - h["measured"]) / h["measured"])
    assert h["inside_interval"] == (h["predicted_low"] <= h["measured"] <= h["predicted_high"])
    measured = json.loads((Path(h["run_dir"]) / "result.json").read_text())["val_loss"]
    assert h["measured"] == measured

    report = (out / "report.md").read_text()
    for words in ("Approach 2", "Approach 3", "Held-out run", "measured", "isoflop", "parametric", "## Cost",
                  "fixed design without branches", "wandb leet", "wandb sync"):
        assert words in report
    for plot in ("isoflop.png", "holdout.png", "allocation.png", "loss_vs_compute.png"):
        assert (out / plot).stat().st_size > 1000, plot
        assert f"]({plot})" in report

    before = _records(out)
    again = run_cli("scaling-study", "--quick", "--out", str(out), cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already completed" in again.stdout
    assert _records(out) == before  # no record rewritten: nothing trained again
    second = json.loads((out / "study.json").read_text())
    assert second["runs"]["trained_now"] == 0
    assert second["holdout"]["measured"] == h["measured"]


@pytest.mark.parametrize("args, words", [
    (["--launcher", "cloud"], "--launcher='cloud' is unknown: choose local, basic, slurm, submitit"),
    (["--design", "linear"], "--design='linear' is unknown: choose wsd or cosine"),
    (["--jobs", "0"], "--jobs='0' is invalid"),
    (["--frobnicate"], "option '--frobnicate' is unknown"),
    (["runs_dir=/tmp/x"], "is set by scaling-study"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, words):
    proc = run_cli("scaling-study", "--quick", "--out", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_unwritable_out_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli("scaling-study", "--quick", "--out", str(blocker / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --out=") and "not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("result.json"))


def test_bad_override_stops_before_training(tmp_path):
    proc = run_cli("scaling-study", "--quick", "--out", str(tmp_path / "o"), "model.widht=64", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "widht" in proc.stderr
    assert not list(tmp_path.rglob("result.json"))
