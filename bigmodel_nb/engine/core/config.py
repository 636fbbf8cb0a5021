"""`TrainConfig`: every option of `%%train` that shapes the training itself, and the run's plan."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainConfig:
    """Everything `%%train` and `bigmodel_nb.train` accept. Example: ``TrainConfig(epochs=5, lr=1e-3)``"""

    epochs: int | None = None  # default 10 when neither epochs nor steps is given
    steps: int | None = None
    batch_size: int | str = 64  # or "auto": the largest that fits in memory, found by halving
    lr: float | None = None  # None: the optimizer's default (optim.OPTIMIZERS)
    optimizer: Any = "adam"  # name, instance or factory
    schedule: Any = "constant"
    warmup: int = 0
    loss: Any = None  # name, callable or None (taken from the model or the task)
    weight_decay: float | None = None
    device: str = "auto"
    amp: str = "auto"
    seed: int | None = None
    grad_clip: float | None = None
    checkpoint: str | None = None
    resume: bool = False
    val_every: int | None = None  # steps between validations; None: every epoch
    log_every: int = 10  # steps between synchronised train rows
    accumulate: int = 1  # micro-batches per optimizer step: an effective batch of batch_size × accumulate
    compile: bool = False  # torch.compile the model (compile time is reported apart from step time)
    activation_checkpointing: bool = False  # recompute transformer blocks in backward: less memory
    early_stop: int | None = None  # stop after this many validations without improvement; keep the best weights
    monitor: str = "val_loss"  # the validation metric that decides the best row (run.best) and early stopping
    min_delta: float = 0.0  # the smallest change of `monitor` that counts as an improvement

    def to_dict(self) -> dict:
        return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                for k, v in asdict(self).items()}


def optimizer_steps(config: TrainConfig, split) -> int:
    """Optimizer steps per epoch: batches per epoch over `accumulate` micro-batches per step."""
    return max(1, math.ceil(split.num_batches(config.batch_size) / max(1, config.accumulate)))


def plan(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, total steps) of a run: `steps` wins over `epochs`; 10 epochs when neither is given."""
    steps_per_epoch = max(1, steps_per_epoch)
    if config.steps:
        return math.ceil(config.steps / steps_per_epoch), config.steps
    epochs = config.epochs or 10
    return epochs, epochs * steps_per_epoch
