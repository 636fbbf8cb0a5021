"""`%evaluate` rendered: the metrics, the per-class table, the confusion matrix (counts, or each row as
shares, one click apart), the most-confused pairs, a gallery of the top losses (images drawn, text
shown, tabular rows as a table — each with its index, true label, prediction and probability), the
reliability curve, and a language model's samples. In a kernel the tables are one HTML block and each
chart a static Plotly figure (a saved notebook keeps them); elsewhere the same is printed as text.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .display import STYLE, figure_bundle, rich_output
from .tables import rows_html, rows_text

GALLERY = 12  # top-loss examples shown
EVAL_STYLE = """<style>
.bmnb-eval{font:13px/1.6 var(--jp-ui-font-family,sans-serif);margin:4px 0}
.bmnb-eval h4{margin:8px 0 2px;font-size:13px}
.bmnb-eval .bmnb-note{color:#555;font-size:12px}
.bmnb-eval pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;max-width:900px}
</style>"""
PERCENT = ("accuracy", "precision", "recall", "f1")  # metric names shown as percentages (ECE as the curve shows it)


def _fmt(name: str, value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and name.startswith(PERCENT):
        return f"{value:.2%}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metric_rows(evaluation) -> list[dict]:
    return [{"metric": k, "value": _fmt(k, v)} for k, v in evaluation.metrics.items()]


def class_rows(evaluation) -> list[dict]:
    return [{k: _fmt(k, v) for k, v in row.items()} for row in evaluation.per_class]


def loss_rows(evaluation, k: int = GALLERY) -> list[dict]:
    """The top-loss rows formatted, with each sample's input described in words (text, values, or 'image')."""
    rows = []
    for row in evaluation.top_losses(k):
        shown = {k: (_fmt(k, v) if k in ("probability", "true_probability") else v) for k, v in row.items()}
        shown["loss"] = f"{row['loss']:.4g}"
        described = _describe(evaluation.example(row["index"]), evaluation.image_shape)
        if described is not None:
            shown["input"] = described
        rows.append(shown)
    return rows


def _describe(x, image_shape=None) -> str | None:
    """An input in a table cell: text as it is, a dict's token ids, a tabular row's values; None for images."""
    if x is None:
        return None
    if isinstance(x, str):
        return x if len(x) <= 160 else x[:157] + "…"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_values(v)}" for k, v in x.items())
    if _image_shape(x, image_shape) is not None:
        return None
    return _values(x)


def _values(t) -> str:
    t = torch.as_tensor(t).flatten()
    head = ", ".join(f"{v:.3g}" if t.is_floating_point() else str(int(v)) for v in t[:12].tolist())
    return f"[{head}{', …' if len(t) > 12 else ''}]"


def _image_shape(x, shape=None):
    """(C, H, W) if `x` is an image (or a flattened image of the data's `image_shape`), else None."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        return None
    if x.dim() == 3 and x.shape[0] in (1, 3):
        return tuple(x.shape)
    if x.dim() == 2 and min(x.shape) > 3:
        return (1, *x.shape)
    if shape is not None and x.numel() == torch.Size(shape).numel():
        return tuple(shape)
    return None


def evaluation_text(evaluation) -> str:
    """The plain-text version of the report."""
    ev = evaluation
    lines = [f"evaluate: '{ev.data}' {ev.split}, {ev.size} samples", rows_text(metric_rows(ev))]
    if ev.per_class:
        lines += ["", "per class:", rows_text(class_rows(ev))]
    if ev.most_confused():
        lines += ["", "most confused (true → predicted): " +
                  ", ".join(f"{r['true']} → {r['predicted']} ×{r['count']}" for r in ev.most_confused())]
    if len(ev.scores.losses):
        lines += ["", "top losses:", rows_text(loss_rows(ev, 5))]
    lines += [f"sample {i + 1}: {s!r}" for i, s in enumerate(ev.samples)]
    lines += [f"note: {n}" for n in ev.notes]
    return "\n".join(lines)


def evaluation_html(evaluation) -> str:
    ev = evaluation
    parts = [f"<div><b>evaluate</b> · '{html.escape(ev.data)}' {html.escape(ev.split)} · {ev.size} samples</div>",
             rows_html([{r["metric"]: r["value"] for r in metric_rows(ev)}])]
    if ev.per_class:
        parts += ["<h4>Per class</h4>", rows_html(class_rows(ev))]
    if ev.most_confused():
        pairs = ", ".join(f"{html.escape(str(r['true']))} → {html.escape(str(r['predicted']))} ×{r['count']}"
                          for r in ev.most_confused())
        parts.append(f"<h4>Most confused (true → predicted)</h4><div>{pairs}</div>")
    if len(ev.scores.losses) and not _gallery_images(ev):
        parts += ["<h4>Top losses</h4>", rows_html(loss_rows(ev))]
    for i, text in enumerate(ev.samples):
        parts.append(f"<h4>Sample {i + 1} from the model</h4><pre>{html.escape(text)}</pre>")
    parts += [f"<div class='bmnb-note'>note: {html.escape(n)}</div>" for n in ev.notes]
    return f"{STYLE}{EVAL_STYLE}<div class='bmnb-eval'>{''.join(parts)}</div>"


def confusion_figure(evaluation) -> go.Figure:
    """Heatmap, rows true and columns predicted; a button switches counts ↔ shares of each true class."""
    ev = evaluation
    counts, shares = ev.confusion.tolist(), ev.normalised_confusion().tolist()
    labels = [str(ev.label(c)) for c in range(len(counts))]
    fig = go.Figure()
    for i, (z, text, name) in enumerate(((counts, counts, "counts"),
                                        (shares, [[f"{v:.0%}" for v in row] for row in shares], "row share"))):
        fig.add_trace(go.Heatmap(z=z, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="Blues",
                                 visible=i == 0, name=name, showscale=False,
                                 hovertemplate="true %{y} → predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"Confusion matrix ({ev.split}, {ev.size} samples)", y=0.97, yanchor="top"),
        template="plotly_white", height=450, width=480, margin=dict(l=60, r=20, t=95, b=50),
        xaxis=dict(title="predicted", type="category", side="bottom"),
        yaxis=dict(title="true", type="category", autorange="reversed"),
        updatemenus=[dict(type="buttons", direction="right", x=0, xanchor="left", y=1.02, yanchor="bottom",
                          # plotly draws the active button #F4FAFF: on grey buttons it stands out
                          showactive=True, active=0, bgcolor="#dddddd", bordercolor="#999999", buttons=[
            dict(label="counts", method="update", args=[{"visible": [True, False]}]),
            dict(label="row-normalised", method="update", args=[{"visible": [False, True]}])])])
    return fig


def calibration_figure(evaluation) -> go.Figure:
    """Reliability diagram: accuracy against confidence per bin, the diagonal, and the ECE."""
    ev = evaluation
    bins = [b for b in ev.calibration if b["count"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[(b["lo"] + b["hi"]) / 2 for b in bins], y=[b["accuracy"] for b in bins],
                         width=[b["hi"] - b["lo"] for b in bins], name="accuracy in bin", marker_color="#1f77b4",
                         customdata=[b["count"] for b in bins],
                         hovertemplate="confidence %{x:.2f}: accuracy %{y:.2%} (%{customdata} samples)<extra></extra>"))
    fig.add_trace(go.Scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="markers",
                             name="mean confidence", marker=dict(color="#d62728", size=7)))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(dash="dash", color="#888")))
    ece = ev.metrics.get("ece")
    fig.update_layout(title="Reliability" + (f" — ECE {ece:.3f}" if ece is not None else ""), height=360, width=480,
                      template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), bargap=0,
                      xaxis=dict(title="confidence (probability of the predicted class)", range=[0, 1.02]),
                      yaxis=dict(title="accuracy", range=[0, 1.05]), legend=dict(orientation="h", y=-0.25))
    return fig


def _gallery_images(evaluation) -> list:
    """(row, image [C, H, W]) for each top-loss example whose input is an image; empty otherwise."""
    out = []
    for row in evaluation.top_losses(GALLERY):
        x = evaluation.example(row["index"])
        shape = _image_shape(x, evaluation.image_shape)
        if shape is None:
            return []
        out.append((row, x.reshape(shape)))
    return out


def gallery_figure(evaluation) -> go.Figure | None:
    """The top-loss images in a grid, each titled with its index, true label, prediction and probability."""
    items = _gallery_images(evaluation)
    if not items:
        return None
    cols = min(6, len(items))
    n_rows = -(-len(items) // cols)
    titles = [f"#{r['index']} true {r.get('true')}<br>pred {r.get('predicted')} ({r.get('probability', 0):.0%})"
              for r, _ in items]
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=0.12)
    for i, (row, image) in enumerate(items):
        r, c = divmod(i, cols)
        if image.shape[0] == 3:  # colour: each image stretched to 0..255 (the data is normalised)
            lo, hi = image.min(), image.max()
            rgb = ((image - lo) / (hi - lo).clamp(min=1e-8) * 255).byte().permute(1, 2, 0).tolist()
            fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=r + 1, col=c + 1)
        else:
            fig.add_trace(go.Heatmap(z=image[0].tolist(), colorscale="gray_r", showscale=False,
                                     hovertemplate=f"loss {row['loss']:.3g}<extra></extra>"), row=r + 1, col=c + 1)
            fig.update_yaxes(autorange="reversed", row=r + 1, col=c + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_annotations(font_size=11)
    fig.update_layout(title=f"Top {len(items)} losses ({evaluation.split})", template="plotly_white",
                      height=60 + 170 * n_rows, width=min(900, 150 * cols + 40), margin=dict(l=10, r=10, t=80, b=10))
    return fig


def show_evaluation(evaluation) -> None:
    """Show an `Evaluation` under the cell: HTML tables and Plotly figures in a kernel, text elsewhere.

    Example: ``show_evaluation(evaluate(model, load_dataset("digits"), "test"))``
    """
    if not rich_output():
        print(evaluation_text(evaluation))
        return
    from IPython.display import display

    display({"text/html": evaluation_html(evaluation), "text/plain": evaluation_text(evaluation)}, raw=True)
    figures = []
    if evaluation.confusion is not None:
        figures.append((confusion_figure(evaluation), f"<confusion matrix: {len(evaluation.confusion)} classes>"))
    gallery = gallery_figure(evaluation)
    if gallery is not None:
        figures.append((gallery, f"<top {len(gallery.data)} losses>"))
    if evaluation.calibration:
        figures.append((calibration_figure(evaluation), "<reliability curve>"))
    for fig, text in figures:  # static figures: a saved or converted notebook keeps them
        display(figure_bundle(fig, text), raw=True)
