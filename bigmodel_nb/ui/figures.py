"""Figure builders: each returns a `plotly.graph_objects` figure, so the live widget and the
static snapshot are drawn by the same code."""
from __future__ import annotations

import copy
import functools
import json

import numpy as np
import plotly.graph_objects as go
import plotly.utils
from plotly.subplots import make_subplots

MAX_POINTS = 400  # per trace; older points are decimated so long runs stay light in the browser

COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "lr": "#2ca02c"}
# The training figure's frame: the panels keep 220 px of height; the top margin holds a row for the loss
# panel's linear/log buttons above the subplot titles (27 px tall; plotly draws buttons 33 px tall at least).
HEIGHT, MARGIN_T, MARGIN_B = 328, 68, 40
PANEL_H = HEIGHT - MARGIN_T - MARGIN_B
MENU_Y = 1 + 32 / PANEL_H  # the buttons' bottom edge in paper units: 32 px above the panels, 5 px above the titles


def decimate(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` points: an even stride over the history, always keeping the newest point.

    Example: ``decimate(np.arange(10_000), losses)[0].size <= 400``
    """
    n = len(x)
    if n <= limit:
        return x, y
    idx = np.unique(np.r_[np.linspace(0, n - 1, limit - 1).astype(np.int64), n - 1])
    return x[idx], y[idx]


class Series:
    """Columns of one split's history rows, appended cheaply from the training thread."""

    def __init__(self):
        self.step: list[float] = []
        self.values: dict[str, list[float]] = {}

    def add(self, row: dict, keys=("loss", "accuracy", "lr")) -> None:
        self.step.append(row["step"])
        for k in keys:
            if k in row:
                self.values.setdefault(k, []).append(row[k])

    def xy(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        # Values first, then the same-length prefix of steps: both only grow (the training thread
        # appends step, then values), so a concurrent append cannot misalign them.
        y = np.asarray(self.values.get(key, ()), dtype=np.float64)
        x = np.asarray(self.step[:len(y)], dtype=np.float64)
        return decimate(x, y)


def training_layout(classification: bool) -> tuple[go.Figure, dict[tuple[str, str], int]]:
    """An empty training figure and the index of each (split, metric) trace in `fig.data`."""
    panels = ["loss"] + (["accuracy"] if classification else []) + ["lr"]
    titles = {"loss": "Loss", "accuracy": "Accuracy", "lr": "Learning rate"}
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[titles[p] for p in panels],
                        horizontal_spacing=0.07)
    index: dict[tuple[str, str], int] = {}
    for col, metric in enumerate(panels, start=1):
        splits = ("lr",) if metric == "lr" else ("train", "val")
        for split in splits:
            name = "lr" if metric == "lr" else split
            fig.add_trace(go.Scatter(x=[], y=[], name=name, mode="lines+markers" if split == "val" else "lines",
                                     line=dict(color=COLORS[name], width=2), marker=dict(size=5),
                                     legendgroup=name, showlegend=metric == "loss" or metric == "lr"),
                          row=1, col=col)
            index[(split if metric != "lr" else "train", metric)] = len(fig.data) - 1
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_layout(height=HEIGHT, margin=dict(l=50, r=20, t=MARGIN_T, b=MARGIN_B), template="plotly_white",
                      legend=dict(orientation="h", y=-0.25), uirevision="keep",
                      updatemenus=[loss_scale_menu(fig.data[index[("train", "loss")]].yaxis)])
    return fig, index


def loss_scale_menu(yaxis: str = "y", menu: int = 0) -> dict:
    """"linear" / "log" buttons that switch the loss panel's y axis (`yaxis`: its trace's ``"y"``, ``"y2"`` ...),
    in the row above the subplot titles, over the loss panel's left edge; `menu`: its index in `updatemenus`.

    Each button also relayouts its own ``active``: plotly.js marks the clicked button without a relayout
    event, so a live widget's kernel side (what a reloaded page is drawn from) would not learn of it."""
    axis = yaxis.replace("y", "yaxis")
    return dict(type="buttons", direction="right", x=0, xanchor="left", y=MENU_Y, yanchor="bottom",
                showactive=True, active=0, bgcolor="#dddddd", bordercolor="#999999", font=dict(size=11),
                pad=dict(l=0, r=0, t=0, b=0), name="loss scale", buttons=[
                    dict(label=scale, method="relayout",
                         args=[{f"{axis}.type": scale, f"updatemenus[{menu}].active": i}])
                    for i, scale in enumerate(("linear", "log"))])


def fill_training_figure(fig, index, series: dict[str, Series]) -> None:
    """Copy the (decimated) series into the figure's traces; numpy arrays travel as binary buffers."""
    for (split, metric), i in index.items():
        x, y = series[split].xy(metric)
        fig.data[i].x, fig.data[i].y = x, y
        if metric == "lr" and len(y):  # plotly would centre a constant LR in [-1, 1]
            fig.layout[fig.data[i].yaxis.replace("y", "yaxis")].range = [0, 1.15 * float(y.max()) or 1.0]


def persist_widget_state(widget) -> bool:
    """Make a live ``FigureWidget``'s synced state the figure it shows now, so a reloaded page draws that.

    plotly syncs a FigureWidget's ``_widget_data`` / ``_widget_layout`` once, when it is displayed; every
    later edit (``batch_update``, ``fig.data[i].x = ...``, a layout range) travels as a one-off update
    message that only the page open at the time applies to its copy. A page reloaded mid-run asks the
    kernel for the widget's state and got the figure as first displayed: empty traces, and no LR range,
    which plotly does not send again while the LR stays constant (so the next update drew the LR at 0 on
    a [-1, 1] axis). The copies are swapped in without a message: the open page has these values already.

    Call it after each ``batch_update``. Returns False (nothing changed; try again next time) when the
    figure was being edited from another thread meanwhile (e.g. a click in the browser).
    Example: ``with w.batch_update(): fill_training_figure(w, index, series)`` then ``persist_widget_state(w)``
    """
    values = getattr(widget, "_trait_values", None)
    if values is None or "_widget_data" not in values:  # not a widget (a plain go.Figure): nothing is synced
        return True
    try:
        data, layout = copy.deepcopy(widget._data), copy.deepcopy(widget._layout_obj._props)
    except RuntimeError:  # "dictionary changed size during iteration"
        return False
    values["_widget_data"], values["_widget_layout"] = data, layout  # plain reference swaps: no sync, no lock
    return True


def training_figure(history: list[dict], classification: bool, title: str | None = None) -> go.Figure:
    """The static training figure of a run's history. Example: ``training_figure(run.history, True).show()``"""
    series = {"train": Series(), "val": Series()}
    for row in history:
        series[row.get("split", "train")].add(row)
    fig, index = training_layout(classification)
    fill_training_figure(fig, index, series)
    if title:
        # one more row on top for the title: the panels and the buttons keep their places
        fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=13), yref="container", y=1, yanchor="top",
                                     pad=dict(t=8)), margin=dict(t=MARGIN_T + 28), height=HEIGHT + 28)
    return fig


@functools.lru_cache(maxsize=2)
def _layout_json(classification: bool) -> tuple[str, dict]:
    fig, index = training_layout(classification)
    return json.dumps(fig.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder), index


def training_figure_json(history: list[dict], classification: bool, best: dict | None = None) -> dict:
    """`training_figure` as the Plotly JSON a static display bundle carries, built without validating a
    figure object (~1 ms instead of ~30: a run's final snapshot is drawn on its training thread).
    `best`: a validation row marked on every panel (the weights --early-stop restored)."""
    template, index = _layout_json(classification)
    fig = json.loads(template)
    series = {"train": Series(), "val": Series()}
    for row in history:
        series[row.get("split", "train")].add(row)
    for (split, metric), i in index.items():
        x, y = series[split].xy(metric)
        fig["data"][i]["x"], fig["data"][i]["y"] = x.tolist(), y.tolist()
        if metric == "lr" and len(y):  # as fill_training_figure: a constant LR is not centred in [-1, 1]
            axis = fig["data"][i].get("yaxis", "y").replace("y", "yaxis")
            fig["layout"].setdefault(axis, {})["range"] = [0, 1.15 * float(y.max()) or 1.0]
    if best is not None:
        axes = sorted({fig["data"][i].get("xaxis", "x") for i in index.values()})
        fig["layout"]["shapes"] = [{"type": "line", "xref": axis, "yref": "paper", "x0": best["step"],
                                    "x1": best["step"], "y0": 0, "y1": 1,
                                    "line": {"color": "#2ca02c", "dash": "dot", "width": 2}} for axis in axes]
        fig["layout"].setdefault("annotations", []).append({
            "xref": axes[0], "yref": "paper", "x": best["step"], "y": 1, "yanchor": "bottom", "showarrow": False,
            "text": f"best (step {best['step']}): weights kept", "font": {"color": "#2ca02c", "size": 11}})
    return fig


def lr_finder_figure(result) -> go.Figure:
    """Smoothed loss against the learning rate (log axis), the suggestion marked.

    Example: ``lr_finder_figure(bigmodel_nb.lr_find(model, "digits", show=False)).show()``
    """
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.asarray(result.lrs), y=np.asarray(result.raw_losses), name="loss per batch",
                             mode="lines", line=dict(color="#c7c7c7", width=1)))
    fig.add_trace(go.Scatter(x=np.asarray(result.lrs), y=np.asarray(result.losses), name="smoothed loss",
                             mode="lines", line=dict(color=COLORS["train"], width=2)))
    if result.suggestion:
        i = int(np.argmin(np.abs(np.asarray(result.lrs) - result.suggestion)))
        fig.add_trace(go.Scatter(x=[result.suggestion], y=[result.losses[i]],
                                 name=f"suggested lr {result.suggestion:.2g}",
                                 mode="markers", marker=dict(color="#d62728", size=12, symbol="star")))
        fig.add_vline(x=result.suggestion, line=dict(color="#d62728", dash="dot"))
    finite = [v for v in result.losses if np.isfinite(v)]
    if finite:  # keep the diverging tail from flattening the interesting part
        low, first = min(finite), finite[0]
        fig.update_yaxes(range=[low - 0.1 * (first - low), first + 0.5 * (first - low)])
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(title_text="loss")
    fig.update_layout(height=340, template="plotly_white", margin=dict(l=50, r=20, t=40, b=40),
                      title=dict(text=f"LR range test ({result.optimizer})", x=0.01, font=dict(size=13)))
    return fig
