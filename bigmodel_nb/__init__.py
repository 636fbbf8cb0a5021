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
    "detect_devices": "engine.device", "default_device": "engine.device", "set_default_device": "engine.device",
    "load_dataset": "engine.data", "DataBundle": "engine.data", "DATASETS": "engine.data",
    "Run": "engine.run", "TrainConfig": "engine.trainer", "Callback": "engine.trainer",
    "fit": "engine", "BigModelError": "engine.errors",
    "save_weights": "engine.checkpoint", "load_weights": "engine.checkpoint",
    "TrainingDashboard": "ui.dashboard",
}
__all__ = ["train", "lr_find", "compare_optimizers", "load_ipython_extension", "unload_ipython_extension", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'bigmodel_nb' has no attribute '{name}'")


def train(model, data, *, background: bool = False, quiet: bool = False, name: str = "run", callbacks=(),
          optimizer=None, **options):
    """Train with the live dashboard when in a notebook (text progress elsewhere); same options as %%train.

    Example: ``run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3)``
    """
    from .engine.trainer import TrainConfig
    from .ui.controls import launch

    return launch(model, data, TrainConfig(**options), name=name, callbacks=callbacks, background=background,
                  quiet=quiet, optimizer=optimizer)


def lr_find(model, data, *, show: bool = True, **options):
    """LR range test; in a notebook it also draws the loss-vs-LR curve with the suggestion.

    Example: ``bigmodel_nb.lr_find(model, "digits", optimizer="adam").suggestion``
    """
    from .engine.lr_find import lr_find as sweep

    result = sweep(model, data, **options)
    if show:
        from .ui.dashboard import show_figure
        from .ui.figures import lr_finder_figure

        tip = f"suggested lr {result.suggestion:.2g}" if result.suggestion else "no suggestion: " + "; ".join(result.notes)
        if result.min_loss_lr:
            tip += f" (lowest loss at lr {result.min_loss_lr:.2g})"
        show_figure(lr_finder_figure(result), f"LR range test over {len(result.lrs)} steps: {tip}")
    return result


def compare_optimizers(model, data, optimizers=("sgd", "momentum", "rmsprop", "adam", "adamw"), **options):
    """Same initial weights, same batches, one curve per optimizer (live in a notebook).

    Example: ``bigmodel_nb.compare_optimizers(model, "digits", ["sgd", "adam"], epochs=5).table()``
    """
    from .engine.compare import OptimizerComparison
    from .ui.compare import ComparisonDashboard

    return ComparisonDashboard(OptimizerComparison(model, data, optimizers, **options)).show().run()


def load_ipython_extension(ip) -> None:
    """``%load_ext bigmodel_nb``: register the magics and print the device banner."""
    from .engine.device import default_device, detect_devices
    from .magics import BigModelMagics

    ip.register_magics(BigModelMagics)
    device = default_device()
    info = next((d for d in detect_devices() if d.name == str(device) or d.name.startswith(f"{device}:")), None)
    print(f"bigmodel_nb {__version__} · {info.banner() if info else device}")


def unload_ipython_extension(ip) -> None:
    """``%unload_ext bigmodel_nb``: remove the magics this extension registered."""
    from .magics import BigModelMagics

    magics = ip.magics_manager.magics
    for kind in ("line", "cell"):
        for name in list(BigModelMagics.magics[kind]):
            magics[kind].pop(name, None)
    ip.magics_manager.registry.pop("BigModelMagics", None)
