"""A small, readable model zoo in the nanoGPT style: one dataclass config per model, and every
`forward(x, targets=None)` returns ``(logits, loss)`` — loss is None without targets, else the
cross-entropy — so the trainer, the inspectors and a hand-written loop all call them the same way.

    MLP                    flat features -> classes (depth, activation, LayerNorm, residual)
    CNN                    images (C, H, W) of any size -> classes
    TransformerClassifier  token ids (B, T) -> classes (non-causal attention, mean pooling)
    GPT                    token ids (B, T) -> next-token logits (B, T, V), with `generate`

Attention is one module, `SelfAttention`; set ``capture = True`` on it to keep its weights
(``.attention``, shape [B, heads, T, T]) for inspection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .engine.core.errors import BigModelError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once).

    Example: ``count_params(MLP(MLPConfig(input_dim=64)))  # 4810``
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _loss(logits: torch.Tensor, targets: torch.Tensor | None):
    """Cross-entropy over every prediction ([B, C] or [B, T, V] logits), or None without targets."""
    if targets is None:
        return None
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise BigModelError(f"Unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


# -- MLP ----------------------------------------------------------------------------------------
@dataclass
class MLPConfig:
    input_dim: int = 64
    hidden: tuple = (64,)  # one width per hidden layer: (64,) * 8 is eight layers of 64
    num_classes: int = 10
    activation: str = "relu"  # relu | tanh | sigmoid | gelu
    dropout: float = 0.0
    norm: bool = False  # LayerNorm before each activation
    residual: bool = False  # x + layer(x) wherever a layer keeps the width


class MLPLayer(nn.Module):
    """Linear -> (LayerNorm) -> activation -> dropout, with a skip connection if asked and the width allows."""

    def __init__(self, n_in: int, n_out: int, config: MLPConfig):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = nn.LayerNorm(n_out) if config.norm else nn.Identity()
        self.act = _activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)
        self.residual = config.residual and n_in == n_out

    def forward(self, x):
        h = self.dropout(self.act(self.norm(self.linear(x))))
        # The skip gives gradients a path around the activation, so deep stacks still learn.
        return x + h if self.residual else h


class MLP(nn.Module):
    """A multi-layer perceptron classifier; inputs are flattened, so (1, 8, 8) images work too.

    Example: ``MLP(MLPConfig(input_dim=64, hidden=(64,) * 8, num_classes=10, activation="sigmoid"))``
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        widths = [config.input_dim, *config.hidden]
        self.layers = nn.ModuleList(MLPLayer(a, b, config) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, x, targets=None):
        x = x.flatten(1)
        if x.size(1) != self.config.input_dim:
            raise BigModelError(f"The MLP expects {self.config.input_dim} input features but got {x.size(1)}; "
                                f"set MLPConfig(input_dim={x.size(1)}).")
        for layer in self.layers:
            x = layer(x)
        logits = self.head(x)
        return logits, _loss(logits, targets)


# -- CNN ----------------------------------------------------------------------------------------
@dataclass
class CNNConfig:
    in_channels: int = 1
    channels: tuple = (16, 32)  # one conv block per entry
    num_classes: int = 10
    kernel_size: int = 3
    pool: bool = True  # 2x2 max-pool after each block (skipped once the image is down to 1 pixel)
    pooled_size: int = 2  # adaptive average pooling to this many pixels a side, so any image size works
    dropout: float = 0.0


class CNN(nn.Module):
    """Conv -> ReLU -> (max-pool) blocks, adaptive pooling, then a linear head.

    Example: ``CNN(CNNConfig(in_channels=1, channels=(16, 32),
    num_classes=10))(torch.randn(4, 1, 28, 28))[0].shape  # (4, 10)``
    """

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        widths = [config.in_channels, *config.channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, config.kernel_size, padding=config.kernel_size // 2)
                                   for a, b in zip(widths, widths[1:]))
        self.pool = nn.AdaptiveAvgPool2d(config.pooled_size)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1] * config.pooled_size ** 2, config.num_classes)

    def forward(self, x, targets=None):
        x = self._as_images(x)
        for conv in self.convs:
            x = F.relu(conv(x))
            if self.config.pool and min(x.shape[-2:]) >= 2:
                x = F.max_pool2d(x, 2)
        logits = self.head(self.dropout(self.pool(x).flatten(1)))
        return logits, _loss(logits, targets)

    def _as_images(self, x):
        """(B, C, H, W); a missing channel axis or square flattened images (digits' (64,)) are reshaped."""
        c = self.config.in_channels
        if x.dim() == 3 and c == 1:
            return x.unsqueeze(1)
        if x.dim() == 2:
            side = math.isqrt(x.size(1) // c)
            if c * side * side == x.size(1):
                return x.view(x.size(0), c, side, side)
        if x.dim() != 4 or x.size(1) != c:
            raise BigModelError(f"The CNN expects images shaped (batch, {c}, height, width) but got {tuple(x.shape)}; "
                                "load image data unflattened (e.g. load_dataset('digits', flatten=False)) "
                                "or set CNNConfig(in_channels=...).")
        return x


# -- attention and transformer blocks (shared by GPT and TransformerClassifier) -----------------
class SelfAttention(nn.Module):
    """Multi-head self-attention. Fast path: `F.scaled_dot_product_attention`. With ``capture = True``
    the weights are computed explicitly and kept in ``self.attention`` ([B, n_head, T, T], before dropout).

    Example: ``attn = model.blocks[0].attn; attn.capture = True; model(idx); attn.attention.shape``
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True):
        super().__init__()
        if n_embd % n_head:
            raise BigModelError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}); "
                                f"e.g. n_embd={n_head * max(1, round(n_embd / n_head))}.")
        self.n_head, self.causal, self.dropout_p = n_head, causal, dropout
        self.capture = False
        self.attention: torch.Tensor | None = None
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key, value for all heads in one matmul
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, _ = x.shape
        # Width from the layer, not from x: structured pruning may remove whole heads (qkv shrinks).
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # (B, T, n_head * head_dim) -> (B, n_head, T, head_dim): every head attends independently
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if self.capture:
            att = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))
            if self.causal:  # a position may only look at itself and earlier positions
                future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
                att = att.masked_fill(future, float("-inf"))
            att = F.softmax(att, dim=-1)
            self.attention = att.detach()
            y = self.attn_dropout(att) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0,
                                               is_causal=self.causal)
        y = y.transpose(1, 2).reshape(B, T, -1)  # heads side by side again
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    """The position-wise MLP of a transformer block: expand 4x, GELU, project back."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, causal)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = FeedForward(n_embd, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """Apply the blocks in order; `checkpointed` keeps only each block's input and recomputes the rest
    in the backward pass (activation memory ∝ layers instead of layers × block internals)."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
    return x


def _init_transformer(model: nn.Module, n_layer: int) -> None:
    """nanoGPT's init: N(0, 0.02) weights, zero biases, and residual projections scaled by
    1/sqrt(2 * n_layer) so the residual stream does not grow with depth."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.startswith("blocks.") and name.endswith("proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


def _check_tokens(idx: torch.Tensor, block_size: int, model: str) -> None:
    if idx.dim() != 2 or idx.is_floating_point():
        raise BigModelError(f"The {model} takes integer token ids shaped (batch, time) but got a {idx.dtype} tensor of "
                            f"shape {tuple(idx.shape)}; encode text with a tokenizer and add a batch axis (idx[None]).")
    if idx.size(1) > block_size:
        raise BigModelError(f"The input has {idx.size(1)} tokens but the model's context (block_size) is {block_size}; "
                            f"pass at most {block_size} tokens (e.g. idx[:, -{block_size}:]) "
                            "or build the model with a larger block_size.")


# -- transformer classifier ---------------------------------------------------------------------
@dataclass
class TransformerClassifierConfig:
    vocab_size: int = 96
    num_classes: int = 2
    block_size: int = 64  # the longest sequence it accepts
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True


class TransformerClassifier(nn.Module):
    """Token ids (B, T) -> class logits: embeddings, non-causal blocks, mean over positions, head.

    Example: ``TransformerClassifier(TransformerClassifierConfig(vocab_size=96,
    num_classes=3))(idx)[0].shape  # (B, 3)``
    """

    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.position_embedding = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout, c.bias, causal=False)
                                    for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.head = nn.Linear(c.n_embd, c.num_classes)
        self.activation_checkpointing = False  # recompute block activations in backward (less memory)
        _init_transformer(self, c.n_layer)

    def forward(self, idx, targets=None):
        _check_tokens(idx, self.config.block_size, "TransformerClassifier")
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.token_embedding(idx) + self.position_embedding(pos))
        x = run_blocks(self.blocks, x, self.activation_checkpointing and self.training)
        logits = self.head(self.ln_f(x).mean(dim=1))  # every position votes equally
        return logits, _loss(logits, targets)


# -- GPT ----------------------------------------------------------------------------------------
@dataclass
class GPTConfig:
    block_size: int = 64  # context length in tokens
    vocab_size: int = 96  # python-stdlib's printable ASCII + newline
    # Small on purpose: on 2 CPU cores (batch 32, Adam lr 3e-3) this trains at ~25 steps/s and the
    # python-stdlib val loss falls from ~4.5 to ~1.3 in 40 s. Scale n_layer/n_embd up on a GPU.
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers


class GPT(nn.Module):
    """A decoder-only transformer that predicts the next token at every position (nanoGPT).

    Example: ``logits, loss = GPT(GPTConfig(vocab_size=96))(idx, targets)  # logits (B, T, 96)``
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.position_embedding = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout, c.bias, causal=True) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        # Weight tying: reading a token in and writing it out share one matrix (fewer parameters, better LMs).
        self.lm_head.weight = self.token_embedding.weight
        self.activation_checkpointing = False  # recompute block activations in backward (less memory)
        _init_transformer(self, c.n_layer)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, by default without the position embeddings (as nanoGPT reports).

        Example: ``model.num_params()``
        """
        n = count_params(self)
        return n - self.position_embedding.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None):
        _check_tokens(idx, self.config.block_size, "GPT")
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.drop(self.token_embedding(idx) + self.position_embedding(pos))
        x = run_blocks(self.blocks, x, self.activation_checkpointing and self.training)
        logits = self.lm_head(self.ln_f(x))
        return logits, _loss(logits, targets)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None):
        """Extend `idx` (B, T) — or one sequence (T,) — by sampling `max_new_tokens` tokens, each from the
        last `block_size` tokens. temperature 0 picks the most likely token; top_k keeps only the k likeliest.
        Dropout is off while sampling. Example: ``tok.decode(model.generate(tok.encode("def "), 200))``
        """
        if temperature < 0:
            raise BigModelError(f"temperature must be >= 0 (0 means always the most likely token); got {temperature}.")
        single = torch.as_tensor(idx).dim() == 1
        idx = torch.as_tensor(idx).to(self.lm_head.weight.device)
        idx = idx[None] if single else idx
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                context = idx[:, -self.config.block_size:]  # the model cannot see further back than its context
                logits = self(context)[0][:, -1, :]
                if temperature == 0:
                    next_id = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
                idx = torch.cat((idx, next_id), dim=1)
        finally:
            self.train(was_training)
        return idx[0] if single else idx
