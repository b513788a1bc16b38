"""Training throughput and MFU of the harness's GPT: tokens/s of one full step (forward, backward, AdamW).

For each shape and mode, the model's own step as ``scaling.run.training`` runs it on CUDA: bf16 autocast, fused
AdamW, SDPA attention (flash on recent GPUs), a fixed random batch already on the device (so the figures
are of the step, not of the data path). Modes: ``eager``; ``compile`` (``torch.compile`` of the whole
model); ``compile-blocks`` (each transformer block compiled in place: one compiled graph reused by every
block, so compile time hardly grows with depth).

MFU = tokens/s x training FLOPs per token / peak, under two named FLOP conventions:
  palm        6 N_with_head + 12 depth width context (nanoGPT's ``estimate_mfu``, PaLM Appendix B: every
              matmul parameter incl. the output head, plus attention scores and values; no causal halving)
  chinchilla  3 x the forward count of Hoffmann et al. 2022, Appendix F (``scaling.model.counts``): embeddings,
              full attention, softmax and logits included
and two denominators: the GPU's dense bf16 peak (``scaling.run.hardware.PEAK_BF16``) and a measured ceiling,
the FLOP/s of a large bf16 matmul on the same device.

    python bench/bench_gpu.py                                # 18M, 30M, 124M, 355M; eager, compile, compile-blocks
    python bench/bench_gpu.py --shapes 124M --modes compile  # one cell
    python bench/bench_gpu.py --cpu-smoke                    # tiny shapes on the CPU, fp32: checks the script
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python bench/bench_gpu.py --json rows.json   # cold, then warm compiles

Compile times: ``compile_cold_s`` is the first step's extra time (cold only with an empty Inductor cache),
``compile_warm_s`` the same after ``torch._dynamo.reset()`` with the cache filled (``--no-warm`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.config import ModelConfig  # noqa: E402
from scaling.model.counts import flops_per_token, param_counts  # noqa: E402
from scaling.run.hardware import peak_flops  # noqa: E402
from scaling.io import atomic_write_json  # noqa: E402
from scaling.model.gpt import GPT  # noqa: E402

VOCAB = 50304  # GPT-2's 50,257 rounded up to a multiple of 64
# name (total parameters at VOCAB) -> width, depth, heads, context. GPT-2 style: learned positions, GELU, biases, tied head.
SHAPES = {
    "18M": (256, 6, 4, 1024),
    "30M": (384, 6, 6, 1024),
    "124M": (768, 12, 12, 1024),  # GPT-2 small
    "355M": (1024, 24, 16, 1024),  # GPT-2 medium
}
SMOKE_SHAPES = {"smoke-s": (64, 2, 2, 64), "smoke-m": (128, 2, 4, 128)}
SMOKE_VOCAB = 256
MODES = ("eager", "compile", "compile-blocks")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def model_config(width: int, depth: int, heads: int, context: int) -> ModelConfig:
    return ModelConfig(width=width, depth=depth, heads=heads, context=context, pos="learned", mlp="gelu",
                       bias=True, tie_embeddings=True)


def conventions(cfg: ModelConfig, vocab: int) -> dict[str, float]:
    """Training FLOPs per token under the two named conventions (see the module docstring)."""
    n = param_counts(cfg, vocab)
    return {"palm": 6.0 * n["with_head"] + 12.0 * cfg.depth * cfg.width * cfg.context,
            "chinchilla": flops_per_token(cfg, vocab)["chinchilla"]}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """FLOP/s of an (n, n) @ (n, n) matmul in ``dtype``: the practical ceiling of the device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2.0 * n**3 * reps / (time.perf_counter() - t0)


def build_step(cfg: ModelConfig, vocab: int, mode: str, batch: int, device: torch.device, bf16: bool):
    """A fresh model, optimizer and fixed batch (seed 0), and the closure of one training step."""
    torch.manual_seed(0)
    model = GPT(cfg, vocab).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    step_model = model
    if mode == "compile":
        step_model = torch.compile(model)
    elif mode == "compile-blocks":
        for block in model.transformer.h:
            block.compile()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    data = torch.randint(0, vocab, (batch, cfg.context + 1), device=device)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()  # (B, T) each

    def step() -> torch.Tensor:
        with autocast:
            _, loss = step_model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, n: int, device: torch.device) -> tuple[list[float], torch.Tensor]:
    """Wall time of each of ``n`` steps (synchronised), and the last loss."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, loss


def bench_one(cfg: ModelConfig, vocab: int, mode: str, batch: int, steps: int, warmup: int,
              device: torch.device, bf16: bool, warm: bool = True) -> dict:
    """Time ``steps`` training steps after ``warmup`` ones; the first step's extra time is the compile time.

    ``compile_cold_s``: the first compile in this process (cold only when Inductor's cache is empty: point
    ``TORCHINDUCTOR_CACHE_DIR`` at a fresh folder); ``compile_warm_s`` (with ``warm``): the same model built and
    compiled again after ``torch._dynamo.reset()``, as a second run on the same machine sees it.
    """
    if device.type == "cuda":
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = time_steps(build_step(cfg, vocab, mode, batch, device, bf16), warmup + steps, device)
    step_s = statistics.median(times[warmup:])
    compiled = mode != "eager"
    row = {"step_s": step_s, "tokens_per_s": batch * cfg.context / step_s, "loss": loss.item(),
           "compile_s": max(0.0, times[0] - step_s) if compiled else 0.0}
    row["compile_cold_s"] = row["compile_s"]
    if device.type == "cuda":
        row["max_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if compiled and warm:
        torch._dynamo.reset()
        again, _ = time_steps(build_step(cfg, vocab, mode, batch, device, bf16), 2, device)
        row["compile_warm_s"] = max(0.0, again[0] - step_s)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=None, help=f"comma-separated, from {', '.join(SHAPES)} (default: all)")
    ap.add_argument("--modes", default=None, help=f"comma-separated, from {', '.join(MODES)} (default: all)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 16; smoke 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; smoke 5)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first, incl. compile (default 5; smoke 2)")
    ap.add_argument("--matmul-n", type=int, default=None, help="size of the ceiling matmul (default 8192; smoke 512)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU in fp32, to check the script")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--no-warm", action="store_true", help="skip the second (warm-cache) compile of each compiled mode")
    args = ap.parse_args(argv)

    smoke = args.cpu_smoke
    shapes = SMOKE_SHAPES if smoke else SHAPES
    vocab = SMOKE_VOCAB if smoke else VOCAB
    names = args.shapes.split(",") if args.shapes else list(shapes)
    modes = args.modes.split(",") if args.modes else list(MODES)
    for name in names:
        if name not in shapes:
            fail(f"--shapes {name!r} is not a shape here; allowed: {', '.join(shapes)}")
    for mode in modes:
        if mode not in MODES:
            fail(f"--modes {mode!r} is not a mode; allowed: {', '.join(MODES)}")
    batch = args.batch or (4 if smoke else 16)
    steps = args.steps or (5 if smoke else 20)
    warmup = args.warmup if args.warmup is not None else (2 if smoke else 5)
    matmul_n = args.matmul_n or (512 if smoke else 8192)
    for field, value in (("--batch", batch), ("--steps", steps), ("--matmul-n", matmul_n), ("--warmup + 1", warmup + 1)):
        if value < 1:
            fail(f"{field}={value} is not allowed; use a positive number")
    if smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        fail("no CUDA device is visible; run with --cpu-smoke on a machine without a GPU")
    bf16 = device.type == "cuda"

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    peak = peak_flops(device)
    ceiling = matmul_ceiling(device, torch.bfloat16 if bf16 else torch.float32, matmul_n)
    print(f"command: python {shlex.join(['bench/bench_gpu.py', *(sys.argv[1:] if argv is None else argv)])}")
    print(f"device: {device_name} ({device.type}); torch {torch.__version__}; "
          f"date {dt.date.today().isoformat()}; {'bf16 autocast' if bf16 else 'fp32'}; batch {batch}; "
          f"{steps} timed steps after {warmup}")
    print(f"peak (dense bf16, data sheet): {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}; "
          f"measured {matmul_n}^3 {'bf16' if bf16 else 'fp32'} matmul: {ceiling / 1e12:.2f} TFLOP/s")
    print()
    print("| shape | N total | N non-emb | mode | tok/s | step ms | compile s cold/warm | MFU palm/peak | "
          "MFU chin/peak | MFU palm/matmul | MFU chin/matmul | mem GiB |")
    print("| " + " | ".join(["---"] * 12) + " |")

    rows = []
    for name in names:
        cfg = model_config(*shapes[name])
        n = param_counts(cfg, vocab)
        fpt = conventions(cfg, vocab)
        for mode in modes:
            try:
                r = bench_one(cfg, vocab, mode, batch, steps, warmup, device, bf16, warm=not args.no_warm)
            except torch.cuda.OutOfMemoryError:
                r = {"error": "out of memory"}
            row = {"shape": name, "width": cfg.width, "depth": cfg.depth, "context": cfg.context, "vocab": vocab,
                   "batch": batch, "mode": mode, "params_total": n["total"], "params_non_embedding": n["non_embedding"],
                   "flops_per_token": fpt, **r}
            if "tokens_per_s" in r:
                for conv, per_token in fpt.items():
                    row[f"mfu_{conv}_peak"] = r["tokens_per_s"] * per_token / peak if peak else None
                    row[f"mfu_{conv}_matmul"] = r["tokens_per_s"] * per_token / ceiling
            rows.append(row)
            print(_table_row(row), flush=True)
            if args.json:  # after every row, so a run stopped by a time limit keeps what it measured
                meta = {"device": device_name, "torch": torch.__version__, "date": dt.date.today().isoformat(),
                        "bf16": bf16, "peak_flops": peak, "matmul_ceiling_flops": ceiling, "matmul_n": matmul_n}
                atomic_write_json(args.json, {"meta": meta, "rows": rows})
    return 0


def _table_row(row: dict) -> str:
    def pct(key):
        v = row.get(key)
        return f"{100 * v:.1f}%" if v is not None else "-"

    head = f"| {row['shape']} | {row['params_total'] / 1e6:.1f}M | {row['params_non_embedding'] / 1e6:.2f}M | {row['mode']} |"
    if "error" in row:
        return head + f" {row['error']} |" + " |" * 8
    mem = f"{row['max_mem_gib']:.1f}" if "max_mem_gib" in row else "-"
    warm = f"/{row['compile_warm_s']:.1f}" if "compile_warm_s" in row else ""
    return (head + f" {row['tokens_per_s']:,.0f} | {1e3 * row['step_s']:.1f} | {row['compile_s']:.1f}{warm} | "
            f"{pct('mfu_palm_peak')} | {pct('mfu_chinchilla_peak')} | {pct('mfu_palm_matmul')} | "
            f"{pct('mfu_chinchilla_matmul')} | {mem} |")


if __name__ == "__main__":
    sys.exit(main())
