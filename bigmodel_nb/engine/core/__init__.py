"""The training core every other part of the engine uses: `TrainConfig`, the `Run`, the one `Step`,
the event bus (`Callback`, `CallbackList`), the metrics seam (`Metrics`), the batch protocol
(`Split`, `DataBundle`, `as_bundle`), checkpoints, devices and the run registry (`runs()`).

    run = Run(model, "digits", TrainConfig(epochs=3)).run_here()
"""
from .adapters import as_bundle
from .batches import DATASETS, DataBundle, Split, load_dataset, register_dataset
from .callbacks import Callback, CallbackList
from .config import TrainConfig
from .errors import BigModelError
from .metrics import Metrics, evaluate_model
from .run import Run, runs
from .step import Step

__all__ = ["DATASETS", "BigModelError", "Callback", "CallbackList", "DataBundle", "Metrics", "Run", "Split", "Step",
           "TrainConfig", "as_bundle", "evaluate_model", "load_dataset", "register_dataset", "runs"]
