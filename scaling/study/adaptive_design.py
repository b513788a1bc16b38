"""What an adaptive design holds and costs (``scaling.study.adaptive``): its points (a sweep's separate runs, or a
WSD sweep's cooldown branches), the FLOPs it spent (each trunk once, as far as its furthest chosen branch point
needs), the trunks to train further before its branches, and the fixed design it is measured against."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.run.checkpoint import list_checkpoints
from scaling.run.record import RunRecord
from scaling.study.next_runs import finished_runs, launch_overrides, prefix_of, target_interval
from scaling.sweep.branch_plan import sweep_flops


def design_points(runs: list[Any]) -> list[Any]:
    """The planned runs that are points of a law: every run the sweep does not skip, but a WSD sweep's trunks."""
    return [r for r in runs if not r.skip_reason and r.role != "trunk"]


def _prefixes(design: list[Any]) -> Any:
    from analysis.next_run_prefixes import Prefixes

    shared = [prefix_of(r) for r in design]
    return Prefixes([p["trunk"] for p in shared], [p["prefix"] for p in shared], len(design))


def design_flops(design: list[Any]) -> float:
    """C of a design under the sweep's convention: each point's own training (a branch's cooldown), and each
    trunk once, to the furthest branch point of the design (``analysis.next_run_prefixes.Prefixes``)."""
    import numpy as np

    own = np.array([r.own_compute for r in design], float)
    return _prefixes(design).pay_each(range(len(design)), own) if design else 0.0


def unpaid_trunks(pool: Any, design: list[Any]) -> Any:
    """Per candidate of ``pool`` (``next_runs.candidate_pool``), the C of its trunk the design has not trained."""
    from analysis.next_run_prefixes import Prefixes

    shared = [prefix_of(r) for r in design]
    prefixes = Prefixes(pool["trunk"].tolist(), pool["prefix"], len(pool))
    return prefixes.paid_by([p["trunk"] for p in shared], [p["prefix"] for p in shared]).extra()


def trunk_stops(design: list[Any], planned: list[Any]) -> list[tuple[Any, int | None]]:
    """The trunks the design's branches need trained further, each with the tokens to stop it at
    (``train.stop_at_tokens``; None: to its end), left out where its checkpoints already reach that far."""
    need: dict[str, int] = {}
    for b in design:
        if b.trunk:
            need[b.trunk] = max(need.get(b.trunk, 0), int(b.tokens - b.own_tokens))
    trunks = {r.run_id: r for r in planned if r.role == "trunk"}
    stops = []
    for run_id, tokens in need.items():
        trunk = trunks[run_id]
        if trunk.state != "completed" and trained_tokens(trunk) < tokens:
            stops.append((trunk, None if tokens >= trunk.tokens else tokens))
    return stops


def trunk_commands(base: list[str], stops: list[tuple[Any, int | None]]) -> list[list[str]]:
    """``scaling-train --multirun`` overrides, one list per trunk of ``trunk_stops``, that train each trunk as far
    as it is needed (``train.stop_at_tokens``: not part of the run's identity, so the trunk resumes in place)."""
    commands = launch_overrides(base, [t for t, _ in stops], grouped=False) if stops else []
    return [[*cmd, *([f"train.stop_at_tokens={tokens}"] if tokens else [])] for cmd, (_, tokens) in zip(commands, stops)]


def trained_tokens(run: Any) -> int:
    """Tokens a run's newest checkpoint holds (0 with none)."""
    steps = [s for s, _ in list_checkpoints(Path(run.run_dir))]
    return max(steps, default=0) * (run.tokens // max(run.steps, 1))


def fixed_design(st: Any, fixed: Path | None, target: Any, level: float, law: str = "parametric") -> dict[str, Any]:
    """The design an adaptive one is measured against: the whole sweep (its points and FLOPs); with ``fixed``
    (a fixed study's output folder, of this sweep or of the other design) the runs of that study: their
    FLOPs (each trunk once), their interval on the target and the study's held-out error."""
    points = design_points(st.runs)
    out: dict[str, Any] = {"runs": len(points), "flops": design_flops(points), "design": st.opts.resolved_design}
    if fixed is None:
        return out
    root = Path(fixed).expanduser().resolve()
    folder = fixed_group(root, st.group_dir.name, st.preset.sweep)
    convention = st.runs[0].convention
    records = [r for r in (RunRecord(d).read_result() for d in sorted(folder.iterdir()) if d.is_dir()) if r]
    runs = finished_runs(folder, convention)
    est, lo, hi = target_interval(runs, target, level, law)
    out.update({"dir": str(folder), "runs": len(runs), "finished": len(runs), "flops": sweep_flops(records, convention),
                "design": "wsd" if any(r.get("role") == "trunk" for r in records) else "cosine",
                "estimate": est, "interval": [lo, hi], "width": hi - lo, "holdout_rel_error": _holdout_error(root)})
    return out


def fixed_group(root: Path, group: str, sweep: str) -> Path:
    """The sweep's run folder of a fixed study's output folder: ``runs/<group>``, else its one sweep group
    (a study of the other design: ``study`` beside ``study-wsd``), never the held-out run's."""
    runs = root / "runs"
    if (runs / group).is_dir():
        return runs / group
    groups = [d for d in sorted(runs.glob("*")) if d.is_dir() and not d.name.endswith("-holdout")] if runs.is_dir() else []
    if len(groups) == 1:
        return groups[0]
    found = f"it holds {', '.join(d.name for d in groups)}" if groups else "no run folder"
    raise ConfigError(f"--fixed={str(root)!r}: no run folder {runs / group} of sweep {sweep}, and {found}; give a fixed "
                      f"study's output folder (scaling-study --out DIR)")


def _holdout_error(folder: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads((folder / "study.json").read_text())["holdout"]["rel_error"]
    return None
