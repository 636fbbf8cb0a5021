"""The one training step — forward, loss, backward over one or more micro-batches, then the optimizer
step — used by every loop: a run (`Loop`), each Ray worker, distillation, fine-tuning and the
sequential optimizer comparison (the last three train through a `Run`).

    step = Step(model, optimizer, loss_fn=F.cross_entropy, device=torch.device("cpu"))
    step([(x, y)], Metrics("classification", "cpu"))  # a micro-batch is a pair or a dict
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from .batches import batch_len
from .forward import autocast, batch_loss, takes_targets
from .optim import steps_on_validation


class Step:
    """One optimizer step over a list of micro-batches, each weighted by its share of the step's samples,
    so the gradient equals that of one big batch (gradient accumulation; on `world` workers, each holding
    a slice of every batch, the all-reduced gradient equals one process's)."""

    def __init__(self, model, optimizer, *, loss_fn, device, amp=None, scaler=None, schedule=None,
                 clip: float | None = None, params=None, world: int = 1,
                 sync: Callable[[bool], object] | None = None, with_targets: bool | None = None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.amp, self.scaler, self.schedule, self.clip = device, amp, scaler, schedule, clip
        # `model` may be a torch.compile wrapper: then the caller says how the model itself is called.
        self.with_targets = takes_targets(model) if with_targets is None else with_targets
        self.params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        self.world = world
        self.sync = sync or (lambda last: nullcontext())  # DDP's no_sync on all but the last micro-batch

    def __call__(self, micro_batches: list, metrics, *, total: int | None = None,
                 after_backward: Callable[[], None] | None = None) -> None:
        """`total`: the step's samples over all workers (default: these micro-batches')."""
        self.zero_grad()
        if len(micro_batches) == 1 and self.world == 1 and total is None:  # the usual step: one batch, here
            batch = micro_batches[0]
            with autocast(self.device, self.amp):
                logits, loss, y = batch_loss(self.model, batch, self.loss_fn, self.with_targets)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            metrics.update(loss, logits, y, batch_len(batch))
        else:
            self._accumulate(micro_batches, metrics, total)
        apply_gradients(self.optimizer, self.scaler, self.schedule, self.params, self.clip, after_backward)

    def _accumulate(self, micro_batches: list, metrics, total: int | None) -> None:
        total = total or sum(batch_len(b) for b in micro_batches)
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            n = batch_len(batch)
            with self.sync(i == last):
                with autocast(self.device, self.amp):
                    logits, loss, y = batch_loss(self.model, batch, self.loss_fn, self.with_targets)
                # An empty slice (a worker past the end of a short batch) has a NaN mean loss; times 0 it
                # still joins the gradient all-reduce, and it stays out of the metrics.
                factor = n * self.world / total
                share = loss if factor == 1 else loss * factor
                (self.scaler.scale(share) if self.scaler is not None else share).backward()
            if n:
                metrics.update(loss, logits, y, n)

    def zero_grad(self) -> None:
        """``optimizer.zero_grad(set_to_none=True)``; for torch's own method, the same loop without its
        profiler region, which costs ~10 µs — 1-2 % of a small model's step."""
        if type(self.optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
            return
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None


def apply_gradients(optimizer, scaler, schedule, params, clip: float | None, after_backward=None) -> None:
    """The optimizer step after the backward passes: unscale (fp16), `after_backward()`, clip, step, then a
    step-count schedule. Callbacks and clipping see true gradients.

    Example: ``apply_gradients(opt, None, None, list(model.parameters()), clip=1.0)``
    """
    if scaler is not None and (clip or after_backward):
        scaler.unscale_(optimizer)
    if after_backward is not None:
        after_backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if schedule is not None and not steps_on_validation(schedule):
        schedule.step()


def step_groups(batches, size: int):
    """Consecutive lists of `size` batches (the last may be shorter): one optimizer step each.

    Example: ``list(step_groups(range(5), 2))  # [[0, 1], [2, 3], [4]]``
    """
    if size == 1:
        for batch in batches:
            yield [batch]
        return
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
