"""`Run`: one training run that the notebook can stop, pause and resume — trained in the caller's
thread (`run_here`, the default of `%%train`) or in a worker thread (`start`, `--background`)."""
from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .adapters import as_bundle
from .batches import targets_of
from .callbacks import Callback, CallbackList
from .config import TrainConfig, optimizer_steps, plan
from .device import check_compile, compiled, resolve_amp, resolve_device
from .early_stop import BestValidation
from .errors import BigModelError, describe_exception
from .forward import preflight
from .loop import Loop
from .memory import auto_batch_size, enable_activation_checkpointing
from .optim import make_optimizer, make_schedule
from .scores import score
from .threads import train_in_background

log = logging.getLogger("bigmodel_nb")

ALIVE = ("created", "running", "paused")

# Every Run of the session, in creation order, held weakly: a run the notebook no longer holds can be
# collected. `runs()` lists them (the run-comparison view starts here).
_REGISTRY: weakref.WeakValueDictionary[int, Run] = weakref.WeakValueDictionary()
_NUMBERS = itertools.count(1)


def runs() -> list[Run]:
    """Every `Run` of this session still held somewhere, oldest first. Example: ``[r.name for r in runs()]``"""
    return [run for _, run in sorted(_REGISTRY.items())]


# Results whose training the %runs table lists without a `Run` each (an optimizer comparison), held weakly
# too; each has `run_records()`, its rows in that table.
_RESULTS: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()


def register_result(result) -> int:
    """Add a result with `run_records()` to the session's runs (the %runs table); returns its number."""
    number = next(_NUMBERS)
    _RESULTS[number] = result
    return number


def results() -> list:
    """The registered results still held somewhere, oldest first."""
    return [result for _, result in sorted(_RESULTS.items())]


class Run:
    """A training run. ``run = Run(model, "digits", TrainConfig(epochs=5)).run_here()``

    Fields (contract): ``status`` (running|paused|completed|stopped|failed), ``history``
    (list of row dicts), ``model``, ``best`` (best validation row), ``error`` (one sentence),
    ``system`` (samples of CPU, memory and GPU), ``kind``, ``log_dir``.
    """

    def __init__(self, model: torch.nn.Module, data, config: TrainConfig | None = None,
                 callbacks: Iterable[Callback] = (), *, optimizer=None, name: str = "run", kind: str = "train"):
        if not isinstance(model, torch.nn.Module):
            raise BigModelError(f"Expected a torch.nn.Module to train, got {type(model).__name__}; "
                                "define `model = nn.Sequential(...)` (or pass --model NAME).")
        self.config = config = config or TrainConfig()
        self.name, self.kind = name, kind  # kind: train, compare, finetune, distill, sweep (the %runs table)
        self.model = model
        self.data = _binary(as_bundle(data), config)
        self.validation = BestValidation(config.monitor, patience=config.early_stop, min_delta=config.min_delta,
                                         task=self.data.task)  # run.best, and --early-stop
        if config.early_stop and (self.data.val is None or not len(self.data.val)):
            raise BigModelError(f"--early-stop watches the validation split, and '{self.data.name}' has none; give "
                                "validation data (e.g. data={'train': ..., 'val': ...}, or val_data in the cell).")
        self.device = resolve_device(config.device)
        self.amp = resolve_amp(config.amp, self.device)
        self.callbacks = CallbackList(callbacks)  # the run's event bus
        self.status = "created"
        self.history: list[dict] = []
        self.best: dict | None = None
        self.error: str | None = None
        self.step = self.epoch = self.total_steps = 0
        self.seed = config.seed if config.seed is not None else random.randrange(2**31)
        self._stop_requested = False
        self._running = threading.Event()
        self._running.set()
        self._steps = None  # the lifecycle generator, once started
        self._thread: threading.Thread | None = None  # the worker driving it, if any
        self._finished = threading.Event()
        self._t0: float | None = None
        self._elapsed_before = 0.0
        self._saved_step = -1

        self.compile_time_s: float | None = None  # the first step's time with --compile (it compiles)
        self.notes: list[str] = []  # what the big-model options did, for the dashboard
        self.system: list[dict] = []  # ~1 Hz samples of CPU, memory and GPU while training (engine.tracking)
        self.log_dir: Path | None = None  # the folder --log-dir writes this run to
        self.number = next(_NUMBERS)  # the order of creation in this session

        model.to(self.device)
        if not any(p.requires_grad for p in model.parameters()):
            raise BigModelError("The model has no trainable parameters; "
                                "unfreeze some (requires_grad=True) before training.")
        if config.accumulate < 1:
            raise BigModelError("--accumulate must be a whole number ≥ 1 (micro-batches per step), "
                                f"not {config.accumulate}.")
        if config.activation_checkpointing:
            self.notes.append(enable_activation_checkpointing(model))
        if config.batch_size == "auto":
            config.batch_size = auto_batch_size(model, self.data, self.device, self.amp, config.loss)
            self.notes.append(f"batch size {config.batch_size} (auto: the largest that fits, by halving)")
        elif not isinstance(config.batch_size, int) or config.batch_size < 1:
            raise BigModelError(f"--batch-size must be a whole number ≥ 1 or auto, not {config.batch_size!r}.")
        if config.accumulate > 1:
            self.notes.append(f"accumulating {config.accumulate} micro-batches of {config.batch_size}: "
                              f"effective batch {config.accumulate * config.batch_size}")
        self.forward_model = model
        if config.compile:
            check_compile(self.device)
            self.forward_model = compiled(model)
            self.notes.append("torch.compile: the first step compiles (its time is shown apart)")
        # Frozen parameters are held too: without a gradient the optimizer skips them, and once a callback
        # unfreezes them (transfer.Unfreeze) they train in the same group, schedule and checkpoint layout.
        params = list(model.parameters())
        self.optimizer = make_optimizer(optimizer if optimizer is not None else config.optimizer, params,
                                        lr=config.lr, weight_decay=config.weight_decay)
        _, total = plan(config, optimizer_steps(config, self.data.train))
        self.schedule = make_schedule(config.schedule, self.optimizer, total, config.warmup)
        # fp16 loss scaling; saved with the checkpoint, so a resumed run keeps its scale, not 2^16 again.
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp.use_scaler else None
        if config.resume:
            self._load_checkpoint()
        elif config.seed is not None:
            torch.manual_seed(config.seed)  # dropout and other in-model randomness
        logits = preflight(model, self.data, config, self.device, self.amp)
        if self.data.task == "classification" and config.loss is None and len(logits) == 2 and logits[-1] == 1:
            config.loss = "bce"  # one logit per sample: binary cross-entropy on it (cross-entropy would be 0)
            self.notes.append("one output: binary classification, --loss bce, predicted class = logit > 0")
        _REGISTRY[self.number] = self

    # -- starting and waiting ------------------------------------------------------------------
    def start(self, callbacks: Iterable[Callback] = ()) -> Run:
        """Train in a worker thread and return at once (the notebook's --background)."""
        self._begin(callbacks)
        self._hand_to_thread()
        return self

    def run_here(self, callbacks: Iterable[Callback] = (), *, until: Callable[[], bool] | None = None,
                 on_interrupt: Callable[[Run], None] | None = None) -> Run:
        """Train in the calling thread — as fast as the hand-written loop — until the run ends or
        `until()` turns true (e.g. paused), then let a worker thread carry on. A KeyboardInterrupt
        (■ in Jupyter) never lands mid-step: it stops the run at the next step boundary, or calls
        `on_interrupt(run)`. Example: ``Run(model, "digits").run_here()``"""
        self._begin(callbacks)
        handler = (lambda *_: on_interrupt(self)) if on_interrupt else (lambda *_: self.stop())
        with interrupts_call(handler):
            finished = self._drive(until)
        if not finished:
            self._hand_to_thread()
        return self

    def wait(self, timeout: float | None = None, on_interrupt: Callable[[Run], None] | None = None,
             until: Callable[[], bool] | None = None) -> Run:
        """Block until the run ends (or `timeout` s pass, or `until()` is true). A KeyboardInterrupt
        (■ in Jupyter) does not escape: by default it stops the run cleanly at the next step boundary
        and waits for that; `on_interrupt(run)` replaces that policy."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._steps is None:
            return self
        try:
            # An Event, not Thread.join: a KeyboardInterrupt inside join() can leave the thread
            # looking finished while it still runs. Short waits let the signal be handled promptly.
            while not self._finished.wait(0.1):
                if (deadline is not None and time.monotonic() > deadline) or (until is not None and until()):
                    break
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt(self)
            else:
                self.stop()
                self._finished.wait()
        return self

    # -- control (called from any thread) ---------------------------------------------------
    def stop(self) -> Run:
        """Ask the run to stop at the next step boundary (returns at once; use `wait()`)."""
        self._stop_requested = True
        self._running.set()
        return self

    def pause(self) -> Run:
        """Hold the run at the next step boundary until `resume()`."""
        if self.alive:
            self._running.clear()
        return self

    def resume(self) -> Run:
        """Continue a paused run."""
        self._running.set()
        return self

    @property
    def alive(self) -> bool:
        return self.status in ALIVE and not self._finished.is_set()

    @property
    def started(self) -> bool:
        """True once training began (in any thread)."""
        return self._steps is not None

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds spent training (pauses included), across resumes."""
        return self._elapsed_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    # -- results -------------------------------------------------------------------------------
    def evaluate(self, split: str = "test", batch_size: int | None = None, metrics=None) -> dict:
        """The task's metrics on a split — the same dict as ``%evaluate``'s ``Evaluation.metrics`` (loss,
        accuracy, precision/recall/F1, ECE; MAE/RMSE/R²; perplexity), the loss computed as the validation
        rows compute it. Example: ``run.evaluate("test")["f1_macro"]``"""
        self.check_finished()
        batch_size = batch_size or max(256, self.config.batch_size)  # the validation's batches: the same loss
        return score(self.model, self.data, split, loss=self.config.loss, batch_size=batch_size, amp=self.amp,
                     metrics=metrics, per_class=False).metrics

    def check_finished(self) -> None:
        """One sentence if the run is still training (its weights are changing under an evaluation)."""
        if self.alive and self._steps is not None:
            raise BigModelError(f"Run '{self.name}' is still training; "
                                f"call {self.name}.wait() or {self.name}.stop() first.")

    def save(self, path) -> Path:
        """Write the model's weights (safetensors) with the run's config and last metrics as metadata."""
        meta = {"name": self.name, "status": self.status, "step": self.step, "config": self.config.to_dict(),
                "data": self.data.name, "best": self.best, "last": self.history[-1] if self.history else None}
        return ckpt.save_weights(self.model, path, meta)

    def rows(self, split: str | None = None) -> list[dict]:
        """History rows, optionally of one split. Example: ``run.rows("val")[-1]["accuracy"]``"""
        return [r for r in self.history if split is None or r.get("split") == split]

    def __repr__(self) -> str:
        last = next((r for r in reversed(self.history) if r.get("split") == "val"), None) or \
            (self.history[-1] if self.history else {})
        metrics = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "accuracy") if k in last)
        tail = f", {last.get('split', '')} {metrics}" if metrics else ""
        err = f" — {self.error}" if self.error else ""
        return f"<Run '{self.name}' {self.status} at step {self.step}/{self.total_steps}{tail}{err}>"

    # -- the lifecycle: a generator that yields at every step boundary, so whichever thread
    # -- drives it can hand it to another (the cell trains in the main thread, a paused run
    # -- continues in a worker).
    def _begin(self, callbacks: Iterable[Callback]) -> None:
        if self._steps is not None:
            raise BigModelError(f"Run '{self.name}' was already started; create a new run to train again.")
        self.callbacks.extend(callbacks)
        self.status = "running"
        self._steps = self._lifecycle()

    def _drive(self, until: Callable[[], bool] | None = None) -> bool:
        """Advance the run in this thread; False if `until()` asked to let go before the end."""
        for _ in self._steps:
            if until is not None and until():
                return False
        return True

    def _hand_to_thread(self) -> None:
        # A fresh thread in a copy of the caller's context (prints land in the cell that started the run),
        # started after the caller's OpenMP team is released, or it would train 2-3x slower (threads.py).
        self._thread = train_in_background(self._drive, f"bigmodel_nb-{self.name}")

    def _lifecycle(self):
        self._t0 = time.perf_counter()
        try:
            yield from self._loop()
            if self.status != "failed":
                self.save_checkpoint()  # the last state, which --resume continues from
                note = self.validation.restore(self.model)  # --early-stop: the best validation's weights
                if note:
                    self.notes.append(note)
                self.status = "stopped" if self._stop_requested else "completed"
        except Exception as exc:  # the user's model raised mid-run: keep everything, say where
            self.fail(f"Training failed at step {self.step}: {describe_exception(exc)}")
            self.emit("on_exception", {"step": self.step, "error": self.error, "exception": exc})
        finally:
            self._elapsed_before, self._t0 = self.elapsed, None
        try:
            self.emit("on_train_end", {"status": self.status, "step": self.step, "error": self.error,
                                        "elapsed": self.elapsed})
        finally:
            self._finished.set()

    def _loop(self):
        """The training steps, as a generator yielding at step boundaries (DistributedRun replaces it)."""
        return Loop(self).fit()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def should_stop(self) -> bool:
        """At a step boundary: hold here while paused; True once a stop was asked for (loops call this)."""
        if not self._running.is_set() and not self._stop_requested:
            self.status = "paused"
            t = time.perf_counter()
            self._running.wait()
            self._elapsed_before -= time.perf_counter() - t  # paused time is not training time
            self.status = "running"
        return self._stop_requested

    def fail(self, message: str) -> None:
        """End the run as `failed` with one sentence (loops call this; the run keeps its model and history).
        Logged only when nothing subscribed to the run shows it (a dashboard does), so it is said once."""
        self.error = message
        self.status = "failed"
        if not len(self.callbacks):
            log.warning(message)

    def emit(self, hook: str, logs: dict) -> None:
        """Call `hook` on every callback of the run's bus. Example: ``run.emit("on_step_end", {"step": 3})``"""
        self.callbacks.emit(hook, self, logs)

    def _state(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "seed": self.seed, "history": self.history,
                "best": self.best, "config": self.config.to_dict(), "data": self.data.name,
                "elapsed": self.elapsed, "early_stop": self.validation.state()}

    def save_checkpoint(self) -> None:
        """Write a training checkpoint to --checkpoint (if given), once per step."""
        if not self.config.checkpoint or self._saved_step == self.step:
            return
        ckpt.save_training_state(self.config.checkpoint, model=self.model, optimizer=self.optimizer,
                                 scaler=self.scaler, scheduler=self.schedule, state=self._state(),
                                 best_weights=self.validation.weights)
        self._saved_step = self.step

    def _load_checkpoint(self) -> None:
        if not self.config.checkpoint:
            raise BigModelError("--resume needs --checkpoint DIR to know where the run was saved.")
        state = ckpt.load_training_state(self.config.checkpoint, model=self.model, optimizer=self.optimizer,
                                         scaler=self.scaler, scheduler=self.schedule, map_location=self.device)
        self.step, self.epoch = state["step"], state["epoch"]
        self.seed = state["seed"]
        self.history, self.best = list(state["history"]), state.get("best")
        self.validation.load(state.get("early_stop", {}), self.best, state.get("best_weights"))
        self._elapsed_before = state.get("elapsed", 0.0)
        self._saved_step = self.step


class interrupts_call:
    """While active in the main thread, SIGINT (the kernel's interrupt) calls `handler` instead of
    raising KeyboardInterrupt in the middle of a training step."""

    def __init__(self, handler):
        self.handler, self.previous = handler, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _binary(data, config):
    """0/1 float targets with --loss bce are binary classification, not regression: accuracy is reported."""
    if data.task != "regression" or str(config.loss or "").lower() != "bce" or not data.train.in_memory:
        return data
    targets = targets_of(data.train.tensors())
    if targets is None or not bool(((targets == 0) | (targets == 1)).all()):
        return data
    return dataclasses.replace(data, task="classification", num_classes=2)
