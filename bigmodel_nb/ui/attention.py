"""Attention maps as heatmaps: one head with a layer/head dropdown, and every head of a layer in a grid.

Both are static Plotly figures (the dropdown is Plotly's own), so they work in every frontend and in a
saved notebook; their size is bounded by what `engine.attention` captured.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.inspect.attention import AttentionMaps
from .display import show_figure

COLORSCALE = "Blues"


def _axis(labels: list[str]) -> dict:
    # Numeric positions with text ticks: a categorical axis would merge repeated tokens into one column.
    step = max(1, math.ceil(len(labels) / 40))
    ticks = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=ticks, ticktext=[labels[i] for i in ticks], tickangle=0,
                tickfont=dict(size=10, family="monospace"), showgrid=False)


def _heatmap(w: np.ndarray, layer: int, head: int, visible=True, **kw) -> go.Heatmap:
    # No per-cell hover text: T² strings per head would dwarf the weights themselves in the saved notebook.
    return go.Heatmap(z=w.astype(np.float32), zmin=0, zmax=1, colorscale=COLORSCALE, visible=visible,
                      name=f"layer {layer} head {head}",
                      hovertemplate="query %{y} → key %{x}<br>weight %{z:.3f}<extra></extra>", **kw)


def attention_figure(maps: AttentionMaps, layer: int | None = None, head: int | None = None) -> go.Figure:
    """One head's map (rows: the token attending, columns: the token attended to), with a dropdown over
    every captured layer and head. Example: ``attention_figure(maps, layer=1, head=0).show()``"""
    layer = maps.layers[-1] if layer is None else layer
    head = maps.heads[0] if head is None else head
    fig = go.Figure()
    choices = []
    for li in maps.layers:
        for hi, h in enumerate(maps.heads):
            fig.add_trace(_heatmap(maps.weights(li)[hi].numpy(), li, h,
                                   visible=(li == layer and h == head)))
            choices.append(f"layer {li} · head {h}")
    n = len(choices)
    buttons = [dict(label=c, method="update", args=[{"visible": [j == i for j in range(n)]},
                                                   {"title.text": _title(maps, c)}]) for i, c in enumerate(choices)]
    active = choices.index(f"layer {layer} · head {head}")
    fig.update_layout(
        title=dict(text=_title(maps, choices[active]), x=0.01, font=dict(size=14)),
        updatemenus=[dict(buttons=buttons, active=active, x=1.0, xanchor="right", y=1.12, yanchor="bottom",
                          direction="down", showactive=True)] if n > 1 else [],
        height=min(720, 260 + 11 * len(maps.tokens)), template="plotly_white",
        margin=dict(l=60, r=20, t=80, b=50))
    fig.update_xaxes(title_text="attended to (key)", side="bottom", **_axis(maps.tokens))
    fig.update_yaxes(title_text="attending (query)", autorange="reversed", **_axis(maps.tokens))
    return fig


def heads_figure(maps: AttentionMaps, layer: int | None = None) -> go.Figure:
    """Every captured head of one layer side by side. Example: ``heads_figure(maps, layer=0).show()``"""
    layer = maps.layers[-1] if layer is None else layer
    w = maps.weights(layer).numpy()
    cols = min(4, len(maps.heads))
    rows = math.ceil(len(maps.heads) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in maps.heads],
                        horizontal_spacing=0.04, vertical_spacing=0.08)
    for i, h in enumerate(maps.heads):
        fig.add_trace(_heatmap(w[i], layer, h, showscale=(i == 0)), row=i // cols + 1, col=i % cols + 1)
    axis = _axis(maps.tokens) if len(maps.tokens) <= 16 else dict(showticklabels=False, showgrid=False)
    fig.update_xaxes(**axis)
    fig.update_yaxes(autorange="reversed", **axis)
    fig.update_layout(title=dict(text=f"All heads of layer {layer}", x=0.01, font=dict(size=14)),
                      height=80 + 230 * rows, template="plotly_white", margin=dict(l=40, r=20, t=70, b=30))
    return fig


def _title(maps: AttentionMaps, choice: str) -> str:
    extra = f"<br><sup>{'; '.join(maps.notes)}</sup>" if maps.notes else ""
    return f"Attention, {choice}{' (causal)' if maps.causal else ''}{extra}"


def describe(maps: AttentionMaps, layer: int, head: int) -> str:
    """A line of text per map shown: where each head looks most, for terminals and nbval."""
    w = maps.weights(layer)[maps.heads.index(head)]
    top = w.argmax(-1).tolist()
    pairs = ", ".join(f"{maps.tokens[q]}→{maps.tokens[k]}" for q, k in list(enumerate(top))[-8:])
    return f"{maps!r}; layer {layer} head {head}, strongest key for the last queries: {pairs}"


def show_attention(maps: AttentionMaps, layer: int | None = None, head: int | None = None) -> None:
    """The selected head (dropdown over all captured ones), then all heads of its layer."""
    layer = maps.layers[-1] if layer is None else layer
    head = maps.heads[0] if head is None else head
    show_figure(attention_figure(maps, layer, head), describe(maps, layer, head))
    if len(maps.heads) > 1:
        show_figure(heads_figure(maps, layer), f"all {len(maps.heads)} captured heads of layer {layer}")
