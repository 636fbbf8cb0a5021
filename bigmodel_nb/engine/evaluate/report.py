"""`Evaluation`: a model's scores on one split, read for error analysis — metrics, per-class rows, the
confusion matrix, the most-confused pairs, the examples with the highest loss (with their inputs), the
reliability curve, and for a language model a few samples from it.

    ev = evaluate(model, load_dataset("digits"), "test"); ev.top_losses(5)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..core.batches import first_input, take
from ..core.forward import read_output
from ..core.scores import CALIBRATION_BINS, Scores, model_device, score, split_of


@dataclass(frozen=True)
class Evaluation:
    """The result of `%evaluate`. Fields (contract): ``metrics``, ``per_class`` (rows: class, precision,
    recall, f1, support), ``confusion`` ([C, C], rows true), ``top_losses(k)``, ``table()``."""

    data: str
    split: str
    task: str
    metrics: dict
    per_class: list
    confusion: torch.Tensor | None
    class_names: list | None
    calibration: list  # reliability bins: lo, hi, confidence, accuracy, count
    samples: list  # a language model's generated text
    scores: Scores = field(repr=False)
    inputs: object = field(repr=False, default=None)  # index -> input (tensor, dict or text), or None
    image_shape: tuple | None = None  # (C, H, W) of flattened image inputs, when the data says so
    notes: tuple = ()

    @property
    def size(self) -> int:
        return len(self.scores.losses)

    def label(self, cls: int):
        """A class's name when the data names its classes, otherwise its index."""
        names = self.class_names
        return names[cls] if names and 0 <= cls < len(names) else cls

    def top_losses(self, k: int = 9) -> list[dict]:
        """The `k` samples with the highest loss, highest first: ``index`` (in the split), ``loss``, ``true``,
        ``predicted``, ``probability`` (of the prediction) and ``true_probability``. Example: ``ev.top_losses(3)``"""
        s = self.scores
        order = torch.argsort(s.losses, descending=True, stable=True)[:k].tolist()
        rows = []
        for i in order:
            row = {"index": i, "loss": float(s.losses[i])}
            if s.targets is not None and self.task == "classification":
                row.update(true=self.label(int(s.targets[i])), predicted=self.label(int(s.predicted[i])),
                           probability=float(s.probability[i]), true_probability=float(s.true_probability[i]))
            elif s.targets is not None:  # regression: the values themselves
                row.update(true=_value(s.targets[i]), predicted=_value(s.predicted[i]))
            rows.append(row)
        return rows

    def most_confused(self, k: int = 5) -> list[dict]:
        """The `k` largest off-diagonal cells of the confusion matrix: ``true``, ``predicted``, ``count``."""
        if self.confusion is None:
            return []
        off = self.confusion.clone()
        off.fill_diagonal_(0)
        values, flat = off.flatten().sort(descending=True, stable=True)
        c = off.shape[1]
        return [{"true": self.label(int(f) // c), "predicted": self.label(int(f) % c), "count": int(v)}
                for v, f in zip(values[:k], flat[:k]) if v > 0]

    def normalised_confusion(self) -> torch.Tensor | None:
        """Each row over its total: the share of each true class given each prediction (recall on the diagonal)."""
        if self.confusion is None:
            return None
        return self.confusion.double() / self.confusion.sum(1, keepdim=True).clamp(min=1)

    def example(self, index: int):
        """The input of sample `index` of the split (a tensor, a dict of tensors or decoded text), or None."""
        return None if self.inputs is None else self.inputs(index)

    def table(self):
        """One row per metric (a pandas DataFrame when pandas is installed). Example: ``ev.table()``"""
        rows = [{"metric": k, "value": v} for k, v in self.metrics.items()]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        main = ", ".join(f"{k} {v:.4g}" for k, v in list(self.metrics.items())[:5])
        return f"<Evaluation of '{self.data}' {self.split} ({self.size} samples): {main}>"


def evaluate(model, data, split: str = "test", *, loss=None, batch_size: int = 256, amp=None, metrics=None,
             samples: int = 2, sample_tokens: int = 200, seed: int = 0) -> Evaluation:
    """Score `model` on a split of `data` (a `DataBundle`) and gather what error analysis needs.

    Example: ``evaluate(model, load_dataset("digits"), "test").metrics["f1_macro"]``
    """
    part = split_of(data, split)
    scores = score(model, data, split, loss=loss, batch_size=batch_size, amp=amp, metrics=metrics)
    names = data.info.get("class_names")
    per_class = []
    if scores.confusion is not None:
        support = scores.confusion.sum(1)
        for c in range(len(support)):
            row = {"class": names[c] if names and c < len(names) else c}
            row.update({k: float(scores.per_class[k][c]) for k in ("precision", "recall", "f1")})
            per_class.append({**row, "support": int(support[c])})
    texts = _samples(model, data, part, samples, sample_tokens, seed) if data.task == "language-model" else []
    return Evaluation(data=data.name, split=split, task=data.task, metrics=scores.metrics, per_class=per_class,
                      confusion=scores.confusion, class_names=names, calibration=reliability(scores),
                      samples=texts, scores=scores, inputs=_reader(part, data), notes=scores.notes,
                      image_shape=data.info.get("image_shape"))


def reliability(scores: Scores, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Confidence against accuracy in equal-width bins of the predicted class's probability, binned as
    torchmetrics bins the expected calibration error (ECE = Σ count/N · |accuracy − confidence|): bin i is
    [i/bins, (i+1)/bins), and a confidence of exactly 1 (float32 softmax can give it) has a bin of its own."""
    if scores.probability is None or scores.targets is None or not len(scores.probability):
        return []
    confidence = scores.probability.double()
    hit = (scores.predicted == scores.targets).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges, right=True) - 1
    rows = []
    for i in range(bins + 1):
        inside = which == i
        n = int(inside.sum())
        if i == bins and not n:  # the bin of certainty [1, 1], shown only when some prediction is certain
            break
        rows.append({"lo": float(edges[i]), "hi": float(edges[min(i + 1, bins)]), "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(hit[inside].mean()) if n else None})
    return rows


def _value(t: torch.Tensor):
    return float(t) if t.numel() == 1 else t.tolist()


def _reader(part, data):
    """index -> that sample's input, for the gallery: decoded text for character data, else the tensor."""
    if part.in_memory:
        whole = part.tensors()
        get = (lambda i: take(whole, slice(i, i + 1))) if isinstance(whole, Mapping) else \
            (lambda i: (whole[0][i:i + 1], whole[1][i:i + 1]))
    elif part.dataset is not None:
        get = lambda i: part.dataset[i]  # noqa: E731
    else:
        return None  # a user's DataLoader: its order is its own, so an index names no fixed sample
    tokenizer = data.info.get("tokenizer")

    def read(index: int):
        item = get(index)
        x = item if isinstance(item, Mapping) else item[0]
        if isinstance(x, Mapping):
            return {k: v[0] if torch.is_tensor(v) and part.in_memory else v for k, v in x.items()}
        x = x[0] if part.in_memory else x
        if tokenizer is not None and not torch.as_tensor(x).is_floating_point():
            return tokenizer.decode(torch.as_tensor(x).tolist())
        return torch.as_tensor(x)

    return read


def _samples(model, data, part, count: int, tokens: int, seed: int) -> list[str]:
    """`count` continuations of the split's first sequences, sampled from the model (seeded: the same every time)."""
    if count < 1 or tokens < 1:
        return []
    tokenizer = data.info.get("tokenizer")
    first = next(iter(part.batches(count, model_device(model))))
    prompts = first_input(first)[:count, : max(1, min(16, first_input(first).shape[-1] // 4))]
    context = int(data.info.get("block_size") or first_input(first).shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ids = _generate(model, prompts, tokens, context)
    decode = tokenizer.decode if tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
    return [decode(row.tolist()) for row in ids]


@torch.no_grad()
def _generate(model, idx: torch.Tensor, tokens: int, context: int) -> torch.Tensor:
    if hasattr(model, "generate") and not hasattr(model, "generation_config"):  # nanoGPT style; not Hugging Face's
        return model.generate(idx, tokens)
    was_training = model.training
    model.eval()
    try:
        for _ in range(tokens):
            logits, _ = read_output(model(idx[:, -context:]))
            probs = torch.softmax(logits[:, -1, :].float(), dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], dim=1)
    finally:
        model.train(was_training)
    return idx
