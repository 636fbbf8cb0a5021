"""Where and how to draw: frontend detection (`ui_mode`), Plotly figures as display bundles that a
saved or converted notebook still shows, and a live `FigureWidget` with a fallback.

    show_figure(fig, "<loss curve>")
"""
from __future__ import annotations

import functools
import os
import sys

PLOTLY_MIME = "application/vnd.plotly.v1+json"

STYLE = """<style>
.bmnb-status{font:13px/1.5 var(--jp-ui-font-family,sans-serif);margin:2px 0}
.bmnb-bar{height:8px;background:#e8e8e8;border-radius:4px;overflow:hidden;margin:3px 0;max-width:640px}
.bmnb-bar>div{height:100%;background:#1f77b4;transition:width .3s}
.bmnb-failed .bmnb-bar>div{background:#d62728}.bmnb-stopped .bmnb-bar>div{background:#ff7f0e}
.bmnb-error{color:#d62728}
</style>"""


def ui_mode() -> str:
    """How to draw here: ``widget`` (JupyterLab, Notebook 7, Colab), ``static`` (figures through a
    display handle, e.g. VS Code) or ``text`` (terminal IPython, nbclient/nbconvert/nbval, scripts).
    ``BIGMODEL_NB_UI=widget|static|text`` forces one."""
    forced = os.environ.get("BIGMODEL_NB_UI", "").lower()
    if forced in ("widget", "static", "text"):
        return forced
    try:
        from IPython import get_ipython
    except ImportError:
        return "text"
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return "text"
    if "VSCODE_PID" in os.environ or "VSCODE_CWD" in os.environ:
        return "static"  # anywidget-based FigureWidgets render unreliably in VS Code
    # A Jupyter server names the session of the kernels it starts; nbclient and nbval do not.
    if os.environ.get("JPY_SESSION_NAME") or "google.colab" in sys.modules:
        return "widget"
    return "text"


def rich_output() -> bool:
    """Reports (tables and static figures) render as HTML and Plotly: in any kernel — nbclient and nbval too —
    or where ``BIGMODEL_NB_UI=widget|static`` forces it; ``text`` (or a terminal) prints them."""
    forced = os.environ.get("BIGMODEL_NB_UI", "").lower()
    return forced in ("widget", "static") or (forced != "text" and in_kernel())


def in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return type(get_ipython()).__name__ == "ZMQInteractiveShell"


def figure_bundle(fig, text: str, final: bool = True) -> dict:
    """A figure as a display mimebundle: Plotly's JSON (JupyterLab, Notebook 7 and VS Code draw it),
    `text` as its plain form, and for a `final` figure an HTML form too, so that pages made without
    a Plotly renderer (``nbconvert --to html``, nbviewer) still show the chart. The HTML loads
    plotly.js from its CDN rather than embedding ~4.8 MB per figure.

    `fig`: a figure, or its Plotly JSON as a dict. Example: ``display(figure_bundle(fig, "<curves>"), raw=True)``
    """
    import plotly.io as pio

    as_json = fig if isinstance(fig, dict) else fig.to_plotly_json()  # a dict: Plotly JSON, already valid
    bundle = {PLOTLY_MIME: as_json, "text/plain": text}
    if final:  # the CDN script tag once per session: plotly hashes all of plotly.js (~4.8 MB) to make it
        html = pio.to_html(fig, full_html=False, include_plotlyjs=False, validate=False)
        bundle["text/html"] = html.replace(">", ">" + _cdn_script(), 1)
    return bundle


@functools.lru_cache(maxsize=1)
def _cdn_script() -> str:
    """The `<script>` tags that load plotly.js from its CDN (with the integrity hash), as plotly writes them."""
    import plotly.io as pio

    html = pio.to_html({"data": [], "layout": {}}, full_html=False, include_plotlyjs="cdn", validate=False)
    start = html.index(">") + 1
    return html[start:html.index("<div id=")].strip()


def show_figure(fig, text: str) -> None:
    """`text` printed, then (in a kernel) the static figure with `text` as its plain-text form."""
    print(text)
    if in_kernel():
        from IPython.display import display

        display(figure_bundle(fig, text), raw=True)


def figure_widget(fig):
    """A live ``go.FigureWidget`` of `fig`, or None (with one line saying why) where one cannot be built,
    e.g. without anywidget; callers then draw static figures through display handles instead."""
    import plotly.graph_objects as go

    try:
        return go.FigureWidget(fig)
    except Exception as e:  # ImportError for anywidget; frontends without widget support raise others
        print(f"Live charts are not available here ({type(e).__name__}: {e}); showing static figures, updated "
              "a few times per second. Install anywidget and ipywidgets for live charts.")
        return None
