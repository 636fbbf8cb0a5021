"""Controlling a run from the notebook: Stop / Pause / Resume buttons that work whether the cell
still blocks (the default) or the run went to the background.

While a cell blocks, a click must still reach the kernel. JupyterLab ≥ 4.4 sends widget
messages over a kernel subshell, but ipykernel 7 re-routes a comm's messages to the shell of
the request that last published on it — for a widget built in the cell, the blocked main
thread — so the click would wait until training ended. `route_clicks_to_subshell` lets the
message's own subshell header decide, and the click runs on the subshell thread at once.

Where that path is missing (older kernels, other frontends), the invisible `InterruptBridge`
notices that the click was not acknowledged within a moment and interrupts the kernel through
the Jupyter server (what the ■ toolbar button does). `Run.wait` hands that interrupt to
`hold_after_interrupt`: the run pauses and the cell returns; the queued click then arrives and
decides — Stop stops, Pause keeps it paused — and an interrupt no click follows (■) stops it.
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

from ..engine.core.run import Run

CLICK_GRACE_S = 2.0  # how long after an interrupt a queued Pause click may still arrive


def kernel_id() -> str:
    """This kernel's id as the Jupyter server knows it (from ``kernel-<id>.json``), or ''."""
    try:
        from ipykernel import get_connection_file

        match = re.match(r"kernel-(.+)\.json$", os.path.basename(get_connection_file()))
        return match.group(1) if match else ""
    except Exception:  # not in a kernel started by a Jupyter server
        return ""


def clicks_arrive_live() -> bool:
    """True when the frontend talks to this kernel over subshells (JupyterLab ≥ 4.4 with
    ipykernel ≥ 7), so the buttons' clicks reach the kernel while a cell blocks."""
    try:
        from IPython import get_ipython

        manager = get_ipython().kernel.shell_channel_thread.manager
        return bool(manager.list_subshell())
    except Exception:  # an older kernel, or no kernel at all
        return False


def route_clicks_to_subshell(widget) -> None:
    """Let the frontend's subshell header route this widget's messages (ipykernel ≥ 7), so its
    clicks are handled while the main thread is busy. Private ipykernel API: skipped if absent."""
    comm = getattr(widget, "comm", None)
    if comm is not None and hasattr(comm, "_reply_subshell_for"):
        comm._reply_subshell_for = lambda data, default: default


class InterruptBridge(anywidget.AnyWidget):
    """Invisible helper: while `armed`, a click on a button carrying the class
    ``bmnb-interrupts-<uid>`` that the kernel does not acknowledge (`acks`) within
    `grace_ms` asks the Jupyter server to interrupt this kernel."""

    _esm = Path(__file__).with_name("interrupt_bridge.js")
    uid = traitlets.Unicode("").tag(sync=True)
    kernel_id = traitlets.Unicode("").tag(sync=True)
    armed = traitlets.Bool(False).tag(sync=True)
    acks = traitlets.Int(0).tag(sync=True)
    grace_ms = traitlets.Int(400).tag(sync=True)


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
        self.stop_button.on_click(self._on_stop)
        self.bridge = InterruptBridge(uid=uid, kernel_id=kernel_id())
        for widget in (self.pause_button, self.resume_button, self.stop_button):
            route_clicks_to_subshell(widget)
        if not getattr(run, "can_pause", True):  # e.g. a run on Ray workers: Stop only
            self.pause_button.layout = W.Layout(width="96px", display="none")  # the layout is shared
        self.box = W.HBox([self.pause_button, self.resume_button, self.stop_button, self.bridge])
        self._interrupted_at: float | None = None
        self._pause_clicked_at = 0.0

    def _on_pause(self, _button=None) -> None:
        self._pause_clicked_at = time.monotonic()
        self.bridge.acks += 1  # tells the browser no interrupt is needed
        self.run.pause()
        self.sync()

    def _on_stop(self, _button=None) -> None:
        self.bridge.acks += 1
        self.run.stop()

    @property
    def interrupted(self) -> bool:
        """True while an interrupt waits for its click to decide between Pause and Stop."""
        return self._interrupted_at is not None

    def arm(self) -> None:
        self.bridge.armed = True

    def disarm(self) -> None:
        self.bridge.armed = False

    def hold_after_interrupt(self, run: Run) -> None:
        """`Run.wait`'s interrupt policy. Where clicks arrive live, an interrupt can only be ■:
        stop. Otherwise it may come from a button: pause now and let the queued click decide."""
        if clicks_arrive_live():
            run.stop()
            return
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
