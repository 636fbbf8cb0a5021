"""bigmodel_nb: train, inspect, compare and compress PyTorch models from Jupyter cells.

``%load_ext bigmodel_nb`` registers the magics. The Python API mirrors them:
``run = bigmodel_nb.train(model, "digits", epochs=5)``.
Imports are lazy so loading the extension does not pull in plotly or build widgets.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    **{name: "api" for name in ("train", "fit", "lr_find", "compare_optimizers", "summary", "grads", "attention",
                                "compress", "evaluate", "runs", "set_log_dir", "sweep", "optimizer_playground")},
    "detect_devices": "engine.core.device", "default_device": "engine.core.device",
    "set_default_device": "engine.core.device",
    "load_dataset": "engine.core.batches", "DataBundle": "engine.core.batches", "DATASETS": "engine.core.batches",
    "Run": "engine.core.run", "TrainConfig": "engine.core.config",
    "Callback": "engine.core.callbacks", "BigModelError": "engine.core.errors",
    "save_weights": "engine.core.checkpoint", "load_weights": "engine.core.checkpoint",
    **{name: "engine.transfer" for name in ("export", "load_from", "replace_head", "freeze", "unfreeze", "Unfreeze",
                                            "trainable_counts", "class_subset")},
    "TrainingDashboard": "ui.dashboard", "Evaluation": "engine.evaluate", "Runs": "engine.tracking",
    "Sweep": "engine.sweep", "Playground": "engine.compare.playground",
    **{name: "engine.compress" for name in ("CompressionReport", "Prune", "Quantize", "Finetune", "Distill")},
}
__all__ = ["load_ipython_extension", "unload_ipython_extension", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'bigmodel_nb' has no attribute '{name}'")


def load_ipython_extension(ip) -> None:
    """``%load_ext bigmodel_nb``: register the magics and print the device banner."""
    from .engine.core.device import default_device, detect_devices
    from .inspect_magics import InspectMagics
    from .magics import BigModelMagics
    from .sweep_magics import SweepMagics

    ip.register_magics(BigModelMagics)
    ip.register_magics(SweepMagics)
    ip.register_magics(InspectMagics)
    device = default_device()
    info = next((d for d in detect_devices() if d.name == str(device) or d.name.startswith(f"{device}:")), None)
    print(f"bigmodel_nb {__version__} · {info.banner() if info else device}")


def unload_ipython_extension(ip) -> None:
    """``%unload_ext bigmodel_nb``: remove the magics this extension registered."""
    from .inspect_magics import InspectMagics
    from .magics import BigModelMagics
    from .sweep_magics import SweepMagics

    magics = ip.magics_manager.magics
    for cls in (BigModelMagics, SweepMagics, InspectMagics):
        for kind in ("line", "cell"):
            for name in list(cls.magics[kind]):
                magics[kind].pop(name, None)
        ip.magics_manager.registry.pop(cls.__name__, None)
