"""A model scored on one split: the task's metrics from torchmetrics (updated on the device batch by batch;
under torch.distributed they all-reduce in `compute`), the same loss as the run's validation rows (the
metrics seam), and one record per sample — its loss, the prediction and its probability — which the
error analysis (`engine.evaluate`) reads.

    scores = score(model, load_dataset("digits"), "test"); scores.metrics["f1_macro"]
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .batches import IGNORE_INDEX, batch_len
from .errors import BigModelError, unknown_choice
from .forward import autocast, batch_loss, check_outputs, model_failure, resolve_loss, takes_targets
from .metrics import Metrics

# Every metric `score` reports, by task (language models name bits per character on character-level data).
TASK_SCORES = {
    "classification": ("loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                       "recall_weighted", "f1_weighted", "ece"),
    "regression": ("loss", "mae", "rmse", "r2"),
    "language-model": ("loss", "perplexity", "bits_per_token", "bits_per_char"),
}
SPLITS = ("train", "val", "test")
CALIBRATION_BINS = 15  # torchmetrics' default, so the reliability curve and the ECE use the same bins


@dataclass(frozen=True)
class Scores:
    """Metrics and per-sample records (CPU tensors, in the split's order). Token-level targets get one
    record per sequence (its mean token loss) and no predicted class."""

    metrics: dict
    losses: torch.Tensor  # [N]
    targets: torch.Tensor | None = None  # [N] classes, or [N, ...] values
    predicted: torch.Tensor | None = None  # [N] classes, or [N, ...] values
    probability: torch.Tensor | None = None  # [N] of the predicted class
    true_probability: torch.Tensor | None = None  # [N] of the true class
    confusion: torch.Tensor | None = None  # [C, C], rows true, columns predicted
    per_class: dict = field(default_factory=dict)  # precision/recall/f1 -> [C]
    notes: tuple = ()


def split_of(data, split: str):
    """The split named `split` ("validation" is "val"), or one sentence naming the splits there are."""
    name = "val" if split == "validation" else split
    part = getattr(data, name, None) if name in SPLITS else None
    if part is None or len(part) == 0:
        present = [s for s in SPLITS if getattr(data, s, None) is not None and len(getattr(data, s))]
        raise BigModelError(f"'{data.name}' has no '{split}' split; use --split {' or '.join(present)}.")
    return part


def model_device(model: torch.nn.Module) -> torch.device:
    """The one device a model's weights are on, or one sentence saying why it cannot be evaluated there."""
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    if not devices:
        return torch.device("cpu")
    if len(devices) > 1:
        raise BigModelError(f"The model's weights are on {len(devices)} devices "
                            f"({', '.join(sorted(map(str, devices)))}); move it to one, e.g. model.to('cpu').")
    device = devices.pop()
    if device.type == "meta":
        raise BigModelError("The model's weights are on the meta device (shapes only, no values); load real "
                            "weights, e.g. with load_weights(model, path) or model.to_empty(device='cpu').")
    return device


def score(model, data, split: str = "test", *, loss=None, batch_size: int = 256, amp=None,
          metrics: tuple | list | None = None, per_class: bool = True) -> Scores:
    """Score `model` on `data`'s `split` where the model is, weights untouched (no gradients, eval mode).

    `metrics` computes only those names; `per_class=False` leaves out the per-class values and the confusion
    matrix. Example: ``score(model, bundle, "val", metrics=["f1_macro"]).metrics``
    """
    part = split_of(data, split)
    wanted = _check_wanted(metrics, data.task)
    device = model_device(model)
    loss_fn = resolve_loss(loss, data.task)
    with_targets = takes_targets(model)
    seam = Metrics(data.task, device)  # the loss, exactly as the run's validation rows have it
    tracker = _Tracker(data, loss_fn, device, wanted, per_class)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, amp):
            for batch in part.batches(batch_size, device):
                try:
                    logits, batch_mean, y = batch_loss(model, batch, loss_fn, with_targets)
                    if not seam.samples:
                        check_outputs(logits, y, data, loss_fn)
                except BigModelError:
                    raise
                except Exception as exc:  # the model (or the loss) does not fit this data: say so once
                    raise model_failure(exc, model, data, batch) from None
                seam.update(batch_mean, logits, y, batch_len(batch))
                if y is not None:
                    tracker.update(logits.float(), y)
    finally:
        model.train(was_training)
    result = tracker.result(seam.compute()["loss"])
    if wanted is not None:
        result = _keep(result, wanted)
    return result


def _check_wanted(metrics, task: str) -> list | None:
    if metrics is None:
        return None
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    available = TASK_SCORES.get(task, ("loss",))
    for name in names:
        if name not in available:
            raise unknown_choice(f"metric for {task}", name, available)
    return names


def _keep(scores: Scores, names: list) -> Scores:
    return dataclasses.replace(scores, metrics={k: v for k, v in scores.metrics.items() if k in names})


class _Tracker:
    """The task's torchmetrics (on the device) and the per-sample records, batch by batch."""

    def __init__(self, data, loss_fn, device, names=None, per_class: bool = True):
        self.task, self.loss_fn, self.device = data.task, loss_fn, device
        self.names, self.per_class = names, per_class  # the scores to compute (None: all); per-class values too
        self.num_classes = data.num_classes
        vocab = data.vocab or []
        self.char_level = bool(vocab) and all(isinstance(t, str) and len(t) == 1 for t in vocab)
        self.metrics = None  # built at the first batch, once the output's shape is known (None: none asked for)
        self._built = False
        self.records: dict[str, list] = {"losses": [], "targets": [], "predicted": [], "probability": [],
                                         "true_probability": []}
        self.notes: list[str] = []

    # -- per batch ----------------------------------------------------------------------------------
    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        tokens = not y.is_floating_point() and y.dim() >= 2 and logits.dim() == y.dim() + 1
        if self.task == "language-model" or (tokens and self.task == "classification"):
            self._tokens(logits, y)
        elif self.task == "classification":
            self._classes(logits, y)
        else:
            self._values(logits, y)

    def _classes(self, logits, y):
        probs = class_probabilities(logits)
        if not self._built:
            self.metrics = _classification_metrics(max(self.num_classes or 0, probs.shape[-1]), self.device,
                                                   self.names, self.per_class)
            self._built = True
        y = y.reshape(-1).long()
        if self.metrics is not None:
            self.metrics.update(probs, y)
        picked, predicted = probs.max(-1)
        true = probs.gather(-1, y.clamp(min=0)[:, None]).squeeze(-1)
        self._keep(losses=self._sample_losses(logits, y), targets=y, predicted=predicted, probability=picked,
                   true_probability=true)

    def _values(self, outputs, y):
        outputs = outputs.reshape(y.shape) if outputs.shape != y.shape and outputs.numel() == y.numel() else outputs
        if not self._built:
            self.metrics, self._built = _regression_metrics(self.device), True
        flat = (lambda t: t.reshape(-1)) if y.dim() <= 1 or y[0].numel() == 1 else (lambda t: t.reshape(len(t), -1))
        self.metrics.update(flat(outputs), flat(y.float()))
        self._keep(losses=self._sample_losses(outputs, y), targets=y, predicted=outputs)

    def _tokens(self, logits, y):
        if not self._built:
            self.metrics = _token_metrics(self.task, max(self.num_classes or 0, logits.shape[-1]), self.device,
                                          self.names, self.per_class)
            self._built = True
        valid = y != IGNORE_INDEX
        per_token = F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none",
                                    ignore_index=IGNORE_INDEX).view(y.shape)
        per_sequence = (per_token * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
        if self.task == "language-model":
            self.metrics.update(logits, y)
        elif self.metrics is not None:  # token classification (e.g. NER): every labelled token is one prediction
            self.metrics.update(class_probabilities(logits[valid]), y[valid])
        self._keep(losses=per_sequence)

    def _sample_losses(self, outputs, y) -> torch.Tensor:
        """Each sample's own loss: the run's loss with reduction="none", averaged over a sample's values."""
        fn = self.loss_fn
        if self.task == "classification":
            if outputs.shape[-1] == 1:  # one logit: binary cross-entropy, as the run trained with
                return F.binary_cross_entropy_with_logits(outputs.reshape(-1), y.float(), reduction="none")
            if fn is None or fn is F.cross_entropy:
                return F.cross_entropy(outputs, y, reduction="none")
        elif fn is None:
            fn = F.mse_loss
        try:
            per = fn(outputs, y.to(outputs.dtype) if y.is_floating_point() else y, reduction="none")
            if per.shape[:1] == outputs.shape[:1]:
                return per.reshape(len(per), -1).mean(1)
        except TypeError:  # a loss without reduction=: fall back on the task's own
            pass
        note = "per-sample losses are cross-entropy (the run's loss takes no reduction= argument)"
        if note not in self.notes:
            self.notes.append(note)
        if self.task == "classification":
            return F.cross_entropy(outputs, y, reduction="none")
        return F.mse_loss(outputs, y.float(), reduction="none").reshape(len(y), -1).mean(1)

    def _keep(self, **parts) -> None:
        for key, value in parts.items():
            self.records[key].append(value.detach())

    # -- at the end ---------------------------------------------------------------------------------
    def result(self, loss: float) -> Scores:
        records = {k: torch.cat(v).cpu() if v else None for k, v in self.records.items()}
        if records["losses"] is None:
            records["losses"] = torch.zeros(0)
        metrics: dict = {"loss": loss}
        confusion, per_class = None, {}
        if self.metrics is not None:
            values = {k: v.cpu() for k, v in self.metrics.compute().items()}
            confusion = values.pop("confusion", None)
            per_class = {k.removesuffix("_per_class"): values.pop(k) for k in list(values) if k.endswith("_per_class")}
            if "perplexity" in values:
                bits = math.log2(float(values["perplexity"]))
                values["bits_per_char" if self.char_level else "bits_per_token"] = bits
            metrics.update({k: float(v) for k, v in values.items()})
        if confusion is not None:
            confusion = confusion.long()
            # exact, as the validation rows count it (torchmetrics' own accuracy is a float32 ratio)
            metrics["accuracy"] = float(confusion.trace()) / max(1, int(confusion.sum()))
            if not self.per_class:
                confusion = None
        order = TASK_SCORES.get(self.task, ())
        metrics = dict(sorted(metrics.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        return Scores(metrics=metrics, confusion=confusion, per_class=per_class, notes=tuple(self.notes), **records)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """[N, C] class probabilities; one logit (binary) becomes [1 - σ, σ]."""
    if logits.shape[-1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], dim=-1)
    return torch.softmax(logits.float(), dim=-1)


def _classification_metrics(classes: int, device, names=None, per_class: bool = True):
    """The torchmetrics of `names` (None: every score), with the per-class values and the confusion matrix
    if `per_class`. Accuracy comes from the confusion matrix (exact); precision, recall and F1 share one
    state (true/false positives/negatives per class), so they are declared one compute group: torchmetrics
    then updates it once a batch and skips working out the groups, which cost more than the scoring."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassCalibrationError,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    def wanted(name):
        return names is None or name in names

    kinds = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}
    metrics = {}
    for name, kind in kinds.items():
        for average in ("macro", "weighted"):
            if wanted(f"{name}_{average}"):
                metrics[f"{name}_{average}"] = kind(classes, average=average)
        if per_class:
            metrics[f"{name}_per_class"] = kind(classes, average="none")
    groups = [list(metrics)] if metrics else []
    if per_class or wanted("accuracy"):
        metrics["confusion"] = MulticlassConfusionMatrix(classes)
        groups.append(["confusion"])
    if wanted("ece"):
        metrics["ece"] = MulticlassCalibrationError(classes, n_bins=CALIBRATION_BINS, norm="l1")
        groups.append(["ece"])
    # Every metric named in a group: torchmetrics before 1.7 never updates one left out of an explicit list.
    return MetricCollection(metrics, compute_groups=groups).to(device) if metrics else None


def _regression_metrics(device):
    from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

    return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                             "r2": R2Score()}).to(device)


def _token_metrics(task: str, classes: int, device, names=None, per_class: bool = True):
    if task != "language-model":
        return _classification_metrics(classes, device, names, per_class)
    from torchmetrics import MetricCollection
    from torchmetrics.text import Perplexity

    return MetricCollection({"perplexity": Perplexity(ignore_index=IGNORE_INDEX)}).to(device)
