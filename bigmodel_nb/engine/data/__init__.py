"""Data: the built-in datasets (registered by name in the core's registry) and, from the core, the
batch protocol that turns whatever a user has into a `DataBundle`.

    load_dataset("digits").train.num_batches(64)
"""
from ..core.adapters import as_bundle
from ..core.batches import DATASETS, TASKS, DataBundle, Split, epoch_order, load_dataset, register_dataset
from . import builtin, cifar, images, text  # noqa: F401  (registers the built-ins; cifar imports images first)

__all__ = ["DATASETS", "TASKS", "DataBundle", "Split", "as_bundle", "epoch_order", "load_dataset", "register_dataset"]
