"""GPU checks through the real training loop (``scaling.run.training.run_training`` and ``scaling-train``).

Three checks, each writing one JSON file into ``--out`` (``bench/gpu_check.sh`` runs them in turn):

  loop     GPT-2 small (768 x 12, context 1024, vocabulary 50,304) for ~300 steps through
           ``run_training`` with periodic evaluation, one checkpoint in the loop and the W&B mirror
           offline. Reports the loop's tokens/s (``metrics.jsonl`` and host timestamps at the logged,
           synchronised steps), MFU under the PaLM count (6 N_with_head + 12 L H Q T) against the data-sheet
           peak, the bare model step timed afterwards in the same process with the same batch, and the
           share of time outside the model step: steady state, and over the whole loop (eval, checkpoint).
  agree    the same small run through ``scaling-train`` in fp32 on the CPU and in bf16 on the GPU, side by
           side; final validation and training losses must agree within 0.02 nats.
  isoflop  the 6-run IsoFLOP mini-study ``scaling-train --multirun +sweep=gpu_mini`` and its fit,
           ``scaling-fit --approach isoflop``.

    python bench/gpu_loop_check.py loop --out gpu-out
    python bench/gpu_loop_check.py agree --out gpu-out --cpu-smoke    # tiny versions on the CPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from scaling.io import atomic_write_json

# torch and the run layer are imported by the loop check alone: the agree and isoflop checks only start
# scaling-train processes, and each import of torch costs seconds of CPU in the CPU smoke test.

BIN = Path(sys.executable).parent
TOLERANCE = 0.02  # nats: fp32-CPU vs bf16-GPU (as tests/run/test_precision.py)
WARMUP_STEPS = 30  # loop steps left out of the steady state (compile, allocator, first evaluation graphs)


def loop_overrides(smoke: bool, steps: int, batch: int) -> list[str]:
    """GPT-2 small through the whole loop: eval every 100 steps, a checkpoint at 200, W&B offline."""
    if smoke:
        return ["model=tiny", "train.device=cpu", "train.batch_size=8", f"train.tokens={steps * 8 * 64}",
                "train.eval_every=20", "train.eval_tokens=2048", "train.final_eval_tokens=4096",
                "train.log_every=5", "train.checkpoint_every=20", "train.threads=1", "data.max_bytes=2000000",
                "logger=wandb", "logger.wandb.mode=offline", "name=loop-smoke"]
    return ["model=gpt2-small", "model.vocab_size=50304", "train.device=cuda", f"train.batch_size={batch}",
            f"train.tokens={steps * batch * 1024}", "train.eval_every=100", "train.eval_tokens=65536",
            "train.final_eval_tokens=131072", "train.log_every=10", "train.checkpoint_every=200",
            "optim.lr=6e-4", "logger=wandb", "logger.wandb.mode=offline", "name=gpt2-small-loop"]


class Timings:
    """Host-side time per duty of the loop, and a timestamp after each step's hooks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stamps: dict[int, float] = {}
        self.start = 0.0

    def add(self, name: str, t0: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def timed(self, name: str, fn: Callable) -> Callable:
        def call(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.add(name, t0)
        return call


class _TimedHook:
    def __init__(self, hook: Any, timings: Timings):
        self.after_step = timings.timed(type(hook).__name__, hook.after_step)


class _StampHook:
    def __init__(self, timings: Timings):
        self.timings = timings

    def after_step(self, ev: Any) -> None:
        self.timings.stamps[ev.step] = time.perf_counter()


def instrument(timings: Timings) -> Callable[[], None]:
    """Wrap the loop of ``run_training`` so each hook, the batch wait and the step are timed; returns undo."""
    from scaling.run import training

    real = training.train_loop

    def timed_loop(state, steps, lr_at, batches, optimizer_step, hooks, **options):
        wait = timings.timed("batches", lambda: next(batches))
        timed_batches = iter(wait, None)
        hooks = [_TimedHook(h, timings) for h in hooks] + [_StampHook(timings)]
        timings.start = time.perf_counter()
        return real(state, steps, lr_at, timed_batches, timings.timed("step_launch", optimizer_step), hooks, **options)

    training.train_loop = timed_loop
    return lambda: setattr(training, "train_loop", real)


def steady_step_seconds(stamps: dict[int, float], log_every: int, skip: set[int], first: int) -> float | None:
    """Median seconds per step between logged (synchronised) steps, leaving out intervals ending at ``skip``."""
    logged = sorted(s for s in stamps if s % log_every == 0 and s >= first)
    per_step = [(stamps[b] - stamps[a]) / (b - a) for a, b in itertools.pairwise(logged) if b not in skip]
    return statistics.median(per_step) if per_step else None


def bare_step_seconds(cfg: Any, vocab: int, device: Any, steps: int, warmup: int) -> float:
    """Seconds per optimizer step of the loop's own ``OptimizerStep`` on a fixed batch already on the device."""
    import torch

    from scaling.model.gpt import GPT
    from scaling.run.distributed import DistContext
    from scaling.run.sizes import RunSizes
    from scaling.run.step import OptimizerStep, autocast_for, make_optimizer, wrap_model

    sizes, ctx = RunSizes(cfg, vocab, 1), DistContext()
    torch.manual_seed(0)
    model = GPT(cfg.model, vocab).to(device)
    step = OptimizerStep(model, wrap_model(model, cfg, device, ctx), make_optimizer(model, cfg, device),
                         cfg.optim.grad_clip, autocast_for(cfg.train.precision, device), ctx)
    data = torch.randint(0, 256, (sizes.micro_batch_size, sizes.context + 1), device=device)
    micro = [(data[:, :-1].contiguous(), data[:, 1:].contiguous())] * sizes.accum_steps
    for _ in range(warmup):
        step(micro, cfg.optim.lr)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(micro, cfg.optim.lr)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def check_loop(args: argparse.Namespace) -> dict:
    import torch

    from scaling.run import training
    from scaling.sweep.expand import compose_run_config

    cfg = compose_run_config(loop_overrides(args.cpu_smoke, args.steps, args.batch))
    run_dir = args.out / "runs" / "loop"
    timings = Timings()
    undo = instrument(timings)
    try:
        result = training.run_training(cfg, run_dir)
    finally:
        undo()
    if result["status"] != "completed":
        return {"check": "loop", "ok": False, "error": f"run {result['status']}: {result.get('error')}"}
    device = torch.device(result["device"])
    vocab = result["model"]["vocab_size"]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    bare = bare_step_seconds(cfg, vocab, device, 5 if args.cpu_smoke else 50, 2 if args.cpu_smoke else 10)
    return loop_report(cfg, result, run_dir, timings, bare, device, vocab)


def loop_report(cfg: Any, result: dict, run_dir: Path, timings: Timings, bare: float, device: Any,
                vocab: int) -> dict:
    """The loop check's figures from the run record, the host timings and the bare step."""
    from bench_gpu import conventions

    from scaling.run.hardware import peak_flops

    t, steps = cfg.train, result["steps"]
    duty_steps = {s for s in range(1, steps + 1) if (t.eval_every and s % t.eval_every == 0)
                  or (t.checkpoint_every and s % t.checkpoint_every == 0) or s == steps}
    first = min(WARMUP_STEPS, steps // 3)
    loop_step = steady_step_seconds(timings.stamps, t.log_every, duty_steps, first)
    tokens_per_step = t.batch_size * cfg.model.context
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    after_duty = {s + t.log_every for s in duty_steps}
    steady_rows = [r["tokens_per_s"] for r in rows if r["step"] > first + t.log_every and r["step"] not in after_duty
                   and r["step"] not in duty_steps]
    palm = conventions(cfg.model, vocab)["palm"]
    peak = peak_flops(device)
    stamps = timings.stamps
    whole = stamps[steps] - stamps[first] if first in stamps else None
    report = {
        "check": "loop", "ok": True, "device": result["device"], "steps": steps, "tokens_per_step": tokens_per_step,
        "params": result["params"], "palm_flops_per_token": palm, "peak_flops": peak,
        "val_loss": result["val_loss"], "train_loss": result["train_loss"], "wall_time_s": result["wall_time"],
        "time_to_first_step_s": stamps[1] - timings.start if 1 in stamps else None,
        "loop_step_s": loop_step, "bare_step_s": bare,
        "tokens_per_s_loop": tokens_per_step / loop_step if loop_step else None,
        "tokens_per_s_metrics": statistics.median(steady_rows) if steady_rows else None,
        "tokens_per_s_bare": tokens_per_step / bare,
        "overhead_share_steady": 1.0 - bare / loop_step if loop_step else None,
        "overhead_share_whole_loop": 1.0 - (steps - first) * bare / whole if whole else None,
        "host_seconds": {k: round(v, 4) for k, v in sorted(timings.seconds.items())},
        "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*")) if (run_dir / "checkpoints").is_dir() else [],
        "wandb_offline_runs": len([*run_dir.glob("wandb/offline-run-*"), *run_dir.parent.glob("wandb/offline-run-*")]),
    }
    for key in ("loop", "metrics", "bare"):
        tps = report[f"tokens_per_s_{key}"]
        report[f"mfu_palm_{key}"] = tps * palm / peak if (tps and peak) else None
    return report


def train_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``scaling-train ARGS`` in a subprocess (the console script beside this Python)."""
    return subprocess.Popen([str(BIN / "scaling-train"), *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final(runs_dir: Path) -> dict:
    (result_file,) = [p for p in runs_dir.rglob("result.json")]
    return json.loads(result_file.read_text())


def check_agree(args: argparse.Namespace) -> dict:
    """fp32 on the CPU and bf16 on the GPU (bf16 on the CPU in the smoke), run side by side."""
    base = ["model=small", "train.batch_size=16", "train.eval_every=0", "train.final_eval_tokens=65536",
            "train.tokens=409600", "train.seed=0", "logger=none"]
    if args.cpu_smoke:
        base = ["model=tiny", "train.batch_size=8", "train.tokens=8192", "train.eval_every=0",
                "train.final_eval_tokens=8192", "train.seed=0", "logger=none", "data.max_bytes=2000000"]
    bf16_device = "cpu" if args.cpu_smoke else "cuda"
    sides = {"fp32_cpu": ["train.device=cpu", "train.precision=fp32", "train.compile=false",
                          f"train.threads={1 if args.cpu_smoke else 8}"],
             f"bf16_{bf16_device}": [f"train.device={bf16_device}", "train.precision=bf16"]
             + (["train.threads=1"] if args.cpu_smoke else [])}
    procs = {name: train_cli(*base, *extra, f"runs_dir={args.out / 'runs' / ('agree-' + name)}")
             for name, extra in sides.items()}
    report: dict[str, Any] = {"check": "agree", "tolerance_nats": TOLERANCE, "overrides": base}
    for name, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            return {**report, "ok": False, "error": f"{name} failed ({proc.returncode}): {out[-2000:]}"}
        r = _final(args.out / "runs" / f"agree-{name}")
        report[name] = {"val_loss": r["val_loss"], "train_loss": r["train_loss"], "wall_time_s": r["wall_time"],
                        "device": r["device"]}
    (a, b) = (report[name] for name in sides)
    report["val_gap"] = abs(a["val_loss"] - b["val_loss"])
    report["train_gap"] = abs(a["train_loss"] - b["train_loss"])
    report["ok"] = report["val_gap"] < TOLERANCE and report["train_gap"] < TOLERANCE
    return report


def check_isoflop(args: argparse.Namespace) -> dict:
    """The 6-run IsoFLOP mini-study through ``scaling-train --multirun`` and its ``scaling-fit``."""
    runs = args.out / "runs"
    extra = ["train.device=cuda"]
    if args.cpu_smoke:
        extra = ["train.device=cpu", "train.threads=1", "sweep.budgets=[6.0e8,1.2e9]", "sweep.min_tokens_per_param=0.05",
                 "sweep.shapes=[{width:16,depth:1},{width:24,depth:1},{width:32,depth:1}]", "model.context=32",
                 "model.head_dim=8", "train.batch_size=8", "train.final_eval_tokens=4096", "sweep.min_steps=5",
                 "data.max_bytes=2000000"]
    t0 = time.perf_counter()
    proc = train_cli("--multirun", "+sweep=gpu_mini", f"runs_dir={runs}", *extra)
    out, _ = proc.communicate()
    sweep_s = time.perf_counter() - t0
    results = [json.loads(p.read_text()) for p in sorted((runs / "gpu_mini").rglob("result.json"))]
    report: dict[str, Any] = {"check": "isoflop", "sweep_s": sweep_s, "runs": [
        {k: r.get(k) for k in ("run_id", "status", "val_loss", "tokens", "wall_time")} for r in results]}
    if proc.returncode != 0:
        return {**report, "ok": False, "error": f"sweep failed ({proc.returncode}): {out[-2000:]}"}
    fit = subprocess.run([str(BIN / "scaling-fit"), str(runs / "gpu_mini"), "--approach", "isoflop", "--flops",
                          "chinchilla", "--params", "total", "--json", "--out", str(args.out / "isoflop_fit")],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    completed = sum(r["status"] == "completed" for r in results)
    if fit.returncode == 0:
        report["fit"] = json.loads(fit.stdout).get("isoflop")
    else:  # e.g. no interior minimum: recorded; in the smoke (tiny budgets) that is expected
        report["fit_error"] = f"scaling-fit exit {fit.returncode}: {fit.stderr.strip()[-2000:]}"
    report["ok"] = completed == 6 and (fit.returncode == 0 or args.cpu_smoke)
    return report


CHECKS = {"loop": check_loop, "agree": check_agree, "isoflop": check_isoflop}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", choices=sorted(CHECKS))
    ap.add_argument("--out", type=Path, required=True, help="folder for <check>.json and the run directories")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny versions on the CPU, to check the script")
    ap.add_argument("--steps", type=int, default=300, help="loop: optimizer steps (default 300; smoke 40)")
    ap.add_argument("--batch", type=int, default=16, help="loop: sequences of 1024 tokens per step (default 16)")
    args = ap.parse_args(argv)
    if args.cpu_smoke and args.steps == 300:
        args.steps = 30
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t0 = time.perf_counter()
    try:
        report = CHECKS[args.check](args)
    except Exception as exc:  # the summary records the failure; the other checks still run
        report = {"check": args.check, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc().splitlines()[-20:]}
    report["seconds"] = time.perf_counter() - t0
    atomic_write_json(args.out / f"{args.check}.json", report)
    print(json.dumps(report, indent=1, default=str))
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
