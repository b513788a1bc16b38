"""Time of pricing the fixed design without branches for the study report (``scaling.study.costs``): planned
through Hydra job by job (``scaling.study.launch.plan``, as the report did before) against ``fixed_design``
(one composed config, ``scaling.sweep.expand.expand_values``). Each way runs in a process of its own that
has planned the study's branch design first (as the study has when it writes its report), and the runs
and FLOPs of both must be equal.

    python bench/bench_study_costs.py                  # the quick and the full design
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

ONE = """
import json, sys, time
from scaling.study.options import Options
from scaling.study.launch import launch_args, plan
opts = Options(variant=sys.argv[1], design="wsd")
runs_dir = "/tmp/bench-study-costs/runs"
plan([f"+sweep={opts.preset.sweep}", f"runs_dir={runs_dir}", *launch_args(opts, 1)])  # as the study did before
t0, c0 = time.perf_counter(), time.process_time()
if sys.argv[2] == "hydra":
    runs, _ = plan([f"+sweep={opts.preset.holdout_sweep}", f"runs_dir={runs_dir}", *launch_args(opts, 1)])
    out = {"fixed_runs": sum(1 for r in runs if not r.skip_reason),
           "fixed_flops": sum(r.compute for r in runs if not r.skip_reason)}
else:
    from pathlib import Path
    from scaling.study.costs import fixed_design
    out = fixed_design(opts.preset, opts, Path(runs_dir))
print(json.dumps({**out, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"""


def timed(variant: str, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", ONE, variant, how], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; date {date.today()}")
    print("| design (fixed sweep) | through Hydra job by job: wall / CPU s | fixed_design: wall / CPU s "
          "| runs | FLOPs |")
    print("| --- | --- | --- | --- | --- |")
    for variant in ("quick", "full"):
        before, after = timed(variant, "hydra"), timed(variant, "fixed_design")
        same = (before["fixed_runs"], before["fixed_flops"]) == (after["fixed_runs"], after["fixed_flops"])
        assert same, (before, after)
        print(f"| {variant} | {before['wall']:.2f} / {before['cpu']:.2f} | {after['wall']:.2f} / {after['cpu']:.2f} | "
              f"{after['fixed_runs']} (same) | {after['fixed_flops']:.4g} (same) |")


if __name__ == "__main__":
    main()
