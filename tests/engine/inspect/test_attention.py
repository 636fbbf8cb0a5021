"""Attention capture: weights equal those computed by hand, for each kind of model; everything restored."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.inspect.attention import attention


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def by_hand(q, k, v_unused, n_head, causal=False):
    """softmax(QKᵀ/√d) per head, for inputs [T, C] already projected."""
    T, C = q.shape
    d = C // n_head
    q, k = q.view(T, n_head, d).transpose(0, 1), k.view(T, n_head, d).transpose(0, 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return scores.softmax(-1)


class TokenEncoder(nn.Module):
    """Embedding + nn.TransformerEncoder: the plain-PyTorch kind."""

    def __init__(self, vocab=20, d=32, heads=4, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 3)

    def forward(self, idx):
        return self.head(self.encoder(self.emb(idx)).mean(1))


def test_torch_encoder_weights_equal_hand_computed_and_hooks_removed():
    torch.manual_seed(0)
    model = TokenEncoder().train()
    ids = torch.randint(0, 20, (7,))
    model.eval()
    with torch.no_grad():
        before = model(ids.view(1, -1))
    model.train()
    maps = attention(model, ids)
    assert maps.kind == "torch" and maps.layers == [0, 1] and maps.heads == [0, 1, 2, 3]
    assert model.training and hooks_left(model) == 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids.view(1, -1)), before)  # the fast path still gives the same output
        x = model.emb(ids)
        mha = model.encoder.layers[0].self_attn
        q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    expected = by_hand(q, k, v, 4)
    assert torch.allclose(maps.weights(0), expected, atol=1e-5)
    assert torch.allclose(maps.weights(1).sum(-1), torch.ones(4, 7), atol=1e-5)


def test_huggingface_gpt2_eager_weights_causal_and_implementation_restored():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=50, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 50, (9,))
    maps = attention(model, ids, layer=1)
    assert maps.kind == "huggingface" and maps.layers == [1]
    assert model.config._attn_implementation == "sdpa"
    w = maps.weights(1)
    assert w.shape == (2, 9, 9)
    assert torch.allclose(w.sum(-1), torch.ones(2, 9), atol=1e-5)
    assert torch.all(torch.triu(w, 1) == 0)  # causal: nothing attends to later tokens
    assert model.training  # restored (a model built from a config starts in train mode)
    # by hand from layer 1's own projections of its input (hidden state 1), dropout off
    model.eval()
    with torch.no_grad():
        h = model(ids.view(1, -1), output_hidden_states=True).hidden_states[1][0]
        block = model.transformer.h[1]
        q, k, v = block.attn.c_attn(block.ln_1(h)).split(32, dim=-1)
    assert torch.allclose(w, by_hand(q, k, v, 2, causal=True), atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(BigModelError, match="no attention layers"):
        attention(nn.Sequential(nn.Linear(4, 4)), torch.tensor([1, 2]))
    model = TokenEncoder()
    with pytest.raises(BigModelError, match="Layer 5 is out of range: the model has 2 layers"):
        attention(model, torch.tensor([1, 2, 3]), layer=5)
    with pytest.raises(BigModelError, match="Head 4 is out of range"):
        attention(model, torch.tensor([1, 2, 3]), head=4)
    with pytest.raises(BigModelError, match="needs a tokenizer"):
        attention(model, "some text")
    with pytest.raises(BigModelError, match="failed on this input"):
        attention(model, torch.tensor([1, 2, 99]))  # id beyond the embedding
    assert hooks_left(model) == 0


def test_large_inputs_are_subsampled_before_capture():
    torch.manual_seed(0)
    model = TokenEncoder(layers=6)
    maps = attention(model, torch.randint(0, 20, (100,)), max_tokens=32, max_values=32 * 32 * 4 * 3)
    assert len(maps.tokens) == 32 and len(maps.layers) == 3 and maps.layers[-1] == 5
    assert all(maps.weights(i).shape == (4, 32, 32) for i in maps.layers)
    assert any("last 32 of 100 tokens" in n for n in maps.notes)


def test_zoo_gpt_and_classifier_weights_equal_hand_computed_and_capture_switched_off():
    from bigmodel_nb.models import GPT, GPTConfig, TransformerClassifier, TransformerClassifierConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    ids = torch.randint(0, 30, (10,))
    maps = attention(gpt, ids)
    assert maps.kind == "zoo" and maps.causal and maps.layers == [0, 1]
    with torch.no_grad():
        x = gpt.token_embedding(ids) + gpt.position_embedding(torch.arange(10))
        q, k, v = gpt.blocks[0].attn.qkv(gpt.blocks[0].ln_1(x)).split(16, dim=-1)
    assert torch.allclose(maps.weights(0), by_hand(q, k, v, 2, causal=True), atol=1e-6)
    assert not any(b.attn.capture or b.attn.attention is not None for b in gpt.blocks)

    clf = TransformerClassifier(TransformerClassifierConfig(vocab_size=30, num_classes=2, block_size=16, n_layer=1,
                                                            n_head=2, n_embd=16))
    w = attention(clf, ids).weights(0)
    assert (w.triu(1) > 0).any() and torch.allclose(w.sum(-1), torch.ones(2, 10), atol=1e-5)  # sees ahead


def test_capture_is_switched_off_when_the_model_fails():
    from bigmodel_nb.models import GPT, GPTConfig

    gpt = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(BigModelError, match="failed on this input"):
        attention(gpt, torch.tensor([1, 2, 99]))
    assert not gpt.blocks[0].attn.capture
