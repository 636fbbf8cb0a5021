"""Optimizer paths drawn over a 2-D test function's contours, with a step slider and Play/Pause."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from ..engine.compare.landscapes import TestFunction, Trajectories

MAX_FRAMES = 60  # animation frames; each only moves one small shape per optimizer, so the JSON stays small

OPTIMIZER_COLORS = {"sgd": "#1f77b4", "momentum": "#ff7f0e", "nesterov": "#8c564b", "rmsprop": "#2ca02c",
                    "adagrad": "#e377c2", "adam": "#d62728", "adamw": "#9467bd"}
_FALLBACK = ("#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939")


def optimizer_color(name: str, i: int = 0) -> str:
    """The same colour for an optimizer in every figure. Example: ``optimizer_color("adam") == "#d62728"``"""
    return OPTIMIZER_COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def surface(fn: TestFunction, grid: int = 120):
    """x, y and f on a `grid` × `grid` sample of the function's bounds (log(1 + f) where it has a log scale).

    Example: ``x, y, z = surface(FUNCTIONS["beale"])``
    """
    (x0, x1), (y0, y1) = fn.bounds
    x, y = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    X, Y = torch.meshgrid(torch.from_numpy(x), torch.from_numpy(y), indexing="xy")
    with torch.no_grad():
        z = fn.values(torch.stack([X, Y])).numpy()
    if fn.log_scale:  # a deep narrow valley is invisible on a linear scale
        z = np.log1p(z)
    # float32 halves the payload and is plenty for a picture
    return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)


def _label(name: str, final: dict) -> str:
    return f"{name} (diverged)" if final["diverged"] else f"{name} (d={final['distance']:.2g})"


def trajectory_figure(result: Trajectories, *, grid: int = 120) -> go.Figure:
    """Contours of the function, each optimizer's full path and final point, and a slider that moves a
    marker per optimizer through the steps (Play animates it).

    Example: ``trajectory_figure(trajectories("rosenbrock")).show()``
    """
    fn = result.test_function
    x, y, z = surface(fn, grid)
    fig = go.Figure()
    fig.add_trace(go.Contour(x=x, y=y, z=z, ncontours=30, colorscale="Greys", opacity=0.55, line=dict(width=0.5),
                             colorbar=dict(title=dict(text="log(1+f)" if fn.log_scale else "f"), thickness=12),
                             hoverinfo="skip", name="f"))
    for i, (name, path) in enumerate(result.paths.items()):
        color, final = optimizer_color(name, i), result.results[name]
        steps = np.arange(len(path), dtype=np.float32)
        custom = np.stack([steps, result.losses[name].astype(np.float32)], axis=1)
        fig.add_trace(go.Scatter(x=path[:, 0].astype(np.float32), y=path[:, 1].astype(np.float32),
                                 mode="lines+markers", name=_label(name, final), legendgroup=name,
                                 line=dict(color=color, width=2), marker=dict(size=3, color=color), customdata=custom,
                                 hovertemplate=f"{name}<br>step %{{customdata[0]:.0f}}<br>(%{{x:.3f}}, %{{y:.3f}})"
                                               f"<br>f = %{{customdata[1]:.4g}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[final["x"]], y=[final["y"]], mode="markers", legendgroup=name, showlegend=False,
                                 name=f"{name} final",
                                 hovertemplate=f"{name} final<br>(%{{x:.4f}}, %{{y:.4f}})<extra></extra>",
                                 marker=dict(symbol="x" if final["diverged"] else "circle", size=11, color=color,
                                             line=dict(color="white", width=1.5))))

    targets = fn.targets  # drawn after the paths so the star stays on top
    fig.add_trace(go.Scatter(x=[t[0] for t in targets], y=[t[1] for t in targets], mode="markers",
                             name=result.distance_to, marker=dict(symbol="star" if fn.minima else "x", size=16,
                                                                  color="gold", line=dict(color="black", width=1))))

    # The moving "where is it now" markers are layout shapes, not traces: plotly.js drops a contour trace while
    # it animates scatter traces (plotly/plotly.py#2151), but frames that change only the layout redraw cleanly.
    colors = [optimizer_color(name, i) for i, name in enumerate(result.paths)]
    paths = list(result.paths.values())

    def heads(t: int) -> list[dict]:
        return [dict(type="circle", xref="x", yref="y", xsizemode="pixel", ysizemode="pixel",
                     xanchor=float(p[min(t, len(p) - 1), 0]), yanchor=float(p[min(t, len(p) - 1), 1]),
                     x0=-6, x1=6, y0=-6, y1=6, fillcolor=c, line=dict(color="black", width=1.5))
                for p, c in zip(paths, colors)]

    # At most MAX_FRAMES evenly spaced steps; an optimizer that diverged stays at its last point.
    longest = max(len(p) for p in paths)
    ticks = np.unique(np.linspace(0, longest - 1, min(MAX_FRAMES, longest)).round().astype(int))
    fig.frames = [go.Frame(name=str(t), layout=dict(shapes=heads(t))) for t in ticks]
    still = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    play = dict(frame=dict(duration=80, redraw=True), fromcurrent=True, transition=dict(duration=0))
    fig.update_layout(
        shapes=heads(0),
        sliders=[dict(active=0, x=0.1, len=0.9, y=0, yanchor="top", pad=dict(t=50, b=10),
                      currentvalue=dict(prefix="step ", xanchor="right"),
                      steps=[dict(label=str(t), method="animate", args=[[str(t)], still]) for t in ticks])],
        updatemenus=[dict(type="buttons", direction="left", x=0.1, y=0, xanchor="right", yanchor="top",
                          pad=dict(t=60, r=10), showactive=False,
                          buttons=[dict(label="▶", method="animate", args=[None, play]),
                                   dict(label="❚❚", method="animate", args=[[None], still])])])

    (x0, x1), (y0, y1) = fn.bounds
    steps_run = max(f["steps"] for f in result.results.values())
    fig.update_xaxes(range=[x0, x1], title_text="x", showgrid=False, zeroline=False)
    fig.update_yaxes(range=[y0, y1], title_text="y", showgrid=False, zeroline=False)
    fig.update_layout(
        height=560, template="plotly_white", margin=dict(l=50, r=20, t=70, b=40),
        legend=dict(orientation="v", x=1.12, y=1, title=dict(text=f"d = distance to the {result.distance_to}")),
        title=dict(text=f"{result.function}: f(x, y) = {fn.formula}<br><sup>{steps_run} steps from "
                        f"({result.start[0]:g}, {result.start[1]:g}) with torch.optim</sup>",
                   x=0.01, font=dict(size=14)))
    return fig
