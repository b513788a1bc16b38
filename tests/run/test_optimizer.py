"""The optimizer the run builds: fused AdamW on the CPU by default (``optim.fused: null``), the same
algorithm as the loop of small kernels it replaces, and the loop still one override away."""

from __future__ import annotations

import pytest
import torch

from scaling.model.gpt import GPT
from scaling.run.distributed import DistContext
from scaling.run.step import OptimizerStep, autocast_for, make_optimizer, wrap_model
from scaling.sweep.expand import compose_run_config

CPU = torch.device("cpu")


def tiny_cfg(*overrides: str):
    return compose_run_config(["model=tiny", "train.device=cpu", "logger=none", "train.compile=false", *overrides])


def train_steps(cfg, steps: int = 20) -> tuple[list[float], list[torch.Tensor]]:
    """``steps`` optimizer steps on fixed random batches; the losses and the parameters after them."""
    torch.manual_seed(0)
    model = GPT(cfg.model, 256)
    step = OptimizerStep(model, wrap_model(model, cfg, CPU, DistContext()), make_optimizer(model, cfg, CPU),
                         cfg.optim.grad_clip, autocast_for("fp32", CPU), DistContext())
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        data = torch.randint(0, 256, (4, cfg.model.context + 1), generator=g)
        losses.append(step([(data[:, :-1], data[:, 1:])], 3e-3).item())
    return losses, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("override,fused", [(None, True), ("optim.fused=false", False), ("optim.fused=true", True)])
def test_the_cpu_optimizer_is_fused_unless_the_config_says_otherwise(override, fused):
    cfg = tiny_cfg(*([override] if override else []))
    model = GPT(cfg.model, 256)
    assert bool(make_optimizer(model, cfg, CPU).defaults["fused"]) is fused


def test_fused_adamw_takes_the_steps_of_the_loop_it_replaces():
    fused_losses, fused_params = train_steps(tiny_cfg())
    loop_losses, loop_params = train_steps(tiny_cfg("optim.fused=false"))
    assert fused_losses[-1] < fused_losses[0]  # it trains
    assert fused_losses == pytest.approx(loop_losses, rel=1e-5)
    for a, b in zip(fused_params, loop_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
