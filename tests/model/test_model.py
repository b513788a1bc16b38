"""The GPT model, its initialisation and its optimizer groups."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from scaling.config import ModelConfig, OptimConfig
from scaling.model.coord_check import activation_scales
from scaling.errors import ConfigError
from scaling.model.gpt import GPT
from scaling.model.shape import check_model_config
from scaling.model.parametrization import param_groups

VOCAB = 61
POS = ("learned", "sinusoidal", "rope")


def small(**kw) -> ModelConfig:
    base = dict(width=32, depth=2, heads=4, context=16)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("mlp", ("gelu", "swiglu"))
def test_output_shapes_and_loss(pos, mlp):
    torch.manual_seed(0)
    model = GPT(small(pos=pos, mlp=mlp), VOCAB)
    idx = torch.randint(0, VOCAB, (3, 11))  # shorter than the context
    logits, loss = model(idx)
    assert logits.shape == (3, 11, VOCAB) and loss is None
    logits, loss = model(idx, targets=idx)
    assert logits is None and loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("pos", POS)
@pytest.mark.parametrize("mlp", ("gelu", "swiglu"))
def test_causal(pos, mlp):
    """Changing the tokens after position t leaves the logits at positions <= t unchanged."""
    torch.manual_seed(0)
    model = GPT(small(pos=pos, mlp=mlp, bias=True), VOCAB).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    t = 6
    changed = idx.clone()
    changed[:, t + 1 :] = (idx[:, t + 1 :] + 1 + torch.randint(0, VOCAB - 1, (2, 16 - t - 1))) % VOCAB
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-5)
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-4  # the later positions do see their tokens


@pytest.mark.parametrize("cfg", [small(), small(tie_embeddings=False, pos="learned"), small(param="mup", width=64)])
def test_loss_at_init_is_near_uniform(cfg):
    torch.manual_seed(0)
    model = GPT(cfg, 512)
    idx = torch.randint(0, 512, (8, 16))
    targets = torch.randint(0, 512, (8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(512)) < 0.1


def test_order_matters():
    """Each positional encoding breaks attention's permutation symmetry: swapping two earlier tokens
    changes the prediction at the last position."""
    idx = torch.tensor([[3, 9, 27, 4, 5]])
    swapped = torch.tensor([[9, 3, 27, 4, 5]])
    for pos in POS:
        torch.manual_seed(0)
        model = GPT(small(pos=pos), VOCAB).eval()
        with torch.no_grad():
            a, b = model(idx)[0][0, -1], model(swapped)[0][0, -1]
        assert (a - b).abs().max() > 1e-4, pos


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = GPT(small(dropout=0.3), VOCAB)
    idx = torch.randint(0, VOCAB, (2, 16))
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_sequence_longer_than_context_is_refused():
    model = GPT(small(context=8), VOCAB)
    with pytest.raises(ValueError, match="model.context=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides, vocab, expected",
    [
        (dict(width=130, heads=4), VOCAB, "model.width=130 is not divisible by model.heads=4"),
        (dict(width=128, head_dim=48), VOCAB, "model.head_dim=48"),
        (dict(width=0), VOCAB, "model.width=0"),
        (dict(depth=-1), VOCAB, "model.depth=-1"),
        (dict(heads=0), VOCAB, "model.heads=0"),
        (dict(head_dim=0), VOCAB, "model.head_dim=0"),
        (dict(context=0), VOCAB, "model.context=0"),
        (dict(pos="alibi"), VOCAB, "model.pos='alibi' is unknown: choose one of learned, sinusoidal, rope"),
        (dict(mlp="relu"), VOCAB, "model.mlp='relu'"),
        (dict(param="ntk"), VOCAB, "model.param='ntk'"),
        (dict(dropout=1.0), VOCAB, "model.dropout=1.0"),
        (dict(mlp_ratio=0.0), VOCAB, "model.mlp_ratio=0.0"),
        (dict(init_std=-0.02), VOCAB, "model.init_std=-0.02"),
        (dict(width=12, heads=4, pos="rope"), VOCAB, "model.pos='rope' needs an even head dimension"),
        (dict(), 0, "vocab_size=0"),
    ],
)
def test_bad_shapes_are_one_line_config_errors(overrides, vocab, expected):
    cfg = small(**overrides)
    with pytest.raises(ConfigError) as err:
        GPT(cfg, vocab)
    assert expected in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        check_model_config(cfg, vocab)


def test_width_not_multiple_of_heads_is_fine_with_rope_off_and_head_dim():
    GPT(small(width=48, head_dim=16, pos="learned"), VOCAB)  # 3 heads of 16


def test_tied_head_shares_storage():
    torch.manual_seed(0)
    model = GPT(small(tie_embeddings=True), VOCAB)
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    assert head is wte and head.data_ptr() == wte.data_ptr()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, loss = model(torch.randint(0, VOCAB, (2, 16)), torch.randint(0, VOCAB, (2, 16)))
    loss.backward()
    opt.step()
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    untied = GPT(small(tie_embeddings=False), VOCAB)
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()


def test_sp_init_follows_gpt2():
    """Weights ~ N(0, init_std^2); residual output projections ~ N(0, (init_std / sqrt(2 depth))^2)."""
    torch.manual_seed(0)
    cfg = ModelConfig(width=256, depth=8, heads=4, context=16, init_std=0.02, bias=True)
    model = GPT(cfg, 1000)
    block = model.transformer.h[3]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.03)
    residual = 0.02 / math.sqrt(2 * 8)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(residual, rel=0.03)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.03)
    assert torch.all(block.mlp.c_fc.bias == 0) and torch.all(block.ln_1.weight == 1) and torch.all(block.ln_1.bias == 0)


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = GPT(small(), VOCAB)
    torch.manual_seed(3)
    b = GPT(small(), VOCAB)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize("tied", (True, False))
def test_param_groups_cover_every_parameter_once(tied):
    cfg = small(tie_embeddings=tied, bias=True, pos="learned")
    model = GPT(cfg, VOCAB)
    groups = param_groups(model, cfg, OptimConfig(weight_decay=0.1))
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    by_name = {g["name"]: g for g in groups}
    assert all(g["lr_scale"] == 1.0 for g in groups)  # sp
    assert by_name["hidden"]["weight_decay"] == 0.1
    assert by_name["embeddings"]["weight_decay"] == 0.0 and by_name["norms_and_biases"]["weight_decay"] == 0.0
    emb = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    assert {id(p) for p in by_name["embeddings"]["params"]} == emb
    assert all(p.ndim == 1 for p in by_name["norms_and_biases"]["params"])
    if tied:
        assert "head" not in by_name
    else:
        assert by_name["head"]["params"] == [model.lm_head.weight] and by_name["head"]["weight_decay"] == 0.1
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are accepted as they are
    wrapped = param_groups(torch.compile(model, backend="eager"), cfg, OptimConfig(weight_decay=0.1))
    assert [(g["name"], len(g["params"])) for g in wrapped] == [(g["name"], len(g["params"])) for g in groups]


def test_decay_flags_turn_decay_on():
    cfg = small(bias=True)
    model = GPT(cfg, VOCAB)
    groups = param_groups(model, cfg, OptimConfig(weight_decay=0.05, decay_norms_and_biases=True, decay_embeddings=True))
    assert all(g["weight_decay"] == 0.05 for g in groups)


def test_trains_on_a_fixed_batch():
    """Forward, backward and AdamW over the groups reduce the loss on a batch seen repeatedly."""
    torch.manual_seed(0)
    cfg = small(dropout=0.1, bias=True, pos="rope", mlp="swiglu")
    model = GPT(cfg, VOCAB)
    opt = torch.optim.AdamW(param_groups(model, cfg, OptimConfig()), lr=1e-2)
    idx = torch.randint(0, VOCAB, (4, 17))
    losses = []
    for _ in range(25):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_forward_traces_as_one_graph():
    """No graph breaks: torch.compile(fullgraph=True) traces forward and loss as one graph, also when
    the config is the DictConfig that Hydra hands the training loop."""
    torch.manual_seed(0)
    for pos in POS:
        model = GPT(OmegaConf.structured(small(pos=pos, mlp="swiglu", param="mup", depth=3)), VOCAB)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        idx = torch.randint(0, VOCAB, (2, 16))
        _, loss = compiled(idx, idx)
        _, expected = model(idx, idx)
        torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------- muP coordinate check


def test_mup_coordinate_check():
    """After a few steps at one learning rate, activations grow with width under sp and stay flat under mup."""
    sp = [activation_scales("sp", w, base_width=32, vocab=64) for w in (32, 128)]
    mup = [activation_scales("mup", w, base_width=32, vocab=64) for w in (32, 128)]
    assert sp[1]["block"] / sp[0]["block"] > 4 and sp[1]["logits"] / sp[0]["logits"] > 1.8
    for key in ("block", "logits"):
        assert 0.5 < mup[1][key] / mup[0][key] < 1.5, key


def test_mup_groups_and_multipliers():
    cfg = ModelConfig(width=128, depth=8, heads=4, context=16, param="mup", base_width=32, base_depth=4, tie_embeddings=False)
    model = GPT(cfg, VOCAB)
    by_name = {g["name"]: g for g in param_groups(model, cfg, OptimConfig())}
    assert by_name["hidden"]["lr_scale"] == pytest.approx(32 / 128)
    assert by_name["embeddings"]["lr_scale"] == 1.0 and by_name["head"]["lr_scale"] == 1.0
    assert model.output_multiplier == pytest.approx(32 / 128)
    assert model.transformer.h[0].r == pytest.approx(4 / 8)
    assert model.transformer.h[0].attn.scale == pytest.approx(1 / 32)  # 1/head_dim
    hidden_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert hidden_std == pytest.approx(cfg.init_std * math.sqrt(32 / 128), rel=0.05)
