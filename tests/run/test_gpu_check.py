"""``bench/gpu_check.sh``, the one script of the GPU measurement, end to end on the CPU.

``--cpu-smoke`` runs tiny versions of every step (benchmark, loop, agreement, ``pytest -m cuda``,
IsoFLOP mini-study) so that the GPU minutes go to measuring; without it, a CPU-only torch is reported
as blocked rather than measured.
"""

import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch
from conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "bench" / "gpu_check.sh"
STEPS = ["bench", "loop", "agree", "pytest", "benchmore", "isoflop"]


def gpu_check(out, *args, timeout=1600):  # the smoke budget is 1500 s: CPUs may be heavily shared
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), "--out", str(out), *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_three_files(tmp_path):
    proc = gpu_check(tmp_path, "--cpu-smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "smoke test passed", summary["steps"]
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert all(s["rc"] == 0 for s in summary["steps"])
    docs = summary["docs"]
    assert docs["loop"]["ok"] and docs["loop"]["checkpoints"] and docs["loop"]["tokens_per_s_bare"] > 0
    assert docs["agree"]["ok"] and docs["agree"]["val_gap"] < 0.02
    assert [r["status"] for r in docs["isoflop"]["runs"]] == ["completed"] * 6
    assert docs["pytest"]["failures"] == 0 and docs["pytest"]["errors"] == 0
    assert docs["bench"]["rows"][0]["tokens_per_s"] > 0
    assert {t["status"] for t in summary["targets"]} == {"pending"}  # no GPU figures from a CPU
    assert "CPU smoke test" in (tmp_path / "summary.md").read_text()
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("./env.json", "./loop.json", "./agree.json", "./isoflop.json", "./bench.json", "./pytest.xml",
                 "logs/loop.log", "runs/loop/metrics.jsonl"):
        assert name in names, f"{name} missing from logs.tar.gz"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine this would run the whole GPU check")
def test_cpu_only_torch_is_reported_as_blocked(tmp_path):
    proc = gpu_check(tmp_path, timeout=120)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "blocked"
    assert "CPU-only build" in summary["blocked"] or "sees no CUDA device" in summary["blocked"]
    assert "Blocked:" in (tmp_path / "summary.md").read_text()
