"""The live training dashboard: a trainer callback that draws at a fixed tick.

The training thread only appends numbers (microseconds); a render thread turns them into
at most one status message and one figure message per tick, so a long run neither slows
training nor floods the browser. When the run ends, both outputs are replaced by static
ones (HTML status, Plotly figure) so a saved or converted notebook still shows the result.
"""
from __future__ import annotations

import contextvars
import html
import logging
import resource
import sys
import threading
import time

import torch

from ..engine.core.callbacks import Callback
from ..engine.core.scores import TASK_SCORES
from ..engine.transfer.heads import trainable_counts
from .display import STYLE, figure_bundle, figure_widget, in_kernel, ui_mode
from .figures import Series, fill_training_figure, persist_widget_state, training_figure_json, training_layout
from .summary import fmt_bytes

TICK_S = 0.5  # status period: progress moves twice a second
# Figure period: a FigureWidget update is 4 comm messages (plotly's batch_update), so with the status
# the dashboard sends ≤ 2 + 4/1.5 ≈ 4.7 messages per second (measured in bench/ui.py).
FIGURE_EVERY_S = 1.5
TEXT_EVERY_S = 5.0  # text mode: one progress line at most this often
# The final summary's metrics (on the validation split), by name as shown; each task has some of them.
FINAL_METRICS = {"accuracy": "accuracy", "f1_macro": "F1 (macro)", "precision_macro": "precision (macro)",
                 "recall_macro": "recall (macro)", "mae": "MAE", "rmse": "RMSE", "r2": "R²",
                 "perplexity": "perplexity", "bits_per_char": "bits/char", "bits_per_token": "bits/token"}
log = logging.getLogger("bigmodel_nb")


def _pct(name: str, value: float) -> str:
    return f"{value:.2%}" if name in ("accuracy", "f1_macro", "precision_macro", "recall_macro") else f"{value:.4g}"


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB peak on {device}"
    if device.type == "mps" and hasattr(torch, "mps"):
        return f"{torch.mps.current_allocated_memory() / 2**20:,.0f} MB on mps"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"{rss_kb / 1024:,.0f} MB peak RSS"


class TrainingDashboard(Callback):
    """Live view of a `Run`. Example: ``TrainingDashboard(run).show(); run.start([dash])``

    `watch_grads` adds a `GradientRecorder` (recording every `watch_every` steps) to the run's
    callbacks and a live gradient panel under the charts; the final report lands in `run.gradients`.
    """

    def __init__(self, run, mode: str | None = None, tick: float = TICK_S, watch_grads: bool = False,
                 watch_every: int = 1, recorder=None):
        self.run = run
        self.mode = mode or ui_mode()
        self.tick = tick
        self.classification = run.data.task == "classification"
        self.series = {"train": Series(), "val": Series()}
        self.samples_per_s = 0.0
        self.final_metrics: dict = {}  # the main metrics on the validation split, once the run ends
        self.epochs = 0
        self.counts = trainable_counts(run.model)  # (trainable, frozen); refreshed each epoch (--unfreeze-after)
        self.messages = 0  # status + figure updates sent (benchmarks read it)
        self._version = 0  # bumped by the training thread when new rows arrive
        self._drawn_version = -1
        self._figure_at = 0.0  # when the figure was last sent
        self._state_stale = False  # the live figure changed since its widget state was last persisted
        self._status_html = ""
        self._done = threading.Event()
        self._render_thread: threading.Thread | None = None
        self._last_text = 0.0
        self._first_step: tuple[float, int] | None = None  # (time, step) at the first step end: the ETA's origin
        self._progress_handle = None  # text mode in a kernel: the one progress line, updated in place
        self._shown = False
        self.controls = None
        self.figure = None
        self._status_handle = self._figure_handle = None
        self.recorder = self.grad_panel = None
        self._grads_handle = self._flags_handle = None
        if watch_grads and recorder is None:  # off by default: then nothing is recorded and no step pays for it
            from ..engine.inspect.grads import GradientRecorder

            recorder = GradientRecorder(run.model, every=watch_every)
            run.callbacks.append(recorder)  # before the dashboard, so its report is ready at the end
        if recorder is not None:  # a panel that redraws when the recorder emits on_gradients
            from .grads import GradientPanel

            self.recorder, self.grad_panel = recorder, GradientPanel(recorder)

    # -- display (main thread, in the cell) -----------------------------------------------------
    def show(self) -> TrainingDashboard:
        from IPython.display import display

        self._shown = True
        if self.mode == "widget":
            import ipywidgets as W

            from .controls import RunControls

            fig, self._index = training_layout(self.classification)
            self.figure = figure_widget(fig)
            if self.figure is None:  # no widget frontend here after all: same view, static figures
                self.mode = "static"
                return self.show()
            # A click in the page (the loss panel's log button, a zoom) edits the figure too: persisted next tick.
            self.figure.observe(self._figure_edited, names=["_js2py_relayout", "_js2py_restyle", "_js2py_update"])
            self.status = W.HTML(self._render_status())
            self.controls = RunControls(self.run)
            box = W.VBox([self.status, self.controls.box])
            self._status_handle = display(box, display_id=True)
            self._figure_handle = display(self.figure, display_id=True)
            if self.grad_panel is not None:
                self._grads_handle = display(self.grad_panel.widget(), display_id=True)
                self._flags_handle = display({"text/plain": ""}, raw=True, display_id=True)  # the final flags
        elif self.mode == "static":
            self._status_handle = display({"text/html": self._render_status(), "text/plain": self.summary()},
                                          raw=True, display_id=True)
            self._figure_handle = display(self._figure_bundle(), raw=True, display_id=True)
            if self.grad_panel is not None:
                self._grads_handle = display(self.grad_panel.figure_bundle(), raw=True, display_id=True)
                self._flags_handle = display(self.grad_panel.flags_bundle(), raw=True, display_id=True)
        return self

    def _figure_edited(self, change) -> None:
        self._state_stale = True

    # -- callback hooks (training thread: cheap appends only) -----------------------------------
    def on_train_begin(self, run, logs):
        self.epochs = logs["epochs"]
        self.counts = trainable_counts(run.model)
        self._first_step = None
        for row in run.history:  # a resumed run starts with its earlier curves
            self.series[row.get("split", "train")].add(row)
        if self.mode in ("widget", "static") and self._shown:
            self._render_thread = threading.Thread(target=contextvars.copy_context().run, args=(self._render_loop,),
                                                   name="bigmodel_nb-render", daemon=True)
            self._render_thread.start()
        elif self.mode == "text":
            print(f"training {run.name}: {logs['total_steps']} steps ({logs['epochs']} epochs × "
                  f"{logs['steps_per_epoch']}) on {logs['device']}, amp {logs['amp']}, {logs['params']:,} parameters"
                  f"{' (' + self.params_text() + ')' if self.counts[1] else ''}")
            for note in run.notes:
                print(f"  {note}")

    def on_epoch_begin(self, run, logs):
        counts = trainable_counts(run.model)
        if counts != self.counts:  # e.g. unfrozen by --unfreeze-after
            self.counts = counts
            if self.mode == "text":
                print(f"epoch {logs['epoch']}: {self.params_text()}", flush=True)

    def on_step_end(self, run, logs):
        if self._first_step is None:  # after the start-up (workers, compilation, first batch): not in the rate
            self._first_step = (time.perf_counter(), run.step)
        if "loss" in logs:
            self.series["train"].add(logs)
            self.samples_per_s = logs.get("samples_per_s", self.samples_per_s)
            self._version += 1
            if self.mode == "text":
                self._maybe_print()

    def on_eval_end(self, run, logs):
        self.series["val"].add(logs)
        self._version += 1

    def on_gradients(self, run, logs):
        if self.grad_panel is not None:
            self.grad_panel.dirty = True

    def on_train_end(self, run, logs):
        self.final_metrics = self._final_metrics(run)
        self._done.set()
        if self._render_thread is not None:
            self._render_thread.join()
            self.render(force=True)  # the last rows, so the widget itself also ends in the final state
        self.finish()

    @staticmethod
    def _final_metrics(run) -> dict:
        """The task's main metrics on the validation split once the run ends (shown in the final summary)."""
        if run.status == "failed" or run.data.val is None or not len(run.data.val):
            return {}
        try:
            return run.evaluate("val", metrics=[m for m in FINAL_METRICS if m in TASK_SCORES.get(run.data.task, ())])
        except Exception as exc:  # a summary line must never turn a finished run into an error
            log.debug("final metrics failed: %s", exc)
            return {}

    # -- rendering ---------------------------------------------------------------------------------
    def _render_loop(self) -> None:
        while not self._done.wait(self.tick):
            self.render()

    def render(self, force: bool = False) -> None:
        """Send what changed since the last tick: the status, and the figure at most every FIGURE_EVERY_S
        (every tick when the tick is shorter than usual, as in tests) or when `force`d."""
        status = self._render_status()
        if status != self._status_html:
            self._status_html = status
            self.messages += 1
            if self.mode == "widget":
                self.status.value = status
            elif self._status_handle is not None:
                self._status_handle.update({"text/html": status, "text/plain": self.summary()}, raw=True)
        version, now = self._version, time.perf_counter()
        due = force or now - self._figure_at >= min(FIGURE_EVERY_S, 3 * self.tick)
        if version != self._drawn_version and due:
            self._drawn_version, self._figure_at = version, now
            self.messages += 1
            if self.mode == "widget":
                with self.figure.batch_update():
                    fill_training_figure(self.figure, self._index, self.series)
                self._state_stale = True
            elif self._figure_handle is not None:
                self._figure_handle.update(self._figure_bundle(), raw=True)
        if self._state_stale:  # what a page reloaded mid-run gets from the kernel: the curves drawn last
            self._state_stale = not persist_widget_state(self.figure)
        if self.grad_panel is not None:
            self._render_grads()
        if self.controls is not None:
            self.controls.sync()

    def finish(self) -> None:
        """Replace the live outputs by static ones (or print the summary in text mode)."""
        if self.controls is not None:
            self.controls.close()
        report = None
        if self.recorder is not None:  # the recorder's own report, even if it was detached mid-run
            report = getattr(self.run, "gradients", None) or self.recorder.report()
        if self.mode == "text" or not self._shown:
            if self.mode == "text":
                if self._progress_handle is not None:  # the progress line becomes the summary: no stale ETA stays
                    self._progress_handle.update({"text/plain": self.summary()}, raw=True)
                else:
                    print(self.summary())
                if report is not None:
                    from .grads import flags_text

                    print(flags_text(report))
                if in_kernel() and self.run.history:
                    from IPython.display import display

                    display(self._figure_bundle(final=True), raw=True)
                    if report is not None:
                        display(self.grad_panel.figure_bundle(report), raw=True)
            return
        if self._status_handle is None:  # display() outside IPython returns no handle
            return
        final = {"text/html": self._render_status(), "text/plain": self.summary()}
        self._status_handle.update(final, raw=True)
        self._figure_handle.update(self._figure_bundle(final=True), raw=True)
        if report is not None and self._grads_handle is not None:  # the static gradient figure and flags
            self._grads_handle.update(self.grad_panel.figure_bundle(report), raw=True)
            self._flags_handle.update(self.grad_panel.flags_bundle(report), raw=True)

    def _render_grads(self) -> None:
        if self.mode == "widget":
            self.messages += self.grad_panel.render()
        elif self._grads_handle is not None and self.grad_panel.dirty:
            self.grad_panel.dirty = False
            self._grads_handle.update(self.grad_panel.figure_bundle(), raw=True)
            self._flags_handle.update(self.grad_panel.flags_bundle(), raw=True)
            self.messages += 2

    def _figure_bundle(self, final: bool = False) -> dict:
        best = self.run.best if self.run.config.early_stop else None  # the weights the run ends with
        fig = training_figure_json(self.run.history, self.classification, best)
        return figure_bundle(fig, f"<training curves of {self.run.name}: {len(self.run.history)} rows>", final)

    # -- text -------------------------------------------------------------------------------------
    def progress_text(self) -> str:
        run = self.run
        parts = [f"epoch {run.epoch}/{self.epochs}", f"step {run.step}/{run.total_steps}"]
        last_train = self._last("train")
        if last_train:
            parts.append(f"loss {last_train['loss']:.4g}")
        last_val = self._last("val")
        if last_val:
            parts.append(f"val loss {last_val['loss']:.4g}")
            if "accuracy" in last_val:
                parts.append(f"val acc {last_val['accuracy']:.3f}")
        if self.samples_per_s:
            parts.append(self.throughput_text())
        eta = self.eta() if run.status == "running" else None  # an ended run has no ETA
        if eta is not None:
            parts.append(f"ETA {fmt_duration(eta)}")
        return " · ".join(parts)

    def throughput_text(self) -> str:
        """samples/s; tokens/s for language models, with the MFU where the GPU's peak is known."""
        run = self.run
        if run.data.task != "language-model" or not run.data.input_shape:
            return f"{self.samples_per_s:,.0f} samples/s"
        from ..engine.scale.flops import mfu

        tokens = run.data.input_shape[0]
        text = f"{self.samples_per_s * tokens:,.0f} tokens/s"
        if getattr(run, "workers", None):  # summed over Ray workers whose GPUs the notebook cannot see
            return text
        utilisation = mfu(run.model, self.samples_per_s * tokens, tokens, run.device)
        return text + (f" · MFU {utilisation:.0%}" if utilisation is not None else "")

    def summary(self) -> str:
        run = self.run
        head = {"completed": "completed", "stopped": "stopped", "failed": "failed", "paused": "paused",
                "running": "running"}.get(run.status, run.status)
        text = f"{run.name} {head} at step {run.step}/{run.total_steps} in {fmt_duration(run.elapsed)}"
        last_val = self._last("val")
        if last_val and run.config.early_stop and run.best and not run.alive:  # the weights it ended with
            last_val = run.best
            text += f" · best step {run.best['step']}"
        if last_val:
            text += f" · val loss {last_val['loss']:.4f}"
            if "accuracy" in last_val:
                text += f" · val accuracy {last_val['accuracy']:.4f}"
        elif self._last("train"):
            text += f" · train loss {self._last('train')['loss']:.4f}"
        if run.compile_time_s is not None:
            text += f" · compiled in {run.compile_time_s:.1f} s"
        if self.final_metrics:
            text += "\nval " + " · ".join(f"{FINAL_METRICS[k]} {_pct(k, v)}" for k, v in self.final_metrics.items())
        text += "".join(f"\n{n}" for n in run.notes if n.startswith("early stop"))
        if run.error:
            text += f"\n{run.error}"
        return text

    def params_text(self) -> str:
        trainable, frozen = self.counts
        return f"{trainable:,} trainable / {frozen:,} frozen parameters"

    def eta(self) -> float | None:
        """Seconds left at the rate since the first step ended, or None before a rate is known. The start-up
        (Ray workers, torch.compile, the first batch) is left out: counted in, 10 steps after a 40 s start
        predicted minutes for a run that ended seconds later."""
        if self._first_step is None:
            return None
        t0, step0 = self._first_step
        done, seconds = self.run.step - step0, time.perf_counter() - t0
        if done <= 0 or seconds <= 0:
            return None
        return max(0.0, (self.run.total_steps - self.run.step) * seconds / done)

    def _last(self, split: str) -> dict | None:
        s = self.series[split]
        if not s.step:
            return None
        return {k: v[-1] for k, v in s.values.items()}

    def _maybe_print(self) -> None:
        """Text mode: the progress line, at most every TEXT_EVERY_S. In a kernel's main thread (nbclient,
        nbconvert, nbval) it is one output updated in place, which `finish` turns into the summary, so a
        saved notebook shows how the run ended, not a stale ETA; elsewhere (a terminal, a background run)
        one line is printed each time."""
        now = time.perf_counter()
        if now - self._last_text >= TEXT_EVERY_S:
            self._last_text = now
            line = self.progress_text()
            if self._progress_handle is not None:
                self._progress_handle.update({"text/plain": line}, raw=True)
            elif in_kernel() and threading.current_thread() is threading.main_thread():
                from IPython.display import display

                sys.stdout.flush()  # the lines printed before it stay above it
                self._progress_handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                print(line, flush=True)

    def _render_status(self) -> str:
        run = self.run
        pct = 100.0 * run.step / run.total_steps if run.total_steps else 0.0
        workers = getattr(run, "workers", None)  # a DistributedRun: the device and memory are the workers'
        device = (f"{workers} Ray workers · amp {run.config.amp}" if workers
                  else f"{run.device} · amp {run.amp.name} · {memory_text(run.device)}")
        line = self.progress_text() if run.status in ("running", "paused", "created") else self.summary().split("\n")[0]
        error = f'<div class="bmnb-error">{html.escape(run.error)}</div>' if run.error else ""
        params = f" · <span class='bmnb-params'>{self.params_text()}</span>" if self.counts[1] else ""
        if run.compile_time_s is not None and run.status == "running":
            line += f" · compiled in {run.compile_time_s:.1f} s"
        notes = "".join(f"<div class='bmnb-note'>{html.escape(n)}</div>" for n in run.notes)
        system = self.system_text()
        system = f"<div class='bmnb-note bmnb-system'>{html.escape(system)}</div>" if system else ""
        return (f'{STYLE}<div class="bmnb-status bmnb-{run.status}" data-status="{run.status}" data-step="{run.step}">'
                f"<b>{html.escape(run.name)}</b> · <span class='bmnb-state'>{run.status}</span> · {device}{params}"
                f'<div class="bmnb-bar"><div style="width:{pct:.2f}%"></div></div>'
                f"<div class='bmnb-info'>{html.escape(line)}</div>{system}{notes}{error}</div>")

    def system_text(self) -> str:
        """The latest system sample while training (CPU, memory, GPU); the peaks once the run has ended."""
        samples = getattr(self.run, "system", None)
        if not samples:
            return ""
        if self.run.alive:
            s = samples[-1]
            parts = [f"CPU {s['cpu_percent']:.0f}%", f"RSS {fmt_bytes(s['rss_bytes'])}"]
            if "gpu_util" in s:
                parts += [f"GPU {s['gpu_util']:.0f}%", f"{fmt_bytes(s['gpu_memory_bytes'])}",
                          f"{s['gpu_temperature']:.0f} °C"]
            return "system: " + " · ".join(parts)
        parts = [f"peak RSS {fmt_bytes(max(s['rss_bytes'] for s in samples))}"]
        if any("gpu_memory_bytes" in s for s in samples):
            parts.append(f"peak GPU memory {fmt_bytes(max(s.get('gpu_memory_bytes', 0) for s in samples))}")
        return "system: " + " · ".join(parts)
