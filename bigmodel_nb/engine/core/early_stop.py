"""The best validation so far, and early stopping on it: `--early-stop N [--monitor val_loss] [--min-delta X]`
stops after N validations without an improvement larger than X, and the run ends holding the best
validation's weights (restored whichever way it ends — Keras restores them only when it stopped early).

    best = BestValidation("val_accuracy", patience=3); best.update(row, model)  # True once it should stop
"""
from __future__ import annotations

import torch

from .errors import BigModelError, unknown_choice
from .metrics import TASK_METRICS

LOWER_IS_BETTER = ("loss", "mae", "rmse", "ece", "perplexity", "bits_per_token", "bits_per_char")
ON_DEVICE_BYTES = 1 << 30  # a best-weights copy up to this size stays on the accelerator; larger ones go to the host


def check_monitor(monitor: str, task: str | None) -> str:
    """The history key a monitor names (``val_accuracy`` → ``accuracy``), or one sentence listing the choices."""
    keys = ["loss", *(m.name for m in TASK_METRICS.get(task or "", ()))]
    name = str(monitor).removeprefix("val_")
    if name not in keys or not str(monitor).startswith("val_"):
        raise unknown_choice("--monitor", str(monitor), [f"val_{k}" for k in keys])
    return name


class BestValidation:
    """Tracks the best validation row by `monitor` (lower is better for losses, higher for the rest) and,
    with `patience`, keeps that validation's weights and says when `patience` validations in a row did not
    improve on it by more than `min_delta`."""

    def __init__(self, monitor: str = "val_loss", *, patience: int | None = None, min_delta: float = 0.0,
                 task: str | None = None):
        if patience is not None and patience < 1:
            raise BigModelError(f"--early-stop must be a whole number ≥ 1 (validations to wait), not {patience}.")
        if min_delta < 0:
            raise BigModelError(f"--min-delta must be ≥ 0 (the smallest change that counts), not {min_delta}.")
        self.monitor, self.key = monitor, check_monitor(monitor, task)
        self.patience, self.min_delta = patience, min_delta
        self.lower = self.key in LOWER_IS_BETTER
        self.best: dict | None = None
        self.waited = 0  # validations since the best one
        self.weights: dict[str, torch.Tensor] | None = None  # the best validation's, kept with --early-stop
        self.stopped_at: int | None = None

    def improves(self, row: dict) -> bool:
        if self.best is None:
            return True
        value, best = row[self.key], self.best[self.key]
        return value < best - self.min_delta if self.lower else value > best + self.min_delta

    def update(self, row: dict, model: torch.nn.Module | None = None) -> bool:
        """Take a validation row (and the weights that produced it); True when training should stop."""
        if self.improves(row):
            self.best, self.waited = row, 0
            if self.patience is not None and model is not None:
                state = model.state_dict()
                host = sum(v.numel() * v.element_size() for v in state.values()) > ON_DEVICE_BYTES
                self.weights = {k: v.detach().to("cpu", copy=True) if host else v.detach().clone()
                                for k, v in state.items()}
            return False
        self.waited += 1
        if self.patience is not None and self.waited >= self.patience:
            self.stopped_at = row["step"]
            return True
        return False

    def restore(self, model: torch.nn.Module) -> str | None:
        """Load the best validation's weights into `model`; a line for the run's notes, or None if nothing to do."""
        if self.weights is None or self.best is None:
            return None
        model.load_state_dict(self.weights)
        return self.describe()

    def describe(self) -> str:
        """What early stopping did, in one line (for `run.notes` and the dashboard)."""
        how = f"stopped at step {self.stopped_at} after {self.patience} validations without improving " \
              f"{self.monitor}" + (f" by more than {self.min_delta:g}" if self.min_delta else "") + "; " \
            if self.stopped_at is not None else ""
        return (f"early stop: {how}the model holds the best validation's weights "
                f"(step {self.best['step']}, {self.monitor} {self.best[self.key]:.4g})")

    def state(self) -> dict:
        """What a checkpoint keeps (JSON): the counters; the weights go with the checkpoint's tensors."""
        return {"waited": self.waited, "stopped_at": self.stopped_at}

    def load(self, state: dict, best: dict | None, weights: dict | None) -> None:
        """Continue from a checkpoint's `state()`, best row and best weights (a resumed run trains on)."""
        self.waited, self.best, self.weights = int(state.get("waited", 0)), best, weights
