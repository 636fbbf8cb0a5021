"""`%runs` rendered: the table of runs, and their curves overlaid — one colour per run, validation solid
and training dotted — on a step or time axis. In JupyterLab a run picker, a metric menu and the axis
switch redraw the chart; elsewhere the table and a static figure of every run's loss (or text).
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from .dashboard import fmt_duration
from .display import STYLE, figure_bundle, figure_widget, rich_output, ui_mode
from .summary import fmt_bytes
from .tables import rows_html, rows_text

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
SHOWN = 8  # runs selected at first: the newest ones


def display_rows(runs) -> list[dict]:
    """The table's rows formatted for people (time, bytes, throughput)."""
    out = []
    for row in runs.rows():
        shown = {}
        for key, value in row.items():
            if key.startswith("peak"):
                value = fmt_bytes(value) if value is not None else None
            elif key == "time_s":
                key, value = "time", fmt_duration(value) if value is not None else None
            elif key == "samples/s" and value is not None:
                value = f"{value:,.0f}"
            elif key == "params" and value is not None:
                value = f"{value:,}"
            elif "accuracy" in key and isinstance(value, float):
                value = f"{value:.2%}"
            shown[key] = value
        out.append(shown)
    return out


def metrics_of(runs) -> list[str]:
    """The curves there are: loss first, then every other numeric key of the rows (accuracy, lr, …)."""
    keys = []
    for record in runs:
        for row in record.history:
            keys += [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and k not in ("step", "epoch", "time", "samples_per_s", "number") and k not in keys]
    return sorted(keys, key=lambda k: (k != "loss", k != "accuracy", k))


def runs_figure(runs, selected=None, metric: str = "loss", axis: str = "step") -> go.Figure:
    """One figure: `metric` of each selected run against `axis` (step or time), val solid and train dotted."""
    labels = [r.label for r in runs] if selected is None else list(selected)
    fig = go.Figure()
    for i, record in enumerate(runs):
        if record.label not in labels:
            continue
        color = PALETTE[i % len(PALETTE)]
        for split, dash in (("val", "solid"), ("train", "dot")):
            rows = [r for r in record.rows(split) if isinstance(r.get(metric), (int, float))
                    and isinstance(r.get(axis), (int, float))]  # a row without a time has no place on a time axis
            if not rows:
                continue
            fig.add_trace(go.Scatter(
                x=[r[axis] for r in rows], y=[r[metric] for r in rows], name=f"{record.label} {split}",
                mode="lines+markers" if split == "val" else "lines", legendgroup=record.label,
                line=dict(color=color, dash=dash, width=2), marker=dict(size=5)))
    fig.update_layout(
        height=340, template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), uirevision="runs",
        title=dict(text=f"{metric} by {axis} ({len(labels)} run{'' if len(labels) == 1 else 's'})", x=0.01,
                   font=dict(size=13)),
        xaxis=dict(title="step" if axis == "step" else "time (s)"), yaxis=dict(title=metric),
        legend=dict(orientation="v", x=1.02), updatemenus=[_scale_buttons()])
    return fig


def _scale_buttons() -> dict:
    return dict(type="buttons", direction="right", x=1, xanchor="right", y=1.02, yanchor="bottom", showactive=True,
                bgcolor="#dddddd", bordercolor="#999999", buttons=[
                    dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                    dict(label="log", method="relayout", args=[{"yaxis.type": "log"}])])


def runs_text(runs) -> str:
    lines = [f"runs: {len(runs)}", rows_text(display_rows(runs))]
    return "\n".join(lines + [f"note: {n}" for n in runs.notes])


def runs_html(runs) -> str:
    notes = "".join(f"<div class='bmnb-note'>note: {html.escape(n)}</div>" for n in runs.notes)
    return (f"{STYLE}<div class='bmnb-runs' style='font:13px/1.5 var(--jp-ui-font-family,sans-serif)'>"
            f"<div><b>runs</b> · {len(runs)}</div>{rows_html(display_rows(runs))}{notes}</div>")


class RunsView:
    """The interactive view: pick runs, a metric and the x axis; the overlaid curves follow."""

    def __init__(self, runs):
        import ipywidgets as widgets

        self.runs = runs
        labels = [r.label for r in runs]
        self.picker = widgets.SelectMultiple(options=labels, value=tuple(labels[-SHOWN:]), rows=min(8, len(labels)),
                                             description="runs")
        self.metric = widgets.Dropdown(options=metrics_of(runs) or ["loss"], description="metric")
        self.axis = widgets.ToggleButtons(options=["step", "time"], description="x axis",
                                          style={"button_width": "64px"})
        self.figure = figure_widget(runs_figure(runs, self.picker.value))
        for control in (self.picker, self.metric, self.axis):
            control.observe(lambda _: self.redraw(), names="value")
        self.box = widgets.VBox([widgets.HBox([self.picker, widgets.VBox([self.metric, self.axis])]),
                                 *([self.figure] if self.figure is not None else [])])

    def redraw(self) -> None:
        fig = runs_figure(self.runs, self.picker.value, self.metric.value, self.axis.value)
        if self.figure is None:
            return
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(list(fig.data))
            self.figure.layout.title, self.figure.layout.xaxis.title = fig.layout.title, fig.layout.xaxis.title
            self.figure.layout.yaxis.title = fig.layout.yaxis.title


def show_runs(runs) -> None:
    """Show a `Runs` table under the cell: the table and the curves (interactive in JupyterLab), text elsewhere.

    Example: ``show_runs(collect("runs"))``
    """
    if not rich_output():
        print(runs_text(runs))
        return
    from IPython.display import display

    display({"text/html": runs_html(runs), "text/plain": runs_text(runs)}, raw=True)
    if not len(runs):
        return
    if ui_mode() == "widget":
        view = RunsView(runs)
        display(view.box)
        return
    display(figure_bundle(runs_figure(runs), f"<loss of {len(runs)} runs>"), raw=True)
