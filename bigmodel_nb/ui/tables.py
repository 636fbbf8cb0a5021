"""Rows of dicts shown as a compact HTML table (or plain text outside a notebook)."""
from __future__ import annotations

import html


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def rows_text(rows: list[dict]) -> str:
    """A fixed-width text table. Example: ``print(rows_text([{"a": 1}]))``"""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def rows_html(rows: list[dict], highlight: int | None = None) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(rows):
        style = " style='font-weight:bold'" if i == highlight else ""
        tds = "".join(f"<td style='padding:2px 10px;text-align:left'>{html.escape(_cell(r.get(c)))}</td>"
                      for c in cols)
        body.append(f"<tr{style}>{tds}</tr>")
    return f"<table class='bmnb-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def show_rows(rows: list[dict], highlight: int | None = None) -> None:
    """Display rows as a table under the cell (HTML with a text fallback)."""
    from IPython.display import display

    display({"text/html": rows_html(rows, highlight), "text/plain": rows_text(rows)}, raw=True)


def device_table(devices, default) -> None:
    """`%device`: every detected device, the default one in bold."""
    rows = []
    highlight = None
    for i, d in enumerate(devices):
        row = {k: (f"{v / 2**30:.1f} GiB" if k.endswith("memory") and isinstance(v, int) else v)
               for k, v in d.as_row().items()}
        if str(default) == d.name or (str(default) == "cuda" and d.name == "cuda:0"):
            highlight = i
            row = {"default": "✓", **row}
        else:
            row = {"default": "", **row}
        rows.append(row)
    show_rows(rows, highlight)
