"""One forward pass, whichever way a model likes to be called: the loss to use, ``(logits, loss)``
from plain, nanoGPT-style and Hugging Face models, autocast, evaluation over a split, and the
preflight check that turns a model/data mismatch into one sentence before a run starts.

    logits, loss = forward_loss(model, x, y, resolve_loss(None, "classification"), takes_targets(model))
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .errors import BigModelError, describe_exception, unknown_choice

LOSSES: dict[str, Callable] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "huber": F.huber_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "nll": F.nll_loss,
}
TASK_LOSS = {"classification": "cross_entropy", "language-model": "cross_entropy", "regression": "mse"}
_TARGET_ARGS = ("targets", "target", "labels", "label", "y")


def resolve_loss(spec, task: str | None) -> Callable | None:
    """A loss function from a name or callable; None means "the model computes its own"."""
    if callable(spec):
        return spec
    name = spec or TASK_LOSS.get(task or "", None)
    if name is None:
        return None
    key = str(name).lower().replace("-", "_")
    if key not in LOSSES:
        raise unknown_choice("loss", str(name), LOSSES)
    return LOSSES[key]


def takes_targets(model: torch.nn.Module) -> bool:
    """True for nanoGPT-style models, ``forward(idx, targets=None) -> (logits, loss)``."""
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and params[1] in _TARGET_ARGS


def forward_loss(model, x, y, loss_fn, with_targets: bool):
    """One forward pass -> (logits, loss), whichever way the model likes to be called."""
    out = model(x, y) if with_targets else model(x)
    loss = None
    if isinstance(out, (tuple, list)):
        logits = out[0]
        if len(out) > 1 and torch.is_tensor(out[1]) and out[1].dim() == 0:
            loss = out[1]
    elif hasattr(out, "logits"):  # Hugging Face style outputs
        logits, loss = out.logits, getattr(out, "loss", None)
    else:
        logits = out
    if loss is None:
        if loss_fn is None:
            raise BigModelError("The model returned no loss and none was given; "
                                "pass --loss (e.g. cross_entropy or mse).")
        loss = _apply_loss(loss_fn, logits, y)
    return logits, loss


def _apply_loss(loss_fn, logits, y):
    if logits.dim() == 3 and y.dim() == 2 and loss_fn in (F.cross_entropy, F.nll_loss):  # [B, T, V] sequence outputs
        return loss_fn(logits.flatten(0, 1), y.flatten())
    if y.is_floating_point() and logits.shape != y.shape and logits.numel() == y.numel():
        y = y.view_as(logits)  # (n,) targets against (n, 1) outputs would silently broadcast to (n, n)
    return loss_fn(logits, y)


def autocast(device, amp):
    if amp is None or amp.dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=amp.dtype)


def preflight(model, data, config, device, amp) -> None:
    """Run two training samples through the model before starting the thread, so a model that
    does not fit the data fails here with one sentence instead of deep inside the run."""
    loss_fn = resolve_loss(config.loss, data.task)
    x, y = next(iter(data.train.batches(2, device)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            logits, loss = forward_loss(model, x, y, loss_fn, takes_targets(model))
        _check_classes(model, x, data)
    except BigModelError:
        raise
    except Exception as exc:  # the user's model or loss raised: say where, and what the data looks like
        _check_classes(model, x, data)
        shape = tuple(data.input_shape) or tuple(x.shape[1:])
        raise BigModelError(
            f"The model failed on a batch of '{data.name}' (inputs {list(x.shape)}, targets {list(y.shape)}): "
            f"{describe_exception(exc)} — check that the model's input size matches the data's input shape "
            f"{shape}{_classes_hint(data)}."
        ) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(loss) or loss.dim() != 0:
        raise BigModelError("The loss must be a scalar tensor; check --loss or what the model returns.")


def _check_classes(model, x, data) -> None:
    """A classifier with fewer outputs than classes: say so, rather than 'Target 6 is out of bounds'."""
    if data.task != "classification" or not data.num_classes:
        return
    try:
        with torch.no_grad():
            out = model(x)
    except Exception:
        return
    logits = out[0] if isinstance(out, (tuple, list)) else getattr(out, "logits", out)
    if torch.is_tensor(logits) and logits.dim() == 2 and logits.shape[-1] < data.num_classes:
        raise BigModelError(f"The model outputs {logits.shape[-1]} values per sample but '{data.name}' has "
                            f"{data.num_classes} classes; make the last layer output {data.num_classes}.")


def _classes_hint(data) -> str:
    return f" and its output size matches the {data.num_classes} classes" if data.num_classes else ""
