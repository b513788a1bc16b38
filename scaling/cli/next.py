"""``scaling-next``: which runs of a sweep to train next, and the command lines that train exactly them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError, report_user_error
from scaling.io import atomic_write_text
from scaling.study.next_runs import (
    TARGETS,
    candidate_pool,
    choose,
    command_lines,
    finished_runs,
    launch_overrides,
    parse_target,
    script,
    with_prefixes,
)
from scaling.study.adaptive_design import trunk_commands, trunk_stops
from scaling.sweep.pricing import plan_sweep
from scaling.units import duration, si

USAGE = f"""\
usage: scaling-next RUNS +sweep=NAME [OVERRIDE ...] [--target T] [--criterion C] [--budget FLOPS]
                    [--n K] [--level P] [--json] [--out FILE]

Fit the parametric law L = E + A/N^alpha + B/D^beta to the finished runs under RUNS (a run folder) and
rank the runs of the sweep `scaling-train --multirun +sweep=NAME [OVERRIDE ...]` would launch (less those
skipped by its rules or already finished) by how much each is expected to shrink the target's interval
per FLOP (analysis.propose_next); print the K best, with their cost and the expected interval after them,
and the `scaling-train --multirun` command lines that train exactly them. Trains nothing.

  --target T       {TARGETS} (default a)
  --criterion C    variance (default), d-optimal, v-optimal, random, cheapest
  --budget FLOPS   at most this many FLOPs (the sweep's convention) for the K runs together
  --n K            how many runs (default 1): a greedy batch, each pick conditioned on the ones before
  --level P        interval coverage (default 0.95)
  --json           print the choice as JSON
  --out FILE       write the command lines to FILE as a shell script (run it with `sh FILE`)
"""

VALUE_FLAGS = ("--target", "--criterion", "--budget", "--n", "--level", "--out")


def parse_args(argv: list[str]) -> tuple[str | None, list[str], dict[str, Any]]:
    """(RUNS, the sweep's overrides, options)."""
    opts: dict[str, Any] = {"target": "a", "criterion": "variance", "budget": None, "n": 1, "level": 0.95,
                            "json": False, "out": None, "help": False}
    runs, overrides, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        flag, eq, inline = a.partition("=")
        if a in ("-h", "--help"):
            opts["help"] = True
        elif a == "--json":
            opts["json"] = True
        elif a in ("-m", "--multirun"):
            pass  # accepted so a scaling-train command line can be pasted as it is
        elif flag in VALUE_FLAGS:
            if not eq and i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a value")
            text = inline if eq else argv[i + 1]
            i += 0 if eq else 1
            opts[flag[2:]] = _value(flag, text)
        elif a.startswith("-"):
            raise ConfigError(f"option {a!r} is unknown: choose {', '.join(VALUE_FLAGS)}, --json")
        elif "=" in a or a.startswith(("+", "~")):
            overrides.append(a)
        elif runs is None:
            runs = a
        else:
            raise ConfigError(f"{a!r}: give one run folder RUNS (already {runs!r}); overrides are KEY=VALUE")
        i += 1
    return runs, overrides, opts


def _value(flag: str, text: str) -> Any:
    if flag in ("--target", "--criterion"):
        return text
    if flag == "--out":
        return Path(text).expanduser()
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if flag == "--n":
        if not (math.isfinite(x) and x >= 1 and x == int(x)):
            raise ConfigError(f"--n={text!r} is invalid: it must be a whole number >= 1")
        return int(x)
    if flag == "--level" and not 0 < x < 1:
        raise ConfigError(f"--level={text!r} is invalid: it must be a number between 0 and 1")
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a positive number")
    return x


def next_runs(runs_dir: str | None, overrides: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    """The choice: target now and after, the chosen runs and the command lines that train them."""
    if runs_dir is None:
        raise ConfigError("RUNS is missing: give the folder of the finished runs first, e.g. scaling-next runs/ +sweep=study")
    if not any(o.partition("=")[0].lstrip("+~") == "sweep" for o in overrides):
        raise ConfigError("+sweep=NAME is missing: name the sweep whose runs are the candidates")
    if not Path(runs_dir).exists():
        raise ConfigError(f"RUNS={runs_dir!r} does not exist: give the folder of the finished runs")
    target = parse_target(opts["target"])
    planned, _ = plan_sweep(overrides)
    runs = with_prefixes(finished_runs(runs_dir, planned[0].convention), planned)
    done_ids = set(runs["run_id"]) if "run_id" in runs else set()
    pool = candidate_pool(planned, done_ids)
    sweep = next(o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == "sweep")
    table, warns = choose(runs, pool, target, criterion=opts["criterion"], budget=opts["budget"], n=opts["n"],
                          level=opts["level"], sweep=f"sweep {sweep}")
    chosen = [planned[i] for i in table["candidate"]]
    trunks = trunk_stops([r for r in planned if r.run_id in done_ids] + chosen, planned)  # WSD: trunks first
    lines = command_lines(trunk_commands(overrides, trunks) + launch_overrides(overrides, chosen))
    lo, hi = table.attrs["interval"]
    rows = [{"run_id": r.run_id, "width": r.shape["width"], "depth": r.shape["depth"], "budget": r.budget,
             "N": int(row.N), "D": int(row.D), "cost": float(row.cost), "est_seconds": r.est_seconds,
             "low": float(row.low), "high": float(row.high), "width_after": float(row.width),
             "overrides": r.overrides} for r, row in zip(chosen, table.itertuples())]
    return {"sweep": sweep, "target": table.attrs["target"], "criterion": opts["criterion"], "level": opts["level"],
            "finished": len(runs), "pool": len(pool), "estimate": table.attrs["estimate"], "interval": [lo, hi],
            "width": hi - lo, "runs": rows, "cost": float(table["cost"].sum()), "commands": lines, "warnings": runs.attrs["warnings"] + warns}


def format_choice(c: dict[str, Any]) -> str:
    pct = f"{100 * c['level']:g}%"
    lo, hi = c["interval"]
    out = [f"{c['target']} from {c['finished']} finished run(s): {c['estimate']:.4g} ({pct}: {lo:.4g} to {hi:.4g}, "
           f"width {c['width']:.3g}); pool: {c['pool']} run(s) of sweep {c['sweep']}; criterion {c['criterion']}",
           f"{'#':>2}  {'width':>5}  {'depth':>5}  {'budget':>8}  {'N':>7}  {'D':>7}  {'cost':>8}  {'est':>6}  "
           f"expected {pct} interval after"]
    for k, r in enumerate(c["runs"], 1):
        budget = "-" if r["budget"] is None else f"{r['budget']:.3g}"
        out.append(f"{k:>2}  {r['width']:>5}  {r['depth']:>5}  {budget:>8}  {si(r['N']):>7}  {si(r['D']):>7}  "
                   f"{r['cost']:>8.3g}  {duration(r['est_seconds']):>6}  {r['low']:.4g} to {r['high']:.4g} "
                   f"(width {r['width_after']:.3g})")
    out.append(f"total: {len(c['runs'])} run(s), {c['cost']:.3g} FLOPs; train exactly them with:")
    return "\n".join(out + [f"  {line}" for line in c["commands"]])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        runs_dir, overrides, opts = parse_args(argv)
        if opts["help"]:
            print(USAGE)
            return 0
        choice = next_runs(runs_dir, overrides, opts)
        if opts["out"] is not None:
            header = [f"scaling-next: {len(choice['runs'])} run(s) of sweep {choice['sweep']} for {choice['target']}",
                      f"({choice['cost']:.3g} FLOPs); run with: sh {opts['out'].name}"]
            atomic_write_text(opts["out"], script(choice["commands"], header))
    except Exception as exc:
        if isinstance(exc, OSError) and opts_out(argv):
            print(f"error: --out: cannot write {exc.filename or ''} ({exc.strerror or exc})", file=sys.stderr)
            return 2
        if not report_user_error(exc):
            raise
        return 2
    for w in choice["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(json.dumps(choice, indent=2) if opts["json"] else format_choice(choice))
    if opts["out"] is not None and not opts["json"]:
        print(f"wrote {opts['out']}")
    return 0


def opts_out(argv: list[str]) -> bool:
    return any(a.partition("=")[0] == "--out" for a in argv)


if __name__ == "__main__":
    sys.exit(main())
