"""The guard of hostile input at the console: a table of bad command lines replayed against the real console
scripts, each answered by one line on stderr and exit status 2, without a traceback, writing nothing.

Each row is (script, arguments, a substring of the one-line message). The rows run two at a time (one
process start each, ~2-4 s) in a module fixture; each row is still its own test. ``scaling-train`` rows get
``runs_dir`` and ``logger=none`` from the table's runner, so a row that slips through would write under it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scaling.cli.overrides import integral_overrides
from scaling.errors import ConfigError
from scaling.run import identity
from scaling.sweep.expand import compose_run_config

TRAIN, PLAN, STUDY = "scaling-train", "scaling-plan", "scaling-study"
MODULES = {TRAIN: "scaling.cli.train", PLAN: "scaling.cli.plan", STUDY: "scaling.cli.study"}

SMALL_DATA = ["model=tiny", "data.max_bytes=2000000"]

BAD = [
    # counts: an int field takes 5e6, not 5.5
    (TRAIN, ["train.tokens=5.5"], "train.tokens=5.5 is invalid: it must be a whole number"),
    (TRAIN, ["model.width=1.925e2"], "model.width=1.925e2 is invalid"),
    (TRAIN, ["train.keep_at_tokens=[1e6,2.5]"], "train.keep_at_tokens=[1e6,2.5] is invalid"),
    # Hydra's own errors, one line with the closest key or choice
    (TRAIN, ["model.widht=64"], "model.widht is not a config key: did you mean model.width?"),
    (TRAIN, ["model.width=abc"], "model.width='abc' is invalid"),
    (TRAIN, ["model=tiy"], "model='tiy' is unknown: did you mean tiny?; choose one of"),
    (TRAIN, ["-m", "+sweep=isoflow"], "sweep='isoflow' is unknown: did you mean isoflop?"),
    (TRAIN, ["hydra/launcher=nosuch"], "hydra/launcher='nosuch' is unknown; choose one of basic, local"),
    (TRAIN, ["train.keep_at_tokens=[1,2"], "override 'train.keep_at_tokens=[1,2' cannot be parsed"),
    (TRAIN, ["-m", "model.width=64,abc"], "model.width='abc' is invalid"),
    # checked before a run folder exists
    (TRAIN, ["train.device=tpu"], "train.device='tpu' is not known"),
    (TRAIN, ["train.keep_checkpoints=0"], "train.keep_checkpoints=0 is invalid"),
    (TRAIN, ["train.eval_tokens=0"], "train.eval_tokens=0 with train.eval_every=200"),
    (TRAIN, ["optim.lr=nan"], "optim.lr=nan is invalid: it must be a finite number"),
    (TRAIN, ["optim.lr=inf"], "optim.lr=inf is invalid"),
    (TRAIN, ["name=../../x"], "name='../../x' is not allowed"),
    (TRAIN, ["group=../../x"], "group='../../x' is not allowed"),
    # checked on the prepared data (a small one, shared with the run tests) before a run folder exists
    (TRAIN, [*SMALL_DATA, "model.vocab_size=100"],
     "model.vocab_size=100 is smaller than the vocabulary of the data (256 tokens"),
    (TRAIN, [*SMALL_DATA, "train.tokens=1"], "train.tokens=1 is fewer than one optimizer step"),
    (TRAIN, [*SMALL_DATA, "runs_dir=/proc/x"], "runs_dir='/proc/x': cannot write there (/proc/x: "),
    (TRAIN, ["-m", "model.width=32,48", "runs_dir=/proc/x"], "runs_dir='/proc/x': cannot write there (/proc/x: "),
    # sweeps, through scaling-plan
    (PLAN, ["+sweep=isoflop", "sweep.budgets=[1e11,1e11]"], "the list swept as sweep.budget holds 1e+11 twice"),
    (PLAN, ["+sweep=isoflop", "sweep.min_steps=-3"], "sweep.min_steps=-3 is invalid"),
    (PLAN, ["+sweep=isoflop", "sweep.budgets=[]"], "the list swept as sweep.budget is empty"),
    (PLAN, ["+sweep=demo", "--json", "--csv"], "--csv with --json: choose one output format"),
    (PLAN, ["+sweep=demo", "model.widht=64"], "did you mean model.width?"),
    (PLAN, ["+sweep=demo", "train.batch_size=1.55e1"], "train.batch_size=1.55e1 is invalid"),
    (PLAN, ["+sweep=demo", "--tokens-per-sec", "-1"], "--tokens-per-sec='-1' is invalid"),
    (STUDY, ["--launcher", "nosuch"], "--launcher='nosuch' is unknown"),
    (STUDY, ["--jobs", "1.5"], "--jobs='1.5' is invalid: it must be a whole number"),
    (STUDY, ["train.batch_size=5.5"], "train.batch_size=5.5 is invalid: it must be a whole number"),
]


def command(script: str, args: list[str], runs_dir: Path) -> list[str]:
    """The installed console script (else its module), with a train row's runs_dir and logger."""
    installed = Path(sys.executable).with_name(script)
    cmd = [str(installed)] if installed.exists() else [sys.executable, "-m", MODULES[script]]
    extra = [f"runs_dir={runs_dir}", "logger=none"] if script == TRAIN else []
    return cmd + extra + args


def replay(rows: list[tuple[str, list[str]]], root: Path) -> list[tuple[subprocess.CompletedProcess, Path]]:
    """(process, the row's own folder) of each (script, arguments) row, run in a folder of its own under
    ``root``, two rows at a time."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"WANDB_MODE": "disabled"}

    def one(i: int):
        cwd = root / f"row{i}"
        cwd.mkdir()
        script, args = rows[i]
        proc = subprocess.run(command(script, args, cwd / "runs"), cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        return proc, cwd

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(len(rows))))


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    return replay([(script, args) for script, args, _ in BAD], tmp_path_factory.mktemp("bad_input"))


@pytest.mark.parametrize("row", range(len(BAD)), ids=[" ".join([s, *a]) for s, a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(answers, row):
    proc, cwd = answers[row]
    expected = BAD[row][2]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert list(cwd.rglob("*")) == [], "a rejected command wrote files"


def test_the_console_takes_counts_in_scientific_notation(tmp_path):
    """The README's one run with ``train.tokens=5e6``, shown (``--cfg job``) rather than trained."""
    proc = subprocess.run(command(TRAIN, ["model.width=1.92e2", "train.tokens=5e6", "--cfg", "job"], tmp_path / "runs"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tokens: 5000000" in proc.stdout and "width: 192" in proc.stdout


def test_integral_floats_become_integers_for_int_fields_only():
    args = ["train.tokens=5e6", "model.width=1.92e2", "train.keep_at_tokens=[1e6,2.0e6]", "train.tokens=1e6,2e6",
            "+train.seed=1e1", "optim.lr=1e-3", "name=1e6", "sweep.budgets=[1e18]", "sweep.min_steps=2e1",
            "train.tokens=${oc.env:X}", "-m"]
    assert integral_overrides(args) == [
        "train.tokens=5000000", "model.width=192", "train.keep_at_tokens=[1000000,2000000]",
        "train.tokens=1000000,2000000", "+train.seed=10", "optim.lr=1e-3", "name=1e6", "sweep.budgets=[1e18]",
        "sweep.min_steps=20", "train.tokens=${oc.env:X}", "-m"]
    with pytest.raises(ConfigError, match=r"train\.micro_batch_size=2\.5 is invalid"):
        integral_overrides(["train.micro_batch_size=2.5"])


def test_a_count_in_scientific_notation_names_the_same_run():
    """``train.tokens=4.096e3`` composes the config, and so the run id, of ``train.tokens=4096``."""
    sci = compose_run_config(integral_overrides(["model=tiny", "train.tokens=4.096e3", "model.width=3.2e1"]))
    plain = compose_run_config(["model=tiny", "train.tokens=4096", "model.width=32"])
    assert sci.train.tokens == 4096 and identity.run_key(sci) == identity.run_key(plain)


def test_scaling_study_takes_counts_in_scientific_notation():
    from scaling.cli.study import parse_args

    assert parse_args(["--quick", "train.batch_size=1.6e1", "optim.lr=3e-3"]).overrides == [
        "train.batch_size=16", "optim.lr=3e-3"]
