"""The ``--adaptive`` flags of ``scaling-study`` and the lines it prints (the study: ``scaling.study.adaptive``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.study.adaptive import POOLS, Adaptive

USAGE = """\
  --adaptive         the adaptive design: seed on the smallest budgets, then fit -> propose -> train until the
                     target's interval is narrow enough (docs/study.md); with
    --target T       a, b, alpha, beta, E, A, B, G, N_opt@C, D_opt@C or loss@N,D (default a)
    --width W        stop once the target's interval is at most W wide (default: the fixed design's, --fixed)
                     (of the study's design: --design wsd, the default, chooses cooldown branches of WSD
                     trunks, each trunk trained only as far as its chosen branches start; --design cosine
                     chooses separate runs)
    --fixed DIR      a fixed study's output folder (scaling-study --out DIR, either design): the width and the
                     comparison
    --max-flops F    FLOPs the design may spend (default: the whole sweep's)
    --seed-budgets K the seed design: the K smallest budgets (default 3)
    --seed-widths M  of each seed budget only M widths, spread from its smallest to its largest (default 2;
                     all: every width)
    --batch K        runs per round (default 1; a batch is cut after its first run expected to reach the width)
    --criterion C    variance (default), d-optimal, v-optimal, random, cheapest
    --law L          the design's law: parametric (Approach 3, the default) or kaplan (Kaplan et al. 2020's
                     joint L(N, D): its interval on the target, its choice and its held-out prediction)
    --pool P         the candidates: sweep (its own points; the default of --design wsd), budgets (its shapes
                     at its budgets and the midpoints between them: with --design wsd, more branches of the
                     same trunks), inside (the default of --design cosine: budgets plus the widths between its
                     own) or wide (inside plus widths beside its own; cosine only; docs/next_run.md)
    --stable S       stop only once the estimate moved by at most S x the half-width since the last round
                     (default 0.5; off: the width alone)
    --min-dof K      stop only once the fit has K residual degrees of freedom (runs minus the law's
                     parameters: 5, or 4 for kaplan; default 4)
"""

FLAGS = ("--target", "--width", "--fixed", "--max-flops", "--seed-budgets", "--seed-widths", "--batch", "--criterion",
         "--pool", "--stable", "--min-dof", "--law")
WHOLE = ("--seed-budgets", "--seed-widths", "--batch", "--min-dof")


def split_adaptive(argv: list[str]) -> tuple[list[str], Adaptive | None]:
    """The other arguments, and the adaptive settings (None without ``--adaptive``)."""
    rest, ad, given, i = [], Adaptive(), [], 0
    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=")
        if a == "--adaptive":
            given.append(a)
        elif flag in FLAGS:
            if not eq and i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a value")
            _set(ad, flag, inline if eq else argv[i + 1])
            given.append(flag)
            i += 0 if eq else 1
        else:
            rest.append(a)
        i += 1
    if given and "--adaptive" not in given:
        raise ConfigError(f"{given[0]} is an option of the adaptive study: add --adaptive")
    return rest, (ad if given else None)


def _set(ad: Adaptive, flag: str, text: str) -> None:
    if flag in ("--target", "--criterion", "--pool", "--law"):
        allowed = {"--pool": POOLS, "--law": _laws()}.get(flag)
        if allowed and text not in allowed:
            raise ConfigError(f"{flag}={text!r} is unknown: choose {', '.join(allowed)}")
        setattr(ad, flag[2:], text)
        return
    if flag == "--fixed":
        ad.fixed = Path(text)
        return
    if (flag, text) in (("--stable", "off"), ("--seed-widths", "all")):
        setattr(ad, flag[2:].replace("-", "_"), None)
        return
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    whole, least = flag in WHOLE, 0 if flag == "--min-dof" else 1
    if not (math.isfinite(x) and (x >= least if whole else x > 0) and (x == int(x) or not whole)):
        other = {"--stable": " or off", "--seed-widths": " or all"}.get(flag, "")
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a {f'whole number >= {least}' if whole else 'positive number'}{other}")
    setattr(ad, flag[2:].replace("-", "_"), int(x) if whole else x)


def _laws() -> tuple[str, ...]:
    from analysis.next_run import LAWS  # the laws propose_next takes (imported when asked: analysis is heavy)

    return LAWS


def print_adaptive(s: dict[str, Any]) -> int:
    f, h = s["fixed"], s["holdout"]
    state = "reached" if s["reached"] else f"not reached ({s['rounds'][-1].get('stop', '')})"
    print(f"[adaptive] {s['target']} = {s['estimate']:.4g} ({s['interval'][0]:.4g} to {s['interval'][1]:.4g}, width "
          f"{s['width']:.4g}; goal {s['goal_width']:.4g}: {state}) with {s['runs']} runs, {s['flops']:.3g} FLOPs = "
          f"{100 * s['flops_share']:.1f}% of the fixed design's {f['flops']:.3g}")
    if "width" in f:
        print(f"[adaptive] fixed design: {s['target']} = {f['estimate']:.4g} (width {f['width']:.4g}) with {f['finished']} runs")
    err = h.get("rel_error")
    print(f"[adaptive] held-out: predicted {h['predicted']:.4f}, measured {h.get('measured', float('nan')):.4f}, error "
          f"{'n/a' if err is None else f'{100 * err:+.2f}%'}")
    print(f"report: {Path(s['out']) / 'adaptive.md'}")
    print(s["out"])
    return 0
