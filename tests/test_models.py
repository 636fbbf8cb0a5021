import math

import pytest
import torch
import torch.nn.functional as F

from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.core.forward import takes_targets
from bigmodel_nb.models import (
    CNN,
    GPT,
    MLP,
    CNNConfig,
    GPTConfig,
    MLPConfig,
    SelfAttention,
    TransformerClassifier,
    TransformerClassifierConfig,
    count_params,
)


def small_gpt(**overrides):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"block_size": 16, "vocab_size": 20, "n_layer": 2, "n_head": 4, "n_embd": 32, **overrides}))


def set_capture(model, on: bool):
    for block in model.blocks:
        block.attn.capture = on


# -- classifiers --------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_mlp_logits_and_loss_match_cross_entropy(activation):
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=64, hidden=(32,) * 3, num_classes=10, activation=activation, norm=True,
                          residual=True))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))  # image-shaped input is flattened
    logits, loss = model(x, y)
    assert logits.shape == (5, 10) and model(x)[1] is None
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    assert takes_targets(model)


def test_mlp_depth_options_and_residual_only_where_widths_match():
    model = MLP(MLPConfig(input_dim=64, hidden=(64,) * 8, num_classes=10, activation="sigmoid"))
    assert len(model.layers) == 8 and not any(layer.residual for layer in model.layers)
    res = MLP(MLPConfig(input_dim=10, hidden=(32, 32, 16), residual=True))
    assert [layer.residual for layer in res.layers] == [False, True, False]
    assert count_params(res) == (10 * 32 + 32) + (32 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)


def test_mlp_residual_changes_the_function():
    torch.manual_seed(0)
    plain = MLP(MLPConfig(input_dim=8, hidden=(8, 8), residual=False))
    skip = MLP(MLPConfig(input_dim=8, hidden=(8, 8), residual=True))
    skip.load_state_dict(plain.state_dict())  # same weights; only the skip connections differ
    x = torch.randn(4, 8)
    assert not torch.allclose(plain(x)[0], skip(x)[0])


def test_mlp_bad_activation_and_input_size_are_clear():
    with pytest.raises(BigModelError, match="Unknown activation 'swish'"):
        MLP(MLPConfig(activation="swish"))
    with pytest.raises(BigModelError, match="expects 64 input features but got 10"):
        MLP(MLPConfig(input_dim=64))(torch.randn(2, 10))


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 1, 28, 28), (3, 64), (3, 28, 28)])
def test_cnn_accepts_any_image_size(shape):
    torch.manual_seed(0)
    model = CNN(CNNConfig(in_channels=1, channels=(8, 16, 16, 16), num_classes=10))  # more pools than 8x8 allows
    y = torch.randint(0, 10, (3,))
    logits, loss = model(torch.randn(*shape), y)
    assert logits.shape == (3, 10) and torch.allclose(loss, F.cross_entropy(logits, y))


def test_cnn_wrong_channels_is_clear():
    with pytest.raises(BigModelError, match=r"expects images shaped \(batch, 3, height, width\)"):
        CNN(CNNConfig(in_channels=3))(torch.randn(2, 1, 8, 8))


def test_transformer_classifier_shapes_loss_and_non_causal_attention():
    torch.manual_seed(0)
    model = TransformerClassifier(TransformerClassifierConfig(vocab_size=30, num_classes=3, block_size=12)).eval()
    idx, y = torch.randint(0, 30, (4, 12)), torch.randint(0, 3, (4,))
    logits, loss = model(idx, y)
    assert logits.shape == (4, 3) and torch.allclose(loss, F.cross_entropy(logits, y))
    assert model(idx[:, :5])[0].shape == (4, 3)  # shorter sequences are fine
    set_capture(model, True)
    model(idx)
    att = model.blocks[0].attn
    assert not att.causal and att.attention.shape == (4, att.n_head, 12, 12)
    assert att.attention.triu(1).abs().sum() > 0  # every position sees the future too


# -- GPT ----------------------------------------------------------------------------------------
def test_gpt_shapes_and_loss_over_all_positions():
    model = small_gpt()
    idx, targets = torch.randint(0, 20, (3, 16)), torch.randint(0, 20, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 20) and model(idx)[1] is None
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 20), targets.reshape(-1)))
    assert abs(loss.item() - math.log(20)) < 0.3  # nanoGPT init: nearly uniform predictions at first
    assert takes_targets(model)


def test_gpt_weight_tying_and_param_count():
    model = small_gpt()
    assert model.lm_head.weight is model.token_embedding.weight
    c = model.config
    per_block = 2 * (2 * c.n_embd) + (c.n_embd * 3 * c.n_embd + 3 * c.n_embd) + (c.n_embd ** 2 + c.n_embd) \
        + (c.n_embd * 4 * c.n_embd + 4 * c.n_embd) + (4 * c.n_embd * c.n_embd + c.n_embd)
    embeddings = c.vocab_size * c.n_embd + c.block_size * c.n_embd
    assert count_params(model) == embeddings + c.n_layer * per_block + 2 * c.n_embd
    assert model.num_params() == count_params(model) - c.block_size * c.n_embd


@pytest.mark.parametrize("train_mode", [False, True])
def test_capture_path_equals_sdpa_path(train_mode):
    model = small_gpt().train(train_mode)  # dropout 0: training mode must agree too
    idx = torch.randint(0, 20, (2, 16))
    fast = model(idx)[0]
    assert all(block.attn.attention is None for block in model.blocks)  # nothing stored without capture
    set_capture(model, True)
    explicit = model(idx)[0]
    assert (fast - explicit).abs().max().item() < 1e-5
    for block in model.blocks:
        att = block.attn.attention
        assert isinstance(block.attn, SelfAttention) and block.attn.causal
        assert att.shape == (2, 4, 16, 16) and not att.requires_grad
        assert torch.allclose(att.sum(-1), torch.ones(2, 4, 16))
        assert att.triu(1).abs().max().item() == 0  # causal: no weight on later positions


def test_causal_mask_later_tokens_do_not_change_earlier_logits():
    model = small_gpt().eval()
    idx = torch.randint(0, 20, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 20
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_gpt_too_long_input_says_what_to_do():
    model = small_gpt()
    with pytest.raises(BigModelError, match=r"The input has 17 tokens but the model's context \(block_size\) is 16; "):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(BigModelError, match="integer token ids"):
        model(torch.randn(1, 8))


def test_generate_length_cropping_and_determinism():
    model = small_gpt()
    start = torch.randint(0, 20, (2, 5))
    out = model.generate(start, 30, top_k=5)  # 35 tokens: more than block_size, so the context is cropped
    assert out.shape == (2, 35) and torch.equal(out[:, :5], start)
    assert out.min() >= 0 and out.max() < 20 and model.training  # the training mode is restored
    one = model.generate(start[0], 3, temperature=0)  # one sequence in, one sequence out; 0 = greedy
    assert one.shape == (8,) and torch.equal(one, model.generate(start[0], 3, temperature=0))
    greedy_next = model.eval()(start[:1])[0][0, -1].argmax()
    assert one[5] == greedy_next
    with pytest.raises(BigModelError, match="temperature"):
        model.generate(start, 1, temperature=-1)


def test_bad_head_count_is_clear():
    with pytest.raises(BigModelError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPT(GPTConfig(n_embd=30, n_head=4))
