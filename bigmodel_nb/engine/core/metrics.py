"""The metrics seam: every loop (a run, the Ray workers, evaluation, the stacked comparison) measures
loss and task metrics here. Sums stay on the device between logging steps; `compute()` reads them
back in one transfer. Adding a metric is adding a `Metric` to `TASK_METRICS`.

    metrics = Metrics("classification", device); metrics.update(loss, logits, y); metrics.compute()
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .batches import IGNORE_INDEX, batch_len
from .forward import autocast, batch_loss, takes_targets


@dataclass(frozen=True)
class Metric:
    """A metric that is the mean of a per-target value: `values(logits, y)` gives one number per target
    (per sample, or per token for [B, T, V] outputs). Example: ``Metric("accuracy", lambda o, y: o.argmax(-1) == y)``"""

    name: str
    values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per target: the highest logit is the label — or, with one logit (binary), its sign is."""
    if logits.shape[-1] == 1 and (logits.dim() == y.dim() + 1 or logits.shape == y.shape):
        return (logits.squeeze(-1) > 0) == (y.reshape(logits.shape[:-1]) > 0.5)
    return logits.argmax(-1) == y


ACCURACY = Metric("accuracy", correct)
FOLD = 32  # steps of metric values kept as tensors before they are summed into the running totals
DEFER_NUMEL = 1 << 16  # outputs up to this size are kept (detached) until the fold instead of measured each step
TASK_METRICS: dict[str, tuple[Metric, ...]] = {"classification": (ACCURACY,), "regression": (),
                                                "language-model": ()}


class Metrics:
    """Sample-weighted mean loss and the task's metrics, summed on the device.

    `update` never synchronises (no `.item()`); `compute()` reads everything back at once. With
    `copies=K` (the stacked optimizer comparison) losses are [K] and outputs [K, batch, ...], and
    `compute()` gives one row per copy. `sums()` is the state as one tensor, so the Ray workers
    all-reduce it in one call.
    """

    def __init__(self, task: str | None, device, metrics: tuple[Metric, ...] | None = None, copies: int | None = None):
        self.metrics = TASK_METRICS.get(task or "", ()) if metrics is None else metrics
        self.device, self.copies = torch.device(device), copies
        shape = () if copies is None else (copies,)
        self.loss = torch.zeros(shape, device=self.device)
        self.values = [torch.zeros(shape, device=self.device) for _ in self.metrics]
        self._hits: list[list[torch.Tensor]] = [[] for _ in self.metrics]  # per metric, since the last fold
        self._valid: list[list[torch.Tensor]] = [[] for _ in self.metrics]  # token masks, since the last fold
        self.valid = [torch.zeros(shape, device=self.device) for _ in self.metrics]  # counted tokens
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (outputs, targets) since the last fold
        self._unfolded = 0  # updates since the last fold
        self.samples = 0
        self.counts = [0] * len(self.metrics)
        self.since = time.perf_counter()
        self.untimed = 0  # samples of a step outside the timing (the compiling one), left out of samples/s

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y, n: int | None = None) -> None:
        """Add one batch: its mean `loss` (weighted by its `n` samples) and the metrics of `logits` against `y`
        (none when `y` is None: a model that computes its own loss from unlabelled dict batches)."""
        n = (y if y is not None else logits).shape[0] if n is None else n
        self.loss.add_(loss.detach().float(), alpha=n)  # one kernel, no sync
        self.samples += n
        if not self.metrics or y is None:
            return
        logits = logits.detach()
        tokens = not y.is_floating_point() and y.dim() >= 2  # padding (-100) is left out, as Hugging Face does
        self._unfolded += 1
        if not tokens and self.copies is None and logits.numel() <= DEFER_NUMEL:
            self._pending.append((logits, y))  # small outputs: the metrics are computed FOLD steps at a time
            self.counts = [c + y.numel() for c in self.counts]
        else:
            for i, metric in enumerate(self.metrics):
                hits = metric.values(logits, y)
                if tokens:
                    valid = y != IGNORE_INDEX
                    self._hits[i].append(hits & valid)
                    self._valid[i].append(valid)
                else:
                    self._hits[i].append(hits)
                    self.counts[i] += hits.numel() if self.copies is None else hits[0].numel()
        if self._unfolded >= FOLD:
            self._fold()

    def _fold(self) -> None:
        self._unfolded = 0
        if self._pending:  # one batched pass over the outputs kept since the last fold
            logits, y = torch.cat([o for o, _ in self._pending]), torch.cat([t for _, t in self._pending])
            for i, metric in enumerate(self.metrics):
                self.values[i] += metric.values(logits, y).sum()
            self._pending.clear()
        for i, hits in enumerate(self._hits):
            if hits:
                self.values[i] += self._sum(hits)
                hits.clear()
            if self._valid[i]:  # token metrics: their count is on the device too
                self.valid[i] += self._sum(self._valid[i])
                self._valid[i].clear()

    def _sum(self, parts: list[torch.Tensor]) -> torch.Tensor:
        flat = [h.reshape(-1) if self.copies is None else h.reshape(self.copies, -1) for h in parts]
        return torch.cat(flat, dim=-1).sum(-1)

    def sums(self) -> torch.Tensor:
        """[loss·n, metric sums…, token counts…, n, metric counts…] as one device tensor (one model, not copies)."""
        self._fold()
        counts = torch.tensor([self.samples, *self.counts], dtype=torch.float32)
        return torch.cat([self._stacked(), counts.to(self.device, non_blocking=True)])

    def compute(self, sums: torch.Tensor | None = None):
        """``{"loss": …, <metric>: …}`` (one device read); a list of them with `copies`.
        `sums`: a `sums()` tensor, e.g. all-reduced over workers."""
        k = len(self.metrics)
        self._fold()
        flat = (sums if sums is not None else self._stacked()).tolist()
        loss, values, tokens = flat[0], flat[1:1 + k], flat[1 + k:1 + 2 * k]
        samples, counts = (flat[1 + 2 * k], flat[2 + 2 * k:]) if sums is not None else (self.samples, self.counts)
        if self.copies is not None:
            return [self._row(loss[c], [v[c] for v in values], samples, counts) for c in range(self.copies)]
        return self._row(loss, values, samples, [c + t for c, t in zip(counts, tokens)])

    def samples_in(self, sums: torch.Tensor) -> float:
        """The sample count held in a `sums()` tensor (all-reduced: over every worker)."""
        return float(sums[1 + 2 * len(self.metrics)])

    def _stacked(self) -> torch.Tensor:
        return torch.stack([self.loss.float(), *[v.float() for v in self.values], *[v.float() for v in self.valid]])

    def _row(self, loss: float, values, samples, counts) -> dict:
        row = {"loss": loss / max(1, samples)}
        for metric, value, count in zip(self.metrics, values, counts):
            row[metric.name] = value / max(1, count)
        return row

    def samples_per_s(self) -> float:
        return (self.samples - self.untimed) / max(1e-9, time.perf_counter() - self.since)


def evaluate_model(model, split, *, batch_size: int, device, loss_fn, task: str | None, amp=None) -> dict:
    """Mean loss (and the task's metrics) of `model` on a data split, weights untouched.

    Example: ``evaluate_model(model, bundle.test, batch_size=256, device="cpu", loss_fn=F.cross_entropy,
    task="classification")``
    """
    was_training = model.training
    model.eval()
    with_targets = takes_targets(model)
    metrics = Metrics(task, device)
    try:
        with torch.no_grad(), autocast(device, amp):
            for batch in split.batches(batch_size, device):
                logits, loss, y = batch_loss(model, batch, loss_fn, with_targets)
                metrics.update(loss, logits, y, batch_len(batch))
    finally:
        model.train(was_training)
    return metrics.compute()
