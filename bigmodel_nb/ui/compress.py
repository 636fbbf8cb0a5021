"""`%compress` rendered: the stage table and bar charts of size, latency and accuracy per stage.

Stages whose gain is only simulated (unstructured pruning: zeros in dense tensors) are drawn
hatched, labelled "simulated" on the bars and in the table, so nobody reads a mask as a speed-up.
In a kernel the table is one HTML block and the charts one static Plotly figure (a saved or
converted notebook keeps both); elsewhere (or ``BIGMODEL_NB_UI=text``) the same is printed as text.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .display import STYLE, rich_output, show_figure
from .summary import fmt_bytes, fmt_count
from .tables import rows_html, rows_text

REAL_COLOR, SIMULATED_COLOR = "#1f77b4", "#bbbbbb"
COMPRESS_STYLE = """<style>
.bmnb-compress{font:13px/1.6 var(--jp-ui-font-family,sans-serif);margin:4px 0}
.bmnb-compress .bmnb-sim{color:#d62728;font-weight:bold}
.bmnb-compress .bmnb-note{color:#555;font-size:12px}
.bmnb-compress td{white-space:nowrap}
</style>"""


def _ratio(value, suffix: str) -> str:
    return "—" if value is None else f"{value:.2f}× {suffix}"


def display_rows(report) -> list[dict]:
    """The stage rows formatted for people (units, ratios, real/simulated), each distillation's
    baseline (the student trained alone with the same budget) right after its distilled stage."""
    rows = []
    for r in _rows(report):
        rows.append({
            "stage": r["stage"],
            "params": fmt_count(r["params"]),
            "non-zero": fmt_count(r["nonzero"]),
            "size": fmt_bytes(r["size_bytes"]),
            "size ratio": _ratio(r["size_ratio"], "smaller"),
            "latency": "—" if r["latency_ms"] is None else f"{r['latency_ms']:.3g} ms",
            "speed": _ratio(r["speedup"], "faster"),
            "original, same loop": "—" if r.get("reference_ms") is None else f"{r['reference_ms']:.3g} ms",
            "accuracy": "—" if r.get("accuracy") is None else f"{r['accuracy']:.2%}",
            "loss": "—" if r.get("loss") is None else f"{r['loss']:.4f}",
            "gain": "baseline" if r.get("baseline") else "real" if r["real"] else "simulated",
            "format": r.get("format", ""),
        })
    return rows


def _rows(report) -> list[dict]:
    return report.rows() if hasattr(report, "rows") else list(report.stages)


def _timing(report) -> str:
    first = report.stages[0] if report.stages else {}
    if first.get("latency_ms") is None:
        return "latency not measured"
    n = first['threads']
    return (f"latency: batch {first['batch']}, {n} thread{'s' if n != 1 else ''}, medians after a warm-up, "
            "each stage timed alternately with the original")


def compression_text(report) -> str:
    """The plain-text version: table, one line per stage note, then the measurement notes."""
    lines = [f"compress: {len(report.stages)} stages · {_timing(report)}", rows_text(display_rows(report)), ""]
    lines += [f"{r['stage']}{'' if r['real'] else ' [SIMULATED]'}: {r['note']}" for r in _rows(report)]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def compression_html(report) -> str:
    """The HTML block: headline, stage table (simulated rows marked), stage notes, measurement notes."""
    rows = display_rows(report)
    for row in rows:
        if row["gain"] == "simulated":
            row["gain"] = "simulated ⚠"
    notes = "".join(
        f"<div class='bmnb-note'><b>{html.escape(r['stage'])}</b>"
        f"{'' if r['real'] else ' <span class=bmnb-sim>simulated</span>'}: {html.escape(r['note'])}</div>"
        for r in _rows(report))
    notes += "".join(f"<div class='bmnb-note'>note: {html.escape(n)}</div>" for n in report.notes)
    last = report.stages[-1] if report.stages else None
    head = ""
    if last is not None:
        speed = "" if last["speedup"] is None else f", {last['speedup']:.2f}× faster"
        head = (f"<div><b>compress</b> · {len(report.stages)} stages · final: {html.escape(last['stage'])}: "
                f"{fmt_bytes(last['size_bytes'])} ({last['size_ratio']:.2f}× smaller{speed})</div>")
    return (f"{STYLE}{COMPRESS_STYLE}<div class='bmnb-compress'>{head}"
            f"<div class='bmnb-note'>{html.escape(_timing(report))}</div>{rows_html(rows)}{notes}</div>")


def compression_figure(report) -> go.Figure:
    """Bars per stage: size on disk, latency and accuracy; simulated stages hatched and labelled."""
    stages = report.stages
    names = [f"{i}. {r['stage']}".replace(" (", "<br>(") for i, r in enumerate(stages)]
    panels = [("size_bytes", "Size on disk (MB)", 1e-6, "{:.3g}"), ("latency_ms", "Latency (ms)", 1.0, "{:.3g}")]
    if any(r.get("accuracy") is not None for r in stages):
        panels.append(("accuracy", "Test accuracy (%)", 100.0, "{:.1f}"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], horizontal_spacing=0.08)
    real = [bool(r["real"]) for r in stages]
    for col, (key, title, scale, fmt) in enumerate(panels, start=1):
        values = [None if r.get(key) is None else r[key] * scale for r in stages]
        text = [("" if v is None else fmt.format(v)) + ("" if ok else " (simulated)") for v, ok in zip(values, real)]
        fig.add_trace(go.Bar(
            x=names, y=values, text=text, textposition="auto", name=title, showlegend=False,
            marker=dict(color=[REAL_COLOR if ok else SIMULATED_COLOR for ok in real],
                        pattern=dict(shape=["" if ok else "/" for ok in real])),
            hovertemplate="%{x}<br>%{y}<extra>" + html.escape(title) + "</extra>"), row=1, col=col)
        fig.update_xaxes(tickangle=-25, automargin=True, row=1, col=col)
    if not all(real):  # a legend entry that explains the hatching
        fig.add_trace(go.Bar(x=[None], y=[None], name="simulated: masks only, dense kernels do the same work",
                             marker=dict(color=SIMULATED_COLOR, pattern=dict(shape="/"))), row=1, col=1)
    fig.update_layout(height=360, template="plotly_white", margin=dict(l=50, r=20, t=40, b=90),
                      legend=dict(orientation="h", y=-0.45), title=None)
    return fig


def show_compression_report(report) -> None:
    """Show a `CompressionReport` under the cell: HTML table and bar charts in a kernel, text elsewhere.

    Example: ``show_compression_report(compress(model, "digits", steps=[Quantize("int8")]))``
    """
    if not rich_output():
        print(compression_text(report))
        return
    from IPython.display import display

    display({"text/html": compression_html(report), "text/plain": compression_text(report)}, raw=True)
    if report.stages:
        show_figure(compression_figure(report), f"<compression bars: {len(report.stages)} stages>")
