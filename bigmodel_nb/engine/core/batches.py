"""The batch protocol: `Split` and `DataBundle`, the adapters that turn whatever a user has into a
`DataBundle`, and the registry of named datasets (`engine.data` registers the built-ins).

Small data lives as two tensors that are copied to the training device once and batched there
by index, with no DataLoader in the way; big or lazy data streams through a DataLoader. The
shuffle order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly.
"""
from __future__ import annotations

import difflib
import inspect
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset, random_split

from .errors import BigModelError

TASKS = ("classification", "regression", "language-model")
# A Dataset is copied into memory (the fast path) only if it is this small, cheap to read and
# gives the same item twice (so random augmentation is never frozen into one copy).
_MEMORY_MAX_ITEMS = 200_000
_MEMORY_MAX_BYTES = 1 << 30
_MEMORY_MAX_SECONDS = 10.0


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch, a pure function of (seed, epoch), on the CPU.

    Example: ``epoch_order(5, seed=0, epoch=1)  # tensor([...]) the same on every machine``
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


class Split:
    """One split. Either in-memory tensors X, y (small data: moved to the training device ONCE,
    cached per device, and batched there by index) or a torch Dataset/DataLoader (streamed through
    a DataLoader, with pinned memory when the target device is cuda).

    Example: ``Split(torch.randn(100, 4), torch.randint(0, 3, (100,))).num_batches(32)  # 4``
    """

    def __init__(self, X=None, y=None, *, dataset=None, loader=None, num_workers: int = 0):
        if sum(v is not None for v in (X, dataset, loader)) != 1 or (X is None) != (y is None):
            raise BigModelError("A Split needs exactly one of: X and y, dataset=..., or loader=....")
        if isinstance(dataset, IterableDataset):
            raise BigModelError("An IterableDataset has no indices to shuffle or split; "
                                "wrap it in a DataLoader instead.")
        self.X = self.y = None
        self.dataset, self.loader, self.num_workers = dataset, loader, num_workers
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._memory: Split | None = None  # a Dataset/DataLoader materialised by tensors()
        if X is not None:
            X, y = _tensor(X, "X"), _tensor(y, "y")
            if len(X) != len(y):
                raise BigModelError(f"X has {len(X)} samples but y has {len(y)}; they must match.")
            self.X, self.y = X, (y if y.is_floating_point() else y.long())  # cross_entropy wants int64

    def __len__(self) -> int:
        if self.X is not None:
            return len(self.X)
        return _length(self.dataset if self.dataset is not None else self.loader.dataset)

    def __repr__(self) -> str:
        kind = "in memory" if self.X is not None else "Dataset" if self.dataset is not None else "DataLoader"
        return f"Split({len(self)} samples, {kind})"

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch, the last partial one included. Example: ``split.num_batches(64)``"""
        if self.loader is not None:
            return _length(self.loader)
        return math.ceil(len(self) / _check_batch_size(batch_size))

    def batches(self, batch_size: int, device, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, skip: int = 0):
        """Yield (x, y) on `device`, skipping the first `skip` batches of the epoch's order.

        Example: ``for x, y in bundle.train.batches(64, "cpu", shuffle=True, seed=0, epoch=3): ...``
        A user DataLoader keeps its own order (shuffle/seed/epoch are ignored for it).
        """
        bs, device = _check_batch_size(batch_size), _normal(device)
        if self.loader is not None:  # non-blocking: from a loader's pinned memory the copy overlaps the compute
            for batch in itertools.islice(self.loader, skip, None):
                yield _pair(batch, device, non_blocking=device.type == "cuda")
            return
        n = len(self)
        # Drawn on the CPU and then moved, so CPU and GPU runs see the same order.
        order = epoch_order(n, seed, epoch) if shuffle else None
        if self.X is not None:
            X, y = self._on(device)
            order = order.to(device) if order is not None else None
            for i in range(skip * bs, n, bs):  # slices are views; index gathers make the shuffled copy
                yield (X[i:i + bs], y[i:i + bs]) if order is None else (X[order[i:i + bs]], y[order[i:i + bs]])
            return
        indices = (order if order is not None else torch.arange(n))[skip * bs:].tolist()
        pin = device.type == "cuda"  # pinned host memory lets the copy overlap the compute
        loader = DataLoader(self.dataset, batch_size=bs, sampler=indices, num_workers=self.num_workers, pin_memory=pin)
        for batch in loader:
            yield _pair(batch, device, non_blocking=pin)

    def tensors(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (X, y), materialised once if it is a Dataset. Example: ``X, y = bundle.test.tensors()``"""
        if self.X is None:
            if self._memory is None:
                xs, ys = zip(*self.batches(1024, "cpu"))
                self._memory = Split(torch.cat(xs), torch.cat(ys))
            return self._memory.tensors(device)
        return (self.X, self.y) if device is None else self._on(_normal(device))

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.X.device == device:
            return self.X, self.y
        if device not in self._cache:  # the one host-to-device copy of this split
            self._cache[device] = (self.X.to(device), self.y.to(device))
        return self._cache[device]


@dataclass
class DataBundle:
    """Train/val/test splits plus what a model needs to know. Example: ``load_dataset("digits").num_classes  # 10``"""

    name: str
    train: Split
    val: Split | None
    test: Split | None
    task: str
    num_classes: int | None = None
    input_shape: tuple = ()  # per sample, e.g. (64,) or (1, 8, 8)
    vocab: list[str] | None = None  # for text
    info: dict = field(default_factory=dict)  # description, source, normalisation mean/std, ...

    def __repr__(self) -> str:
        parts = [repr(self.name), self.task]
        if self.vocab:
            parts.append(f"vocab {len(self.vocab)}")
        elif self.num_classes:
            parts.append(f"{self.num_classes} classes")
        parts.append(" ".join(f"{k}={len(s)}" for k, s in (("train", self.train), ("val", self.val),
                                                          ("test", self.test)) if s is not None))
        if self.input_shape:
            parts.append(f"input {tuple(self.input_shape)}")
        return f"DataBundle({', '.join(parts)})"


# -- named datasets: a registry that data/ fills with the built-ins ------------------------------
DATASETS: dict[str, str] = {}  # name -> one-line description, in registration order
_LOADERS: dict[str, Callable] = {}


def register_dataset(name: str, description: str):
    """Decorator: make `load_dataset(name)` call the decorated ``loader(seed=, flatten=, **options) -> DataBundle``.

    Example: ``@register_dataset("moons", "two half-moons, classification")``
    """
    def add(loader: Callable) -> Callable:
        DATASETS[name] = description
        _LOADERS[name] = loader
        return loader

    return add


def load_dataset(name: str, *, seed: int = 0, flatten: bool = True, **options) -> DataBundle:
    """A named dataset (built-in or registered), with its options checked.

    Example: ``load_dataset("spirals", noise=0.1)``
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise BigModelError(f"Unknown dataset '{name}'; choose one of: "
                            f"{', '.join(sorted(DATASETS))}{_did_you_mean(key, DATASETS)}.")
    allowed = [p for p in inspect.signature(_LOADERS[key]).parameters if p not in ("seed", "flatten")]
    for opt in options:
        if opt not in allowed:
            have = f"its options are: {', '.join(allowed)}" if allowed else "it takes no options"
            raise BigModelError(f"Unknown option '{opt}' for dataset '{key}'; {have}{_did_you_mean(opt, allowed)}.")
    return _LOADERS[key](seed=seed, flatten=flatten, **options)


# -- adapters -----------------------------------------------------------------------------------
def as_bundle(data, *, name: str = "data", task: str | None = None, val_fraction: float = 0.15,
              test_fraction: float = 0.15, seed: int = 0) -> DataBundle:
    """Whatever the user has — a dataset name, DataBundle, (X, y), Dataset, DataLoader or dict of splits — as a
    DataBundle.

    Example: ``as_bundle((X, y)).train  # 70% of the rows, chosen by a seeded permutation``
    """
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, str):
        return load_dataset(data, seed=seed)
    fractions = (val_fraction, test_fraction)
    if isinstance(data, dict):
        for key in data:
            if key not in ("train", "val", "test"):
                raise BigModelError(f"Unknown key '{key}' in the data dict; use train, val and test"
                                    f"{_did_you_mean(str(key), ('train', 'val', 'test'))}.")
        if data.get("train") is None:
            raise BigModelError("The data dict has no 'train' entry; give train (and optionally val and test).")
        splits = {k: _to_split(v, f"data['{k}']") if v is not None else None for k, v in data.items()}
    elif isinstance(data, (Split, DataLoader)):
        splits = {"train": _to_split(data, "data")}
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        parts = random_split(data, _sizes(len(data), *fractions), generator=torch.Generator().manual_seed(seed))
        splits = {k: _dataset_split(p) if len(p) else None for k, p in zip(("train", "val", "test"), parts)}
    elif _is_xy(data):
        whole = Split(*data)  # validates lengths and converts dtypes once
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
        splits = {k: Split(whole.X[i], whole.y[i]) if len(i) else None
                  for k, i in zip(("train", "val", "test"), order.split(_sizes(len(whole), *fractions)))}
    else:
        raise _unsupported(data)
    return _bundle(name, splits, task)


def _to_split(value, where: str) -> Split:
    if isinstance(value, Split):
        return value
    if isinstance(value, DataLoader):
        return Split(loader=value)
    if isinstance(value, Dataset) and not isinstance(value, IterableDataset):
        return _dataset_split(value)
    if _is_xy(value):
        return Split(*value)
    raise _unsupported(value, where)


def _dataset_split(ds: Dataset) -> Split:
    """In memory when that is exact and cheap (see _MEMORY_*), else streamed through a DataLoader."""
    if (view := _tensor_view(ds)) is not None:
        return Split(*view)
    try:
        n = len(ds)
        t0 = time.perf_counter()
        a, b = ds[0], ds[0]
        per_item = (time.perf_counter() - t0) / 2
    except Exception:
        return Split(dataset=ds)
    fixed = (isinstance(a, (tuple, list)) and len(a) == 2 and torch.is_tensor(a[0])
             and torch.equal(a[0], b[0]) and torch.equal(torch.as_tensor(a[1]), torch.as_tensor(b[1])))
    small = n <= _MEMORY_MAX_ITEMS and per_item * n <= _MEMORY_MAX_SECONDS
    if fixed and small and a[0].numel() * a[0].element_size() * n <= _MEMORY_MAX_BYTES:
        return Split(*Split(dataset=ds).tensors())
    return Split(dataset=ds)


def _tensor_view(ds):
    """(X, y) of a TensorDataset, or of a Subset of one, without reading items one by one."""
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        return ds.tensors
    if isinstance(ds, Subset):
        inner = _tensor_view(ds.dataset)
        if inner is not None:
            idx = torch.as_tensor(ds.indices, dtype=torch.long)
            return inner[0][idx], inner[1][idx]
    return None


def _bundle(name: str, splits: dict, task: str | None) -> DataBundle:
    train = splits["train"]
    x, y = (train.X[:2], train.y[:2]) if train.X is not None else next(iter(train.batches(2, "cpu")))
    if task is None:
        task = ("regression" if y.is_floating_point() else
                "language-model" if not x.is_floating_point() and y.dim() >= 2 and y.shape == x.shape else
                "classification")
    elif task not in TASKS:
        raise BigModelError(f"Unknown task '{task}'; choose one of: {', '.join(TASKS)}{_did_you_mean(task, TASKS)}.")
    num_classes = None
    if task != "regression":
        memory = [s for s in splits.values() if s is not None and s.X is not None and len(s)]
        if memory:  # one more than the largest label (or token id) seen in any split
            num_classes = 1 + max(int(t.max()) for s in memory
                                  for t in ((s.y, s.X) if task == "language-model" else (s.y,)))
        else:
            num_classes = _declared_classes(train.dataset if train.dataset is not None else train.loader.dataset)
    return DataBundle(name, train, splits.get("val"), splits.get("test"), task=task, num_classes=num_classes,
                      input_shape=tuple(x.shape[1:]))


def _declared_classes(ds) -> int | None:
    """torchvision-style `classes` or `targets`, looking through Subset wrappers; None if unknown."""
    while ds is not None and not hasattr(ds, "classes") and not hasattr(ds, "targets"):
        ds = getattr(ds, "dataset", None)
    if ds is None:
        return None
    return len(ds.classes) if hasattr(ds, "classes") else int(torch.as_tensor(ds.targets).max()) + 1


# -- helpers ----------------------------------------------------------------------------------
def split_arrays(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> list:
    """[(X, y)] for train/val/test: 70/15/15 by a seeded permutation."""
    order = rng.permutation(len(X))
    n_train, n_val, _ = _sizes(len(X), 0.15, 0.15)
    return [(X[i], y[i]) for i in np.split(order, [n_train, n_train + n_val])]


def _sizes(n: int, val_fraction: float, test_fraction: float) -> list[int]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise BigModelError(f"val_fraction and test_fraction must be in [0, 1) and sum to less than 1; "
                            f"got {val_fraction} and {test_fraction}.")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise BigModelError(f"{n} samples are too few to split into train/val/test; pass more data or "
                            "val_fraction=0, test_fraction=0.")
    return [n - n_val - n_test, n_val, n_test]


def _tensor(a, what: str) -> torch.Tensor:
    try:
        t = a.detach() if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))
    except (TypeError, ValueError, RuntimeError):
        raise BigModelError(f"Cannot turn {what} (a {type(a).__name__}) into a tensor; "
                            "pass numbers as a tensor or numpy array.") from None
    if t.dim() == 0:
        raise BigModelError(f"{what} is a single number; it needs one row per sample.")
    return t.float() if t.dtype == torch.float64 else t  # models are float32; float64 inputs would not match them


def _pair(batch, device: torch.device, non_blocking: bool = False):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise BigModelError("Each batch must be an (inputs, targets) pair but this data gives a "
                            f"{type(batch).__name__}; make the Dataset's __getitem__ return (x, y).")
    return tuple(_tensor(t, "a batch").to(device, non_blocking=non_blocking) for t in batch)


def _normal(device) -> torch.device:
    """cuda -> cuda:<current>, mps -> mps:0, so the cache has one key per physical device."""
    device = torch.device(device)
    if device.index is None and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    if device.index is None and device.type == "mps":
        return torch.device("mps", 0)
    return device


def _length(obj) -> int:
    try:
        return len(obj)
    except TypeError:
        raise BigModelError("This DataLoader's dataset has no length; "
                            "give it a __len__ so epochs can be counted.") from None


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BigModelError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return batch_size


def _is_xy(data) -> bool:
    if isinstance(data, tuple) and len(data) != 2:
        raise BigModelError(f"An (X, y) tuple needs 2 items but this one has {len(data)}; pass (inputs, targets).")
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(
        torch.is_tensor(v) or isinstance(v, (np.ndarray, list)) for v in data)


def _unsupported(data, where: str = "data") -> BigModelError:
    return BigModelError(f"Cannot use a {type(data).__name__} as {where}; pass a dataset name (one of: "
                         f"{', '.join(sorted(DATASETS))}), an (X, y) tuple, a Dataset, a DataLoader "
                         "or a dict with train/val/test.")


def _did_you_mean(word: str, choices) -> str:
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
