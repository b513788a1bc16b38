"""Causal and masked LMs in the analysis: grouped by objective, never mixed, and compared."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import fit_isoflop
from analysis.errors import AnalysisInputError
from analysis.objectives import (check_one_objective, compare_objectives, comparison_budgets, objectives_of,
                                 split_by_objective)
from analysis.records import record_row

E, A, B, ALPHA, BETA = 1.7, 400.0, 400.0, 0.34, 0.34  # equal exponents: tokens/param = (B/A)^(1/alpha) ...
RATIO = 30.0  # the masked law's tokens per parameter over the causal one's


def tokens_per_param(b: float) -> float:
    """D_opt / N_opt of L = E + A/N^a + B/D^a under C = 6 N D: (B/A)^(1/alpha) (alpha = beta)."""
    return (b / A) ** (1 / ALPHA)


B_MLM = A * (RATIO * tokens_per_param(B)) ** ALPHA


def points(b: float, objective: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for C in np.geomspace(1e16, 1e19, 5):
        n_opt = np.sqrt(C / 6 / tokens_per_param(b))
        for N in n_opt * np.logspace(-1, 1, 9):
            D = C / (6 * N)
            loss = (E + A * N ** -ALPHA + b * D ** -BETA) * np.exp(rng.normal(0, 0.002))
            rows.append({"N": N, "D": D, "C": C, "loss": loss, "objective": objective})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return pd.concat([points(B, "clm", 0), points(B_MLM, "mlm", 1)], ignore_index=True)


def test_split_and_refuse_mixed(runs):
    parts = split_by_objective(runs)
    assert list(parts) == ["clm", "mlm"] and all(len(p) == 45 for p in parts.values())
    assert check_one_objective(parts["mlm"]) == "mlm"
    with pytest.raises(AnalysisInputError, match=r"objective: the runs mix objectives \(45 clm, 45 mlm\)"):
        check_one_objective(runs)
    # a table without the column is causal
    assert (objectives_of(runs.drop(columns="objective")) == "clm").all()


def test_comparison_recovers_the_ratio_with_an_interval(runs):
    fits = {o: {"isoflop": fit_isoflop(p.N, p.loss, p.C, D=p.D, bootstrap=100, seed=0)}
            for o, p in split_by_objective(runs).items()}
    C = comparison_budgets(fits)
    assert len(C) == 5
    cmp = compare_objectives(fits, C)
    exps = cmp["exponents"]
    assert set(exps["objective"]) == {"clm", "mlm"} and set(exps["name"]) == {"a", "b"}
    assert np.allclose(exps["estimate"], 0.5, atol=0.03)  # alpha = beta: N_opt ~ C^0.5 for both
    toks = cmp["tokens_per_param"]
    ratio = toks[toks["what"] == "ratio mlm/clm"]
    assert len(ratio) == 5
    assert np.allclose(np.log(ratio["estimate"]), np.log(RATIO), atol=0.25)
    assert ((ratio["low"] < ratio["estimate"]) & (ratio["estimate"] < ratio["high"])).all()
    clm = toks[toks["what"] == "tokens/param clm"]
    assert np.allclose(np.log(clm["estimate"]), np.log(tokens_per_param(B)), atol=0.25)


def test_record_row_names_the_objective():
    row = record_row({"run_id": "r", "tokens": 100}, {"model": {}}, path="/x/r", sweep="s", status="completed")
    assert row["objective"] == "clm" and row["predicted_tokens"] == 100  # a record before the field
    row = record_row({"run_id": "r", "tokens": 100, "objective": "mlm", "predicted_tokens": 15}, {},
                     path="/x/r", sweep="s", status="completed")
    assert row["objective"] == "mlm" and row["predicted_tokens"] == 15


def test_scaling_fit_groups_by_objective_and_reports_the_comparison(runs, tmp_path):
    table = tmp_path / "runs.csv"
    runs.to_csv(table, index=False)
    out = tmp_path / "fit"
    proc = subprocess.run([sys.executable, "-m", "analysis.cli", str(table), "--params-col", "N", "--tokens-col", "D",
                           "--flops-col", "C", "--loss-col", "loss", "--approach", "isoflop", "--bootstrap", "50",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "== objective clm ==" in proc.stdout and "== objective mlm ==" in proc.stdout
    report = (out / "report.md").read_text()
    assert "## Objectives compared (causal vs masked LM)" in report and "ratio mlm/clm" in report
    assert (out / "clm" / "report.md").is_file() and (out / "mlm" / "report.md").is_file()
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit) == {"isoflop (clm)", "isoflop (mlm)"}
