"""Model FLOP utilisation (MFU) on a GPU, shown by the dashboard for GPT-like models.

    mfu(gpt, tokens_per_s=1.2e5, tokens_per_sample=1024, device=torch.device("cuda"))

MFU follows nanoGPT (PaLM appendix B): a decoder with N parameters, L layers, H heads of size Q and
context T does ≈ 6N + 12·L·H·Q·T FLOPs per token for a forward and backward pass; MFU is the
achieved FLOP/s over the device's peak dense bf16 FLOP/s (table below, from NVIDIA's datasheets).
"""
from __future__ import annotations

import re

import torch

# Peak dense (no sparsity) tensor-core FLOP/s at bf16 — fp16 where the GPU has no bf16.
PEAK_FLOPS = {  # dense bf16 tensor-core FLOP/s; matched on whole words of the device name, first match wins
    "H200 NVL": 835e12, "H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
    "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The device's peak bf16 FLOP/s from `PEAK_FLOPS`, or None (CPU, or a GPU not in the table).

    Example: ``peak_flops(torch.device("cuda"))`` is 989e12 on "NVIDIA H100 80GB HBM3" (the SXM part).
    """
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(name: str) -> float | None:
    words = set(re.split(r"[^a-z0-9]+", name.lower()))  # "A100-SXM4-80GB" -> a100, sxm4, 80gb; "L40" is not "L4"
    return next((flops for key, flops in PEAK_FLOPS.items() if set(key.lower().split()) <= words), None)


def transformer_shape(model: torch.nn.Module) -> tuple[int, int, int, int] | None:
    """(layers, heads, head size, context) of a GPT-like model's config, or None."""
    c = getattr(model, "config", None)
    get = lambda *names: next((getattr(c, n) for n in names if isinstance(getattr(c, n, None), int)), None)  # noqa: E731
    layers, heads = get("n_layer", "num_hidden_layers"), get("n_head", "num_attention_heads")
    width, context = get("n_embd", "hidden_size"), get("block_size", "n_positions", "max_position_embeddings")
    if None in (layers, heads, width, context):
        return None
    return layers, heads, width // heads, context


def flops_per_token(model: torch.nn.Module, tokens_per_sample: int) -> float | None:
    """Training FLOPs per token, 6N + 12·L·H·Q·T (nanoGPT's estimate), for GPT-like models; else None.

    Example: ``flops_per_token(GPT(GPTConfig()), 64)``
    """
    shape = transformer_shape(model)
    if shape is None:
        return None
    layers, heads, head_size, context = shape
    # N without the position embeddings, as nanoGPT counts it: they are looked up, not multiplied.
    vocab = getattr(model.config, "vocab_size", None)
    n = sum(p.numel() for p in model.parameters()) - sum(
        m.weight.numel() for m in model.modules()
        if isinstance(m, torch.nn.Embedding) and m.num_embeddings == context != vocab)
    return 6 * n + 12 * layers * heads * head_size * tokens_per_sample


def mfu(model: torch.nn.Module, tokens_per_s: float, tokens_per_sample: int, device: torch.device) -> float | None:
    """Model FLOP utilisation in [0, 1] on a known GPU, else None. Example: ``mfu(gpt, 1.2e5, 1024, dev)``"""
    peak, per_token = peak_flops(device), flops_per_token(model, tokens_per_sample)
    if peak is None or per_token is None:
        return None
    return per_token * tokens_per_s / peak
