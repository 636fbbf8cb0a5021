"""Optimizers and learning-rate schedules by name, so `--optimizer adam --schedule cosine` just works."""
from __future__ import annotations

import math

import torch

from .errors import unknown_choice

# name -> (torch class, fixed keyword arguments, default learning rate)
OPTIMIZERS: dict[str, tuple[type, dict, float]] = {
    "sgd": (torch.optim.SGD, {}, 0.05),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}, 0.01),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, 0.01),
    "rmsprop": (torch.optim.RMSprop, {}, 1e-3),
    "adagrad": (torch.optim.Adagrad, {}, 1e-2),
    "adam": (torch.optim.Adam, {}, 1e-3),
    "adamw": (torch.optim.AdamW, {"weight_decay": 0.01}, 1e-3),
}

SCHEDULES = ("constant", "step", "cosine", "warmup-cosine", "onecycle", "plateau")


def default_lr(name: str) -> float:
    """The learning rate used when `--lr` is not given. Example: ``default_lr("adam") == 1e-3``"""
    return OPTIMIZERS[name][2] if name in OPTIMIZERS else 1e-3


def on_cuda(params) -> bool:
    """True when every parameter lives on a CUDA device (where fused Adam/AdamW kernels exist)."""
    tensors = [p["params"] if isinstance(p, dict) else [p] for p in params]
    flat = [t for group in tensors for t in group]
    return bool(flat) and all(t.is_cuda for t in flat)


def make_optimizer(spec, params, lr: float | None = None, weight_decay: float | None = None,
                   **extra) -> torch.optim.Optimizer:
    """Build an optimizer from a name, an instance, or a factory ``params -> Optimizer``.

    Example: ``opt = make_optimizer("adam", model.parameters(), lr=3e-4)``
    """
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return spec(params)
    name = str(spec).lower()
    if name not in OPTIMIZERS:
        raise unknown_choice("optimizer", name, OPTIMIZERS)
    cls, fixed, lr0 = OPTIMIZERS[name]
    kwargs = {**fixed, **extra}
    params = list(params)
    if cls in (torch.optim.Adam, torch.optim.AdamW) and "fused" not in kwargs and on_cuda(params):
        kwargs["fused"] = True  # one kernel for the whole update instead of several per tensor group
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return cls(params, lr=lr0 if lr is None else lr, **kwargs)


def make_schedule(spec, optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0):
    """An LR scheduler by name (or a callable ``optimizer -> scheduler``). All step once per
    training step except ``plateau``, which steps on the validation loss (`steps_on_validation`).
    ``constant`` is None (no scheduler: stepping one costs ~2 % of a small model's step), or a linear
    warm-up to the given LR with `warmup`.

    Example: ``sched = make_schedule("cosine", opt, total_steps=1000)``
    """
    if spec == "onecycle":  # warm up to the given LR over 30% of training, then anneal far below it
        peak = [group["lr"] for group in optimizer.param_groups]
        pct = min(0.9, warmup / total_steps) if warmup and total_steps else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=max(1, total_steps),
                                                   pct_start=pct)
    if spec == "plateau":  # x0.1 when the validation loss has not improved for 2 validations
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    if spec is None or spec == "constant":
        if not warmup:
            return None

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup)
    elif callable(spec) and not isinstance(spec, str):
        return spec(optimizer)
    elif spec == "step":  # x0.1 at 60% and 85% of training, the classic ResNet recipe
        def factor(step: int) -> float:
            return 0.1 ** sum(step >= m * total_steps for m in (0.6, 0.85))
    elif spec in ("cosine", "warmup-cosine"):
        warm = warmup or (max(1, total_steps // 20) if spec == "warmup-cosine" else 0)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total_steps - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    else:
        raise unknown_choice("schedule", str(spec), SCHEDULES)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_on_validation(schedule) -> bool:
    """True for schedules driven by the validation loss rather than the step count."""
    return isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau)
