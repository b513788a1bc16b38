"""Write run-record folders exactly as DESIGN.md describes (config.yaml, metrics.jsonl, result.json).

Used by the analysis tests in place of real training runs; losses follow a known law
L(N, D) = E + A / N^alpha + B / D^beta with N the non-embedding parameter count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

LAW = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
VOCAB, CONTEXT = 256, 128


def law_loss(N, D, law=LAW):
    return law["E"] + law["A"] / np.asarray(N, float) ** law["alpha"] + law["B"] / np.asarray(D, float) ** law["beta"]


def counts(width: int, depth: int) -> dict:
    """Parameter counts and FLOPs per token of a tied-embedding GPT of this shape."""
    ne = 12 * width * width * depth
    with_head = ne + VOCAB * width
    return {"params": {"total": with_head, "non_embedding": ne, "with_head": with_head},
            "per_token": {"6nd": 6 * ne, "kaplan": 6 * ne + 6 * depth * CONTEXT * width,
                          "chinchilla": 6 * with_head + 12 * depth * CONTEXT * width}}


def write_run(root: Path, run_id: str, *, width: int, depth: int, tokens: int, group: str = "sweep",
              status: str = "completed", error: str | None = None, seed: int = 0, noise: float = 0.0,
              n_steps: int = 20, rng: np.random.Generator | None = None, law=LAW, extra: dict | None = None) -> Path:
    """One run folder ``root/group/run_id`` with its three files; returns the folder."""
    run = Path(root) / group / run_id
    run.mkdir(parents=True, exist_ok=True)
    c = counts(width, depth)
    N = c["params"]["non_embedding"]
    config = {"name": "run", "group": group, "runs_dir": str(root), "sweep": None,
              "model": {"width": width, "depth": depth, "heads": max(1, width // 32), "context": CONTEXT,
                        "vocab_size": VOCAB},
              "train": {"tokens": tokens, "batch_size": 16, "seed": seed, "device": "cpu"},
              "optim": {"lr": 3e-3, "schedule": "cosine"}, "logger": {"wandb": {"enabled": False}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    steps = np.unique(np.geomspace(1, n_steps, n_steps).astype(int))
    per_step = tokens / n_steps
    with open(run / "metrics.jsonl", "w") as f:
        for step in steps:
            t = float(step * per_step)
            line = {"step": int(step), "tokens": t, "flops": c["per_token"]["6nd"] * t,
                    "train/loss": float(law_loss(N, t, law)), "lr": 3e-3}
            if step % 5 == 0 or step == steps[-1]:
                line["val/loss"] = float(law_loss(N, t, law)) + 0.01
            f.write(json.dumps(line) + "\n")
    loss = float(law_loss(N, tokens, law))
    if noise and rng is not None:
        loss *= float(np.exp(rng.normal(0.0, noise)))
    result = {"run_id": run_id, "status": status, "model": config["model"], "params": c["params"],
              "tokens": tokens, "flops": {k: v * tokens for k, v in c["per_token"].items()},
              "val_loss": loss if status == "completed" else None, "train_loss": loss - 0.01,
              "wall_time": 12.5, "tokens_per_second": tokens / 12.5}
    if status != "completed":
        result["error"] = error or f"run {status}"
    result.update(extra or {})
    (run / "result.json").write_text(json.dumps(result))
    return run


def synthetic_sweep(c=0.5, k=-0.3, sizes=(1e6, 4e6, 1.6e7, 6.4e7), noise=0.0, seed=0):
    """Loss = 3 + 0.2 (log lr - log lr*(N))^2 on a factor-2 grid, lr*(N) = c N^k."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        star = c * n ** k
        for lr in 2.0 ** np.arange(-12, 0):
            rows.append({"N": n, "lr": lr, "loss": 3 + 0.2 * np.log(lr / star) ** 2 + noise * rng.normal()})
    return pd.DataFrame(rows)
