"""`--log-dir DIR`: each run written as it trains to ``DIR/<name>-<time>/`` —

    config.json     the run's config, data, model class and parameters, kind, start time
    history.jsonl   one history row per line, appended and flushed as each row arrives
    system.jsonl    the system samples (CPU, memory, GPU), likewise
    events.out.tfevents.*   TensorBoard scalars, written live (``tensorboard --logdir DIR``)
    model.safetensors, summary.json   at the end: the final weights, status, best and last rows

A kernel that dies loses nothing already logged: each line is flushed to the OS when it is written.

    Run(model, "digits", TrainConfig(epochs=3), [RunLogger("runs")]).run_here()
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from ..core.callbacks import Callback
from ..core.checkpoint import atomic_write, save_weights
from ..core.errors import BigModelError

log = logging.getLogger("bigmodel_nb")
SCALARS = ("loss", "accuracy", "lr", "samples_per_s")  # history keys written as TensorBoard scalars


def check_writable(directory) -> Path:
    """`directory`, created if needed, or one sentence saying why the logs cannot go there."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".bigmodel_nb-probe-{time.time_ns()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BigModelError(f"Cannot write the run's logs to '{directory}' ({type(exc).__name__}: "
                            f"{exc.strerror or exc}); pass a --log-dir you can write to.") from None
    return path


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; the reader turns these back into floats
    return value


class RunLogger(Callback):
    """Writes the run to its own folder under `directory` as it trains (see the module docstring)."""

    def __init__(self, directory):
        self.root = check_writable(directory)
        self.folder: Path | None = None
        self._history = self._system = None
        self._events = None

    # -- the run's folder ------------------------------------------------------------------------
    def on_train_begin(self, run, logs):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = self.root / f"{run.name}-{stamp}"
        n = 1
        while folder.exists():  # two runs of the same name in the same second
            n += 1
            folder = self.root / f"{run.name}-{stamp}-{n}"
        folder.mkdir(parents=True)
        self.folder = run.log_dir = folder
        config = {"name": run.name, "kind": getattr(run, "kind", "train"), "number": run.number,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "data": run.data.name, "task": run.data.task,
                  "model": type(run.model).__name__, "params": logs.get("params"), "device": logs.get("device"),
                  "total_steps": logs.get("total_steps"), "config": run.config.to_dict()}
        atomic_write(folder / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=1)))
        self._history = open(folder / "history.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (open for the run)
        self._system = open(folder / "system.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        for row in run.history:  # a resumed run: its earlier rows first
            self._row(row)
        self._events = event_writer(folder)

    def on_step_end(self, run, logs):
        if "loss" in logs:  # a logging tick: the history row
            self._row(logs)

    def on_eval_end(self, run, logs):
        self._row(logs)

    def on_system(self, run, logs):
        if self._system is not None:
            self._system.write(json.dumps(logs) + "\n")
            self._system.flush()
            if self._events is not None:
                for key, value in logs.items():
                    if key != "time" and isinstance(value, (int, float)):
                        self._events.add_scalar(f"system/{key}", value, run.step)

    def on_train_end(self, run, logs):
        if self.folder is None:
            return
        try:
            if run.status != "failed" or run.history:
                save_weights(run.model, self.folder / "model.safetensors")
            summary = {"status": run.status, "step": run.step, "elapsed": run.elapsed, "error": run.error,
                       "best": run.best, "notes": run.notes}
            text = json.dumps(summary, indent=1, default=_jsonable)
            atomic_write(self.folder / "summary.json", lambda p: Path(p).write_text(text))
        finally:
            self.close()

    def close(self) -> None:
        for f in (self._history, self._system):
            if f is not None:
                f.close()
        self._history = self._system = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def _row(self, row: dict) -> None:
        if self._history is None:
            return
        clean = {k: _jsonable(v) for k, v in row.items() if isinstance(v, (int, float, str, bool, type(None)))}
        self._history.write(json.dumps(clean) + "\n")
        self._history.flush()  # to the OS now: a killed kernel keeps every row written so far
        if self._events is not None:
            split = row.get("split", "train")
            for key in SCALARS:
                value = row.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._events.add_scalar(f"{split}/{key}", value, row["step"], walltime=None)


def event_writer(folder: Path):
    """A TensorBoard event writer (tensorboardX, else PyTorch's own, which needs tensorboard), or None."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("TensorBoard event files are not written: pip install 'bigmodel-nb[tensorboard]'.")
            return None
    return SummaryWriter(str(folder), flush_secs=2)
