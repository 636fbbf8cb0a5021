"""The engine: plain PyTorch, usable from scripts and tests (no IPython, widgets or plotly here)."""
from .checkpoint import load_training_state, load_weights, save_training_state, save_weights
from .data import DATASETS, DataBundle, as_bundle, load_dataset
from .device import AmpPolicy, DeviceInfo, default_device, detect_devices, resolve_amp, resolve_device, set_default_device
from .errors import BigModelError
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from .run import Run
from .trainer import Callback, TrainConfig


def fit(model, data, *, callbacks=(), background: bool = False, name: str = "run", optimizer=None, **options) -> Run:
    """Train without any display. Example: ``run = fit(model, "digits", epochs=5); run.history[-1]``"""
    run = Run(model, data, TrainConfig(**options), callbacks, optimizer=optimizer, name=name)
    return run.start() if background else run.run_here()
