"""Showing an optimizer comparison: one curve per optimizer, drawn live at a fixed tick, a Stop
button, and at the end a static figure and the results table (so a saved notebook keeps them)."""
from __future__ import annotations

import contextvars
import html
import math
import threading
import uuid

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.compare.optimizers import Comparison, OptimizerComparison
from ..engine.core.callbacks import Callback
from ..engine.core.run import interrupts_call
from .dashboard import TICK_S
from .display import STYLE, figure_bundle, figure_widget, in_kernel, ui_mode
from .figures import Series
from .tables import rows_html, rows_text

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def comparison_layout(names: list[str], classification: bool) -> tuple[go.Figure, dict]:
    """Train loss, validation loss (and accuracy) panels with one trace per optimizer each."""
    panels = [("train", "loss", "Train loss"), ("val", "loss", "Validation loss")]
    if classification:
        panels.append(("val", "accuracy", "Validation accuracy"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[2] for p in panels], horizontal_spacing=0.07)
    index = {}
    for col, (split, metric, _) in enumerate(panels, start=1):
        for i, name in enumerate(names):
            color = PALETTE[i % len(PALETTE)]
            fig.add_trace(go.Scatter(x=[], y=[], name=name, legendgroup=name, showlegend=col == 1,
                                     mode="lines" if split == "train" else "lines+markers",
                                     line=dict(color=color, width=2), marker=dict(size=5)), row=1, col=col)
            index[(name, split, metric)] = len(fig.data) - 1
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(height=320, template="plotly_white", margin=dict(l=50, r=20, t=40, b=40),
                      legend=dict(orientation="h", y=-0.25), uirevision="keep")
    return fig, index


def fill_comparison(fig, index, series: dict) -> None:
    for (name, split, metric), i in index.items():
        x, y = series[(name, split)].xy(metric)
        keep = np.isfinite(y)  # a diverged optimizer's last window is inf: leave it off the chart
        fig.data[i].x, fig.data[i].y = x[keep], y[keep]


def comparison_figure(result: Comparison, names: list[str], classification: bool) -> go.Figure:
    """The static figure of a finished comparison."""
    series = {(n, s): Series() for n in names for s in ("train", "val")}
    for row in result.history:
        series[(row["optimizer"], row["split"])].add(row)
    fig, index = comparison_layout(names, classification)
    fill_comparison(fig, index, series)
    return fig


class ComparisonDashboard(Callback):
    """Live view of an `OptimizerComparison`. Example: ``ComparisonDashboard(cmp).show().run()``"""

    def __init__(self, comparison: OptimizerComparison, mode: str | None = None, tick: float = TICK_S):
        self.comparison = comparison
        self.mode = mode or ui_mode()
        self.tick = tick
        self.names = comparison.names
        self.classification = comparison.data.task == "classification"
        self.series = {(n, s): Series() for n in self.names for s in ("train", "val")}
        self._version = self._drawn = 0
        self._done = threading.Event()
        self.figure = self.stop_button = self.bridge = None
        self._status_handle = self._figure_handle = None
        comparison.callbacks.append(self)  # a subscriber to the comparison's rows

    def show(self) -> ComparisonDashboard:
        if self.mode not in ("widget", "static"):
            return self
        import ipywidgets as W
        from IPython.display import display

        from .controls import InterruptBridge, kernel_id, route_clicks_to_subshell

        fig, self._index = comparison_layout(self.names, self.classification)
        if self.mode == "widget":
            self.figure = figure_widget(fig)
            self.mode = "widget" if self.figure is not None else "static"
        if self.mode == "static":  # VS Code, or no anywidget: the same view redrawn through display handles
            self._status_handle = display({"text/html": self._status(), "text/plain": "compare_optimizers"},
                                          raw=True, display_id=True)
            self._figure_handle = display(self._figure_bundle(fig), raw=True, display_id=True)
            return self
        self.status = W.HTML(self._status())
        uid = uuid.uuid4().hex[:12]
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger")
        self.stop_button.add_class("bmnb-stop")
        self.stop_button.add_class(f"bmnb-interrupts-{uid}")
        self.bridge = InterruptBridge(uid=uid, kernel_id=kernel_id())
        self.stop_button.on_click(self._on_stop)
        route_clicks_to_subshell(self.stop_button)
        self._status_handle = display(W.VBox([self.status, W.HBox([self.stop_button, self.bridge])]), display_id=True)
        self._figure_handle = display(self.figure, display_id=True)
        return self

    def _figure_bundle(self, fig) -> dict:
        return figure_bundle(fig, "<comparison curves>", final=False)

    def _on_stop(self, _button=None) -> None:
        self.bridge.acks += 1
        self.comparison.stop()

    def on_step_end(self, comparison, row: dict) -> None:
        self.series[(row["optimizer"], row["split"])].add(row)
        self._version += 1

    on_eval_end = on_step_end

    def run(self) -> Comparison:
        """Run the comparison in this thread; Stop or ■ end it at the next step."""
        render = None
        if self._figure_handle is not None:
            render = threading.Thread(target=contextvars.copy_context().run, args=(self._render_loop,), daemon=True)
            render.start()
        if self.bridge is not None:
            self.bridge.armed = True
        try:
            with interrupts_call(lambda *_: self.comparison.stop()):
                result = self.comparison.run()
        finally:
            self._done.set()
            if render is not None:
                render.join()
                self.render()  # the live view, too, ends in the final state
            if self.bridge is not None:
                self.bridge.armed = False
        self.finish(result)
        return result

    def _render_loop(self) -> None:
        while not self._done.wait(self.tick):
            self.render()

    def render(self) -> None:
        if self.mode == "static":
            self._status_handle.update({"text/html": self._status(), "text/plain": "compare_optimizers"}, raw=True)
        else:
            self.status.value = self._status()
        if self._version != self._drawn:
            self._drawn = self._version
            if self.mode == "static":
                fig, _ = comparison_layout(self.names, self.classification)
                fill_comparison(fig, self._index, self.series)
                self._figure_handle.update(self._figure_bundle(fig), raw=True)
                return
            with self.figure.batch_update():
                fill_comparison(self.figure, self._index, self.series)

    def finish(self, result: Comparison) -> None:
        rows = [{"optimizer": n, **{k: _fmt(v) for k, v in r.items()}} for n, r in result.results.items()]
        best = min(range(len(rows)), key=lambda i: _sort_key(result.results[rows[i]["optimizer"]]))
        head = (f"{STYLE}<div class='bmnb-status' data-status='{result.status}'><b>compare_optimizers</b> · "
                f"{result.status} · {html.escape(result.mode)} · same initial weights and batch order for all"
                + "".join(f"<div>{html.escape(n)}</div>" for n in result.notes) + "</div>")
        bundle = {"text/html": head + rows_html(rows, highlight=best), "text/plain": rows_text(rows)}
        fig = comparison_figure(result, self.names, self.classification)
        figure = figure_bundle(fig, f"<comparison curves: {len(result.history)} rows>")
        if self._status_handle is not None:
            self._status_handle.update(bundle, raw=True)
            self._figure_handle.update(figure, raw=True)
        elif in_kernel():
            from IPython.display import display

            display(bundle, raw=True)
            display(figure, raw=True)
        else:
            print(rows_text(rows))

    def _status(self) -> str:
        c = self.comparison
        pct = 100.0 * c.step / max(1, c.total_steps * (1 if c.mode != "sequential" else len(self.names)))
        return (f"{STYLE}<div class='bmnb-status' data-status='{c.status}' data-step='{c.step}'>"
                f"<b>compare_optimizers</b> · {c.status} · {', '.join(self.names)} · step {c.step}"
                f"<div class='bmnb-bar'><div style='width:{min(100.0, pct):.2f}%'></div></div></div>")


def _fmt(value):
    return round(value, 5) if isinstance(value, float) and math.isfinite(value) else value


def _sort_key(res: dict) -> float:
    v = res.get("val_loss", math.nan)
    return math.inf if res.get("diverged") or not math.isfinite(v) else v
