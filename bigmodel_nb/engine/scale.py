"""Single-device big-model features used by `Run`: torch.compile, activation checkpointing, fused
optimizers, model FLOP utilisation (MFU), and out-of-memory handling with ``--batch-size auto``.

    run = Run(gpt, "python-stdlib", TrainConfig(compile=True, accumulate=4, amp="bf16"))

MFU follows nanoGPT (PaLM appendix B): a decoder with N parameters, L layers, H heads of size Q and
context T does ≈ 6N + 12·L·H·Q·T FLOPs per token for a forward and backward pass; MFU is the
achieved FLOP/s over the device's peak dense bf16 FLOP/s (table below, from NVIDIA's datasheets).
"""
from __future__ import annotations

import gc
import importlib.util
import math
import re
import shutil

import torch

from .errors import BigModelError, describe_exception

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


# -- torch.compile ---------------------------------------------------------------------------------
def check_compile(device: torch.device) -> None:
    """Say in one sentence why torch.compile cannot work here, before any training starts."""
    if not hasattr(torch, "compile"):
        raise BigModelError("--compile needs PyTorch 2 or later; upgrade torch or drop --compile.")
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise BigModelError("--compile on a GPU needs Triton, which is not installed; pip install triton, "
                            "or drop --compile.")
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++")):
        raise BigModelError("--compile on the CPU needs a C++ compiler and none was found; install one "
                            "(Debian: apt-get install g++) or drop --compile.")


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model)``: a wrapper sharing the model's parameters (the model itself is unchanged)."""
    return torch.compile(model)


def compile_failure(exc: Exception) -> str:
    return (f"torch.compile could not compile this model ({describe_exception(exc)}); train without --compile, "
            "or see https://pytorch.org/docs/stable/torch.compiler_troubleshooting.html.")


# -- activation checkpointing ----------------------------------------------------------------------
def enable_activation_checkpointing(model: torch.nn.Module) -> str:
    """Recompute each transformer block's activations in the backward pass instead of storing them:
    the zoo's GPT/TransformerClassifier (``model.activation_checkpointing``) and Hugging Face models
    (``gradient_checkpointing_enable``). Returns what was done; raises for other models.

    Example: ``enable_activation_checkpointing(gpt)``
    """
    if hasattr(model, "gradient_checkpointing_enable") and getattr(model, "supports_gradient_checkpointing", True):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return "Hugging Face gradient checkpointing"
    if hasattr(model, "activation_checkpointing"):
        model.activation_checkpointing = True
        return f"activation checkpointing on {len(getattr(model, 'blocks', []))} blocks"
    raise BigModelError(f"--activation-checkpointing works on the zoo's GPT and TransformerClassifier and on Hugging "
                        f"Face models; {type(model).__name__} has neither — wrap its blocks with "
                        "torch.utils.checkpoint.checkpoint yourself, or drop the flag.")


# -- out of memory ---------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """The allocator's OutOfMemoryError, or cuBLAS/cuDNN failing to allocate their workspace."""
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text or "ALLOC_FAILED" in text))


def free_memory(model: torch.nn.Module) -> None:
    """Drop gradients and cached blocks after an out-of-memory error, so the notebook can go on. Call it
    after leaving the ``except`` block: until then the traceback's frames hold the step's activations."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_message(model: torch.nn.Module, batch_size: int, device: torch.device, data=None) -> str:
    """One sentence: the batch size tried, the %summary estimate, and what to try instead."""
    estimate = ""
    try:
        from .summary import summarize

        shape = tuple(data.input_shape) if data is not None and data.input_shape else None
        m = summarize(model, shape, batch_size=batch_size).estimate(batch_size=batch_size)
        estimate = f" (%summary estimates {m['total_bytes'] / 2**30:.2f} GiB for training at that batch size)"
    except Exception:  # the estimate is a hint; the sentence stands without it
        pass
    return (f"{device.type.upper()} ran out of memory at batch size {batch_size}{estimate}; the memory was freed — "
            f"try --batch-size {max(1, batch_size // 2)} or --batch-size auto, --amp bf16, --accumulate N, "
            "or --activation-checkpointing.")


def find_batch_size(try_step, start: int, floor: int = 1) -> int:
    """The largest batch size ≤ `start`, halving from it, for which ``try_step(batch_size)`` (one
    forward and backward pass) does not run out of memory.

    Example: ``find_batch_size(lambda b: step_on(b), start=1024)``
    """
    batch = max(floor, start)
    while True:
        try:
            try_step(batch)
            return batch
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if batch <= floor:
                raise BigModelError(f"Even batch size {batch} runs out of memory; use a smaller model, "
                                    "--amp bf16 or --activation-checkpointing.") from None
            batch = max(floor, batch // 2)


def auto_batch_size(model: torch.nn.Module, data, device: torch.device, amp=None, loss=None, cap: int = 1024) -> int:
    """``--batch-size auto``: start from the largest power of two ≤ `cap` (and the training set) whose
    %summary estimate fits the device's free memory — the CPU's too, where running out kills the
    process instead of raising — then halve while a real forward and backward pass runs out of
    memory. Gradients and buffers (batch-norm statistics) are restored; the weights never change.

    Example: ``auto_batch_size(model, load_dataset("digits"), torch.device("cuda"))``
    """
    from .forward import autocast, forward_loss, resolve_loss, takes_targets

    start = 1 << int(math.log2(max(1, min(cap, len(data.train)))))
    try:
        from .summary import summarize

        shape = tuple(data.input_shape) if data.input_shape else None
        summary = summarize(model, shape, batch_size=1, device=device)
        while start > 1 and summary.available_bytes and \
                summary.estimate(batch_size=start)["total_bytes"] > 0.9 * summary.available_bytes:
            start //= 2
    except Exception:  # no estimate: the halving below still finds a size
        pass
    loss_fn, with_targets = resolve_loss(loss, data.task), takes_targets(model)
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def try_step(batch_size: int) -> None:
        x, y = next(iter(data.train.batches(batch_size, device)))
        try:
            with autocast(device, amp):
                _, loss_value = forward_loss(model, x, y, loss_fn, with_targets)
            loss_value.backward()
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    try:
        return find_batch_size(try_step, start)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
