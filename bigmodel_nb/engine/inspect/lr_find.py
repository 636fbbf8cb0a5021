"""The learning-rate range test (Smith 2015; fastai's `lr_find`): raise the LR exponentially,
one batch per step, and watch the smoothed loss. The model's weights are restored afterwards."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.adapters import as_bundle
from ..core.config import TrainConfig
from ..core.device import resolve_amp, resolve_device
from ..core.errors import BigModelError
from ..core.forward import preflight, resolve_loss
from ..core.metrics import Metrics
from ..core.optim import make_optimizer
from ..core.step import Step


@dataclass
class LRFinderResult:
    """``lrs`` and smoothed ``losses`` of the sweep, and the ``suggestion`` (steepest descent)."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    min_loss_lr: float | None
    stopped_early: bool
    optimizer: str
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        tip = f"suggested lr {self.suggestion:.2g}" if self.suggestion else "no suggestion"
        return f"<LRFinderResult {len(self.lrs)} steps, {self.lrs[0]:.1g}..{self.lrs[-1]:.2g}, {tip}>"


def lr_find(model, data, *, optimizer="adam", start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            batch_size: int = 64, smooth: float = 0.98, diverge: float = 4.0, device="auto", amp="auto",
            seed: int = 0, loss=None) -> LRFinderResult:
    """Exponential LR sweep on a copy of the optimizer state; `model` ends as it started.

    Example: ``bigmodel_nb.lr_find(model, "digits").suggestion  # e.g. 3e-3``
    """
    if not (0 < start_lr < end_lr):
        raise BigModelError(f"The sweep needs 0 < start_lr < end_lr; got {start_lr:g} and {end_lr:g}.")
    if steps < 10:
        raise BigModelError(f"An LR sweep needs at least 10 steps to say anything; got {steps}.")
    bundle = as_bundle(data)
    dev = resolve_device(device)
    policy = resolve_amp(amp, dev)
    saved = copy.deepcopy(model.state_dict())  # restored whatever happens below
    was_training = model.training
    model.to(dev)
    preflight(model, bundle, TrainConfig(loss=loss), dev, policy)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr=start_lr)
    step = Step(model, opt, loss_fn=resolve_loss(loss, bundle.task), device=dev, amp=policy, params=params)
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, raw, smoothed = [], [], []
    avg, best, stopped_early = 0.0, math.inf, False
    rng_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        model.train()
        batches = _endless(bundle.train, batch_size, dev, seed)
        for i in range(steps):
            lr = start_lr * factor**i
            for group in opt.param_groups:
                group["lr"] = lr
            metrics = Metrics(None, dev)  # the loss only
            step([next(batches)], metrics)  # the core step: forward, loss, backward, optimizer step
            current = metrics.compute()["loss"]  # one sync per step is the point of this tool
            avg = smooth * avg + (1 - smooth) * current
            debiased = avg / (1 - smooth ** (i + 1))
            lrs.append(lr)
            raw.append(current)
            smoothed.append(debiased)
            if not math.isfinite(debiased) or (i > 10 and debiased > diverge * best):
                stopped_early = True
                break
            best = min(best, debiased)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        torch.set_rng_state(rng_state)
    suggestion, min_lr, notes = _suggest(lrs, smoothed)
    return LRFinderResult(lrs, smoothed, raw, suggestion, min_lr, stopped_early, str(optimizer), notes)


def _endless(split, batch_size, device, seed):
    epoch = 0
    while True:
        yield from split.batches(batch_size, device, shuffle=True, seed=seed, epoch=epoch)
        epoch += 1


def _suggest(lrs: list[float], losses: list[float]) -> tuple[float | None, float | None, list[str]]:
    """The LR where the smoothed loss falls fastest (per log-LR), looked for before its minimum."""
    finite = [(lr, v) for lr, v in zip(lrs, losses) if math.isfinite(v)]
    if len(finite) < 5:
        return None, None, ["the loss diverged almost at once; try a smaller start_lr"]
    lr, loss = map(np.asarray, zip(*finite))
    lowest = int(np.argmin(loss))
    if lowest < 3:
        return None, float(lr[lowest]), ["the loss never fell; the model may not be learning at these rates"]
    # skip the first steps, where the moving average is still settling
    start = min(max(1, len(lr) // 10), lowest - 2)
    slope = np.gradient(loss[: lowest + 1], np.log(lr[: lowest + 1]))
    steepest = start + int(np.argmin(slope[start:]))
    return float(lr[steepest]), float(lr[lowest]), []
