"""The CUDA paths of the run layer: DDP over NCCL on one GPU, and ``torch.compile`` of the training step.

Each CUDA case is marked ``cuda`` (``pytest -m cuda`` runs them on a GPU machine) and skips cleanly
without a CUDA device. The DDP case also runs over gloo on the CPU, so its logic is checked everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist

from scaling.model.gpt import GPT
from scaling.run.distributed import DistContext
from scaling.run.step import OptimizerStep, autocast_for, make_optimizer, wrap_model
from scaling.sweep.expand import compose_run_config

HAS_CUDA = torch.cuda.is_available()
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]
VOCAB, MICRO, ACCUM = 256, 4, 2


@dataclass(frozen=True)
class OneRankDDP(DistContext):
    """A one-process group that still takes the DDP path (wrapping, ``no_sync``, all-reduce)."""

    @property
    def enabled(self) -> bool:
        return True


def tiny_cfg(device: str, *overrides: str):
    return compose_run_config(["model=tiny", f"train.device={device}", "logger=none", *overrides])


def micro_batches(device: torch.device, context: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (ACCUM * MICRO, context + 1), generator=g).to(device)
    return [(data[i:i + MICRO, :-1], data[i:i + MICRO, 1:]) for i in range(0, ACCUM * MICRO, MICRO)]


def train_two_steps(cfg, device: torch.device, ctx: DistContext) -> tuple[list[float], list[torch.Tensor]]:
    """Two optimizer steps of two micro-batches each; the losses and the parameters after them."""
    torch.manual_seed(0)
    model = GPT(cfg.model, VOCAB).to(device)
    step = OptimizerStep(model, wrap_model(model, cfg, device, ctx), make_optimizer(model, cfg, device),
                         cfg.optim.grad_clip, autocast_for(cfg.train.precision, device), ctx)
    losses = [step(micro_batches(device, cfg.model.context, seed), 1e-3).item() for seed in (1, 2)]
    return losses, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("backend,device", [("gloo", "cpu"), pytest.param("nccl", "cuda", marks=CUDA)])
def test_ddp_on_one_rank_takes_the_same_steps_as_one_process(tmp_path, backend, device):
    cfg = tiny_cfg(device, "train.compile=false", "train.precision=fp32")
    dev = torch.device("cuda", 0) if device == "cuda" else torch.device(device)  # as the loop gives DDP
    plain_losses, plain_params = train_two_steps(cfg, dev, DistContext())
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = OneRankDDP()
        ddp_losses, ddp_params = train_two_steps(cfg, dev, ctx)
        mean = ctx.all_mean(torch.tensor([3.0], device=dev))
    finally:
        dist.destroy_process_group()
    assert mean.item() == 3.0
    assert ddp_losses == pytest.approx(plain_losses, abs=1e-5)
    for got, want in zip(ddp_params, plain_params):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_compiled_step_matches_the_eager_step_on_cuda(precision):
    eager_cfg = tiny_cfg("cuda", "train.compile=false", f"train.precision={precision}")
    compiled_cfg = tiny_cfg("cuda", f"train.precision={precision}")  # compile: null = on for CUDA
    dev = torch.device("cuda")
    torch._dynamo.reset()
    eager_losses, eager_params = train_two_steps(eager_cfg, dev, DistContext())
    compiled_losses, compiled_params = train_two_steps(compiled_cfg, dev, DistContext())
    tol = 1e-3 if precision == "fp32" else 2e-2
    assert compiled_losses == pytest.approx(eager_losses, abs=tol)
    worst = max((a - b).abs().max().item() for a, b in zip(compiled_params, eager_params))
    assert worst < 10 * tol, f"compiled and eager parameters differ by {worst:.2e} after two steps"
