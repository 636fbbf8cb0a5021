"""Memory in a training step: activation checkpointing, out-of-memory errors turned into one sentence
(and the memory freed), and ``--batch-size auto``.

    auto_batch_size(model, load_dataset("digits"), torch.device("cuda"))

Both the out-of-memory sentence and ``--batch-size auto`` start from `%summary`'s estimate of the
training memory. That estimate is an inspection (`engine.inspect.summary`), which registers itself
here with `set_memory_estimator`: the core cannot import the inspection modules, which import it.
"""
from __future__ import annotations

import gc
import math
from collections.abc import Callable

import torch

from .errors import BigModelError
from .forward import autocast, batch_loss, resolve_loss, takes_targets

_estimator: Callable | None = None  # summarize(model, input_shape, batch_size=, device=) -> ModelSummary


def set_memory_estimator(estimate: Callable) -> None:
    """Register `%summary` (``summarize``) as the estimate of training memory.

    Example: ``set_memory_estimator(summarize)``
    """
    global _estimator
    _estimator = estimate


def _summary(model, data, batch_size: int, device=None):
    if _estimator is None:
        return None
    shape = tuple(data.input_shape) if data is not None and data.input_shape else None
    return _estimator(model, shape, batch_size=batch_size, **({"device": device} if device is not None else {}))


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
        m = _summary(model, data, batch_size).estimate(batch_size=batch_size)
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
    start = 1 << int(math.log2(max(1, min(cap, len(data.train)))))
    try:
        summary = _summary(model, data, 1, device)
        while start > 1 and summary.available_bytes and \
                summary.estimate(batch_size=start)["total_bytes"] > 0.9 * summary.available_bytes:
            start //= 2
    except Exception:  # no estimate: the halving below still finds a size
        pass
    loss_fn, with_targets = resolve_loss(loss, data.task), takes_targets(model)
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def try_step(batch_size: int) -> None:
        batch = next(iter(data.train.batches(batch_size, device)))
        try:
            with autocast(device, amp):
                _, loss_value, _ = batch_loss(model, batch, loss_fn, with_targets)
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
