"""``scaling-plan``: expand a sweep exactly as ``scaling-train --multirun`` would, and price it.

The job list comes from Hydra itself: the sweep's master config is composed in multirun mode, its
sweeper is instantiated from ``hydra.sweeper`` and its own override parser and cartesian product give
each job's overrides; each job's config is then composed with the Compose API from the same
``conf/`` (and ``sweeps/``) as the training entry point. Nothing is launched.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from scaling.errors import ConfigError, DataError, report_user_error

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
DEFAULT_FLOPS_PER_SEC = 5e10  # a 2-core CPU in fp32, roughly; say --tokens-per-sec or --measure otherwise

USAGE = """\
usage: scaling-plan +sweep=NAME [OVERRIDE ...] [--json | --csv]
                    [--tokens-per-sec T | --flops-per-sec F | --measure [SECONDS]]

Expand a sweep as `scaling-train --multirun +sweep=NAME [OVERRIDE ...]` would and print each run's
shape, N (non_embedding, with_head, total), D (tokens the optimizer will consume), C (under the sweep's
FLOP convention), budget, estimated time, whether it is skipped and why, and totals. Launches nothing.

Time estimates come from, in order: --tokens-per-sec T (tokens/s of every run), --flops-per-sec F
(Chinchilla-convention FLOP/s, as the training loop's MFU uses), --measure (a few training steps of each
distinct shape on this machine, SECONDS each, default 1), else an assumed 5e10 FLOP/s. Evaluation
tokens are priced as forward passes (a third of a training token).
"""


# --------------------------------------------------------------------------------------------------
# Expansion.


def job_overrides(master: DictConfig, config_loader: Any) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper derives them from a multirun master config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins

    target = OmegaConf.select(master, "hydra.sweeper._target_")
    if target != BASIC_SWEEPER:
        raise ConfigError(f"hydra.sweeper._target_={target!r}: scaling-plan expands only Hydra's basic sweeper")
    sweeper = Plugins.instance()._instantiate(master.hydra.sweeper)  # as Hydra's multirun does (not set up)
    arguments = sweeper._parse_config() + list(OmegaConf.to_container(master.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create(config_loader=config_loader).parse_overrides(arguments)
    batches = sweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch]


def sweep_names(config_loader: Any) -> list[str]:
    return sorted(config_loader.get_group_options("sweep"))


def _check_sweep_name(overrides: list[str], config_loader: Any) -> None:
    names = sweep_names(config_loader)
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "sweep" and value not in names:
            raise ConfigError(f"unknown sweep {value!r}: choose one of {', '.join(names)}")


def expand(overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    """(job overrides, composed job config) of every job of the multirun ``overrides`` describe."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from scaling.train import CONF_DIR, configure_runtime  # the training entry point's own config and resolvers

    configure_runtime()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="scaling-plan"):
        gh = GlobalHydra.instance()
        loader = gh.config_loader()
        _check_sweep_name(overrides, loader)
        master = gh.hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN,
                                         with_log_configuration=False)
        hydra_overrides = list(OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False))
        jobs = job_overrides(master, loader)
        return [(job, compose("config", overrides=hydra_overrides + job, return_hydra_config=False)) for job in jobs]


# --------------------------------------------------------------------------------------------------
# One planned run.


@dataclass
class PlannedRun:
    index: int
    overrides: list[str]
    run_id: str
    run_dir: str
    shape: dict[str, Any]
    params: dict[str, int]
    train_tokens: int  # train.tokens as configured
    tokens: int  # D: tokens the optimizer will consume (whole steps)
    steps: int
    flops: dict[str, float]  # C of D under each convention
    convention: str  # the sweep's FLOP convention (6nd when it names none)
    budget: Optional[float]
    skip_reason: Optional[str]
    state: str  # completed | failed | diverged | skipped | partial | "" (not started), from the run directory
    eval_tokens: int = 0
    est_seconds: Optional[float] = None
    role: Optional[str] = None  # WSD branching: trunk | branch | None
    trunk: Optional[str] = None  # a branch's trunk (run id)
    own_tokens: Optional[int] = None  # tokens this run trains itself: a branch's, after its trunk; else D
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.own_tokens is None:
            self.own_tokens = self.tokens

    @property
    def to_train(self) -> bool:
        return not self.skip_reason and self.state not in ("completed", "diverged")

    @property
    def compute(self) -> float:
        """C of the run's D (a branch's true total, its trunk's part included)."""
        return self.flops.get(self.convention, float("nan"))

    @property
    def own_compute(self) -> float:
        """C this run spends itself: a sweep's total counts each trunk once."""
        return self.compute * self.own_tokens / self.tokens if self.tokens else 0.0


def plan_run(cfg: DictConfig, index: int, overrides: list[str], run_dir: Optional[Path] = None) -> PlannedRun:
    """Sizes of one job's run, derived from its config exactly as the training loop derives them."""
    from scaling.branching import branch_fields, branch_role
    from scaling.flops import flops_per_token, param_counts
    from scaling.resolvers import model_config, vocab_size
    from scaling.run_key import run_key
    from scaling.train import RunPlan, shape_of

    vocab = vocab_size(cfg)
    model = model_config(cfg)
    params = param_counts(model, vocab)
    per_token = flops_per_token(model, vocab)
    train_tokens = int(cfg.train.tokens)
    reason = OmegaConf.select(cfg, "sweep.skip_reason", default=None) or None
    branch: dict[str, Any] = {}
    if reason:
        steps, tokens = 0, train_tokens
    else:
        plan = RunPlan(cfg, vocab, world_size=1)
        steps, tokens = plan.steps, plan.tokens
        branch = branch_fields(cfg, plan)
    t = cfg.train
    evals = (steps // t.eval_every if t.eval_every else 0) * t.eval_tokens + (t.final_eval_tokens if steps else 0)
    convention = OmegaConf.select(cfg, "sweep.convention", default=None) or "6nd"
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.runs_dir) / cfg.group / run_key(cfg)
    return PlannedRun(
        index=index, overrides=list(overrides), run_id=run_dir.name, run_dir=str(run_dir),
        shape=shape_of(cfg, vocab), params={k: params[k] for k in ("non_embedding", "with_head", "total")},
        train_tokens=train_tokens, tokens=tokens, steps=steps,
        flops={k: v * tokens for k, v in per_token.items()}, convention=str(convention),
        budget=_float_or_none(OmegaConf.select(cfg, "sweep.budget", default=None)),
        skip_reason=reason, state=run_state(run_dir), eval_tokens=int(evals), role=branch_role(cfg),
        trunk=branch.get("trunk"), own_tokens=branch.get("own_tokens"),
    )


def _float_or_none(x: Any) -> Optional[float]:
    """The budget of a run; None for none, or for a branching sweep's trunk (``trunk``)."""
    try:
        return None if x is None else float(x)
    except ValueError:
        return None


def run_state(run_dir: Path) -> str:
    """What a run directory already holds: its result's status, ``partial`` (checkpoints), or ''."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            return str(json.loads(result.read_text()).get("status", ""))
        except (OSError, ValueError):
            return ""
    ckpt = run_dir / "checkpoints"
    return "partial" if ckpt.is_dir() and any(ckpt.iterdir()) else ""


def check_budgets(runs: list[PlannedRun]) -> None:
    """Each budget must leave at least its smallest shape above the floor (else it is an input error)."""
    budgets: dict[float, list[PlannedRun]] = {}
    for r in runs:
        if r.budget is not None:
            budgets.setdefault(r.budget, []).append(r)
    for budget, group in budgets.items():
        if all(r.skip_reason and r.skip_reason.startswith("below the floor") for r in group):
            smallest = max(group, key=lambda r: r.train_tokens)
            raise ConfigError(
                f"sweep.budget={budget:g} is too small for the smallest shape (width={smallest.shape['width']}, "
                f"depth={smallest.shape['depth']}): {smallest.skip_reason}; raise the budget or add a smaller shape")


# --------------------------------------------------------------------------------------------------
# Time estimates.


def estimate_times(runs: list[PlannedRun], cfgs: list[DictConfig], tokens_per_sec: Optional[float],
                   flops_per_sec: Optional[float], measure: Optional[float]) -> str:
    """Fill ``est_seconds`` of every run; return a sentence saying where the throughput came from."""
    if tokens_per_sec is not None:
        rate = {r.index: tokens_per_sec for r in runs}
        source = f"{tokens_per_sec:,.0f} tokens/s for every run (--tokens-per-sec)"
    elif measure is not None:
        rate, source = _measured_rates(runs, cfgs, measure)
    else:
        fps = flops_per_sec if flops_per_sec is not None else DEFAULT_FLOPS_PER_SEC
        how = "--flops-per-sec" if flops_per_sec is not None else "assumed; pass --tokens-per-sec, --flops-per-sec or --measure"
        source = f"{fps:.3g} FLOP/s of Chinchilla-convention FLOPs ({how})"
        rate = {r.index: fps / (r.flops["chinchilla"] / r.tokens) if r.tokens else math.inf for r in runs}
    for r in runs:
        r.est_seconds = 0.0 if r.skip_reason else (r.own_tokens + r.eval_tokens / 3.0) / rate[r.index]
    return source


def _measured_rates(runs: list[PlannedRun], cfgs: list[DictConfig], seconds: float) -> tuple[dict, str]:
    """Training tokens/s of each distinct shape, from a few real optimizer steps on random tokens."""
    by_key: dict[str, float] = {}
    rate = {}
    for r, cfg in zip(runs, cfgs):
        if r.skip_reason:
            rate[r.index] = math.inf
            continue
        key = json.dumps([OmegaConf.to_container(cfg.model, resolve=True), r.shape["vocab_size"],
                          cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.device, cfg.train.precision])
        if key not in by_key:
            by_key[key] = measure_tokens_per_sec(cfg, r.shape["vocab_size"], seconds)
        rate[r.index] = by_key[key]
    device = cfgs[0].train.device if cfgs else "auto"
    return rate, f"measured on this machine: a few training steps of each of {len(by_key)} shape(s) (train.device={device})"


def measure_tokens_per_sec(cfg: DictConfig, vocab: int, seconds: float = 1.0) -> float:
    """Tokens/s of forward + backward + AdamW steps of this run's model at its micro batch, on random tokens."""
    import contextlib

    import torch

    from scaling.hardware import resolve_device
    from scaling.model import GPT
    from scaling.resolvers import model_config

    device = resolve_device(cfg.train.device)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    ctx = cfg.model.context
    torch.manual_seed(0)
    model = GPT(model_config(cfg), vocab).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (micro, ctx), device=device)
    bf16 = device.type == "cuda" and cfg.train.precision in ("auto", "bf16")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n * micro * ctx / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# Output.


def totals(runs: list[PlannedRun]) -> dict[str, Any]:
    """Sums over the runs; ``*_to_train`` count only runs neither skipped nor already finished. Tokens and
    FLOPs are what the runs spend themselves: a WSD branch its own part, so each trunk counts once."""
    todo = [r for r in runs if r.to_train]
    return {
        "runs": len(runs),
        "skipped": sum(1 for r in runs if r.skip_reason),
        "already_done": sum(1 for r in runs if not r.skip_reason and not r.to_train),
        "to_train": len(todo),
        "tokens": sum(r.own_tokens for r in runs if not r.skip_reason),
        "flops": sum(r.own_compute for r in runs if not r.skip_reason),
        "tokens_to_train": sum(r.own_tokens for r in todo),
        "flops_to_train": sum(r.own_compute for r in todo),
        "est_seconds": sum(r.est_seconds or 0.0 for r in todo),
    }


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


NOTES = {"completed": "already completed", "diverged": "already diverged", "partial": "resumes from its checkpoint",
         "failed": "failed before: trains again", "skipped": "skipped before: trains now"}


def format_table(runs: list[PlannedRun], throughput: str, title: str) -> str:
    conv = runs[0].convention if runs else "6nd"
    head = ["#", "width", "depth", "heads", "ctx", "N_non_emb", "N_with_head", "N_total", "D", f"C[{conv}]",
            "budget", "est", "note"]
    rows = []
    for r in runs:
        note = f"skip: {r.skip_reason}" if r.skip_reason else NOTES.get(r.state, "")
        if r.role and not r.skip_reason:
            role = "trunk" if r.role == "trunk" else f"branch at {_si(r.tokens - r.own_tokens)} tokens of its trunk"
            note = f"{role}; {note}" if note else role
        rows.append([str(r.index), str(r.shape["width"]), str(r.shape["depth"]), str(r.shape["heads"]),
                     str(r.shape["context"]), _si(r.params["non_embedding"]), _si(r.params["with_head"]),
                     _si(r.params["total"]), _si(r.tokens), f"{r.compute:.3g}",
                     "-" if r.budget is None else f"{r.budget:.3g}", _duration(r.est_seconds), note])
    t = totals(runs)
    rows.append(["total", "", "", "", "", "", "", "", _si(t["tokens"]), f"{t['flops']:.3g}", "",
                 _duration(t["est_seconds"]), f"{t['to_train']} to train, {t['skipped']} skipped, "
                 f"{t['already_done']} already done"])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.rjust(w) if i < len(head) - 1 else c for i, (c, w) in enumerate(zip(cells, widths)))
    out = [title, line(head)] + [line(x) for x in rows[:-1]] + ["-" * (sum(widths[:-1]) + 2 * len(widths)), line(rows[-1])]
    out.append(f"time estimates: {throughput}")
    return "\n".join(o.rstrip() for o in out)


def as_dict(runs: list[PlannedRun], throughput: str, title: str) -> dict[str, Any]:
    """What ``--json`` prints: the runs (all conventions), the throughput's source and the totals."""
    rows = []
    for r in runs:
        d = asdict(r)
        d.pop("extra")
        d["compute"] = r.compute
        d["own_compute"] = r.own_compute
        d["to_train"] = r.to_train
        rows.append(d)
    return {"sweep": title, "throughput": throughput, "runs": rows, "totals": totals(runs)}


def as_csv(runs: list[PlannedRun]) -> str:
    buf = io.StringIO()
    writer = None
    for r in runs:
        row = {"index": r.index, "run_id": r.run_id, **{k: v for k, v in r.shape.items()},
               **{f"N_{k}": v for k, v in r.params.items()}, "train_tokens": r.train_tokens, "tokens": r.tokens,
               "steps": r.steps, **{f"flops_{k}": v for k, v in r.flops.items()}, "convention": r.convention,
               "budget": r.budget, "est_seconds": r.est_seconds, "skip_reason": r.skip_reason or "",
               "state": r.state, "role": r.role or "", "trunk": r.trunk or "", "own_tokens": r.own_tokens,
               "overrides": " ".join(r.overrides)}
        if writer is None:
            writer = csv.DictWriter(buf, fieldnames=list(row))
            writer.writeheader()
        writer.writerow(row)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Command line.


def plan_sweep(overrides: list[str], tokens_per_sec: Optional[float] = None, flops_per_sec: Optional[float] = None,
               measure: Optional[float] = None) -> tuple[list[PlannedRun], str]:
    """Every run of the sweep ``overrides`` describe, sized and timed; and where the throughput came from."""
    jobs = expand(overrides)
    runs = [plan_run(cfg, i, ov) for i, (ov, cfg) in enumerate(jobs)]
    check_budgets(runs)
    return runs, estimate_times(runs, [cfg for _, cfg in jobs], tokens_per_sec, flops_per_sec, measure)


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    opts: dict[str, Any] = {"format": "table", "tokens_per_sec": None, "flops_per_sec": None, "measure": None}
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            opts["help"] = True
        elif a in ("--json", "--csv"):
            opts["format"] = a[2:]
        elif a in ("-m", "--multirun"):
            pass  # accepted so a scaling-train command line can be pasted as it is
        elif a in ("--tokens-per-sec", "--flops-per-sec"):
            if i + 1 >= len(argv):
                raise ConfigError(f"{a} needs a value: a positive number")
            opts[a[2:].replace("-", "_")] = _positive(a, argv[i + 1])
            i += 1
        elif a == "--measure":
            opts["measure"] = 1.0
            if i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1]:
                opts["measure"] = _positive(a, argv[i + 1])
                i += 1
        elif a.startswith("-"):
            raise ConfigError(f"option {a!r} is unknown: choose --json, --csv, --tokens-per-sec T, "
                              "--flops-per-sec F, --measure [SECONDS]")
        else:
            overrides.append(a)
        i += 1
    return overrides, opts


def _positive(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{flag}={text!r} is invalid: it must be a positive number")
    return value


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        overrides, opts = parse_args(argv)
        if opts.get("help"):
            print(USAGE)
            return 0
        runs, throughput = plan_sweep(overrides, opts["tokens_per_sec"], opts["flops_per_sec"], opts["measure"])
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug
        if not report_user_error(exc):
            raise
        return 2
    sweep = next((o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == "sweep"), None)
    title = f"sweep {sweep or '(none)'}: {len(runs)} run(s)"
    if opts["format"] == "json":
        print(json.dumps(as_dict(runs, throughput, title), indent=2))
    elif opts["format"] == "csv":
        sys.stdout.write(as_csv(runs))
    else:
        print(format_table(runs, throughput, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
