"""Controlling a run from the notebook: Stop / Pause / Resume buttons, and launching a run
either blocking the cell (the default) or in the background.

While a cell blocks, JupyterLab 4.6 does not deliver widget clicks to the busy kernel
(see NOTES.md), so a Stop or Pause click would sit in the queue until training ended. The
buttons therefore also interrupt the kernel from the browser (the same REST call as the ■
toolbar button). The interrupt reaches `Run.wait`, which hands it to `hold_after_interrupt`:
the run is paused at the next step boundary and the cell returns; then the queued click is
delivered and says what was meant — Stop stops, Pause keeps it paused. An interrupt that no
click follows (■ itself) stops the run, as the contract says.
"""
from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import anywidget
import ipywidgets as W
import traitlets

from ..engine.run import Run

CLICK_GRACE_S = 2.0  # how long after an interrupt a queued Pause click may still arrive


def kernel_id() -> str:
    """This kernel's id as the Jupyter server knows it (from ``kernel-<id>.json``), or ''."""
    try:
        from ipykernel import get_connection_file

        match = re.match(r"kernel-(.+)\.json$", os.path.basename(get_connection_file()))
        return match.group(1) if match else ""
    except Exception:  # not in a kernel started by a Jupyter server
        return ""


class InterruptBridge(anywidget.AnyWidget):
    """Invisible helper: while `armed`, a click on a button carrying the class
    ``bmnb-interrupts-<uid>`` also asks the Jupyter server to interrupt this kernel."""

    _esm = Path(__file__).with_name("interrupt_bridge.js")
    uid = traitlets.Unicode("").tag(sync=True)
    kernel_id = traitlets.Unicode("").tag(sync=True)
    armed = traitlets.Bool(False).tag(sync=True)


class RunControls:
    """Pause, Resume and Stop buttons for one run. Example: ``RunControls(run).stop_button.click()``"""

    def __init__(self, run: Run):
        self.run = run
        uid = uuid.uuid4().hex[:12]
        layout = W.Layout(width="96px")
        self.pause_button = W.Button(description="Pause", icon="pause", tooltip="Pause at the next step", layout=layout)
        self.resume_button = W.Button(description="Resume", icon="play", disabled=True, layout=layout)
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Stop at the next step; the model and history are kept", layout=layout)
        for button in (self.pause_button, self.stop_button):
            button.add_class(f"bmnb-interrupts-{uid}")
        self.pause_button.add_class("bmnb-pause")
        self.resume_button.add_class("bmnb-resume")
        self.stop_button.add_class("bmnb-stop")
        self.pause_button.on_click(self._on_pause)
        self.resume_button.on_click(lambda _: run.resume())
        self.stop_button.on_click(lambda _: run.stop())
        self.bridge = InterruptBridge(uid=uid, kernel_id=kernel_id())
        self.box = W.HBox([self.pause_button, self.resume_button, self.stop_button, self.bridge])
        self._interrupted_at: float | None = None
        self._pause_clicked_at = 0.0

    def _on_pause(self, _button=None) -> None:
        self._pause_clicked_at = time.monotonic()
        self.run.pause()

    def arm(self) -> None:
        self.bridge.armed = True

    def disarm(self) -> None:
        self.bridge.armed = False

    def hold_after_interrupt(self, run: Run) -> None:
        """`Run.wait`'s interrupt policy: pause now, let the click that caused it decide."""
        self._interrupted_at = time.monotonic()
        run.pause()
        timer = threading.Timer(CLICK_GRACE_S, self._resolve_interrupt)
        timer.daemon = True
        timer.start()

    def _resolve_interrupt(self) -> None:
        if self._interrupted_at is not None and self._pause_clicked_at < self._interrupted_at:
            self.run.stop()  # no Pause click came: it was Stop or the ■ button
        self._interrupted_at = None

    def sync(self) -> None:
        """Enable the buttons that make sense now (traitlets only sends what changed)."""
        alive, paused = self.run.alive, self.run.paused
        self.pause_button.disabled = not alive or paused
        self.resume_button.disabled = not (alive and paused)
        self.stop_button.disabled = not alive

    def close(self) -> None:
        self.disarm()
        for button in (self.pause_button, self.resume_button, self.stop_button):
            button.disabled = True


def launch(model, data, config, *, name: str = "run", callbacks=(), background: bool = False,
           quiet: bool = False, mode: str | None = None, optimizer=None, publish=None) -> Run:
    """Create a run, show its dashboard, start it, and (unless `background`) wait in the cell.

    Example: ``run = launch(model, "digits", TrainConfig(epochs=3))``
    """
    from .dashboard import TrainingDashboard

    run = Run(model, data, config, name=name, optimizer=optimizer)
    if publish is not None:  # e.g. store it in the notebook before the first step, for --background
        publish(run)
    dashboard = None if quiet else TrainingDashboard(run, mode).show()
    run.start([*callbacks, *([dashboard] if dashboard else [])])
    if not background:
        wait_in_cell(run, dashboard.controls if dashboard else None)
    return run


def wait_in_cell(run: Run, controls: RunControls | None) -> Run:
    """Block the cell until the run ends; with buttons on screen, clicks interrupt the wait."""
    if controls is None:
        return run.wait()
    controls.arm()
    try:
        run.wait(on_interrupt=controls.hold_after_interrupt)
    finally:
        controls.disarm()
    return run
