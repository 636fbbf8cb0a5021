"""The training loop: config, callbacks and the step function. `Run` (run.py) owns the thread.

The loop is the hand-written PyTorch loop it replaces — forward, loss, backward, step —
plus three things a notebook needs: metrics summed on the device and read only at the
logging tick, a control check at every step boundary, and callbacks with a plain `logs` dict.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from .forward import Meter, autocast, count_correct, evaluate_model, forward_loss, resolve_loss, takes_targets
from .scale import compile_failure, free_memory, is_out_of_memory, out_of_memory_message
from .optim import steps_on_validation

if TYPE_CHECKING:
    from .run import Run

FINITE_COPY_ON_DEVICE = 1 << 30  # bytes of trainable weights whose NaN-restore copy stays on the GPU


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

    def to_dict(self) -> dict:
        return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in asdict(self).items()}


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


class Callback:
    """Hooks in the Keras/Lightning style; each gets the run and a plain `logs` dict.

    Example: ``class Printer(Callback): def on_epoch_end(self, run, logs): print(logs)``
    `on_step_end` runs every step with ``step, epoch, lr``; at logging ticks `logs`
    also carries ``loss`` (and ``accuracy``, ``samples_per_s``) and is the history row.
    Hooks run in the training thread: keep them cheap, render elsewhere.
    """

    def on_train_begin(self, run: "Run", logs: dict) -> None: ...
    def on_epoch_begin(self, run: "Run", logs: dict) -> None: ...
    def on_after_backward(self, run: "Run", logs: dict) -> None: ...  # grads complete, before clipping and step
    def on_step_end(self, run: "Run", logs: dict) -> None: ...
    def on_eval_end(self, run: "Run", logs: dict) -> None: ...
    def on_epoch_end(self, run: "Run", logs: dict) -> None: ...
    def on_train_end(self, run: "Run", logs: dict) -> None: ...
    def on_exception(self, run: "Run", logs: dict) -> None: ...


class Loop:
    """The body of a run: set up once, then `fit()`, a generator that yields at each step boundary."""

    def __init__(self, run: "Run"):
        self.run = run
        cfg, data = run.config, run.data
        self.device, self.amp = run.device, run.amp
        self.model = run.model
        self.task = data.task
        self.loss_fn = resolve_loss(cfg.loss, self.task)
        self.with_targets = takes_targets(self.model)
        self.train_split = data.train
        self.accumulate = max(1, cfg.accumulate)
        self.steps_per_epoch = optimizer_steps(cfg, self.train_split)
        self.forward_model = run.forward_model  # the model, or its torch.compile wrapper
        self.epochs, self.total_steps = plan(cfg, self.steps_per_epoch)
        self.optimizer = run.optimizer
        self.schedule = run.schedule
        self.schedule_on_validation = steps_on_validation(self.schedule)
        self.scaler = run.scaler
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._finite_weights: list[torch.Tensor] | None = None
        # Only a callback that overrides on_after_backward costs anything per step (e.g. a gradient recorder).
        self.after_backward = any(type(cb).on_after_backward is not Callback.on_after_backward
                                  for cb in run.callbacks)

    # -- one step -------------------------------------------------------------------------
    def train_step(self, micro_batches: list, meter: Meter):
        """One optimizer step over one or more micro-batches (gradient accumulation). Each micro-batch's
        loss is weighted by its share of the samples, so the gradient equals that of one big batch."""
        self.optimizer.zero_grad(set_to_none=True)
        total = sum(x.shape[0] for x, _ in micro_batches)
        for x, y in micro_batches:
            with autocast(self.device, self.amp):
                logits, loss = forward_loss(self.forward_model, x, y, self.loss_fn, self.with_targets)
            share = loss if len(micro_batches) == 1 else loss * (x.shape[0] / total)
            (self.scaler.scale(share) if self.scaler is not None else share).backward()
            meter.loss += loss.detach().float() * x.shape[0]
            meter.samples += x.shape[0]
            if self.task == "classification":
                c, n = count_correct(logits.detach(), y)
                meter.correct += c
                meter.targets += n
        after_backward = (lambda: self._emit("on_after_backward", {"step": self.run.step + 1})) \
            if self.after_backward else None
        apply_gradients(self.optimizer, self.scaler, self.schedule, self.params, self.run.config.grad_clip,
                        after_backward)

    def _guarded_step(self, micro_batches: list, meter: Meter) -> bool:
        """`train_step`, turning out-of-memory and compile errors into a failed run with one sentence."""
        first = self.run.step == 0 and self.run.config.compile
        t0 = time.perf_counter() if first else 0.0  # no clock read in the ordinary step
        try:
            self.train_step(micro_batches, meter)
        except Exception as exc:
            if not is_out_of_memory(exc):
                if first:
                    self.run._fail(compile_failure(exc))
                    return False
                raise
        else:
            if first:  # the first call compiles: report it apart, and keep it out of the samples/s
                self.run.compile_time_s = time.perf_counter() - t0
                meter.since, meter.untimed = time.perf_counter(), meter.samples
            return True
        # Out of memory. Freed here, not in the except block, whose traceback still holds the activations,
        # and after the message, whose %summary estimate runs small real passes that leave blocks cached.
        message = out_of_memory_message(self.model, self.run.config.batch_size, self.device, self.run.data)
        free_memory(self.model)
        self.run._fail(message)
        return False

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> None:
        run, cfg = self.run, self.run.config
        model = self.model
        model.train()
        start_epoch, skip = divmod(run.step, self.steps_per_epoch)
        run.total_steps = self.total_steps
        self._emit("on_train_begin", {
            "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
            "start_step": run.step, "device": str(self.device), "amp": self.amp.name,
            "params": sum(p.numel() for p in model.parameters()),
        })
        self._remember_finite_weights()
        if self.device.type == "cuda":  # the dashboard's peak is this run's, not the preflight's or --batch-size auto's
            torch.cuda.reset_peak_memory_stats(self.device)
        meter = Meter.on(self.device)
        for epoch in range(start_epoch, self.epochs):
            run.epoch = epoch + 1
            self._emit("on_epoch_begin", {"epoch": run.epoch, "step": run.step})
            self._refresh_params()  # a callback may have unfrozen parameters (transfer.Unfreeze)
            batches = self.train_split.batches(cfg.batch_size, self.device, shuffle=True,
                                               seed=run.seed, epoch=epoch, skip=skip * self.accumulate)
            skip = 0
            last_in_epoch = min(self.total_steps, (epoch + 1) * self.steps_per_epoch)
            for micro_batches in step_groups(batches, self.accumulate):
                yield  # a step boundary: the driver may hand the run to another thread here
                if run._should_stop():  # the model is never half-updated
                    break
                lr = self.optimizer.param_groups[0]["lr"]
                if not self._guarded_step(micro_batches, meter):
                    return
                run.step += 1
                logs = {"step": run.step, "epoch": run.epoch, "lr": lr}
                if run.step % cfg.log_every == 0 or run.step == last_in_epoch:
                    if not self._log_train(meter, logs):
                        return
                    meter = Meter.on(self.device)
                self._emit("on_step_end", logs)
                if cfg.val_every and run.step % cfg.val_every == 0:
                    self._validate()
                if run.step >= last_in_epoch:
                    break
            if run._stop_requested:
                if meter.samples and not self._log_train(meter, {"step": run.step, "epoch": run.epoch,
                                                                 "lr": self.optimizer.param_groups[0]["lr"]}):
                    return
                break
            if not cfg.val_every:
                self._validate()
            self._emit("on_epoch_end", {"epoch": run.epoch, "step": run.step})
            run._save_checkpoint()
            if run.step >= self.total_steps:
                break

    def _log_train(self, meter: Meter, logs: dict) -> bool:
        """Read the device sums once, append a history row; False if the loss went non-finite."""
        loss = meter.loss.item() / max(1, meter.samples)
        if not math.isfinite(loss):
            self._restore_finite_weights()
            self.run._fail(f"The loss became {loss} near step {logs['step']} (lr {logs['lr']:.3g}); "
                           "training stopped and the last finite weights were restored — "
                           "try a lower --lr, --grad-clip 1.0, or check the data for NaNs.")
            return False
        now = time.perf_counter()
        logs.update(split="train", loss=loss, samples_per_s=(meter.samples - meter.untimed) / max(1e-9, now - meter.since),
                    time=self.run.elapsed)
        if self.task == "classification":
            logs["accuracy"] = meter.correct.item() / max(1, meter.targets)
        self.run.history.append(dict(logs))
        self._remember_finite_weights()
        return True

    def _validate(self) -> None:
        split = self.run.data.val
        if split is None or len(split) == 0:
            return
        row = evaluate_model(self.model, split, batch_size=max(256, self.run.config.batch_size), device=self.device,
                             loss_fn=self.loss_fn, task=self.task, amp=self.amp)
        row = {"step": self.run.step, "epoch": self.run.epoch, "split": "val", **row, "time": self.run.elapsed}
        self.run.history.append(row)
        if self.run.best is None or row["loss"] < self.run.best["loss"]:
            self.run.best = row
        if self.schedule_on_validation:
            self.schedule.step(row["loss"])
        self._emit("on_eval_end", dict(row))

    def _refresh_params(self) -> None:
        """Clip and guard the parameters that train now, if a callback changed which ones do."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            self.params, self._finite_weights = params, None
            self._remember_finite_weights()

    # A copy of the weights at the last tick whose loss was finite, restored if the loss blows up. It stays
    # on the GPU for models up to FINITE_COPY_ON_DEVICE bytes (a device copy is ~free next to a step); bigger
    # ones keep it in pinned host memory, copied asynchronously, so it takes no GPU memory from the batch.
    def _remember_finite_weights(self) -> None:
        with torch.no_grad():
            if self._finite_weights is None:
                size = sum(p.numel() * p.element_size() for p in self.params)
                host = self.device.type == "cuda" and size > FINITE_COPY_ON_DEVICE
                self._finite_weights = [torch.empty_like(p, device="cpu", pin_memory=True) if host
                                        else torch.empty_like(p) for p in self.params]
            torch._foreach_copy_(self._finite_weights, [p.detach() for p in self.params], non_blocking=True)

    def _restore_finite_weights(self) -> None:
        if self._finite_weights is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], self._finite_weights, non_blocking=True)

    def _emit(self, hook: str, logs: dict) -> None:
        self.run._emit(hook, logs)


def apply_gradients(optimizer, scaler, schedule, params, clip: float | None, after_backward=None) -> None:
    """The optimizer step after the backward passes, shared by `Loop` and the Ray workers: unscale (fp16),
    `after_backward()`, clip, step, then a step-count schedule. Callbacks and clipping see true gradients.

    Example: ``apply_gradients(opt, None, None, list(model.parameters()), clip=1.0)``
    """
    if scaler is not None and (clip or after_backward):
        scaler.unscale_(optimizer)
    if after_backward is not None:
        after_backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if schedule is not None and not steps_on_validation(schedule):
        schedule.step()


def step_groups(batches, size: int):
    """Consecutive lists of `size` batches (the last may be shorter): one optimizer step each."""
    group = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
