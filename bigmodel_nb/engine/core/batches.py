"""The batch protocol. A batch is ``(inputs, targets)``, or a dict of tensors — the Hugging Face
convention: the model is called as ``model(**batch)`` and the targets are its ``labels`` (or ``label``).
A `Split` holds one split, a `DataBundle` the three with what a model needs to know, and a registry
maps dataset names to their loaders (`engine.data` registers the built-ins). `engine.core.adapters`
turns what users have into these.

Small data lives as tensors (or a dict of tensors) that are copied to the training device once and
batched there by index, with no DataLoader in the way; big or lazy data streams through a DataLoader.
The shuffle order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly.

    for batch in load_dataset("digits").train.batches(64, "cpu", shuffle=True, seed=0, epoch=1): ...
"""
from __future__ import annotations

import difflib
import inspect
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from .errors import BigModelError

TASKS = ("classification", "regression", "language-model")
LABEL_KEYS = ("labels", "label")  # where a dict batch keeps its targets (Hugging Face: labels)
IGNORE_INDEX = -100  # a token target to leave out of the loss and the metrics, as Hugging Face does


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch, a pure function of (seed, epoch), on the CPU.

    Example: ``epoch_order(5, seed=0, epoch=1)  # tensor([...]) the same on every machine``
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


# -- one batch ---------------------------------------------------------------------------------------
def targets_of(batch) -> torch.Tensor | None:
    """The targets of a batch: the second item of a pair, or a dict's ``labels`` / ``label`` (or None)."""
    if isinstance(batch, Mapping):
        return next((batch[k] for k in LABEL_KEYS if k in batch), None)
    return batch[1]


def batch_len(batch) -> int:
    """Samples in a batch (the first dimension of its first tensor). Example: ``batch_len((x, y)) == len(x)``"""
    if isinstance(batch, Mapping):
        return next(v.shape[0] for v in batch.values() if torch.is_tensor(v))
    return batch[0].shape[0]


def take(batch, index):
    """Rows `index` (a slice or index tensor) of a batch, pair or dict alike. Example: ``take((x, y), slice(0, 8))``"""
    if torch.is_tensor(index) and index.dim() == 1 and index.dtype in (torch.int64, torch.int32):
        def pick(t):  # the gather of t[index] at half its cost; the index follows the data's device, as t[index] does
            return t.index_select(0, index.to(t.device))
    else:  # a slice, a bool mask, a list
        def pick(t):
            return t[index]
    if isinstance(batch, Mapping):
        return {k: pick(v) if torch.is_tensor(v) else v for k, v in batch.items()}
    return tuple(pick(t) for t in batch)


def first_input(batch) -> torch.Tensor:
    """The tensor that stands for a batch's inputs: x of a pair, a dict's ``input_ids`` (or its first tensor)."""
    if isinstance(batch, Mapping):
        if "input_ids" in batch:
            return batch["input_ids"]
        return next(v for k, v in batch.items() if torch.is_tensor(v) and k not in LABEL_KEYS)
    return batch[0]


def to_device(batch, device: torch.device, non_blocking: bool = False):
    """A batch from a DataLoader, checked and on `device`: a pair of tensors or a dict of them."""
    if isinstance(batch, Mapping):  # a dict, or a Hugging Face BatchEncoding
        return {k: to_tensor(v, f"batch['{k}']").to(device, non_blocking=non_blocking) for k, v in batch.items()
                if torch.is_tensor(v) or isinstance(v, (np.ndarray, list)) and _numeric(v)}
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise BigModelError("Each batch must be an (inputs, targets) pair or a dict with 'labels', but this data "
                            f"gives a {type(batch).__name__}; make the Dataset's __getitem__ return (x, y) or a dict.")
    return tuple(to_tensor(t, "a batch").to(device, non_blocking=non_blocking) for t in batch)


def _numeric(values) -> bool:
    try:
        return np.asarray(values).dtype.kind in "biuf"
    except (ValueError, TypeError):  # ragged lists
        return False


class Split:
    """One split. In memory: `X` a tensor or a dict of tensors (the columns of dict batches) and `y` the
    targets (None when a dict `X` holds them as ``labels``), moved to the training device ONCE, cached
    per device and batched there by index. Or a torch Dataset/DataLoader, streamed through a DataLoader
    (pinned memory when the target device is cuda).

    Example: ``Split(torch.randn(100, 4), torch.randint(0, 3, (100,))).num_batches(32)  # 4``
    """

    def __init__(self, X=None, y=None, *, dataset=None, loader=None, num_workers: int = 0):
        pair_or_dict = X is not None and (y is not None or isinstance(X, Mapping))
        if sum(v is not None for v in (X, dataset, loader)) != 1 or (X is not None and not pair_or_dict):
            raise BigModelError("A Split needs exactly one of: X and y (or a dict X), dataset=..., or loader=....")
        if isinstance(dataset, IterableDataset):
            raise BigModelError("An IterableDataset has no indices to shuffle or split; "
                                "wrap it in a DataLoader instead.")
        self.X = self.y = None
        self.dataset, self.loader, self.num_workers = dataset, loader, num_workers
        self.class_names: list[str] | None = None  # the label names the source declares (Hugging Face ClassLabel)
        self._cache: dict[torch.device, tuple] = {}
        self._memory: Split | None = None  # a Dataset/DataLoader materialised by tensors()
        if X is None:
            return
        if isinstance(X, Mapping):
            X = {k: to_tensor(v, f"X['{k}']") for k, v in X.items()}
            if y is not None:
                X["labels"] = to_tensor(y, "y")
            lengths = {k: len(v) for k, v in X.items()}
            if len(set(lengths.values())) != 1:
                raise BigModelError(f"The columns have different lengths ({lengths}); they must match.")
            self.X = {k: (v.long() if k in LABEL_KEYS and not v.is_floating_point() else v) for k, v in X.items()}
            return
        X, y = to_tensor(X, "X"), to_tensor(y, "y")
        if len(X) != len(y):
            raise BigModelError(f"X has {len(X)} samples but y has {len(y)}; they must match.")
        self.X, self.y = X, (y if y.is_floating_point() else y.long())  # cross_entropy wants int64

    @property
    def in_memory(self) -> bool:
        return self.X is not None

    def __len__(self) -> int:
        if self.X is not None:
            return len(next(iter(self.X.values()))) if isinstance(self.X, Mapping) else len(self.X)
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
        """Yield batches (pairs or dicts) on `device`, skipping the first `skip` batches of the epoch's order.

        Example: ``for x, y in bundle.train.batches(64, "cpu", shuffle=True, seed=0, epoch=3): ...``
        A user DataLoader keeps its own order (shuffle/seed/epoch are ignored for it).
        """
        bs, device = _check_batch_size(batch_size), _normal(device)
        if self.loader is not None:  # non-blocking: from a loader's pinned memory the copy overlaps the compute
            for batch in itertools.islice(self.loader, skip, None):
                yield to_device(batch, device, non_blocking=device.type == "cuda")
            return
        n = len(self)
        # Drawn on the CPU and then moved, so CPU and GPU runs see the same order.
        order = epoch_order(n, seed, epoch) if shuffle else None
        if self.X is not None:
            whole = self._on(device)
            order = order.to(device) if order is not None else None
            if isinstance(whole, Mapping):
                for i in range(skip * bs, n, bs):
                    yield take(whole, slice(i, i + bs) if order is None else order[i:i + bs])
                return
            X, y = whole
            if order is None:  # slices are views; index gathers make the shuffled copy
                for i in range(skip * bs, n, bs):
                    yield X[i:i + bs], y[i:i + bs]
                return
            # One slice of the order per batch; index_select is the gather of X[idx] at half its cost.
            for idx in order[skip * bs:].split(bs) if skip * bs < n else ():
                yield X.index_select(0, idx), y.index_select(0, idx)
            return
        indices = (order if order is not None else torch.arange(n))[skip * bs:].tolist()
        pin = device.type == "cuda"  # pinned host memory lets the copy overlap the compute
        loader = DataLoader(self.dataset, batch_size=bs, sampler=indices, num_workers=self.num_workers, pin_memory=pin)
        for batch in loader:
            yield to_device(batch, device, non_blocking=pin)

    def tensors(self, device=None):
        """The whole split in memory — ``(X, y)``, or a dict of columns — materialised once if it is a
        Dataset. Example: ``X, y = bundle.test.tensors()``"""
        if self.X is None:
            if self._memory is None:
                parts = list(self.batches(1024, "cpu"))
                if isinstance(parts[0], Mapping):
                    self._memory = Split({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
                else:
                    self._memory = Split(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
            return self._memory.tensors(device)
        whole = self.X if isinstance(self.X, Mapping) else (self.X, self.y)
        return whole if device is None else self._on(_normal(device))

    def _on(self, device: torch.device):
        here = next(iter(self.X.values())).device if isinstance(self.X, Mapping) else self.X.device
        if here == device:
            return self.X if isinstance(self.X, Mapping) else (self.X, self.y)
        if device not in self._cache:  # the one host-to-device copy of this split
            if isinstance(self.X, Mapping):
                self._cache[device] = {k: v.to(device) for k, v in self.X.items()}
            else:
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
                            f"{', '.join(sorted(DATASETS))}{did_you_mean(key, DATASETS)}.")
    allowed = [p for p in inspect.signature(_LOADERS[key]).parameters if p not in ("seed", "flatten")]
    for opt in options:
        if opt not in allowed:
            have = f"its options are: {', '.join(allowed)}" if allowed else "it takes no options"
            raise BigModelError(f"Unknown option '{opt}' for dataset '{key}'; {have}{did_you_mean(opt, allowed)}.")
    return _LOADERS[key](seed=seed, flatten=flatten, **options)


# -- helpers ----------------------------------------------------------------------------------
def split_arrays(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> list:
    """[(X, y)] for train/val/test: 70/15/15 by a seeded permutation."""
    order = rng.permutation(len(X))
    n_train, n_val, _ = sizes(len(X), 0.15, 0.15)
    return [(X[i], y[i]) for i in np.split(order, [n_train, n_train + n_val])]


def sizes(n: int, val_fraction: float, test_fraction: float) -> list[int]:
    """[train, val, test] sample counts for these fractions of `n` (at least one to train on)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise BigModelError(f"val_fraction and test_fraction must be in [0, 1) and sum to less than 1; "
                            f"got {val_fraction} and {test_fraction}.")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise BigModelError(f"{n} samples are too few to split into train/val/test; pass more data or "
                            "val_fraction=0, test_fraction=0.")
    return [n - n_val - n_test, n_val, n_test]


def to_tensor(a, what: str) -> torch.Tensor:
    """A tensor from a tensor, numpy array, list or pandas object: float64 becomes float32 (what models
    are made of), booleans and other integers stay as they are. Example: ``to_tensor(df[["a", "b"]], "X")``"""
    if hasattr(a, "select_dtypes"):  # a pandas DataFrame: say which columns are not numbers
        text = [str(c) for c in a.select_dtypes(exclude=["number", "bool"]).columns]
        if text:
            raise BigModelError(f"The column{'s' if len(text) > 1 else ''} {', '.join(map(repr, text[:4]))} of {what} "
                                "are not numbers; encode them first (e.g. pd.get_dummies(df)) or drop them.")
    if hasattr(a, "to_numpy"):  # pandas DataFrame / Series
        a = a.to_numpy()
    try:
        if torch.is_tensor(a):
            t = a.detach()
        else:
            arr = np.asarray(a)
            t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())  # pandas gives read-only views
    except (TypeError, ValueError, RuntimeError):
        raise BigModelError(f"Cannot turn {what} (a {type(a).__name__}) into a tensor; "
                            "pass numbers as a tensor or numpy array.") from None
    if t.dim() == 0:
        raise BigModelError(f"{what} is a single number; it needs one row per sample.")
    return t.float() if t.dtype == torch.float64 else t  # models are float32; float64 inputs would not match them


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


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of `choices`, or ''."""
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
