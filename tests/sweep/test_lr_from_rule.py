"""LR rules as files: fitted and written by the analysis (``write_rule``, ``scaling-fit --lr-rule``), read by
sweeps through the ``lr_from_rule`` resolver in real Hydra composition; bad rule files are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from run_records import law_loss, write_run
from run_records import synthetic_sweep

from analysis.cli import main as fit_main
from analysis.errors import AnalysisInputError
from analysis.lr_rules import fit_lr_rule, write_rule
from scaling.cli import plan as plan_cli
from scaling.sweep import pricing
from scaling.sweep.expand import expand
from scaling.model.counts import flops_per_token, param_counts
from scaling.sweep.resolvers import model_config

LADDER = ["+sweep=ladder", "sweep.multiples=[5,20]", "sweep.shapes=[{width:64,depth:2},{width:128,depth:4}]"]


def composed(rule: Path, tmp_path: Path, *overrides: str):
    """Each job's composed config of a ladder sweep whose runs take their lr from ``rule``."""
    return [cfg for _, cfg in expand([*LADDER, f"optim.lr=${{lr_from_rule:{rule}}}", f"runs_dir={tmp_path}",
                                           *overrides])]


def test_each_run_of_a_sweep_gets_the_lr_of_the_rule_at_its_own_n(tmp_path):
    sizes = (1e5, 4e5, 1.6e6, 6.4e6)
    fit = fit_lr_rule(synthetic_sweep(c=0.5, k=-0.3, sizes=sizes))
    rule = write_rule(fit, tmp_path / "lr_rule.json", convention="with_head", fitted_from="synthetic")
    saved = json.loads(rule.read_text())
    assert {k: saved[k] for k in ("form", "hparam", "x", "convention", "fitted_from")} == {
        "form": "power", "hparam": "lr", "x": "params", "convention": "with_head", "fitted_from": "synthetic"}
    assert saved["coef"] == pytest.approx(0.5) and saved["exponent"] == pytest.approx(-0.3)

    cfgs = composed(rule, tmp_path)
    assert len(cfgs) == 4
    for cfg in cfgs:
        n = param_counts(model_config(cfg), 256)["with_head"]
        assert cfg.optim.lr == pytest.approx(fit.predict(n), rel=1e-12)  # the rule at this run's own N
    assert len({round(cfg.optim.lr, 12) for cfg in cfgs}) == 2  # two sizes, two learning rates
    runs, _ = pricing.plan_sweep([*LADDER, f"optim.lr=${{lr_from_rule:{rule}}}", f"runs_dir={tmp_path}"])
    assert len({r.run_id for r in runs}) == 4  # the lr is part of each run's identity


def test_a_compute_rule_uses_the_runs_flops(tmp_path):
    rows = synthetic_sweep(c=50.0, k=-0.25, sizes=(1e12, 1e13, 1e14)).rename(columns={"N": "C"})
    rule = write_rule(fit_lr_rule(rows, x="C"), tmp_path / "rule.json", convention="chinchilla")
    assert json.loads(rule.read_text())["x"] == "compute"
    for cfg in composed(rule, tmp_path):
        c = flops_per_token(model_config(cfg), 256)["chinchilla"] * cfg.train.tokens
        assert cfg.optim.lr == pytest.approx(50.0 * c ** -0.25, rel=1e-6)


def test_scaling_fit_writes_the_rule_of_an_lr_sweep_of_run_folders(tmp_path, capsys):
    """Run records of an LR sweep (lr in config.yaml, loss a parabola in log lr around lr* = 0.5 N^-0.3)."""
    for width in (64, 128, 256):
        for lr in 2.0 ** np.arange(-14, -3):
            run = write_run(tmp_path / "runs", f"w{width}-lr{lr:g}", width=width, depth=2, tokens=10**6, group="lr")
            n = 12 * width * width * 2
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            cfg["optim"]["lr"] = float(lr)
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
            result = json.loads((run / "result.json").read_text())
            result["val_loss"] = float(law_loss(n, 10**6)) + 0.2 * np.log(lr / (0.5 * n ** -0.3)) ** 2
            (run / "result.json").write_text(json.dumps(result))
    out = tmp_path / "fit" / "lr_rule.json"
    assert fit_main([str(tmp_path / "runs"), "--lr-rule", str(out)]) == 0
    assert "lr* = c * N^k" in capsys.readouterr().out
    rule = json.loads(out.read_text())
    assert rule["x"] == "params" and rule["convention"] == "non_embedding"
    assert rule["exponent"] == pytest.approx(-0.3, abs=1e-6) and rule["coef"] == pytest.approx(0.5, rel=1e-5)
    assert rule["fitted_from"] == str(tmp_path / "runs") and rule["n_points"] == 3


def test_a_law_fit_is_not_a_rule(tmp_path):
    fit = fit_lr_rule(synthetic_sweep())
    fit.diagnostics["x"] = "D"
    with pytest.raises(AnalysisInputError, match="not a rule of N or C"):
        write_rule(fit, tmp_path / "x.json")


@pytest.mark.parametrize("content, needle", [
    (None, "lr rule file '{path}' does not exist: write one with `scaling-fit RUNS --lr-rule"),
    ("[1, 2]", "lr rule file '{path}' is not a JSON object"),
    ('{"form": "log", "x": "params", "convention": "total", "coef": 1, "exponent": 0}', "form='log' is invalid"),
    ('{"form": "power", "x": "tokens", "convention": "total", "coef": 1, "exponent": 0}', "x='tokens' is invalid"),
    ('{"form": "power", "x": "params", "convention": "6nd", "coef": 1, "exponent": 0}',
     "convention='6nd' is invalid for x='params': choose one of non_embedding, with_head, total"),
    ('{"form": "power", "x": "params", "convention": "total", "coef": -1, "exponent": 0}',
     "coef=-1 is invalid: it must be a finite positive number"),
    ('{"form": "power", "x": "params", "convention": "total", "coef": 1}', "exponent=None is invalid"),
    ('{"form": "power", "hparam": "batch_size", "x": "params", "convention": "total", "coef": 1, "exponent": 0}',
     "hparam='batch_size' is invalid: it must be 'lr'"),
])
def test_bad_rule_files_are_one_line_errors_naming_the_field(tmp_path, capsys, content, needle):
    path = tmp_path / "rule.json"
    if content is not None:
        path.write_text(content)
    code = plan_cli.main([*LADDER, f"optim.lr=${{lr_from_rule:{path}}}", f"runs_dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: optim.lr: ") and needle.format(path=path) in err


def test_a_single_run_with_a_missing_rule_exits_2_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("scaling-train")
    proc = subprocess.run([str(exe), "model=tiny", "logger=none", "optim.lr=${lr_from_rule:missing.json}",
                           f"runs_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: optim.lr: lr rule file 'missing.json' does not exist: write one with "
        "`scaling-fit RUNS --lr-rule missing.json`"]
