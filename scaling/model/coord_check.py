"""muP coordinate check: activation scales after a few optimizer steps, to compare across widths.

Under a correct muP the scales stay roughly flat as width grows; under standard parametrisation they
grow (Yang et al. 2021). Used by the tests and by ``bench/bench_mup.py``, which plots them.
"""

from __future__ import annotations

import torch

from scaling.config import ModelConfig, OptimConfig
from scaling.model.gpt import GPT
from scaling.model.parametrization import param_groups


def activation_scales(param: str, width: int, *, base_width: int, vocab: int = 256, steps: int = 4,
                      lr: float = 1e-2) -> dict[str, float]:
    """Mean |activation| of the last block's output and of the logits after ``steps`` AdamW steps of a
    depth-2 GPT (heads of 16 dimensions, untied head) at ``width`` under ``param`` (sp or mup)."""
    torch.manual_seed(0)
    cfg = ModelConfig(width=width, depth=2, heads=width // 16, context=32, param=param, base_width=base_width,
                      base_depth=2, tie_embeddings=False)
    model = GPT(cfg, vocab)
    opt = torch.optim.AdamW(param_groups(model, cfg, OptimConfig(weight_decay=0.0)), lr=lr, betas=(0.9, 0.95))
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    idx = torch.randint(0, vocab, (8, 33), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    scales: dict[str, float] = {}
    hook = model.transformer.h[-1].register_forward_hook(lambda m, i, o: scales.__setitem__("block", o.abs().mean().item()))
    with torch.no_grad():
        logits, _ = model(idx[:, :-1])
    hook.remove()
    scales["logits"] = logits.abs().mean().item()
    return scales
