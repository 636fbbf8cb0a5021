"""The optimizer playground: sliders per optimizer, a function dropdown, a clickable start point, a step
scrubber, the loss per step beside the contour, and each optimizer's final distance in a table.

Each change recomputes every path with `torch.optim` and redraws in one `batch_update` (one message). While a
slider is dragged the redraws are throttled: at most one per `THROTTLE_S`, and always one with the last value,
so the kernel never falls behind the hand. (ipywidgets itself holds back a widget's next update until the
kernel has answered the previous one, so a drag does not queue hundreds of messages either.)

    PlaygroundView(Playground("rosenbrock")).show()
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import time

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.compare.landscapes import KNOB_RANGES, Trajectories
from ..engine.compare.playground import MAX_STEPS, Playground
from ..engine.core.errors import BigModelError, describe_exception
from .display import figure_widget, in_kernel, show_figure, ui_mode
from .figures import persist_widget_state
from .landscape import optimizer_color, surface, trajectory_figure
from .tables import rows_html, rows_text

THROTTLE_S = 0.1  # at most ~10 redraws a second while dragging; each takes well under this (bench/playground.py)
KNOB_LABELS = {"momentum": "μ", "alpha": "ρ", "beta1": "β₁", "beta2": "β₂", "eps": "ε", "weight_decay": "λ"}


class Throttle:
    """Call `fn` soon after a change, at most once per `interval` seconds, and always once after the last change.

    Each call is scheduled on the kernel's event loop rather than made at once, so the slider messages that
    queued up while the previous redraw ran are all read first and one redraw uses the newest values.
    `loop()` gives that loop, or None (outside a kernel: a script, a test) to run `fn` at once.
    Example: ``redraw = Throttle(view.redraw); slider.observe(lambda _: redraw(), "value")``
    """

    def __init__(self, fn, interval: float = THROTTLE_S, loop=None):
        self.fn, self.interval = fn, interval
        self.loop = loop or kernel_loop
        self._last = -float("inf")
        self._pending = None
        self.calls = 0

    def __call__(self) -> None:
        if self._pending is not None:  # a call is due; it will read the newest values
            return
        loop = self.loop()
        if loop is None:
            self._run()
            return
        wait = max(0.0, self._last + self.interval - time.perf_counter())
        self._pending = loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._pending = None
        self._last = time.perf_counter()
        self.calls += 1
        self.fn()


def kernel_loop():
    """The kernel's event loop while a comm message is handled, else None. Only in a kernel: elsewhere a running
    loop may belong to something else (Playwright's sync API keeps one on the main thread) and never run ours."""
    if not in_kernel():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def rows(pg: Playground) -> list[dict]:
    """The table under the playground: one row per optimizer. Example: ``rows(pg)[0]["distance"]``"""
    label = f"distance to {pg.trajectories.distance_to}"
    return [{"optimizer": name, "lr": pg.settings.lrs[name], "final f": r["loss"], label: r["distance"],
             "steps": r["steps"], "diverged": "yes" if r["diverged"] else ""} for name, r in pg.results.items()]


def playground_figure(pg: Playground) -> go.Figure:
    """The contour with one path per optimizer (left) and f per step (right), with markers at step 0.

    Example: ``playground_figure(Playground("beale")).show()``
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.09,
                        subplot_titles=("paths", "f(x, y) per step"))
    x, y, z = surface(pg.function)
    # hoverinfo "none" (not "skip"): no label, but clicks on the contour still reach the kernel
    fig.add_trace(go.Contour(x=x, y=y, z=z, ncontours=30, colorscale="Greys", opacity=0.55, line=dict(width=0.5),
                             showscale=False, hoverinfo="none", name="f"), row=1, col=1)
    names = pg.settings.optimizers
    for i, name in enumerate(names):
        color = optimizer_color(name, i)
        fig.add_trace(go.Scatter(mode="lines", name=name, legendgroup=name, line=dict(color=color, width=2),
                                 hovertemplate=f"{name}<br>(%{{x:.3f}}, %{{y:.3f}})<extra></extra>"), row=1, col=1)
    for i, name in enumerate(names):
        fig.add_trace(go.Scatter(mode="lines", name=name, legendgroup=name, showlegend=False,
                                 line=dict(color=optimizer_color(name, i), width=2),
                                 hovertemplate=f"{name}<br>step %{{x}}<br>f = %{{y:.4g}}<extra></extra>"), row=1, col=2)
    colors = [optimizer_color(n, i) for i, n in enumerate(names)]
    marker = dict(size=11, color=colors, line=dict(color="black", width=1.5))
    fig.add_trace(go.Scatter(mode="markers", marker=marker, showlegend=False, hoverinfo="skip", name="now"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(mode="markers", marker=dict(symbol="star", size=15, color="gold",
                                                         line=dict(color="black", width=1)),
                             name="target", hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Scatter(mode="markers", marker=dict(size=8, color=colors), showlegend=False, hoverinfo="skip",
                             name="now"), row=1, col=2)
    fig.update_layout(height=480, template="plotly_white", margin=dict(l=50, r=20, t=60, b=40),
                      legend=dict(orientation="h", x=0, y=-0.12), clickmode="event", dragmode=False,
                      uirevision="playground")
    fig.update_xaxes(title_text="step", row=1, col=2)
    fill(fig, pg, step=0, surface_too=False)
    return fig


def fill(fig, pg: Playground, step: int, surface_too: bool = True) -> None:
    """Write `pg`'s current paths (and, with `surface_too`, the function's contour) into `fig`."""
    fn, k = pg.function, len(pg.settings.optimizers)
    if surface_too:
        x, y, z = surface(fn)
        fig.data[0].update(x=x, y=y, z=z)
    for i, name in enumerate(pg.settings.optimizers):
        path, losses = pg.paths[name], pg.losses[name]
        fig.data[1 + i].update(x=path[:, 0], y=path[:, 1])
        fig.data[1 + k + i].update(x=np.arange(len(losses)), y=losses)
    targets = fn.targets
    fig.data[2 * k + 2].update(x=[t[0] for t in targets], y=[t[1] for t in targets], name=pg.trajectories.distance_to)
    move_markers(fig, pg, step)
    finite = np.concatenate([v[np.isfinite(v)] for v in pg.losses.values()])
    log = finite.size > 0 and float(finite.min()) > 0  # f ≤ 0 somewhere (the saddle) needs a linear axis
    (x0, x1), (y0, y1) = fn.bounds
    fig.update_xaxes(range=[x0, x1], title_text="x", showgrid=False, zeroline=False, row=1, col=1)
    fig.update_yaxes(range=[y0, y1], title_text="y", showgrid=False, zeroline=False, row=1, col=1)
    fig.update_yaxes(type="log" if log else "linear", row=1, col=2)
    s = pg.settings
    fig.update_layout(title=dict(text=f"{fn.name}: f(x, y) = {fn.formula}<br><sup>{s.steps} steps from "
                                      f"({s.start[0]:.3g}, {s.start[1]:.3g}) with torch.optim · click the contour "
                                      "to start elsewhere</sup>", x=0.01, font=dict(size=14)))


def move_markers(fig, pg: Playground, step: int) -> None:
    """Put each optimizer's marker where it is after `step` steps (a diverged one stays at its last point)."""
    k = len(pg.settings.optimizers)
    at = [pg.paths[n][min(step, len(pg.paths[n]) - 1)] for n in pg.settings.optimizers]
    fig.data[2 * k + 1].update(x=[float(p[0]) for p in at], y=[float(p[1]) for p in at])
    loss = [pg.losses[n][min(step, len(pg.losses[n]) - 1)] for n in pg.settings.optimizers]
    fig.data[2 * k + 3].update(x=[min(step, len(pg.losses[n]) - 1) for n in pg.settings.optimizers],
                               y=[float(v) for v in loss])


class PlaygroundView:
    """The live playground (see the module docstring). Example: ``PlaygroundView(pg).show()``"""

    def __init__(self, pg: Playground):
        self.pg = pg
        self.redraws = 0
        self.last_redraw_s = None
        self._mute = False

    def show(self) -> PlaygroundView:
        if ui_mode() != "widget":
            show_static(self.pg)
            return self
        self.fig = figure_widget(playground_figure(self.pg))
        if self.fig is None:  # no widget support here: the static figure of the current settings
            show_static(self.pg)
            return self
        from IPython.display import display

        display(self._build())
        return self

    def _build(self):
        import ipywidgets as W

        pg, s = self.pg, self.pg.settings
        self.request = Throttle(self.redraw)
        self.function = W.Dropdown(options=pg.functions, value=s.function, description="function",
                                   layout=W.Layout(width="220px"))
        # step=None on every float slider: no grid to snap to, so the values given (20, 0.9, a tuned lr) stay
        # exactly what they are until the student moves them
        # Every range holds the value given (a slider clamps what lies outside, which would change the settings)
        self.condition = W.FloatLogSlider(value=s.condition, base=10, min=0,
                                          max=max(3.0, np.ceil(np.log10(s.condition))), step=None, description="κ",
                                          readout_format=".3g", layout=W.Layout(width="260px"))
        self.steps = W.IntSlider(value=s.steps, min=min(10, s.steps), max=max(min(MAX_STEPS, 1000), s.steps), step=1,
                                 description="steps", layout=W.Layout(width="300px"))
        self.step = W.IntSlider(value=0, min=0, max=s.steps, description="step", layout=W.Layout(width="420px"))
        self.play = W.Play(value=0, min=0, max=s.steps, step=max(1, s.steps // 100), interval=60, description="play")
        W.jslink((self.play, "value"), (self.step, "value"))  # the browser drives the play; the kernel moves markers
        self.message = W.HTML()
        self.table = W.HTML(rows_html(rows(pg)))
        self.lr, self.knobs = {}, {}
        lines = []
        for i, name in enumerate(s.optimizers):
            color = optimizer_color(name, i)
            label = W.HTML(f"<b style='color:{color}'>{name}</b>", layout=W.Layout(width="90px"))
            exponent = np.log10(s.lrs[name])
            lr = W.FloatLogSlider(value=s.lrs[name], base=10, min=min(-5.0, np.floor(exponent)),
                                  max=max(1.0, np.ceil(exponent)), step=None, description="lr",
                                  readout_format=".3g", layout=W.Layout(width="280px"))
            self.lr[name] = lr
            boxes = [label, lr]
            for key, value in s.options[name].items():
                lo, hi, log = KNOB_RANGES[key]
                lo, hi = min(lo, value), max(hi, value)
                common = dict(description=KNOB_LABELS[key], readout_format=".3g", layout=W.Layout(width="230px"))
                slider = (W.FloatLogSlider(value=value, base=10, min=np.floor(np.log10(lo)), max=np.ceil(np.log10(hi)),
                                           step=None, **common)
                          if log else W.FloatSlider(value=value, min=lo, max=hi, step=None, **common))
                self.knobs[(name, key)] = slider
                boxes.append(slider)
            lines.append(W.HBox(boxes))
        for w in [self.function, self.condition, self.steps, *self.lr.values(), *self.knobs.values()]:
            w.observe(self._changed, "value")
        self.step.observe(self._on_step, "value")
        self.fig.data[0].on_click(self._on_click)
        self._show_condition()
        self._table_html()
        return W.VBox([W.HBox([self.function, self.condition, self.steps]), self.fig,
                       W.HBox([self.play, self.step]), *lines, self.message, self.table])

    def _show_condition(self) -> None:
        self.condition.layout.display = "" if self.function.value == "quadratic" else "none"

    def _on_click(self, trace, points, _state) -> None:
        if points.xs:
            try:
                self.pg.update(start=(points.xs[0], points.ys[0]))
            except Exception as e:  # runs from the browser's event: nowhere else to say it
                self._say(e)
                return
            self._draw(surface_too=False)

    def _say(self, e: Exception) -> None:
        """An error in a redraw, said under the controls (a kernel callback has no cell to print it in)."""
        text = str(e) if isinstance(e, BigModelError) else f"This change failed: {describe_exception(e)}"
        self.message.value = f"<span class='bmnb-error'>{html.escape(text)}</span>"

    def _on_step(self, change) -> None:
        with self.fig.batch_update():
            move_markers(self.fig, self.pg, int(change["new"]))
        persist_widget_state(self.fig)

    def redraw(self) -> None:
        """Read every control, recompute every path, draw: one figure update and one table update."""
        started = time.perf_counter()
        new_function = self.function.value != self.pg.settings.function
        new_surface = new_function or (self.function.value == "quadratic"
                                       and self.condition.value != self.pg.settings.condition)
        try:
            self.pg.update(function=self.function.value, condition=self.condition.value, steps=self.steps.value,
                           lrs=None if new_function else {n: s.value for n, s in self.lr.items()},
                           options={n: {k: s.value for (o, k), s in self.knobs.items() if o == n}
                                    for n in self.pg.settings.optimizers})
        except Exception as e:  # settings torch refuses, or your own f raising: say so, keep the last paths
            self._say(e)
            return
        if new_function:  # the new function's own learning rates, shown on the sliders without a second redraw
            for name, slider in self.lr.items():
                with self._muted():
                    slider.value = self.pg.settings.lrs[name]
            self._show_condition()
        self._draw(surface_too=new_surface)
        self.last_redraw_s = time.perf_counter() - started

    def _draw(self, surface_too: bool) -> None:
        steps = self.pg.settings.steps
        for w in (self.step, self.play):
            with self._muted():
                w.max = steps
        step = min(self.step.value, steps)
        with self.fig.batch_update():
            fill(self.fig, self.pg, step, surface_too=surface_too)
        persist_widget_state(self.fig)
        self._table_html()
        self.redraws += 1

    def _table_html(self) -> None:
        self.message.value = ""
        self.table.value = rows_html(rows(self.pg))

    @contextlib.contextmanager
    def _muted(self):
        """Controls set by the view itself (the new function's learning rates, the scrubber's end) do not
        trigger another redraw."""
        self._mute = True
        try:
            yield
        finally:
            self._mute = False

    def _changed(self, _change) -> None:
        if not self._mute:
            self.request()


def show_static(pg: Playground) -> None:
    """The figure and table of the current settings, where no widgets run (nbconvert, nbval, a terminal)."""
    result: Trajectories = pg.trajectories
    text = f"{pg.function.name}: " + ", ".join(
        f"{n} d={r['distance']:.3g}{' (diverged)' if r['diverged'] else ''}" for n, r in result.results.items())
    show_figure(trajectory_figure(result), text + f" — distance to the {result.distance_to} after the last step")
    if in_kernel():
        from IPython.display import display

        display({"text/html": rows_html(rows(pg)), "text/plain": rows_text(rows(pg))}, raw=True)
