"""What %evaluate costs on the digits test split, next to the hand-written evaluation loop, measured side by
side in one process; and how far its metrics are from scikit-learn's on the same predictions.

Variants (median of alternating repeats): the hand loop (forward, argmax, accuracy), `score` (every
metric through torchmetrics, per-sample records), `evaluate` (score + the report: per class, reliability
bins, inputs), and the rendering (`evaluation_html` + the three Plotly figures as display bundles).
Run: .venv/bin/python bench/evaluate.py [--repeats 15]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bigmodel_nb.engine import Run, TrainConfig, load_dataset  # noqa: E402


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def hand(model, X, y):
    """What a careful user writes: no gradients, eval mode, batched forward, loss and accuracy."""
    model.eval()
    with torch.no_grad():
        total, correct = 0.0, 0
        for i in range(0, len(X), 256):
            logits = model(X[i:i + 256])
            total += F.cross_entropy(logits, y[i:i + 256], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + 256]).sum().item()
    return total / len(X), correct / len(X)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import torchmetrics  # noqa: F401  (imported by the first %evaluate of a session)
    import_s = time.perf_counter() - t0

    from sklearn import metrics as skm

    from bigmodel_nb.engine.core.scores import score
    from bigmodel_nb.engine.evaluate import evaluate
    from bigmodel_nb.ui.display import figure_bundle
    from bigmodel_nb.ui.evaluation import calibration_figure, confusion_figure, evaluation_html, gallery_figure

    data = load_dataset("digits", flatten=False)
    run = Run(cnn(), data, TrainConfig(epochs=8, lr=3e-3, seed=0)).run_here()
    model, (X, y) = run.model, data.test.tensors()

    def render(ev):
        evaluation_html(ev)
        for fig in (confusion_figure(ev), gallery_figure(ev), calibration_figure(ev)):
            figure_bundle(fig, "")

    ev = evaluate(model, data, "test")
    variants = {"hand loop": lambda: hand(model, X, y), "score": lambda: score(model, data, "test"),
                "evaluate": lambda: evaluate(model, data, "test"), "render": lambda: render(ev)}
    for fn in variants.values():  # warm-up
        fn()
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["hand loop"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; digits CNN, test split {len(X)} samples, "
          f"{args.repeats} alternating repeats; torchmetrics import (once per session) {import_s * 1000:.0f} ms")
    print(f"{'variant':<12}{'median ms':>11}{'× hand loop':>13}")
    for name, ts in times.items():
        print(f"{name:<12}{statistics.median(ts) * 1000:>11.2f}{statistics.median(ts) / base:>13.2f}")
    with torch.no_grad():
        pred = model(X).argmax(1).numpy()
    truth = y.numpy()
    reference = {"accuracy": skm.accuracy_score(truth, pred)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(truth, pred, average=avg, zero_division=0)
        reference.update({f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f})
    worst = max(abs(ev.metrics[k] - v) for k, v in reference.items())
    confusion_equal = (ev.confusion.numpy() == skm.confusion_matrix(truth, pred)).all()
    print(f"accuracy {ev.metrics['accuracy']:.4f}, f1_macro {ev.metrics['f1_macro']:.4f}; largest difference from "
          f"scikit-learn over {len(reference)} metrics: {worst:.1e}; confusion matrix identical: {confusion_equal}")


if __name__ == "__main__":
    main()
