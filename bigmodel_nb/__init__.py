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
    "export": "engine.export", "load_from": "engine.pretrained", "replace_head": "engine.transfer",
    "freeze": "engine.transfer", "unfreeze": "engine.transfer", "Unfreeze": "engine.transfer",
    "trainable_counts": "engine.transfer", "class_subset": "engine.transfer",
    "TrainingDashboard": "ui.dashboard",
    **{name: "engine.compress" for name in ("CompressionReport", "Prune", "Quantize", "Finetune", "Distill")},
}
__all__ = ["train", "lr_find", "compare_optimizers", "summary", "grads", "attention", "compress", "load_ipython_extension", "unload_ipython_extension", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'bigmodel_nb' has no attribute '{name}'")


def train(model, data, *, background: bool = False, quiet: bool = False, name: str = "run", callbacks=(),
          optimizer=None, from_=None, new_head: int | None = None, freeze: str | None = None,
          unfreeze_after: int | None = None, workers: int | None = None, gpus_per_worker: float = 0,
          cluster: str | None = None, strategy: str = "ddp", **options):
    """Train with the live dashboard when in a notebook (text progress elsewhere); same options as %%train
    (``--from`` is ``from_=``; ``workers=N`` trains on Ray Train workers).
    Example: ``run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3)``
    """
    from .engine.trainer import TrainConfig
    from .ui.controls import launch

    if any(v is not None for v in (from_, new_head, freeze, unfreeze_after)):
        from .engine.transfer import prepare

        setup = prepare(model, from_=from_, new_head=new_head, freeze=freeze, unfreeze_after=unfreeze_after)
        callbacks = [*setup.callbacks, *callbacks]

    distributed = None if workers is None else {"workers": workers, "gpus_per_worker": gpus_per_worker,
                                                 "cluster": cluster, "strategy": strategy}
    return launch(model, data, TrainConfig(**options), name=name, callbacks=callbacks, background=background,
                  quiet=quiet, optimizer=optimizer, distributed=distributed)


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


def summary(model, input_shape=None, *, show: bool = True, **options):
    """Parameters, per-layer table, memory estimate and fit (rendered in a notebook); same options as %summary.

    Example: ``bigmodel_nb.summary(model, batch_size=64, precision="bf16").estimate()["total_bytes"]``
    """
    from .engine.summary import summarize

    result = summarize(model, input_shape, **options)
    if show:
        from .ui.summary import show_summary

        show_summary(result)
    return result


def grads(model, data, *, show: bool = True, **options):
    """Gradient flow over a few training steps on a copy (figures and flags in a notebook); same options as %grads.

    Example: ``bigmodel_nb.grads(model, "digits", steps=30).flags``
    """
    from .engine.grads import grads as record

    report = record(model, data, **options)
    if show:
        from .ui.grads import show_gradient_report

        show_gradient_report(report)
    return report


def attention(model, input, *, show: bool = True, **options):
    """Attention maps by layer and head (heatmaps in a notebook); same options as %attention.

    Example: ``bigmodel_nb.attention(gpt, "def f(x):", data="python-stdlib", layer=0).weights(0)``
    """
    from .engine.attention import attention as capture

    result = capture(model, input, **options)
    if show:
        from .ui.attention import show_attention

        show_attention(result, options.get("layer"), options.get("head"))
    return result


def compress(model, data=None, *, show: bool = True, quiet: bool = False, **options):
    """Prune / fine-tune / distill / quantize with a before/after report; same options as %compress.

    Example: ``bigmodel_nb.compress(model, "digits", steps=[Prune(0.5, structured=True), Quantize("int8")])``
    """
    from .engine.compress import compress as run_steps
    from .ui.compress import live_trainer

    report = run_steps(model, data, trainer=live_trainer(quiet=quiet or not show), **options)
    if show:
        from .ui.compress import show_compression_report

        show_compression_report(report)
    return report


def load_ipython_extension(ip) -> None:
    """``%load_ext bigmodel_nb``: register the magics and print the device banner."""
    from .engine.device import default_device, detect_devices
    from .inspect_magics import InspectMagics
    from .magics import BigModelMagics

    ip.register_magics(BigModelMagics)
    ip.register_magics(InspectMagics)
    device = default_device()
    info = next((d for d in detect_devices() if d.name == str(device) or d.name.startswith(f"{device}:")), None)
    print(f"bigmodel_nb {__version__} · {info.banner() if info else device}")


def unload_ipython_extension(ip) -> None:
    """``%unload_ext bigmodel_nb``: remove the magics this extension registered."""
    from .inspect_magics import InspectMagics
    from .magics import BigModelMagics

    magics = ip.magics_manager.magics
    for cls in (BigModelMagics, InspectMagics):
        for kind in ("line", "cell"):
            for name in list(cls.magics[kind]):
                magics[kind].pop(name, None)
        ip.magics_manager.registry.pop(cls.__name__, None)
