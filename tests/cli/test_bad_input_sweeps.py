"""Bad values inside a sweep, replayed against the real ``scaling-plan``: a shape of ``sweep.shapes`` that is not
``{width, depth}`` and ``${lr_from_rule:}`` without a path, each one line on stderr naming the field, the value
and what is allowed, exit status 2, no traceback, nothing written (the runner of ``test_bad_input``)."""

from __future__ import annotations

import subprocess

import pytest
from test_bad_input import PLAN, command, replay

BAD = [  # (arguments of scaling-plan, a substring of the one-line message)
    (["+sweep=demo", "sweep.shapes=[{widt:32,depth:2}]"],
     "sweep.shapes[0]={widt:32,depth:2}: 'widt' is not a shape key: did you mean width?; a shape takes width and depth"),
    (["+sweep=isoflop", "sweep.shapes=[{width:64,depth:2},{width:96}]"],
     "sweep.shapes[1]={width:96} has no depth: a shape takes width and depth"),
    (["+sweep=ladder", "sweep.shapes=[64,96]"], "sweep.shapes[0]=64 is invalid: a shape is a mapping"),
    (["+sweep=demo", "optim.lr=${lr_from_rule:}"],
     "optim.lr='${lr_from_rule:}' names no rule file: write optim.lr='${lr_from_rule:PATH}'"),
]


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    return replay([(PLAN, args) for args, _ in BAD], tmp_path_factory.mktemp("bad_sweeps"))


@pytest.mark.parametrize("row", range(len(BAD)), ids=[" ".join(args) for args, _ in BAD])
def test_a_bad_sweep_value_is_one_line_and_exit_2(answers, row):
    proc, cwd = answers[row]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD[row][1] in lines[0], proc.stderr
    assert list(cwd.rglob("*")) == [], "a rejected sweep wrote files"


def test_the_named_sweeps_shapes_pass_the_check():
    """Every ``shapes`` list of ``sweeps/`` is made of {width, depth} shapes (the check refuses no named sweep)."""
    from omegaconf import OmegaConf

    from scaling.config import CONF_DIR
    from scaling.sweep.resolvers import check_shapes

    files = sorted((CONF_DIR.parent / "sweeps" / "sweep").glob("*.yaml"))
    checked = 0
    for path in files:
        shapes = OmegaConf.select(OmegaConf.load(path), "sweep.shapes", default=None)
        if shapes is not None:
            check_shapes(shapes)
            checked += 1
    assert checked >= 5, f"only {checked} sweeps with shapes found in {files}"


def test_an_lr_rule_that_gives_an_absurd_lr_is_one_line(tmp_path):
    """A rule extrapolated far beyond its runs (here lr = 1e6 * C^0) is refused before any run is planned."""
    rule = tmp_path / "rule.json"
    rule.write_text('{"form": "power", "hparam": "lr", "x": "compute", "convention": "6nd", "coef": 1e6, "exponent": 0}')
    proc = subprocess.run(command(PLAN, ["+sweep=demo", f"optim.lr=${{lr_from_rule:{rule}}}"], tmp_path / "runs"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "optim.lr=1e+06 from the lr rule file" in lines[0] and "must be below 1" in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
