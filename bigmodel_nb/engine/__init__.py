"""The engine: plain PyTorch, usable from scripts and tests (no IPython, widgets or plotly here).
`core/` is the training kernel; `data/`, `inspect/`, `compare/`, `compress/`, `transfer/` and `scale/`
build on it. Importing the engine registers the built-in datasets and the memory estimate.

    from bigmodel_nb.engine import Run, TrainConfig; Run(model, "digits", TrainConfig(epochs=3)).run_here()
"""
from . import data  # noqa: F401  (registers the built-in datasets with the core)
from .core.adapters import as_bundle
from .core.batches import DATASETS, DataBundle, load_dataset
from .core.callbacks import Callback, CallbackList
from .core.checkpoint import load_training_state, load_weights, save_training_state, save_weights
from .core.config import TrainConfig
from .core.device import (
    AmpPolicy,
    DeviceInfo,
    default_device,
    detect_devices,
    resolve_amp,
    resolve_device,
    set_default_device,
)
from .core.errors import BigModelError
from .core.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from .core.run import Run, runs
from .inspect import summary  # noqa: F401  (registers %summary's memory estimate for out-of-memory help)

__all__ = ["DATASETS", "OPTIMIZERS", "SCHEDULES", "AmpPolicy", "BigModelError", "Callback", "CallbackList",
           "DataBundle", "DeviceInfo", "Run", "TrainConfig", "as_bundle", "default_device", "detect_devices",
           "load_dataset", "load_training_state", "load_weights", "make_optimizer", "make_schedule", "resolve_amp",
           "resolve_device", "runs", "save_training_state", "save_weights", "set_default_device"]
