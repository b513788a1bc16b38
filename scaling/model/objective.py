"""The pretraining objective's side of a batch: BERT's masking for ``model.objective=mlm``.

Under ``clm`` a batch is used as the loader makes it (inputs x, next-token targets y). Under ``mlm`` the
input and the target are the same window (no shift): of each window of T tokens, ``k =
predicted_per_window(cfg, T)`` positions (``max(1, round(mask_rate * T))``, a fixed number per sequence as in
BERT's data generation) are selected uniformly without replacement; of those, a share ``mask_replace``
becomes [MASK] (id = the data vocabulary size), ``mask_random`` a uniformly drawn token of the data
vocabulary, and ``mask_keep`` stays as it is (each selected token draws its fate independently, as BERT
does). Targets are the original tokens at the selected positions and ``IGNORE_INDEX`` (-100) elsewhere, so
the loss (``F.cross_entropy``'s default ``ignore_index``) is taken on the selected tokens only.

Every draw comes from a CPU ``torch.Generator`` seeded by a hash of its key, so the masking is identical on
resume, on any device and for any split into ranks and micro-batches:
- training (``mask_step``): key ``(seed, step)``; the draws are made for the whole global batch (rows in
  the loader's order) and each rank takes its rows, as the loader does;
- evaluation (``mask_windows``): key ``(EVAL_SEED, window offset)``, one generator per held-out window and
  independent of the run's seed, so every run is scored on the same masked windows.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from scaling.config import ModelConfig
from scaling.model.shape import mask_token_id, predicted_per_window

IGNORE_INDEX = -100  # target of a position the loss does not use (``F.cross_entropy``'s default)
EVAL_SEED = 1_000_003  # the key of the fixed masking of held-out windows, whatever the run's seed

Batch = tuple[torch.Tensor, torch.Tensor]


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a hash of ``key`` (distinct keys give unrelated streams)."""
    digest = hashlib.sha256(repr(("mlm-masking", *map(int, key))).encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return g


def draw(rows: int, context: int, g: torch.Generator, cfg: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """The random choices for ``rows`` windows of ``context`` tokens (CPU): ``select`` (bool), the fate
    of each position ``fate`` (0 [MASK], 1 random token, 2 unchanged) and the random tokens ``random_ids``."""
    k = predicted_per_window(cfg, context)
    order = torch.rand(rows, context, generator=g).argsort(dim=1)  # a uniform permutation per row
    select = torch.zeros(rows, context, dtype=torch.bool)
    select.scatter_(1, order[:, :k], True)
    u = torch.rand(rows, context, generator=g)
    fate = (u >= cfg.mask_replace).to(torch.int8) + (u >= cfg.mask_replace + cfg.mask_random).to(torch.int8)
    random_ids = torch.randint(0, vocab_size, (rows, context), generator=g)
    return {"select": select, "fate": fate, "random_ids": random_ids}


def apply(x: torch.Tensor, choices: dict[str, torch.Tensor], vocab_size: int) -> Batch:
    """Masked inputs and targets (``IGNORE_INDEX`` off the selected positions) of windows ``x`` (B, T)."""
    select, fate, random_ids = (choices[k].to(x.device, non_blocking=True) for k in ("select", "fate", "random_ids"))
    targets = torch.where(select, x, torch.full_like(x, IGNORE_INDEX))
    masked = torch.where(fate == 0, torch.full_like(x, mask_token_id(vocab_size)), random_ids.to(x.dtype))
    inputs = torch.where(select & (fate < 2), masked, x)
    return inputs, targets


def mask_batch(x: torch.Tensor, seed: int, step: int, cfg: ModelConfig, vocab_size: int) -> Batch:
    """One batch of windows ``x`` (B, T) masked by the draws of key ``(seed, step)``."""
    return apply(x, draw(x.shape[0], x.shape[1], generator(seed, step), cfg, vocab_size), vocab_size)


def mask_step(micro_batches: Sequence[Batch], seed: int, step: int, cfg: ModelConfig, vocab_size: int,
              batch_size: int, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """This rank's micro-batches of optimizer step ``step`` under ``mlm``: the windows x of the loader's
    (x, y) masked by the draws for the global batch of ``batch_size`` rows at key ``(seed, step)``; the
    rank's rows are ``rank::world_size`` of them, cut into micro-batches in order (``step_batches``)."""
    context = micro_batches[0][0].shape[1]
    choices = draw(batch_size, context, generator(seed, step), cfg, vocab_size)
    mine = {k: v[rank::world_size] for k, v in choices.items()}
    out, start = [], 0
    for x, _ in micro_batches:
        rows = slice(start, start + x.shape[0])
        out.append(apply(x, {k: v[rows] for k, v in mine.items()}, vocab_size))
        start += x.shape[0]
    return out


def mask_windows(x: torch.Tensor, offsets: Sequence[int], cfg: ModelConfig, vocab_size: int) -> Batch:
    """Held-out windows ``x`` (B, T) starting at ``offsets`` under the fixed evaluation masking: each
    window masked by its own generator, key ``(EVAL_SEED, offset)``."""
    parts = [draw(1, x.shape[1], generator(EVAL_SEED, int(o)), cfg, vocab_size) for o in offsets]
    choices = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return apply(x, choices, vocab_size)
