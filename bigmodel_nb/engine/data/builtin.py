"""The small built-in datasets, offline everywhere: handwritten digits, spirals and a noisy sine.

    load_dataset("digits").num_classes  # 10
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..core.batches import DATASETS, DataBundle, Split, register_dataset, split_arrays
from ..core.errors import BigModelError


@register_dataset("digits", "1,797 8×8 handwritten digits (UCI optdigits), 10 classes, inputs (64,) or (1, 8, 8)")
def digits(seed: int, flatten: bool) -> DataBundle:
    """1,797 8×8 digits: the UCI optdigits test set as shipped by scikit-learn
    (BSD; data CC BY 4.0, Alpaydin & Kaynak)."""
    a = digits_array()
    parts = split_arrays(a[:, :64] / 16.0, a[:, 64].astype(np.int64), np.random.default_rng(seed))
    mean, std = float(parts[0][0].mean()), float(parts[0][0].std())  # train statistics only: no test leakage
    shape = (64,) if flatten else (1, 8, 8)
    splits = [Split(torch.from_numpy(((X - mean) / std).astype(np.float32).reshape(-1, *shape)),
                    torch.from_numpy(y)) for X, y in parts]
    return DataBundle("digits", *splits, task="classification", num_classes=10, input_shape=shape,
                      info={"description": DATASETS["digits"], "mean": mean, "std": std,
                            "source": "UCI optdigits via scikit-learn", "class_names": [str(i) for i in range(10)],
                            "image_shape": (1, 8, 8)})


@lru_cache(maxsize=1)
def digits_array() -> np.ndarray:
    """The digits as one [1797, 65] array: 64 pixel values (0–16), then the label."""
    with gzip.open(Path(__file__).with_name("digits.csv.gz"), "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.float64)


@register_dataset("spirals", "2-D points on interleaved spirals (options n=1500, classes=3, noise=0.2), classification")
def spirals(seed: int, flatten: bool, n: int = 1500, classes: int = 3, noise: float = 0.2) -> DataBundle:
    """`classes` interleaved spiral arms in 2-D, noise on the angle (the CS231n toy problem)."""
    n, classes = int(n), int(classes)
    if n < 3 * classes or classes < 2:
        raise BigModelError(f"spirals needs classes >= 2 and n >= 3 * classes; got n={n}, classes={classes}.")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    r = rng.uniform(0.0, 1.0, n)
    t = 2 * np.pi * y / classes + 4 * r + noise * rng.standard_normal(n)
    return _toy("spirals", np.stack([r * np.sin(t), r * np.cos(t)], axis=1), y, rng, num_classes=classes, noise=noise)


@register_dataset("sine", "y = sin(x) + noise for x in [-π, π] (options n=1000, noise=0.1), regression")
def sine(seed: int, flatten: bool, n: int = 1000, noise: float = 0.1) -> DataBundle:
    """y = sin(x) + Gaussian noise for x uniform in [-π, π]; x and y have shape (n, 1)."""
    if int(n) < 3:
        raise BigModelError(f"sine needs n >= 3 samples; got n={n}.")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, (int(n), 1))
    return _toy("sine", x, np.sin(x) + noise * rng.standard_normal(x.shape), rng, noise=noise)


def _toy(name: str, X: np.ndarray, y: np.ndarray, rng, num_classes: int | None = None, **info) -> DataBundle:
    splits = [Split(torch.from_numpy(a.astype(np.float32)),
                    torch.from_numpy(b.astype(np.int64 if num_classes else np.float32)))
              for a, b in split_arrays(X, y, rng)]
    return DataBundle(name, *splits, task="classification" if num_classes else "regression", num_classes=num_classes,
                      input_shape=X.shape[1:], info={"description": DATASETS[name], "n": len(X), **info})
