"""The masked-LM objective on the model side: attention direction, BERT's masking, counts, bad input."""

import math

import pytest
import torch

from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model.counts import chinchilla_forward, flops_per_token, param_counts
from scaling.model.gpt import GPT
from scaling.model.objective import IGNORE_INDEX, mask_batch, mask_step, mask_windows
from scaling.model.shape import check_model_config, mask_token_id, model_vocab, predicted_per_window

VOCAB = 61


def small(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(width=32, depth=2, heads=4, context=16), **kw})


@pytest.mark.parametrize("pos", ("learned", "sinusoidal", "rope"))
def test_mlm_sees_later_tokens_and_clm_does_not(pos):
    """Changing only the last token changes an earlier position's output under mlm, never under clm."""
    idx = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    later = idx.clone()
    later[:, -1] = (idx[:, -1] + 1) % VOCAB
    for objective, flows in (("mlm", True), ("clm", False)):
        torch.manual_seed(0)
        model = GPT(small(pos=pos, objective=objective), VOCAB).eval()
        with torch.no_grad():
            a, _ = model(idx)
            b, _ = model(later)
        change = (a[:, :-1] - b[:, :-1]).abs().max().item()
        assert (change > 1e-4) if flows else (change <= 1e-5), (objective, change)


def test_mask_token_is_one_more_row_and_counted():
    for tie in (True, False):
        clm, mlm = small(tie_embeddings=tie), small(tie_embeddings=tie, objective="mlm")
        model = GPT(mlm, VOCAB)
        assert model.vocab_size == model_vocab(mlm, VOCAB) == VOCAB + 1 and mask_token_id(VOCAB) == VOCAB
        assert model.transformer.wte.weight.shape[0] == VOCAB + 1 == model.lm_head.weight.shape[0]
        n_mlm, n_clm = param_counts(mlm, VOCAB), param_counts(clm, VOCAB)
        assert n_mlm["total"] == sum(p.numel() for p in model.parameters())
        assert n_mlm["total"] - n_clm["total"] == (1 if tie else 2) * mlm.width
        assert n_mlm["non_embedding"] == n_clm["non_embedding"]
        assert n_mlm["with_head"] - n_clm["with_head"] == mlm.width
        f_mlm, f_clm = flops_per_token(mlm, VOCAB), flops_per_token(clm, VOCAB)
        assert f_mlm["6nd"] == f_clm["6nd"] and f_mlm["kaplan"] == f_clm["kaplan"]
        assert f_mlm["6nd_with_head"] - f_clm["6nd_with_head"] == 6 * mlm.width
        # same full-matrix attention terms; the [MASK] row adds to the embedding and the logits only
        c_mlm, c_clm = chinchilla_forward(mlm, VOCAB), chinchilla_forward(clm, VOCAB)
        assert c_mlm["layers"] == c_clm["layers"] and c_mlm["total"] - c_clm["total"] == 4.0 * mlm.width


def test_attention_flops_are_the_full_matrix_for_both_objectives():
    """Kaplan's 2 L T d and Chinchilla's 4 T d per layer (logits + values) count every score: a
    bidirectional model's true cost, and the convention (no causal halving) for a causal one."""
    for objective in ("clm", "mlm"):
        cfg = small(objective=objective, context=64)
        f, fwd = flops_per_token(cfg, VOCAB), chinchilla_forward(cfg, VOCAB)
        assert f["kaplan"] - f["6nd"] == 6 * cfg.depth * cfg.context * cfg.width
        assert fwd["attention_logits"] + fwd["attention_values"] == 4 * cfg.context * cfg.width


def _fates(x: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, int]:
    sel = targets != IGNORE_INDEX
    return {"selected": int(sel.sum()), "mask": int((sel & (inputs == VOCAB_BIG)).sum()),
            "random": int((sel & (inputs != VOCAB_BIG) & (inputs != x)).sum()),
            "off_selection_changed": int((~sel & (inputs != x)).sum())}


VOCAB_BIG = 5000  # random replacements rarely hit the original token


@pytest.mark.parametrize("rate, split", [(0.15, (0.8, 0.1, 0.1)), (0.3, (0.5, 0.3, 0.2))])
def test_masking_statistics_over_many_steps(rate, split):
    cfg = small(objective="mlm", context=64, mask_rate=rate, mask_replace=split[0], mask_random=split[1],
                mask_keep=split[2])
    total = dict(selected=0, mask=0, random=0, off_selection_changed=0)
    g = torch.Generator().manual_seed(0)
    steps, rows = 300, 8
    for step in range(steps):
        x = torch.randint(0, VOCAB_BIG, (rows, 64), generator=g)
        inputs, targets = mask_batch(x, 7, step, cfg, VOCAB_BIG)
        assert torch.equal(targets[targets != IGNORE_INDEX], x[targets != IGNORE_INDEX])  # no shift
        assert ((targets != IGNORE_INDEX).sum(1) == predicted_per_window(cfg, 64)).all()
        for k, v in _fates(x, inputs, targets).items():
            total[k] += v
    assert total["off_selection_changed"] == 0
    assert total["selected"] / (steps * rows * 64) == pytest.approx(rate, abs=0.01)
    assert total["mask"] / total["selected"] == pytest.approx(split[0], abs=0.015)
    assert total["random"] / total["selected"] == pytest.approx(split[1], abs=0.015)
    kept = total["selected"] - total["mask"] - total["random"]
    assert kept / total["selected"] == pytest.approx(split[2], abs=0.015)


def test_masking_is_a_pure_function_of_seed_and_step_for_any_split():
    cfg = small(objective="mlm", context=32)
    x = torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(3))
    whole = mask_step([(x, x)], 5, 11, cfg, VOCAB, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(whole[0], mask_step([(x, x)], 5, 11, cfg, VOCAB, batch_size=8)[0]))
    micro = mask_step([(x[:4], x[:4]), (x[4:], x[4:])], 5, 11, cfg, VOCAB, batch_size=8)
    assert torch.equal(torch.cat([m[0] for m in micro]), whole[0][0])
    assert torch.equal(torch.cat([m[1] for m in micro]), whole[0][1])
    for rank in (0, 1):  # each of two ranks holds rows rank::2 of the global batch
        (mine,) = mask_step([(x[rank::2], x[rank::2])], 5, 11, cfg, VOCAB, batch_size=8, rank=rank, world_size=2)
        assert torch.equal(mine[1], whole[0][1][rank::2])
    other_step = mask_step([(x, x)], 5, 12, cfg, VOCAB, batch_size=8)[0][1]
    other_seed = mask_step([(x, x)], 6, 11, cfg, VOCAB, batch_size=8)[0][1]
    assert not torch.equal(other_step, whole[0][1]) and not torch.equal(other_seed, whole[0][1])


def test_evaluation_masking_is_fixed_per_window():
    cfg = small(objective="mlm", context=32)
    x = torch.randint(0, VOCAB, (6, 32), generator=torch.Generator().manual_seed(4))
    offsets = [0, 32, 64, 96, 128, 160]
    inputs, targets = mask_windows(x, offsets, cfg, VOCAB)
    part_in, part_t = mask_windows(x[2:4], offsets[2:4], cfg, VOCAB)  # another batching: same masks
    assert torch.equal(part_in, inputs[2:4]) and torch.equal(part_t, targets[2:4])


def test_loss_is_taken_on_the_selected_tokens_only():
    cfg = small(objective="mlm")
    torch.manual_seed(0)
    model = GPT(cfg, VOCAB)
    x = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(5))
    inputs, targets = mask_batch(x, 0, 0, cfg, VOCAB)
    _, loss = model(inputs, targets)
    logits, _ = model(inputs)
    sel = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[sel], targets[sel])
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize(
    "overrides, vocab, expected",
    [
        (dict(objective="plm"), VOCAB, "model.objective='plm' is unknown: choose one of clm, mlm"),
        (dict(objective="mlm", mask_rate=0.0), VOCAB, "model.mask_rate=0.0"),
        (dict(objective="mlm", mask_rate=1.0), VOCAB, "model.mask_rate=1.0"),
        (dict(objective="mlm", mask_rate=-0.2), VOCAB, "model.mask_rate=-0.2"),
        (dict(objective="mlm", mask_rate=math.nan), VOCAB, "model.mask_rate=nan"),
        (dict(objective="mlm", mask_keep=0.2), VOCAB, "sum to 1.1: the three shares must sum to 1"),
        (dict(objective="mlm", mask_replace=-0.1, mask_random=0.6, mask_keep=0.5), VOCAB, "model.mask_replace=-0.1"),
        (dict(objective="mlm"), 2**32, "model.objective='mlm' needs a [MASK] id of 4294967296"),
    ],
)
def test_bad_masking_settings_are_one_line_config_errors(overrides, vocab, expected):
    cfg = small(**overrides)
    with pytest.raises(ConfigError) as err:
        check_model_config(cfg, vocab)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_large_vocabulary_is_fine_for_clm_and_just_fits_for_mlm():
    check_model_config(small(), 2**32)
    check_model_config(small(objective="mlm"), 2**32 - 1)  # [MASK] = 2**32 - 1, the last uint32 id
