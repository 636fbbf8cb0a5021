"""Showing gradient flow: a heatmap of log10 gradient norms (layers × steps), the latest norm per
layer as bars (log axis), a histogram of one layer's gradient values, and the flags as sentences.

The same builders draw the live panel of `%%train --watch-grads` (`GradientPanel`, redrawn at the
dashboard's tick) and the static figures of `%grads`. Heatmaps keep at most `MAX_COLUMNS` steps
and travel as float32 arrays, so the notebook stays light however long the run.
"""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.inspect.grads import GradientRecorder, GradientReport
from .display import figure_bundle, show_figure, ui_mode
from .figures import decimate

MAX_COLUMNS = 200  # heatmap columns (steps); older steps are decimated
FLAG_COLORS = {"nonfinite": "#d62728", "exploding": "#d62728", "vanishing": "#ff7f0e", "dead_relu": "#9467bd"}


def log_norms(steps: np.ndarray, norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(steps, log10 norms as float32 [layers × steps]) with at most `MAX_COLUMNS` columns, the newest
    kept; zero or non-finite norms become NaN (blank cells). Example: ``log_norms(steps, norms)[1].shape``"""
    cols, _ = decimate(np.arange(len(steps)), np.arange(len(steps)), MAX_COLUMNS)
    with np.errstate(all="ignore"):
        z = np.log10(np.asarray(norms, dtype=np.float64)[cols].T)
    z[~np.isfinite(z)] = np.nan
    return np.asarray(steps)[cols], z.astype(np.float32)


def flow_layout(n_layers: int = 1) -> go.Figure:
    """An empty heatmap (left) + latest-norm bars (right) figure sharing the layer axis."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.72, 0.28], horizontal_spacing=0.03,
                        subplot_titles=["log10 gradient norm per layer and step", "Latest gradient norm"])
    fig.add_trace(go.Heatmap(z=[], x=[], y=[], colorscale="Viridis", colorbar=dict(title="log10", thickness=12),
                             hovertemplate="%{y}<br>step %{x}<br>log10 norm %{z:.2f}<extra></extra>"), row=1, col=1)
    # Dots, not bars: on a log axis a bar starts at the axis minimum, so a 2x smaller norm would look vanished.
    fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker=dict(color="#1f77b4", size=9),
                             hovertemplate="%{y}: %{x:.3g}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(type="log", title_text="norm", row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)  # the first layer on top, as in the model
    fig.update_layout(height=_height(n_layers), template="plotly_white", showlegend=False, uirevision="keep",
                      margin=dict(l=140, r=20, t=40, b=40))
    return fig


def fill_flow(fig, layers: list[str], steps: np.ndarray, norms: np.ndarray) -> None:
    """Put the (decimated, float32) heatmap and the latest norms into a `flow_layout` figure."""
    x, z = log_norms(steps, norms)
    latest = np.asarray(norms[-1], dtype=np.float32) if len(norms) else np.zeros(len(layers), np.float32)
    fig.data[0].x, fig.data[0].y, fig.data[0].z = x, list(layers), z
    fig.data[1].x, fig.data[1].y = latest, list(layers)
    fig.layout.height = _height(len(layers))


def histogram_trace(report: GradientReport, layer: str, **kw) -> go.Bar:
    """Bars of one layer's gradient-value histogram (counts per bin)."""
    counts, edges = report.histograms.get(layer, (np.zeros(0), np.zeros(1)))
    return go.Bar(x=((edges[:-1] + edges[1:]) / 2).astype(np.float32), y=np.asarray(counts, dtype=np.int32),
                  width=np.diff(edges).astype(np.float32), marker_color="#1f77b4", name=layer,
                  hovertemplate="%{x:.3g}: %{y}<extra></extra>", **kw)


def histogram_figure(report: GradientReport, layer: str | None = None) -> go.Figure:
    """The histogram of `layer`'s latest gradient values (default: the first layer).

    Example: ``histogram_figure(report, report.layers[-1]).show()``
    """
    layer = layer or _default_layer(report)
    fig = go.Figure(histogram_trace(report, layer) if layer else [])
    fig.update_layout(height=280, template="plotly_white", margin=dict(l=50, r=20, t=40, b=40),
                      title=dict(text=_histogram_title(report, layer), x=0.01, font=dict(size=13)),
                      xaxis_title="gradient value", yaxis_title="count", bargap=0)
    return fig


def gradient_figures(report: GradientReport, layer: str | None = None) -> dict[str, go.Figure]:
    """``{"flow": heatmap + bars, "histogram": one layer's gradient values}``.

    Example: ``gradient_figures(bigmodel_nb.grads(model, "digits"))["flow"].show()``
    """
    flow = flow_layout(len(report.layers))
    fill_flow(flow, report.layers, np.asarray(report.steps), _norm_matrix(report))
    return {"flow": flow, "histogram": histogram_figure(report, layer)}


def gradient_figure(report: GradientReport) -> go.Figure:
    """One static figure: heatmap and bars on top, a histogram below whose layer a dropdown inside
    the figure picks (plain Plotly, so it works in saved notebooks too)."""
    n = len(report.layers)
    layers = [name for name in report.layers if name in report.histograms]
    fig = make_subplots(rows=2, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.03, vertical_spacing=0.12,
                        row_heights=[0.62, 0.38], specs=[[{}, {}], [{"colspan": 2}, None]],
                        subplot_titles=["log10 gradient norm per layer and step", "Latest gradient norm",
                                        _histogram_title(report, layers[0] if layers else None)])
    flow = gradient_figures(report)["flow"]
    fig.add_trace(flow.data[0], row=1, col=1)
    fig.add_trace(flow.data[1], row=1, col=2)
    fig.data[0].colorbar.update(len=0.55, y=0.75)
    for i, name in enumerate(layers):
        fig.add_trace(histogram_trace(report, name, visible=i == 0), row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(matches="y", showticklabels=False, autorange="reversed", row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(type="log", title_text="norm", row=1, col=2)
    fig.update_xaxes(title_text="gradient value", row=2, col=1)
    fig.update_yaxes(title_text="count", row=2, col=1)
    if len(layers) > 1:
        buttons = [dict(label=name, method="update",
                        args=[{"visible": [True, True] + [j == i for j in range(len(layers))]},
                              {"annotations[2].text": _histogram_title(report, name)}])
                   for i, name in enumerate(layers)]
        fig.update_layout(updatemenus=[dict(buttons=buttons, x=0.0, xanchor="left", y=0.36, yanchor="bottom",
                                            showactive=True)])
    fig.update_layout(height=_height(n) + 320, template="plotly_white", showlegend=False, bargap=0,
                      margin=dict(l=140, r=20, t=40, b=40))
    return fig


def flags_text(report: GradientReport) -> str:
    """The flags as sentences, one per line (or a line saying nothing was flagged)."""
    head = f"gradient flow: {len(report.layers)} layers × {len(report.steps)} recorded steps, {report.status}"
    if not report.flags:
        return f"{head} — no vanishing, exploding, dead-ReLU or NaN/Inf problems flagged."
    return "\n".join([f"{head}:"] + [f"  ⚠ {f['message']}" for f in report.flags])


def flags_html(flags: list[dict], head: str = "") -> str:
    """Flags as a compact HTML list (each sentence coloured by its kind)."""
    items = "".join(f"<li style='color:{FLAG_COLORS.get(f['kind'], '#333')}' data-kind='{f['kind']}'>"
                    f"{html.escape(f['message'])}</li>" for f in flags)
    body = f"<ul style='margin:2px 0 2px 18px;padding:0'>{items}</ul>" if flags else \
        "<div>No vanishing, exploding, dead-ReLU or NaN/Inf problems flagged.</div>"
    return f"<div class='bmnb-grad-flags' style='font:13px/1.5 var(--jp-ui-font-family,sans-serif)'>{head}{body}</div>"


def show_gradient_report(report: GradientReport, mode: str | None = None):
    """Show a report under the cell: flags, heatmap + bars, and a histogram whose layer a dropdown
    chooses (widget mode); static figures and the flags as text elsewhere. Returns the widget box in
    widget mode. Example: ``show_gradient_report(bigmodel_nb.grads(model, "digits"))``"""
    mode = mode or ui_mode()
    text = flags_text(report)
    if mode != "widget":
        show_figure(gradient_figure(report), text)
        return None
    import ipywidgets as W
    from IPython.display import display

    head = f"<b>gradient flow</b> · {len(report.layers)} layers × {len(report.steps)} steps · {report.status}"
    display({"text/html": flags_html(report.flags, head), "text/plain": text}, raw=True)
    figures = gradient_figures(report)
    display(figure_bundle(figures["flow"], "<gradient norms heatmap>"), raw=True)
    options = [name for name in report.layers if name in report.histograms]
    chooser = W.Dropdown(options=options, value=options[0] if options else None, description="layer")
    histogram = go.FigureWidget(figures["histogram"])

    def choose(change) -> None:
        trace = histogram_trace(report, change["new"])
        with histogram.batch_update():
            histogram.data[0].x, histogram.data[0].y, histogram.data[0].width = trace.x, trace.y, trace.width
            histogram.layout.title.text = _histogram_title(report, change["new"])

    chooser.observe(choose, names="value")
    box = W.VBox([chooser, histogram])
    display(box)
    return box


class GradientPanel:
    """The live gradient panel of a training dashboard: heatmap + bars (a FigureWidget) and the
    current flags, redrawn only after the recorder emitted ``on_gradients`` (the dashboard sets `dirty`).
    Example: ``GradientPanel(rec).widget()``"""

    def __init__(self, recorder: GradientRecorder):
        self.recorder = recorder
        self.figure = self.flags = None
        self.dirty = False  # new rows since the last draw

    def widget(self):
        import ipywidgets as W

        self.figure = go.FigureWidget(flow_layout(len(self.recorder.layers)))
        self.flags = W.HTML(flags_html([], "<b>gradient flow</b> · waiting for the first recorded steps"))
        return W.VBox([self.figure, self.flags])

    def render(self) -> int:
        """Redraw if new rows arrived; returns the number of messages sent (0 or 2)."""
        if not self.dirty or self.figure is None:
            return 0
        self.dirty = False
        layers, steps, norms = self.recorder.snapshot()
        with self.figure.batch_update():
            fill_flow(self.figure, layers, steps, norms)
        head = f"<b>gradient flow</b> · step {steps[-1] if len(steps) else 0}"
        self.flags.value = flags_html(self.recorder.flags(), head)
        return 2

    def figure_bundle(self, report: GradientReport | None = None) -> dict:
        """A static figure (mimebundle) of the recording so far, or of the final `report`."""
        if report is not None:
            fig = gradient_figure(report)
        else:
            layers, steps, norms = self.recorder.snapshot()
            fig = flow_layout(len(layers))
            fill_flow(fig, layers, steps, norms)
        return figure_bundle(fig, f"<gradient flow: {len(self.recorder.steps)} steps>", final=report is not None)

    def flags_bundle(self, report: GradientReport | None = None) -> dict:
        flags = report.flags if report is not None else self.recorder.flags()
        text = flags_text(report) if report is not None else "\n".join(f["message"] for f in flags)
        return {"text/html": flags_html(flags, "<b>gradient flow</b>"), "text/plain": text or "no gradient flags"}


def _norm_matrix(report: GradientReport) -> np.ndarray:
    return np.array([report.norms[name] for name in report.layers], dtype=np.float64).T.reshape(
        len(report.steps), len(report.layers))


def _default_layer(report: GradientReport) -> str | None:
    return next((name for name in report.layers if name in report.histograms), None)


def _histogram_title(report: GradientReport, layer: str | None) -> str:
    if layer is None:
        return "No gradient histogram recorded"
    return f"Gradient values of {layer}" + (f" at step {report.histogram_step}" if report.histogram_step else "")


def _height(n_layers: int) -> int:
    return int(min(720, max(260, 90 + 22 * n_layers)))
