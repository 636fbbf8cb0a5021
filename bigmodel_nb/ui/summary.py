"""`%summary` rendered: headline numbers, a stacked bar of training memory, and the per-layer table.

In a kernel the output is one HTML block (with a plain-text fallback), so a saved or converted
notebook keeps it; outside one (or with ``BIGMODEL_NB_UI=text``) a compact text version is printed.
"""
from __future__ import annotations

import html
import os

from .display import STYLE, in_kernel
from .tables import rows_html, rows_text

MAX_ROWS = 60  # layer rows shown; a GPT has hundreds and each would stay in the notebook file
COMPONENTS = (("weights", "weights", "#1f77b4"), ("gradients", "gradients", "#ff7f0e"),
              ("optimizer_state", "optimizer state", "#2ca02c"), ("activations", "activations", "#d62728"),
              ("workspace", "workspace", "#9467bd"))
SUMMARY_STYLE = """<style>
.bmnb-summary{font:13px/1.6 var(--jp-ui-font-family,sans-serif);margin:4px 0}
.bmnb-stack{display:flex;height:14px;max-width:640px;border-radius:3px;overflow:hidden;margin:3px 0}
.bmnb-key{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 3px 0 10px}
.bmnb-fits{color:#2ca02c}.bmnb-nofit{color:#d62728}.bmnb-note{color:#666;font-size:12px}
</style>"""


def fmt_bytes(n: float | None) -> str:
    """Decimal units, as disk and GPU makers count. Example: ``fmt_bytes(497_759_232) == "497.8 MB"``"""
    if n is None:
        return "?"
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{sign}{n / size:.3g} {unit}" if n / size < 100 else f"{sign}{n / size:.1f} {unit}"
    return f"{sign}{int(n)} B"


def fmt_count(n: float | None) -> str:
    """Parameter / FLOP counts. Example: ``fmt_count(124_439_808) == "124M"``; ``fmt_count(1_234_567) == "1.23M"``"""
    if n is None:
        return "?"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f}{unit}" if abs(value) >= 100 else f"{value:.3g}{unit}"
    return str(int(n))


def _shape(shape) -> str:
    return "—" if shape is None else str(tuple(shape))


def layer_rows(summary, max_rows: int = MAX_ROWS) -> tuple[list[dict], int]:
    """Display rows (indented names, formatted numbers) and how many were left out."""
    frozen = summary.trainable_params != summary.total_params
    rows = []
    for r in summary.layers[:max_rows]:
        row = {"layer": "\u00a0\u00a0" * r["depth"] + r["name"], "type": r["type"],
               "output shape": _shape(r["output_shape"]), "params": f"{r['params']:,}"}
        if frozen:  # the column only says something when some parameters are frozen
            row["trainable"] = f"{r['trainable']:,}"
        rows.append(row)
    return rows, max(0, len(summary.layers) - max_rows)


def _headline(summary) -> str:
    flops = ("" if summary.flops_per_sample is None
             else f" · {fmt_count(summary.flops_per_sample)} FLOPs per sample (forward)")
    shape = "" if summary.input_shape is None else f" · input {_shape(summary.input_shape)} {summary.input_dtype}"
    meta = " · on the meta device (no weights allocated)" if summary.on_meta else ""
    return (f"{summary.model_name}: {fmt_count(summary.total_params)} parameters "
            f"({fmt_count(summary.trainable_params)} trainable){flops}{shape}{meta}")


def _fit_text(m: dict, summary) -> str:
    where = m["device"] or "this device"
    if summary.device is not None and summary.device.kind != "cpu":
        where += f" ({summary.device.label})"
    if m["fits"] is None:
        return f"free memory on {where} is unknown"
    if m["fits"]:
        return (f"fits on {where}: {fmt_bytes(m['available_bytes'])} available, "
                f"{fmt_bytes(m['headroom_bytes'])} headroom")
    return (f"does not fit on {where}: {fmt_bytes(m['available_bytes'])} available, "
            f"{fmt_bytes(-m['headroom_bytes'])} short")


def _memory_kind(m: dict) -> str:
    """int8 is estimated as an inference format (no gradients, no optimizer state); the others as training."""
    return "inference memory" if m["precision"] == "int8" else "training memory"


def summary_text(summary, max_rows: int = 30) -> str:
    """The compact plain-text version. Example: ``print(summary_text(summarize(model, (64,))))``"""
    m = summary.memory
    sizes = " · ".join(f"{p} {fmt_bytes(b)}" for p, b in summary.size_by_precision().items())
    parts = " + ".join(f"{label} {fmt_bytes(m[key])}" for key, label, _ in COMPONENTS if m[key])
    lines = [_headline(summary), f"weights: {sizes}",
             f"{_memory_kind(m)} (batch {m['batch_size']}, {m['precision']}, {m['optimizer']}): "
             f"{fmt_bytes(m['total_bytes'])} = {parts or '0 B'}",
             _fit_text(m, summary), *(f"note: {n}" for n in m["notes"])]
    rows, more = layer_rows(summary, max_rows)
    lines += ["", rows_text(rows)] if rows else []
    if more:
        lines.append(f"… {more} more layers (summary.table() has them all)")
    return "\n".join(lines)


def _stacked_bar(m: dict) -> str:
    total = m["total_bytes"] or 1
    segments, keys = [], []
    for key, label, color in COMPONENTS:
        value = m[key] or 0
        if value:
            tip = html.escape(f"{label}: {fmt_bytes(value)}")
            segments.append(f"<div title='{tip}' style='width:{100 * value / total:.2f}%;background:{color}'></div>")
            keys.append(f"<span class='bmnb-key' style='background:{color}'></span>{tip}")
    return f"<div class='bmnb-stack'>{''.join(segments)}</div><div>{''.join(keys)}</div>"


def summary_html(summary, max_rows: int = MAX_ROWS) -> str:
    """The HTML block shown under the cell. Example: ``HTML(summary_html(s))``"""
    m = summary.memory
    sizes = " · ".join(f"{p} <b>{fmt_bytes(b)}</b>" for p, b in summary.size_by_precision().items())
    fit_class = "bmnb-fits" if m["fits"] else "bmnb-nofit" if m["fits"] is False else ""
    notes = "".join(f"<div class='bmnb-note'>{html.escape(n)}</div>" for n in m["notes"])
    rows, more = layer_rows(summary, max_rows)
    table = rows_html(rows) if rows else ""
    if more:
        table += f"<div class='bmnb-note'>… {more} more layers (summary.table() has them all)</div>"
    return (f"{STYLE}{SUMMARY_STYLE}<div class='bmnb-summary' data-total-bytes='{m['total_bytes']}'>"
            f"<div><b>{html.escape(_headline(summary))}</b></div>"
            f"<div>weights: {sizes}</div>"
            f"<div>{_memory_kind(m)} (batch {m['batch_size']}, {m['precision']}, {html.escape(m['optimizer'])}): "
            f"<b>{fmt_bytes(m['total_bytes'])}</b></div>{_stacked_bar(m)}"
            f"<div class='{fit_class}'>{html.escape(_fit_text(m, summary))}</div>{notes}{table}</div>")


def show_summary(summary, max_rows: int = MAX_ROWS) -> None:
    """Show a `ModelSummary` under the cell: HTML in a kernel, plain text elsewhere.

    Example: ``show_summary(summarize(model, (64,), batch_size=128))``
    """
    # Static HTML renders in any kernel, headless ones (nbclient, nbconvert) included, unlike live widgets.
    forced = os.environ.get("BIGMODEL_NB_UI", "").lower()
    rich = forced in ("widget", "static") or (forced != "text" and in_kernel())
    if not rich:
        print(summary_text(summary, max_rows))
        return
    from IPython.display import display

    display({"text/html": summary_html(summary, max_rows), "text/plain": summary_text(summary)}, raw=True)
