"""``scaling-study``: a complete scaling study from one command, checked against a held-out larger run.

    scaling-study [--quick] [--design wsd|cosine] [--out DIR] [--launcher local|basic|slurm|submitit] [--jobs J] [OVERRIDE ...]

The study itself is ``scaling.study``; this module parses the command line and prints.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

from scaling.cli.overrides import integral_overrides
from scaling.cli.study_adaptive import USAGE as ADAPTIVE_USAGE
from scaling.cli.study_adaptive import print_adaptive, split_adaptive
from scaling.errors import ConfigError, report_user_error
from scaling.study.adaptive import run_adaptive
from scaling.study.options import DESIGNS, LAUNCHERS, PREDICT_BRANCHES, Options, StudyError
from scaling.study.report import _g, _pct
from scaling.study.study import run_study
from scaling.units import duration

USAGE = """\
usage: scaling-study [--quick] [--design wsd|cosine] [--predict-branches K] [--out DIR]
                     [--launcher local|basic|slurm|submitit] [--jobs J] [--holdout-factor K] [--bootstrap B]
                     [OVERRIDE ...]

Run an IsoFLOP sweep on the embedded corpus through Hydra multirun (by default each width one constant-lr
trunk with a cooldown branch at every budget), fit Approach 2 and Approach 3 with bootstrap intervals,
train one held-out run at K x (default 4) the largest budget at the predicted compute-optimal size, and
write a Markdown report with plots into DIR (default study/full, or study/quick with --quick). Runs already
finished in DIR/runs are reused, so a second invocation only refits. The W&B runs (offline without a key)
land in one folder, DIR/runs/<group>/wandb: `wandb leet` shows it.

  --quick            the short variant (sweep study_wsd_quick: smaller budgets and sizes, about 3 minutes on 2 cores)
  --design D         wsd (the default: trunks and cooldown branches, sweep study_wsd, half the FLOPs) or
                     cosine (a separate cosine run per point, sweep study; folder study/full-cosine)
  --predict-branches K
                     each trunk trains only K (1 or 2) of its cooldown branches (the longest, with 2 also the
                     shortest); the other branch points' losses are predicted by a curve law fitted to the
                     trunk and those branches, and the fits use measured + predicted points (implies
                     --design wsd; default folder study/full-predictK, study/quick-predictK)
  --out DIR          output folder: report.md, plots, fit.json, study.json, runs/, logs/
  --launcher L       local (default: J worker processes, each training one width's runs in turn), basic
                     (Hydra's, one process), slurm, submitit (a process per run, J at a time)
  --jobs J           worker processes on this machine (default: the number of cores; one thread each)
  --holdout-factor K compute of the held-out run over the sweep's largest budget (default 4, at least 1)
  --bootstrap B      bootstrap resamples of each fit (default 1000, --quick 200)
  OVERRIDE           Hydra overrides for every run, e.g. optim.lr=3e-3 logger=none
"""


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    i = 0

    def value(flag: str) -> str:
        if i + 1 >= len(argv):
            raise ConfigError(f"{flag} needs a value")
        return argv[i + 1]

    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=")
        if a in ("-h", "--help"):
            opts.help = True
        elif a == "--quick":
            opts.variant = "quick"
        elif flag in ("--out", "--launcher", "--jobs", "--holdout-factor", "--bootstrap", "--design",
                      "--predict-branches"):
            text = inline if eq else value(flag)
            i += 0 if eq else 1
            if flag == "--out":
                opts.out = Path(text).expanduser()
            elif flag == "--design":
                if text not in DESIGNS:
                    raise ConfigError(f"--design={text!r} is unknown: choose {' or '.join(DESIGNS)}")
                opts.design = text
            elif flag == "--launcher":
                if text not in LAUNCHERS:
                    raise ConfigError(f"--launcher={text!r} is unknown: choose {', '.join(LAUNCHERS)}")
                opts.launcher = text
            elif flag == "--predict-branches":
                if text.strip() not in [str(k) for k in PREDICT_BRANCHES]:
                    raise ConfigError(f"--predict-branches={text!r} is invalid: trained branches per trunk, "
                                      f"choose {' or '.join(map(str, PREDICT_BRANCHES))}")
                opts.predict_branches = int(text)
            elif flag == "--holdout-factor":
                opts.holdout_factor = _number(flag, text, minimum=1.0)
            else:
                n = _number(flag, text, minimum=1 if flag == "--jobs" else 0)
                if n != int(n):
                    raise ConfigError(f"{flag}={text!r} is invalid: it must be a whole number")
                setattr(opts, flag[2:], int(n))
        elif a.startswith("-"):
            raise ConfigError(f"option {a!r} is unknown: choose --quick, --design wsd|cosine, --predict-branches K, "
                              f"--out DIR, --launcher "
                              f"{'|'.join(LAUNCHERS)}, --jobs J, --holdout-factor K, --bootstrap B")
        else:
            key = a.partition("=")[0].lstrip("+~")
            if key in ("runs_dir", "group", "sweep") or key.startswith("hydra/launcher"):
                raise ConfigError(f"override {a!r} is set by scaling-study: use --out or --launcher instead")
            opts.overrides.append(a)
        i += 1
    opts.overrides = integral_overrides(opts.overrides)
    opts.check()
    return opts


def _number(flag: str, text: str, minimum: float) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not (math.isfinite(x) and x >= minimum):
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a number >= {minimum:g}")
    return x


def _print_predicted(study: dict) -> None:
    """--predict-branches: the points predicted, the FLOPs saved, the held-out error without them."""
    p = study.get("predicted_branches")
    if not p:
        return
    mo = study["holdout"].get("measured_only") or {}
    without = (f"error {_pct(mo.get('rel_error'))} fitted to the {mo['n_points']} measured points alone"
               if mo.get("fitted") else "Approach 3 not fitted to the measured points alone")
    print(f"[study] {p['n_predicted']} branch points predicted ({p['law']}), {p['n_measured']} measured; FLOPs saved "
          f"against training every branch: {100 * (p['saved_share'] or 0):.1f}%; held-out {without}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    try:
        argv, adaptive = split_adaptive(argv)
        opts = parse_args(argv)
        if opts.help:
            print(USAGE + ADAPTIVE_USAGE)
            return 0
        if adaptive and opts.predict_branches:
            raise ConfigError(f"--predict-branches={opts.predict_branches} with --adaptive is invalid: the adaptive "
                              "study trains separate cosine runs; drop one of the two")
        study = run_adaptive(opts, adaptive) if adaptive else run_study(opts)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug
        if not report_user_error(exc):
            raise
        return 2
    if adaptive:
        return print_adaptive(study)
    h = study["holdout"]
    ex = study["exponents"]
    for approach, title in (("isoflop", "Approach 2"), ("parametric", "Approach 3")):
        if approach in ex:
            print(f"[study] {title}: a={_g(ex[approach]['a']['estimate'])}, b={_g(ex[approach]['b']['estimate'])}")
        else:
            print(f"[study] {title}: not fitted (see the report's warnings)")
    print(f"[study] held-out: predicted {_g(h['predicted'])}, measured {_g(h.get('measured'))}, "
          f"error {_pct(h.get('rel_error'))}; {h.get('position', '')}")
    _print_predicted(study)
    c = study["costs"]
    print(f"[study] sweep FLOPs {c['sweep_flops']:.3g} ({100 * c['ratio_to_fixed']:.0f}% of the {c['fixed_sweep']} design's "
          f"{c['fixed_flops']:.3g}); held-out run {c['holdout_flops']:.3g}")
    print(f"[study] trained {study['runs']['trained_now']} run(s), reused {study['runs']['reused']}; "
          f"wall time {duration(study['wall_time'])} ("
          + ", ".join(f"{k} {duration(v)}" for k, v in study["phases"].items()) + ")")
    if study.get("wandb"):
        print(f"[study] W&B runs: {study['wandb']['dir']} (view: {study['wandb']['view']}; upload: {study['wandb']['sync']})")
    print(f"report: {Path(study['out']) / 'report.md'}")
    print(study["out"])
    return 0
