"""Downloadable 28×28 grey-scale image datasets: MNIST and Fashion-MNIST, from their IDX gzip files.

The four standard files are downloaded once into ``cache_dir()/<name>/`` (each atomically, with
the short timeout of `text.download_once`) and kept there as the original gzipped uint8 data; each
load parses them with numpy and converts the pixels to float32 once, in a single lookup-table pass.

Splits: `test` is the official 10,000-image test set, in its original order. The official
60,000-image training set (or its first `limit` images) is divided by a permutation seeded with
`seed`: a random 10% (6,000) is `val`, the other 90% (54,000) is `train`; both keep the file's
order. Pixels are scaled to [0, 1] and then normalised with the mean and std of `train` alone.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..core.batches import DATASETS, DataBundle, Split, register_dataset
from ..core.errors import BigModelError
from .download import cache_dir, download_once

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
VAL_FRACTION = 0.10  # of the official training set, chosen by a seeded permutation
IMAGE_SHAPE = (28, 28)
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these files use


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in a gzipped IDX file with `ndim` dimensions (3: images, 1: labels).

    A truncated or corrupt file is a one-sentence BigModelError saying to delete it.
    Example: ``read_idx(cache_dir() / "mnist" / "t10k-labels-idx1-ubyte.gz", 1).shape  # (10000,)``
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream is an EOFError
        raise corrupt_download(path, f"not a complete gzip file: {exc}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt_download(path, f"only {len(raw)} bytes after decompression")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise corrupt_download(path, f"magic number 0x{raw[:4].hex()} is not 0x{0x0800 | ndim:08x}, "
                             f"an IDX file of {ndim}-D bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise corrupt_download(path, f"the header promises {' × '.join(map(str, dims))} bytes but "
                                     f"{len(raw) - header:,} follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def corrupt_download(path: Path, why: str) -> BigModelError:
    """The error for a downloaded file that cannot be read: name it, and say to delete it."""
    return BigModelError(f"The file {path} is truncated or corrupt ({why}); delete it so that it is downloaded again.")


def download_idx(name: str, url: str) -> Path:
    """The folder holding the four IDX files of `name`, downloading any that are missing from `url`.

    Example: ``download_idx("mnist", MNIST_URL)  # ~/.cache/bigmodel_nb/mnist``
    """
    folder = cache_dir() / name
    base = url if url.endswith("/") else url + "/"
    for file in IDX_FILES:
        try:
            download_once(base + file, folder / file, f"{name} {file}")
        except BigModelError as exc:
            cause = exc.__context__  # download_once raises `from None`, which keeps the original as context
            reason = (getattr(cause, "reason", None) or cause) if cause is not None else exc
            raise BigModelError(f"Could not download {name} from {base} ({reason}); check the network, or put "
                                f"the four IDX files ({', '.join(IDX_FILES)}) in {folder}.") from None
    return folder


def read_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as uint8 arrays, checked for agreement."""
    arrays = [read_idx(folder / file, 3 if "images" in file else 1) for file in IDX_FILES]
    for (images, labels), (fi, fl) in zip((arrays[:2], arrays[2:]), (IDX_FILES[:2], IDX_FILES[2:])):
        if images.shape[1:] != IMAGE_SHAPE:
            raise corrupt_download(folder / fi, f"its images are {images.shape[1]}×{images.shape[2]}, not 28×28")
        if len(images) != len(labels):
            raise corrupt_download(folder / fl, f"it has {len(labels):,} labels for {len(images):,} images in {fi}")
        if len(labels) and labels.max() > 9:
            raise corrupt_download(folder / fl, f"it has the label {int(labels.max())}, outside 0-9")
    return tuple(arrays)


def image_bundle(name: str, url: str, *, seed: int, flatten: bool, limit: int | None, info: dict):
    """The DataBundle of one IDX image dataset (see the module docstring for the splits)."""

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise BigModelError(f"limit must be an integer of at least 2 (how many training images to use); got {limit!r}.")
    folder = download_idx(name, url)
    train_x, train_y, test_x, test_y = read_arrays(folder)
    n = len(train_x) if limit is None else min(limit, len(train_x))
    if n < 2:
        raise corrupt_download(folder / IDX_FILES[0], f"it holds {n} images, too few for train and val")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * VAL_FRACTION))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    # Train statistics from a histogram of the 256 byte values: exact, and no float copy of the images.
    counts = np.bincount(train_x[train_idx].ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256) / 255.0
    mean = float(counts @ levels / counts.sum())
    std = float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum())) or 1.0
    lut = ((levels - mean) / std).astype(np.float32)  # byte value -> normalised float32
    shape = (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],) if flatten else (1, *IMAGE_SHAPE)
    splits = [Split(torch.from_numpy(lut[x].reshape(-1, *shape)), torch.from_numpy(y.astype(np.int64)))
              for x, y in ((train_x[train_idx], train_y[train_idx]), (train_x[val_idx], train_y[val_idx]),
                           (test_x, test_y))]
    return DataBundle(name, *splits, task="classification", num_classes=10, input_shape=shape, info={
        "description": DATASETS[name], "mean": mean, "std": std, "path": str(folder), "image_shape": (1, *IMAGE_SHAPE),
        "split": f"val: a random {VAL_FRACTION:.0%} of the first {n:,} official training images (seed {seed}); "
                 "train: the rest; test: the official test set", **info})


# -- the built-in datasets (registered in data.py) ----------------------------------------------
@register_dataset("mnist", "70,000 28×28 handwritten digits, downloaded once (option limit), 10 classes, "
                           "inputs (784,) or (1, 28, 28)")
def mnist(seed: int = 0, flatten: bool = True, limit: int | None = None):
    """70,000 28×28 handwritten digits, downloaded once ($BIGMODEL_NB_MNIST_URL overrides the base URL).

    Example: ``load_dataset("mnist", limit=5000, flatten=False).train.X.shape  # (4500, 1, 28, 28)``
    """
    url = os.environ.get("BIGMODEL_NB_MNIST_URL") or MNIST_URL
    return image_bundle("mnist", url, seed=seed, flatten=flatten, limit=limit, info={
        "class_names": [str(i) for i in range(10)],
        "source": f"MNIST (LeCun, Cortes & Burges), the IDX files from {url}"})


@register_dataset("fashion-mnist", "70,000 28×28 Zalando clothing images, downloaded once (option limit), "
                                   "10 classes, inputs (784,) or (1, 28, 28)")
def fashion_mnist(seed: int = 0, flatten: bool = True, limit: int | None = None):
    """70,000 28×28 Zalando clothing images in 10 classes, downloaded once ($BIGMODEL_NB_FASHION_MNIST_URL
    overrides the base URL).

    Example: ``load_dataset("fashion-mnist").info["class_names"][9]  # 'Ankle boot'``
    """
    url = os.environ.get("BIGMODEL_NB_FASHION_MNIST_URL") or FASHION_MNIST_URL
    return image_bundle("fashion-mnist", url, seed=seed, flatten=flatten, limit=limit, info={
        "class_names": list(FASHION_CLASSES),
        "source": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research, MIT licence), "
                  f"the IDX files from {url}"})
