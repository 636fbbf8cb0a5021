"""Adapters: whatever a user already has, as a `DataBundle` — a dataset name; ``(X, y)`` of tensors, numpy
arrays (any dtype) or pandas objects; a pandas frame and its target column; a dict of columns; a torch
`Dataset` or `DataLoader` whose items are pairs or dicts (a tokenizer's collator as `collate_fn` works);
a Hugging Face `datasets.Dataset` or `DatasetDict`; or a dict of splits (``validation`` is the val split).

    as_bundle((df[features], df["target"])).train  # 70% of the rows, chosen by a seeded permutation
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset, random_split

from .batches import (
    DATASETS,
    TASKS,
    DataBundle,
    Split,
    did_you_mean,
    first_input,
    load_dataset,
    sizes,
    take,
    targets_of,
)
from .errors import BigModelError

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}  # Hugging Face: validation
# A Dataset is copied into memory (the fast path) only if it is this small, cheap to read and
# gives the same item twice (so random augmentation is never frozen into one copy).
_MEMORY_MAX_ITEMS = 200_000
_MEMORY_MAX_BYTES = 1 << 30
_MEMORY_MAX_SECONDS = 10.0


def as_bundle(data, *, name: str = "data", task: str | None = None, target: str | None = None,
              val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> DataBundle:
    """Whatever the user has as a DataBundle (see the module docstring). `target`: the label column of a
    pandas frame or of a Hugging Face dataset.

    Example: ``as_bundle(df, target="price").task  # "regression"``
    """
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, str):
        return load_dataset(data, seed=seed)
    if target is not None:
        data = _with_target(data, target)
    fractions = (val_fraction, test_fraction)
    if isinstance(data, Mapping) and data and all(str(k) in SPLIT_NAMES for k in data):  # incl. a DatasetDict
        splits = {}
        for key, value in data.items():
            if SPLIT_NAMES[str(key)] in splits:
                raise BigModelError(f"The data has two validation splits ({', '.join(map(str, data))}); keep one.")
            splits[SPLIT_NAMES[str(key)]] = _to_split(value, f"data['{key}']") if value is not None else None
        if splits.get("train") is None:
            raise BigModelError("The data dict has no 'train' entry; give train (and optionally val and test).")
    elif isinstance(data, Mapping) and not _columns(data):
        key = next(str(k) for k in data if str(k) not in SPLIT_NAMES)
        raise BigModelError(f"Unknown key '{key}' in the data dict; use train, val (or validation) and test"
                            f"{did_you_mean(key, SPLIT_NAMES)}, or give columns of equal length.")
    elif isinstance(data, (Split, DataLoader)):
        splits = {"train": _to_split(data, "data")}
    elif _is_hf_dataset(data) or isinstance(data, Mapping):
        splits = _split_rows(_to_split(data, "data"), fractions, seed)
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        parts = random_split(data, sizes(len(data), *fractions), generator=torch.Generator().manual_seed(seed))
        splits = {k: _dataset_split(p) if len(p) else None for k, p in zip(("train", "val", "test"), parts)}
    elif _is_xy(data):
        splits = _split_rows(Split(*data), fractions, seed)  # validates lengths and converts dtypes once
    else:
        raise _unsupported(data)
    return _bundle(name, splits, task)


def _split_rows(whole: Split, fractions, seed: int) -> dict:
    """Train/val/test of an in-memory split by a seeded permutation of its rows."""
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
    rows = dict(zip(("train", "val", "test"), order.split(sizes(len(whole), *fractions))))
    if isinstance(whole.X, Mapping):
        splits = {k: Split(take(whole.X, i)) if len(i) else None for k, i in rows.items()}
    else:
        splits = {k: Split(whole.X[i], whole.y[i]) if len(i) else None for k, i in rows.items()}
    if splits["train"] is not None:
        splits["train"].class_names = whole.class_names
    return splits


def _with_target(data, target: str):
    """A pandas frame as (features, target column); a Hugging Face dataset with `target` as its labels."""
    columns = getattr(data, "column_names", None)
    columns = list(getattr(data, "columns", []) if columns is None else columns)
    if not columns:
        raise BigModelError(f"--target names a column, but this data is a {type(data).__name__} without columns; "
                            "pass a pandas DataFrame or a Hugging Face dataset, or (X, y).")
    if target not in columns:
        raise BigModelError(f"No column '{target}' in the data{did_you_mean(target, map(str, columns))}; "
                            f"its columns are: {', '.join(map(str, columns[:12]))}.")
    if _is_hf_dataset(data):
        return data.rename_column(target, "labels") if target != "labels" else data
    return data.drop(columns=[target]), data[target]


def _to_split(value, where: str) -> Split:
    if isinstance(value, Split):
        return value
    if isinstance(value, DataLoader):
        return Split(loader=value)
    if _is_hf_dataset(value):
        return _hf_split(value)
    if isinstance(value, Dataset) and not isinstance(value, IterableDataset):
        return _dataset_split(value)
    if isinstance(value, Mapping) and _columns(value):
        return Split(dict(value))
    if _is_xy(value):
        return Split(*value)
    raise _unsupported(value, where)


def _columns(data: Mapping) -> bool:
    """A dict of columns (tensors, arrays or lists, one row per sample), as opposed to a dict of splits."""
    return bool(data) and all(torch.is_tensor(v) or isinstance(v, (np.ndarray, list)) or hasattr(v, "to_numpy")
                              for v in data.values())


def _is_hf_dataset(data) -> bool:
    return hasattr(data, "with_format") and hasattr(data, "column_names") and hasattr(data, "features")


def _hf_split(ds) -> Split:
    """A Hugging Face `datasets.Dataset`: its numeric columns as tensors (text columns are dropped, as the
    Trainer does); rows of different lengths need padding or a DataLoader with a collator."""
    numeric = [c for c in ds.column_names if _numeric_feature(ds.features[c])]
    if not numeric:
        raise BigModelError(f"This dataset has no numeric columns ({', '.join(ds.column_names)}); tokenize the "
                            "text first, e.g. ds.map(lambda b: tokenizer(b['text'], padding='max_length', "
                            "truncation=True), batched=True).")
    try:
        columns = ds.with_format("torch", columns=numeric)[:]
    except Exception:  # ragged rows do not stack
        columns = None
    ragged = [c for c in numeric if columns is None or not torch.is_tensor(columns.get(c))]
    if ragged:
        raise BigModelError(f"The column '{ragged[0]}' has rows of different lengths; pad them (tokenizer(..., "
                            "padding='max_length')) or pass a DataLoader with collate_fn=DataCollatorWithPadding(...).")
    if "label" in columns and "labels" not in columns:
        columns["labels"] = columns.pop("label")  # what Hugging Face models take
    split = Split(columns)
    feature = next((ds.features[k] for k in ("label", "labels") if k in ds.features), None)
    if type(feature).__name__ == "ClassLabel":  # its names label %evaluate's confusion matrix and gallery
        split.class_names = list(feature.names)
    return split


def _numeric_feature(feature) -> bool:
    """Integer, float or bool values, a class label, or sequences of those."""
    if type(feature).__name__ == "ClassLabel":
        return True
    inner = getattr(feature, "feature", None)  # Sequence / List features
    if inner is not None:
        return _numeric_feature(inner)
    return any(kind in str(getattr(feature, "dtype", "")) for kind in ("int", "float", "bool"))


def _dataset_split(ds: Dataset) -> Split:
    """In memory when that is exact and cheap (see _MEMORY_*), else streamed through a DataLoader; with the
    class names the dataset declares (torchvision's `classes`)."""
    split = _read_dataset(ds)
    split.class_names = _declared_names(ds)
    return split


def _read_dataset(ds: Dataset) -> Split:
    if (view := _tensor_view(ds)) is not None:
        return Split(*view)
    try:
        n = len(ds)
        t0 = time.perf_counter()
        a, b = ds[0], ds[0]
        per_item = (time.perf_counter() - t0) / 2
    except Exception:
        return Split(dataset=ds)
    if isinstance(a, Mapping):  # dict items: the same item twice, tensors only
        fixed = a.keys() == b.keys() and all(torch.is_tensor(a[k]) and torch.equal(a[k], b[k]) for k in a)
        size = sum(v.numel() * v.element_size() for v in a.values()) if fixed else 0
    else:
        fixed = (isinstance(a, (tuple, list)) and len(a) == 2 and torch.is_tensor(a[0])
                 and torch.equal(a[0], b[0]) and torch.equal(torch.as_tensor(a[1]), torch.as_tensor(b[1])))
        size = a[0].numel() * a[0].element_size() if fixed else 0
    small = n <= _MEMORY_MAX_ITEMS and per_item * n <= _MEMORY_MAX_SECONDS
    if fixed and small and size * n <= _MEMORY_MAX_BYTES:
        whole = Split(dataset=ds).tensors()
        return Split(whole) if isinstance(whole, Mapping) else Split(*whole)
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
    sample = take(train.tensors(), slice(0, 2)) if train.in_memory else next(iter(train.batches(2, "cpu")))
    x, y = first_input(sample), targets_of(sample)
    if y is None and task is None:  # dict batches without labels: the model must compute its own loss
        task = "language-model" if not x.is_floating_point() else "regression"
    if task is None:
        task = ("regression" if y.is_floating_point() else
                "language-model" if not x.is_floating_point() and y.dim() >= 2 and y.shape == x.shape else
                "classification")
    elif task not in TASKS:
        raise BigModelError(f"Unknown task '{task}'; choose one of: {', '.join(TASKS)}{did_you_mean(task, TASKS)}.")
    num_classes = None
    if task != "regression":
        memory = [s.tensors() for s in splits.values() if s is not None and s.in_memory and len(s)]
        if memory:  # one more than the largest label (or token id) seen in any split
            num_classes = 1 + max(int(t.max()) for s in memory for t in _class_tensors(s, task) if t.numel())
        else:
            num_classes = _declared_classes(train.dataset if train.dataset is not None else train.loader.dataset)
    names = train.class_names or (_declared_names(train.loader.dataset) if train.loader is not None else None)
    return DataBundle(name, train, splits.get("val"), splits.get("test"), task=task, num_classes=num_classes,
                      input_shape=tuple(x.shape[1:]), info={"class_names": names} if names else {})


def _class_tensors(whole, task: str) -> list[torch.Tensor]:
    targets, inputs = targets_of(whole), first_input(whole)
    found = [t for t in ((targets, inputs) if task == "language-model" else (targets,)) if t is not None]
    return [t for t in found if not t.is_floating_point()]


def _declared_classes(ds) -> int | None:
    """torchvision-style `classes` or `targets`, looking through Subset wrappers; None if unknown."""
    while ds is not None and not hasattr(ds, "classes") and not hasattr(ds, "targets"):
        ds = getattr(ds, "dataset", None)
    if ds is None:
        return None
    return len(ds.classes) if hasattr(ds, "classes") else int(torch.as_tensor(ds.targets).max()) + 1


def _declared_names(ds) -> list[str] | None:
    """torchvision-style `classes` (a list of names), looking through Subset wrappers."""
    while ds is not None and not hasattr(ds, "classes"):
        ds = getattr(ds, "dataset", None)
    names = getattr(ds, "classes", None)
    return [str(c) for c in names] if isinstance(names, (list, tuple)) and names else None


def _is_xy(data) -> bool:
    if isinstance(data, tuple) and len(data) != 2:
        raise BigModelError(f"An (X, y) tuple needs 2 items but this one has {len(data)}; pass (inputs, targets).")
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(
        torch.is_tensor(v) or isinstance(v, (np.ndarray, list)) or hasattr(v, "to_numpy") for v in data)


def _unsupported(data, where: str = "data") -> BigModelError:
    if hasattr(data, "select_dtypes"):  # a pandas DataFrame on its own: which column is the target?
        return BigModelError(f"A DataFrame as {where} needs its target column: pass --target COLUMN "
                             "(target='COLUMN'), or (df[features], df['COLUMN']).")
    return BigModelError(f"Cannot use a {type(data).__name__} as {where}; pass a dataset name (one of: "
                         f"{', '.join(sorted(DATASETS))}), an (X, y) tuple of tensors, arrays or pandas objects, a "
                         "Dataset, a DataLoader, a Hugging Face dataset or a dict with train/val/test.")

