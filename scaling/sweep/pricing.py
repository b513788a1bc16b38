"""Price a sweep: each job's N, D, C and steps, derived from its config exactly as the run derives them
(``scaling.run.sizes``), what its run directory already holds, and time estimates. Evaluation is priced in
time as forward passes, a third of a training token each: the eval windows' tokens, and the document-level
validation's (``train.eval_documents``, ``document_tokens``)."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf, flag_override

from scaling.errors import ConfigError
from scaling.model.counts import flops_per_token, param_counts
from scaling.run.branch import branch_fields, branch_role
from scaling.run.identity import run_key
from scaling.run.record import RunRecord
from scaling.run.sizes import RunSizes, shape_of
from scaling.sweep.expand import cached_grammar, expand
from scaling.sweep.repeats import repeat_fields
from scaling.sweep.resolvers import cached_meta, model_config, vocab_size

DEFAULT_FLOPS_PER_SEC = 5e10  # a 2-core CPU in fp32, roughly; say --tokens-per-sec or --measure otherwise


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
    document_tokens: int = 0  # forward-pass tokens of the document-level validation (train.eval_documents)
    documents_from_data: bool = True  # document_tokens from the prepared data's documents (else one context each)
    est_seconds: Optional[float] = None
    role: Optional[str] = None  # WSD branching: trunk | branch | None
    trunk: Optional[str] = None  # a branch's trunk (run id)
    own_tokens: Optional[int] = None  # tokens this run trains itself: a branch's, after its trunk; else D
    unique_tokens: Optional[int] = None  # repeated data: U, the unique tokens (as the run's windows count them)
    epochs: Optional[float] = None  # D / U
    repeated_share: Optional[float] = None  # (D - U) / D: the share of D that repeats tokens already seen
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
    cfg = resolved(cfg)
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
        sizes = RunSizes(cfg, vocab, world_size=1)
        steps, tokens = sizes.steps, sizes.tokens
        branch = branch_fields(cfg, sizes)
    t = cfg.train
    evals = (steps // t.eval_every if t.eval_every else 0) * t.eval_tokens + (t.final_eval_tokens if steps else 0)
    documents, from_data = document_tokens(cfg) if steps else (0, True)
    convention = OmegaConf.select(cfg, "sweep.convention", default=None) or "6nd"
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.runs_dir) / cfg.group / run_key(cfg)
    return PlannedRun(
        index=index, overrides=list(overrides), run_id=run_dir.name, run_dir=str(run_dir),
        shape=shape_of(cfg, vocab), params={k: params[k] for k in ("non_embedding", "with_head", "total")},
        train_tokens=train_tokens, tokens=tokens, steps=steps,
        flops={k: v * tokens for k, v in per_token.items()}, convention=str(convention),
        budget=_float_or_none(OmegaConf.select(cfg, "sweep.budget", default=None)),
        skip_reason=reason, state=run_state(run_dir), eval_tokens=int(evals), document_tokens=documents,
        documents_from_data=from_data, role=branch_role(cfg),
        trunk=branch.get("trunk"), own_tokens=branch.get("own_tokens"),
        **repeat_fields(cfg, tokens, skipped=bool(reason)),
    )


def document_tokens(cfg: DictConfig) -> tuple[int, bool]:
    """(forward-pass tokens of the final document-level validation, priced from the prepared data?).

    ``train.eval_documents=K`` scores K validation documents (of each source) once. From prepared data (its
    ``meta.json``): K documents (at most the split's) of the split's mean length, each at
    ``document_forward_tokens``. Before the data is prepared (or for a mixture): one window of
    ``model.context`` per document."""
    k = cfg.train.get("eval_documents")
    if not k:
        return 0, True
    context = int(cfg.model.context)
    meta = cached_meta(cfg.data)
    if meta is None or not meta.get("val_docs"):
        return len(cfg.data.get("sources") or [None]) * int(k) * context, False
    length = round(int(meta["val_tokens"]) / int(meta["val_docs"])) + (meta.get("doc_sep") == "eos")  # eos: put in front
    return min(int(k), int(meta["val_docs"])) * document_forward_tokens(length, context), True


def document_forward_tokens(length: int, context: int) -> int:
    """Input tokens of the rolling windows that score a ``length``-token document (its tokens 1..n-1, each
    once, ``scaling.run.evaluate_documents.rolling_windows``): one window of ``length - 1`` when that fits in
    ``context``, else full windows of ``context``, the last reaching back into the document."""
    predicted = max(length - 1, 0)
    return predicted if predicted <= context else -(-predicted // context) * context


def resolved(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with every interpolation resolved once. The sweep resolvers read the whole config
    (a branch's sizes price its shape's every point), and OmegaConf resolves an interpolation on each read:
    sizing a run from the snapshot gives the same values several times faster. Where some field cannot be
    resolved, ``cfg`` itself: the fields the run reads then raise their own errors, as before."""
    values = _resolved_values(cfg)
    if values is None:
        return cfg
    snapshot = OmegaConf.create(values)
    OmegaConf.set_struct(snapshot, OmegaConf.is_struct(cfg))
    return snapshot


def resolved_typed(cfg: DictConfig) -> DictConfig:
    """Like ``resolved``, but a deep copy of ``cfg`` that keeps its schema (``typed_config`` needs it), each
    interpolation replaced by its value: what a run can train from (``hydra/launcher=worker``). ``cfg``
    itself where a field cannot be resolved or the copy would not hold exactly the resolved values."""
    values = _resolved_values(cfg)
    if values is None:
        return cfg
    snapshot = copy.deepcopy(cfg)
    try:
        with flag_override(snapshot, ["readonly", "struct"], False):
            snapshot.merge_with(values)
    except Exception:  # noqa: BLE001 - a node the merge refuses: train from the config as composed
        return cfg
    return snapshot if OmegaConf.to_container(snapshot, resolve=False) == values else cfg


def _resolved_values(cfg: DictConfig) -> Optional[dict[str, Any]]:
    """Every value of ``cfg``, each interpolation resolved once; None where some field cannot be resolved."""
    try:
        with cached_grammar():
            return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - the unresolved config reports the error where a field is read
        return None


def _float_or_none(x: Any) -> Optional[float]:
    """The budget of a run; None for none, or for a branching sweep's trunk (``trunk``)."""
    try:
        return None if x is None else float(x)
    except ValueError:
        return None


def run_state(run_dir: Path) -> str:
    """What a run directory already holds: its result's status, ``partial`` (checkpoints), or ''."""
    result = RunRecord(run_dir).read_result()
    if result is not None:
        return str(result.get("status", ""))
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
        forward = r.eval_tokens + r.document_tokens  # a forward pass: a third of a training token
        r.est_seconds = 0.0 if r.skip_reason else (r.own_tokens + forward / 3.0) / rate[r.index]
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
                          cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.device, cfg.train.precision,
                          cfg.train.threads, cfg.train.compile])
        if key not in by_key:
            by_key[key] = measure_tokens_per_sec(cfg, r.shape["vocab_size"], seconds)
        rate[r.index] = by_key[key]
    device = cfgs[0].train.device if cfgs else "auto"
    return rate, f"measured on this machine: a few training steps of each of {len(by_key)} shape(s) (train.device={device})"


def measure_tokens_per_sec(cfg: DictConfig, vocab: int, seconds: float = 1.0) -> float:
    """Tokens/s of forward + backward + AdamW steps of this run's model at its micro batch, on random tokens,
    at the run's ``train.threads`` (on a CPU the rate depends on them: a sweep's single-threaded runs)."""
    import torch

    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _timed_steps(cfg, vocab, seconds)
    finally:
        torch.set_num_threads(threads)


def _timed_steps(cfg: DictConfig, vocab: int, seconds: float) -> float:
    """Tokens/s of the run's optimizer step, timed for ``seconds`` after a warm-up of a tenth as long."""
    import torch

    from scaling.model.gpt import GPT
    from scaling.run.distributed import DistContext
    from scaling.run.hardware import resolve_device
    from scaling.run.step import OptimizerStep, autocast_for, make_optimizer, wrap_model

    device = resolve_device(cfg.train.device)
    micro = cfg.train.micro_batch_size or cfg.train.batch_size
    ctx = cfg.model.context
    torch.manual_seed(0)
    model = GPT(model_config(cfg), vocab).to(device)
    single = DistContext()
    step = OptimizerStep(model, wrap_model(model, cfg, device, single), make_optimizer(model, cfg, device),
                         cfg.optim.grad_clip, autocast_for(cfg.train.precision, device), single)
    x = torch.randint(0, vocab, (micro, ctx), device=device)
    lr = float(cfg.optim.lr)

    t0 = time.perf_counter()
    while True:  # warm-up: the first steps allocate (and compile); at least one, a tenth of the time
        step([(x, x)], lr)
        if time.perf_counter() - t0 >= seconds / 10:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        step([(x, x)], lr)
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n * micro * ctx / (time.perf_counter() - t0)


def distinct_runs(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs with each run directory once: jobs that name the same run (a WSD trunk under several
    ``sweep.cooldown_seed`` values) train it once, the others find its record."""
    first: dict[str, PlannedRun] = {}
    for r in runs:
        first.setdefault(str(r.run_dir), r)
    return list(first.values())


def totals(runs: list[PlannedRun]) -> dict[str, Any]:
    """Sums over the distinct runs; ``*_to_train`` count only runs neither skipped nor already finished.
    Tokens and FLOPs are what the runs spend themselves: a WSD branch its own part, so each trunk counts once."""
    runs = distinct_runs(runs)
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
        "document_tokens_to_train": sum(r.document_tokens for r in todo),
        "est_seconds": sum(r.est_seconds or 0.0 for r in todo),
    }


def plan_sweep(overrides: list[str], tokens_per_sec: Optional[float] = None, flops_per_sec: Optional[float] = None,
               measure: Optional[float] = None) -> tuple[list[PlannedRun], str]:
    """Every run of the sweep ``overrides`` describe, sized and timed; and where the throughput came from."""
    jobs = expand(overrides)
    runs = [plan_run(cfg, i, ov) for i, (ov, cfg) in enumerate(jobs)]
    check_budgets(runs)
    return runs, estimate_times(runs, [cfg for _, cfg in jobs], tokens_per_sec, flops_per_sec, measure)
