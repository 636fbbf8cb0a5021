"""Downloadable 32×32 colour images: CIFAR-10, from the official "python version" archive.

``cifar-10-python.tar.gz`` is downloaded once into ``cache_dir()/cifar10/`` (atomically, with the short
timeout of `download.download_once`) and kept as it is; each load reads the seven batch files straight
out of the tar (nothing is extracted to disk). The batches are Python pickles, so they are read with
`SafeUnpickler`, which builds numpy arrays and nothing else: loading never unpickles arbitrary code.

Splits: `test` is the official 10,000-image test batch, in its original order. The official 50,000
training images (data_batch_1..5, or their first `limit` images) are divided by a permutation seeded
with `seed`: a random 10% (5,000) is `val`, the other 90% (45,000) is `train`; both keep the file order.
Pixels are scaled to [0, 1], then each channel is normalised with its mean and std over `train` alone.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..core.batches import DATASETS, DataBundle, Split, register_dataset
from ..core.errors import BigModelError
from .download import cache_dir, download_once
from .images import VAL_FRACTION, corrupt_download

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"  # the one folder inside the archive
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_MEMBERS = (*TRAIN_BATCHES, "test_batch", "batches.meta")
CIFAR10_SHAPE = (3, 32, 32)  # each row of a batch: the R plane, then G, then B, each 32×32 row-major

# The only globals a pickled numpy array needs (numpy 1 and numpy 2 names; protocols 2 to 5), taken from
# numpy's own reductions so that no deprecated module has to be imported.
_reconstruct = np.zeros(1).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
ARRAY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that builds dicts, lists, bytes, numbers and numpy arrays, and refuses every other
    global (a pickle can name any callable to run; this one names none). `where` words the refusal.

    Example: ``SafeUnpickler(io.BytesIO(raw), "test_batch", encoding="bytes").load()[b"labels"][:3]``
    """

    def __init__(self, file, where: str, **kwargs):
        super().__init__(file, **kwargs)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in ARRAY_GLOBALS:
            return ARRAY_GLOBALS[(module, name)]
        raise BigModelError(f"Refused to read {self.where}: it asks to unpickle {module}.{name}, which is not part "
                            "of a numpy array, and loading never unpickles arbitrary code; delete the file so "
                            "that it is downloaded again.")


def read_cifar_archive(path: Path) -> dict[str, dict]:
    """The seven pickled dicts of the archive at `path` (keys: CIFAR10_MEMBERS), read without extracting.

    A truncated or corrupt archive, or a pickle that names anything but numpy arrays, is a one-sentence
    BigModelError saying to delete the file.
    Example: ``read_cifar_archive(cache_dir() / "cifar10" / CIFAR10_ARCHIVE)["batches.meta"][b"label_names"][0]``
    """
    raw: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # to the end, so that a cut-off archive is noticed even after the batches
                folder, _, name = member.name.removeprefix("./").partition("/")
                if member.isfile() and folder == CIFAR10_FOLDER and name in CIFAR10_MEMBERS:
                    raw[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise corrupt_download(path, f"not a complete tar.gz archive: {exc}") from None
    missing = [name for name in CIFAR10_MEMBERS if name not in raw]
    if missing:
        raise corrupt_download(path, f"it has no {', '.join(f'{CIFAR10_FOLDER}/{m}' for m in missing)}")
    batches = {}
    for name, payload in raw.items():
        where = f"{CIFAR10_FOLDER}/{name} in {path}"
        try:
            batches[name] = SafeUnpickler(io.BytesIO(payload), where, encoding="bytes").load()
        except BigModelError:
            raise
        except Exception as exc:  # a damaged pickle can fail in many ways; all mean the same to the user
            raise corrupt_download(path, f"{CIFAR10_FOLDER}/{name} is not a complete pickle: "
                                         f"{type(exc).__name__}") from None
        if not isinstance(batches[name], dict):
            raise corrupt_download(path, f"{CIFAR10_FOLDER}/{name} holds a {type(batches[name]).__name__}, not a dict")
    return batches


def cifar_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train images, train labels, test images, test labels, class names): images uint8 (n, 3072), labels int64."""
    batches = read_cifar_archive(path)
    parts = []
    for name in CIFAR10_MEMBERS[:-1]:
        batch = batches[name]
        data, labels = batch.get(b"data"), batch.get(b"labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise corrupt_download(path, f"{CIFAR10_FOLDER}/{name} has no b'data' array of uint8 rows of 3,072 pixels")
        labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
        if len(labels) != len(data) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
            raise corrupt_download(path, f"{CIFAR10_FOLDER}/{name} has {len(labels):,} labels in 0-9 for "
                                         f"{len(data):,} images")
        parts.append((data, labels))
    names = batches["batches.meta"].get(b"label_names")
    if not isinstance(names, (list, tuple)) or len(names) != 10:
        raise corrupt_download(path, f"{CIFAR10_FOLDER}/batches.meta has no list of 10 b'label_names'")
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    train_x, train_y = (np.concatenate(a) for a in zip(*parts[:-1]))
    return train_x, train_y, *parts[-1], names


@register_dataset("cifar10", "60,000 32×32 colour images in 10 classes (CIFAR-10), downloaded once (option limit), "
                             "inputs (3072,) or (3, 32, 32)")
def cifar10(seed: int = 0, flatten: bool = True, limit: int | None = None):
    """60,000 32×32 colour images in 10 classes, downloaded once ($BIGMODEL_NB_CIFAR10_URL overrides the archive's
    URL; one ending in "/" gets the archive's name appended). `limit` caps the official training images used.

    Example: ``load_dataset("cifar10", flatten=False).info["class_names"][:2]  # ['airplane', 'automobile']``
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise BigModelError(f"limit must be an integer of at least 2 (how many training images to use); got {limit!r}.")
    url = os.environ.get("BIGMODEL_NB_CIFAR10_URL") or CIFAR10_URL
    url = url + CIFAR10_ARCHIVE if url.endswith("/") else url
    folder = cache_dir() / "cifar10"
    path = download_once(url, folder / CIFAR10_ARCHIVE, "cifar10")
    train_x, train_y, test_x, test_y, class_names = cifar_arrays(path)
    n = len(train_x) if limit is None else min(limit, len(train_x))
    if n < 2:
        raise corrupt_download(path, f"it holds {n} training images, too few for train and val")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * VAL_FRACTION))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    # Per-channel train statistics from histograms of the 256 byte values: exact, and no float copy.
    planes = train_x[train_idx].reshape(len(train_idx), 3, -1)
    counts = np.stack([np.bincount(planes[:, c].ravel(), minlength=256) for c in range(3)]).astype(np.float64)
    levels = np.arange(256) / 255.0
    mean = counts @ levels / counts.sum(axis=1)
    std = np.sqrt((counts * (levels - mean[:, None]) ** 2).sum(axis=1) / counts.sum(axis=1))
    std[std == 0] = 1.0
    lut = ((levels - mean[:, None]) / std[:, None]).astype(np.float32)  # (channel, byte value) -> float32
    channel = np.arange(3)[:, None]
    shape = (3072,) if flatten else CIFAR10_SHAPE

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(lut[channel, x.reshape(len(x), 3, -1)].reshape(-1, *shape)), torch.from_numpy(y))

    splits = [split(train_x[train_idx], train_y[train_idx]), split(train_x[val_idx], train_y[val_idx]),
              split(test_x, test_y)]
    return DataBundle("cifar10", *splits, task="classification", num_classes=10, input_shape=shape, info={
        "description": DATASETS["cifar10"], "mean": mean.tolist(), "std": std.tolist(), "path": str(folder),
        "class_names": class_names, "image_shape": CIFAR10_SHAPE,
        "source": f"CIFAR-10 (Krizhevsky 2009), the python-version archive from {url}",
        "split": f"val: a random {VAL_FRACTION:.0%} of the first {n:,} official training images (seed {seed}); "
                 "train: the rest; test: the official test set"})
