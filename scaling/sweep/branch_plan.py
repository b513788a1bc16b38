"""Warmup-stable-decay branching plans: trunk length and branch points from token budgets, and the
resolvers of ``sweeps/sweep/wsd_branches.yaml`` (one trunk and k branches per shape).

For budgets D_1 < ... < D_k and cooldown fraction f, the branch of D_i starts at (1 - f) D_i tokens:

    trunk tokens = (1 - f) D_k,  keep_at_tokens = [(1 - f) D_1, ..., (1 - f) D_k]

How a branch starts from its trunk's checkpoint is the run's business (``scaling.run.branch``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from scaling.errors import ConfigError
from scaling.run.identity import run_key


@dataclass(frozen=True)
class BranchPlan:
    """Trunk and branches of one model size for token budgets ``budgets`` (sorted ascending)."""

    budgets: tuple[int, ...]  # D_i, total tokens of each branch
    cooldown_fraction: float  # f, share of each branch's tokens spent cooling down
    starts: tuple[int, ...]  # (1 - f) D_i, trunk tokens each branch starts from
    trunk_tokens: int  # (1 - f) D_k

    def branch(self, i: int) -> tuple[int, int]:
        """(train.tokens, train.branch_tokens) of branch ``i``."""
        return self.budgets[i], self.starts[i]


def plan_branches(budgets: Sequence[float], cooldown_fraction: float, tokens_per_step: int = 1) -> BranchPlan:
    """Branch points for ``budgets`` (tokens), rounded down to whole optimizer steps of ``tokens_per_step``."""
    if not budgets:
        raise ConfigError("sweep.budgets=[] is empty: give at least one token budget")
    if not 0.0 < cooldown_fraction < 1.0:
        raise ConfigError(f"optim.cooldown_fraction={cooldown_fraction} must lie in (0, 1) for branching")
    ordered = tuple(sorted(int(b) for b in budgets))
    if ordered[0] <= 0:
        raise ConfigError(f"sweep.budgets={list(budgets)} must all be positive token counts")
    starts = tuple(max(1, int((1.0 - cooldown_fraction) * b) // tokens_per_step) * tokens_per_step for b in ordered)
    return BranchPlan(ordered, float(cooldown_fraction), starts, starts[-1])


def sweep_flops(records: Sequence[dict[str, Any]], convention: str = "6nd") -> float:
    """FLOPs a sweep spent: each trunk once, each branch only for its own tokens, other runs in full."""
    total = 0.0
    for r in records:
        if r.get("status") == "skipped":
            continue
        own = r.get("own_flops") if r.get("trunk") else None
        total += float((own or r.get("flops") or {}).get(convention, 0.0))
    return total



# --------------------------------------------------------------------------------------------------
# Resolvers of sweeps/sweep/wsd_branches.yaml: one trunk and k branches per shape.


def tokens_per_step(root: Any) -> int:
    """Tokens of one optimizer step of the run ``root`` configures (branch points are whole steps)."""
    return int(root.train.batch_size) * int(root.model.context)


def _budgets(budgets: Any) -> list[float]:
    return list(OmegaConf.to_container(budgets, resolve=True)) if OmegaConf.is_config(budgets) else list(budgets)


def _plan_of(budgets: Any, fraction: float, root: Any) -> BranchPlan:
    return plan_branches(_budgets(budgets), float(fraction), tokens_per_step(root))


def _role_tokens(role: Any, budgets: Any, fraction: float, *, _root_: DictConfig) -> int:
    bp = _plan_of(budgets, fraction, _root_)
    return bp.trunk_tokens if str(role) == "trunk" else bp.branch(_index(role, bp))[0]


def _role_start(role: Any, budgets: Any, fraction: float, *, _root_: DictConfig) -> Optional[int]:
    bp = _plan_of(budgets, fraction, _root_)
    return None if str(role) == "trunk" else bp.branch(_index(role, bp))[1]


def _role_keep(role: Any, budgets: Any, fraction: float, *, _root_: DictConfig) -> list[int]:
    return list(_plan_of(budgets, fraction, _root_).starts) if str(role) == "trunk" else []


def _index(role: Any, bp: BranchPlan) -> int:
    try:
        i = int(role)
    except (TypeError, ValueError):
        i = -1
    if not 0 <= i < len(bp.budgets):
        raise ConfigError(f"sweep.branch={role!r} is not known: choose trunk or 0..{len(bp.budgets) - 1}")
    return i


def _trunk_dir(key: str = "sweep.branch", *, _root_: DictConfig) -> Optional[str]:
    """Run directory of this branch's trunk: the same config with ``key`` (the swept role) set to trunk, hashed."""
    if str(_root_.sweep.branch) == "trunk":
        return None
    trunk = copy.deepcopy(_root_)
    OmegaConf.set_readonly(trunk, False)
    OmegaConf.update(trunk, str(key), "trunk", force_add=True)
    return str(Path(str(_root_.runs_dir)) / str(_root_.group) / run_key(trunk))


RESOLVERS = {"wsd_tokens": _role_tokens, "wsd_branch_tokens": _role_start, "wsd_keep": _role_keep,
             "wsd_trunk_dir": _trunk_dir,
             "wsd_schedule": lambda role: "constant" if str(role) == "trunk" else "wsd",
             "wsd_role": lambda role: "trunk" if str(role) == "trunk" else "branch",
             "wsd_data_seed": lambda role, seed: None if str(role) == "trunk" else seed}
