"""`%%sweep` rendered live: a status line, the running trial's own dashboard (its curves and its Stop
button, which ends the sweep), and after each trial the table of trials, parallel coordinates of the
parameters against the metric and the best-so-far curve — static figures, so a saved notebook keeps
them. In a terminal, one line per trial.
"""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from .display import STYLE, figure_bundle, rich_output, ui_mode
from .tables import rows_html, rows_text


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def sweep_figure(result) -> go.Figure:
    """Parallel coordinates of the finished trials (parameters, then the metric) and the best-so-far curve."""
    done = [t for t in result.trials if t["state"] == "complete" and _finite(t["value"])]
    params = [k for k in (result.trials[0] if result.trials else {}) if k not in
              ("number", "value", "state", "steps", "time_s", "run", "history")]
    fig = go.Figure()
    if done:
        dims = []
        for name in params:
            values = [t[name] for t in done]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                positive = all(v > 0 for v in values)
                spread = positive and max(values) / max(min(values), 1e-300) > 50
                dims.append(dict(label=f"log10 {name}" if spread else name,
                                 values=[math.log10(v) for v in values] if spread else values))
            else:  # choices: evenly spaced, labelled
                labels = list(dict.fromkeys(map(str, values)))
                dims.append(dict(label=name, values=[labels.index(str(v)) for v in values],
                                 tickvals=list(range(len(labels))), ticktext=labels))
        dims.append(dict(label=result.metric, values=[t["value"] for t in done]))
        reverse = result.direction == "minimize"  # the best trials in the darkest colour either way
        fig.add_trace(go.Parcoords(dimensions=dims, domain=dict(x=[0, 0.58]),
                                   line=dict(color=[t["value"] for t in done], colorscale="Viridis",
                                             reversescale=not reverse, showscale=False)))
    numbers = [t["number"] for t in done]
    values = [t["value"] for t in done]
    best, running = [], None
    for v in values:
        running = v if running is None else (min(running, v) if result.direction == "minimize" else max(running, v))
        best.append(running)
    fig.add_trace(go.Scatter(x=numbers, y=values, mode="markers", name="trial", marker=dict(color="#1f77b4")))
    fig.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name="best so far", line=dict(color="#d62728",
                                                                                              shape="hv")))
    pruned = [t["number"] for t in result.trials if t["state"] == "pruned"]
    title = f"{len(done)} finished, {len(pruned)} pruned · {result.metric} ({result.direction})"
    fig.update_layout(height=360, template="plotly_white", margin=dict(l=50, r=20, t=60, b=50),
                      title=dict(text=title, x=0.01, font=dict(size=13)),
                      xaxis=dict(domain=[0.68, 1], title="trial"), yaxis=dict(title=result.metric, anchor="x"),
                      legend=dict(orientation="h", x=0.68, y=-0.2))
    return fig


def trial_rows(result) -> list[dict]:
    rows = []
    for t in result.trials:
        row = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in t.items() if k != "history"}
        rows.append(row)
    return rows


def sweep_text(result) -> str:
    head = f"sweep {result.status}: {len(result.trials)} trial{'' if len(result.trials) == 1 else 's'}"
    if result.best:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in result.best["params"].items())
        head += f" · best {result.metric} {result.best['value']:.4g} (trial {result.best['number']}: {params})"
    return "\n".join([head, rows_text(trial_rows(result)), *[f"note: {n}" for n in result.notes]])


def sweep_html(result) -> str:
    head = html.escape(sweep_text(result).split("\n")[0])
    notes = "".join(f"<div class='bmnb-note'>note: {html.escape(n)}</div>" for n in result.notes)
    return (f"{STYLE}<div class='bmnb-sweep' style='font:13px/1.5 var(--jp-ui-font-family,sans-serif)'>"
            f"<div><b>{head}</b></div>{rows_html(trial_rows(result))}{notes}</div>")


class SweepView:
    """The live view of one sweep (see the module docstring)."""

    def __init__(self, trials: int, metric: str):
        self.total, self.metric = trials, metric
        self.mode = ui_mode()
        self.rich = rich_output()  # as every report: tables and static figures in any kernel, text in a terminal
        self._status = self._table = self._figure = self.output = None
        self.done = 0  # trials finished so far

    def show(self) -> SweepView:
        if not self.rich:
            return self
        from IPython.display import display

        self._status = display({"text/html": self._line(f"sweep: {self.total} trials, {self.metric}")}, raw=True,
                               display_id=True)
        if self.mode == "widget":  # the running trial's dashboard, replaced by the next trial's
            import ipywidgets as widgets

            self.output = widgets.Output()
            display(self.output)
        self._table = display({"text/html": "", "text/plain": ""}, raw=True, display_id=True)
        self._figure = display({"text/plain": ""}, raw=True, display_id=True)
        return self

    def _line(self, text: str) -> str:
        return f"{STYLE}<div class='bmnb-status bmnb-sweep-status'>{html.escape(text)}</div>"

    def train_trial(self, train):
        """`train(quiet)` one trial: with its dashboard (and Stop button) in the view, quiet in a terminal."""
        if self.output is None:
            return train(True)
        self.output.clear_output(wait=True)
        with self.output:
            return train(False)

    def trial_done(self, result) -> None:
        last = result.trials[-1] if result.trials else None
        if last is None:
            return
        value = f"{last['value']:.4g}" if _finite(last["value"]) else "—"
        best = f" · best {result.best['value']:.4g} (trial {result.best['number']})" if result.best else ""
        done = self.done = len(result.trials)
        text = f"trial {last['number']} {last['state']}: {self.metric} {value}{best} · {done} of {self.total} trials"
        if not self.rich:
            print(text, flush=True)
            return
        self._status.update({"text/html": self._line(text), "text/plain": text}, raw=True)
        self._table.update({"text/html": sweep_html(result), "text/plain": sweep_text(result)}, raw=True)
        self._figure.update(figure_bundle(sweep_figure(result), "<sweep>", final=False), raw=True)

    def abandon(self) -> None:
        """The sweep raised: the status line says it stopped (the error follows it); the trials so far stay."""
        text = f"sweep stopped after {self.done} of {self.total} trials"
        if not self.rich:
            print(text, flush=True)
            return
        self._status.update({"text/html": self._line(text), "text/plain": text}, raw=True)

    def finish(self, result) -> None:
        if not self.rich:
            print(sweep_text(result))
            return
        text = sweep_text(result).split("\n")[0]
        self._status.update({"text/html": self._line(text), "text/plain": text}, raw=True)
        self._table.update({"text/html": sweep_html(result), "text/plain": sweep_text(result)}, raw=True)
        if any(t["state"] == "complete" for t in result.trials):
            self._figure.update(figure_bundle(sweep_figure(result), f"<sweep of {len(result.trials)} trials>"),
                                raw=True)
