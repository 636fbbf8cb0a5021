"""The body of a run: the hand-written PyTorch loop it replaces — the core `Step` over each batch —
plus what a notebook needs: metrics summed on the device and read only at the logging tick, a control
check at every step boundary, and events on the run's bus. `Run` (run.py) owns the thread.

    Loop(run).fit()  # a generator: it yields at every step boundary
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from .config import optimizer_steps, plan
from .device import compile_failure
from .forward import resolve_loss, takes_targets
from .memory import free_memory, is_out_of_memory, out_of_memory_message
from .metrics import Metrics, evaluate_model
from .optim import steps_on_validation
from .step import Step, step_groups

if TYPE_CHECKING:
    from .run import Run

FINITE_COPY_ON_DEVICE = 1 << 30  # bytes of trainable weights whose NaN-restore copy stays on the GPU


class Loop:
    """Set up once from a `Run`, then `fit()`, a generator that yields at each step boundary."""

    def __init__(self, run: Run):
        self.run = run
        cfg, data = run.config, run.data
        self.device, self.amp = run.device, run.amp
        self.model = run.model
        self.task = data.task
        self.loss_fn = resolve_loss(cfg.loss, self.task)
        self.train_split = data.train
        self.accumulate = max(1, cfg.accumulate)
        self.steps_per_epoch = optimizer_steps(cfg, self.train_split)
        self.epochs, self.total_steps = plan(cfg, self.steps_per_epoch)
        self.optimizer = run.optimizer
        self.schedule = run.schedule
        self.schedule_on_validation = steps_on_validation(self.schedule)
        # run.forward_model: the model, or its torch.compile wrapper
        self.step = Step(run.forward_model, run.optimizer, loss_fn=self.loss_fn, device=self.device, amp=self.amp,
                         scaler=run.scaler, schedule=run.schedule, clip=cfg.grad_clip,
                         params=[p for p in self.model.parameters() if p.requires_grad],
                         with_targets=takes_targets(self.model))
        self._finite_weights: list[torch.Tensor] | None = None
        self.stopping_early = False  # --early-stop: the last validation was the N-th without improvement
        # Only a callback that overrides on_after_backward costs anything per step (e.g. a gradient recorder).
        self.after_backward = run.callbacks.overrides("on_after_backward")

    @property
    def params(self) -> list:
        return self.step.params

    # -- one step -------------------------------------------------------------------------
    def _guarded_step(self, micro_batches: list, metrics: Metrics) -> bool:
        """The core step, turning out-of-memory and compile errors into a failed run with one sentence."""
        run = self.run
        first = run.step == 0 and run.config.compile
        t0 = time.perf_counter() if first else 0.0  # no clock read in the ordinary step
        after_backward = (lambda: run.emit("on_after_backward", {"step": run.step + 1})) \
            if self.after_backward else None
        try:
            self.step(micro_batches, metrics, after_backward=after_backward)
        except Exception as exc:
            if not is_out_of_memory(exc):
                if first:
                    run.fail(compile_failure(exc))
                    return False
                raise
        else:
            if first:  # the first call compiles: report it apart, and keep it out of the samples/s
                run.compile_time_s = time.perf_counter() - t0
                metrics.since, metrics.untimed = time.perf_counter(), metrics.samples
            return True
        # Out of memory. Freed here, not in the except block, whose traceback still holds the activations,
        # and after the message, whose %summary estimate runs small real passes that leave blocks cached.
        message = out_of_memory_message(self.model, run.config.batch_size, self.device, run.data)
        free_memory(self.model)
        run.fail(message)
        return False

    # -- the loop ---------------------------------------------------------------------------
    def fit(self):
        run, cfg = self.run, self.run.config
        model = self.model
        model.train()
        start_epoch, skip = divmod(run.step, self.steps_per_epoch)
        run.total_steps = self.total_steps
        run.emit("on_train_begin", {
            "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
            "start_step": run.step, "device": str(self.device), "amp": self.amp.name,
            "params": sum(p.numel() for p in model.parameters()),
        })
        self._remember_finite_weights()
        if self.device.type == "cuda":  # the dashboard's peak is this run's, not the preflight's or --batch-size auto's
            torch.cuda.reset_peak_memory_stats(self.device)
        metrics = Metrics(self.task, self.device)
        bus = run.callbacks
        for epoch in range(start_epoch, self.epochs):
            if run.step >= self.total_steps:  # e.g. resumed from the last checkpoint of a finished run
                break
            run.epoch = epoch + 1
            run.emit("on_epoch_begin", {"epoch": run.epoch, "step": run.step})
            self._refresh_params()  # a callback may have unfrozen parameters (transfer.Unfreeze)
            batches = self.train_split.batches(cfg.batch_size, self.device, shuffle=True,
                                               seed=run.seed, epoch=epoch, skip=skip * self.accumulate)
            skip = 0
            last_in_epoch = min(self.total_steps, (epoch + 1) * self.steps_per_epoch)
            for micro_batches in step_groups(batches, self.accumulate):
                yield  # a step boundary: the driver may hand the run to another thread here
                if run.should_stop():  # the model is never half-updated
                    break
                lr = self.optimizer.param_groups[0]["lr"]
                if not self._guarded_step(micro_batches, metrics):
                    return
                run.step += 1
                tick = run.step % cfg.log_every == 0 or run.step == last_in_epoch
                if tick or bus.overrides("on_step_end"):  # otherwise no callback listens: no logs to build
                    logs = {"step": run.step, "epoch": run.epoch, "lr": lr}
                    if tick:
                        if not self._log_train(metrics, logs):
                            return
                        metrics = Metrics(self.task, self.device)
                    run.emit("on_step_end", logs)
                if cfg.val_every and run.step % cfg.val_every == 0:
                    self._validate()
                if run.step >= last_in_epoch or self.stopping_early:
                    break
            if run.stop_requested:
                if metrics.samples and not self._log_train(metrics, {"step": run.step, "epoch": run.epoch,
                                                                     "lr": self.optimizer.param_groups[0]["lr"]}):
                    return
                break
            if not cfg.val_every:
                self._validate()
            run.emit("on_epoch_end", {"epoch": run.epoch, "step": run.step})
            run.save_checkpoint()
            if run.step >= self.total_steps or self.stopping_early:
                break

    def _log_train(self, metrics: Metrics, logs: dict) -> bool:
        """Read the device sums once, append a history row; False if the loss went non-finite."""
        row = metrics.compute()
        if not math.isfinite(row["loss"]):
            self._restore_finite_weights()
            self.run.fail(f"The loss became {row['loss']} near step {logs['step']} (lr {logs['lr']:.3g}); "
                          "training stopped and the last finite weights were restored — "
                          "try a lower --lr, --grad-clip 1.0, or check the data for NaNs.")
            return False
        logs.update(split="train", loss=row.pop("loss"), samples_per_s=metrics.samples_per_s(), time=self.run.elapsed)
        logs.update(row)
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
        self.stopping_early = self.run.validation.update(row, self.model)
        self.run.best = self.run.validation.best
        if self.schedule_on_validation:
            self.schedule.step(row["loss"])
        self.run.emit("on_eval_end", dict(row))

    def _refresh_params(self) -> None:
        """Clip and guard the parameters that train now, if a callback changed which ones do."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            self.step.params, self._finite_weights = params, None
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
