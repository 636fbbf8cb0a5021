"""Shared by the make_*.py scripts: execute a tutorial's cells headless and write the notebook,
so the outputs stored in notebooks/ are real; then store a static PNG with every chart.

GitHub and nbviewer run no JavaScript, so a chart stored only as Plotly JSON (or as a Plotly HTML
snippet) is blank there, where a student first sees the tutorials. `add_images` renders every stored
chart with kaleido (a headless Chromium) into an ``image/png`` in the same output bundle: JupyterLab,
Notebook 7 and VS Code keep drawing the interactive Plotly JSON, the static pages draw the PNG.

    python tools/notebook_writer.py --images notebooks/*.ipynb   # add/refresh images, no re-execution
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
PNG_MIME = "image/png"
IMAGE_WIDTH = 800  # px at scale 1: legible on GitHub's ~900 px column, ~20-60 kB per chart once quantised
IMAGE_HEIGHT = 450  # Plotly's own default, for figures whose layout sets no height
PNG_COLORS = 256  # a palette PNG: charts have few colours, so this is visually lossless and ~3× smaller
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def execute_and_write(cells: list, filename: str, cleanup: tuple[str, ...] = (), images: bool = True) -> Path:
    """Run `cells` in a fresh python3 kernel from notebooks/, then write notebooks/<filename>.
    `cleanup` names files the notebook writes that should not stay in the repository.
    `images`: store a PNG with every chart (`add_images`)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    started = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for name in cleanup:
        (NOTEBOOKS / name).unlink(missing_ok=True)
    if images:  # a failure here must not lose the execution: the notebook is written, tests/test_tutorials.py flags it
        try:
            print(f"{filename}: {add_images(nb)} chart images", file=sys.stderr)
        except Exception as e:  # no kaleido, no Chromium
            print(f"{filename}: NO chart images ({type(e).__name__}: {e}); add them with "
                  f"`python tools/notebook_writer.py --images notebooks/{filename}`", file=sys.stderr)
    out = NOTEBOOKS / filename
    nbformat.write(nb, out)
    print(f"wrote {out} (executed in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return out


# -- static images of the stored charts ------------------------------------------------------------
def chart_figures(nb) -> list[tuple[dict, dict]]:
    """Every stored chart of an executed notebook as (output data bundle, Plotly figure dict): outputs
    carrying Plotly JSON, and plotly ``FigureWidget`` views whose state the notebook saved in its
    ``widgets`` metadata (a widget without saved state has nothing to draw and is left out)."""
    states = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data")
            if output.get("output_type") not in ("display_data", "execute_result") or not data:
                continue
            if PLOTLY_MIME in data:
                found.append((data, dict(data[PLOTLY_MIME])))
            elif WIDGET_MIME in data:
                figure = widget_figure(states.get(data[WIDGET_MIME].get("model_id"), {}))
                if figure is not None:
                    found.append((data, figure))
    return found


def widget_figure(model: dict) -> dict | None:
    """The figure a saved plotly ``FigureWidget`` model shows (its synced ``_widget_data`` and
    ``_widget_layout``), or None for another widget or one whose arrays went as binary buffers."""
    state = model.get("state", {})
    if "_widget_data" not in state or model.get("buffers"):
        return None
    return {"data": state["_widget_data"], "layout": state.get("_widget_layout", {})}


def find_browser() -> str | None:
    """The Chromium kaleido will use: ``BROWSER_PATH`` if set (choreographer, under kaleido, reads it
    first), else the first Chromium/Chrome on PATH, exported as ``BROWSER_PATH``."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            os.environ["BROWSER_PATH"] = path
            return path
    return None  # kaleido may still find a Chrome it downloaded itself (kaleido_get_chrome)


def figure_size(figure: dict, width: int = IMAGE_WIDTH) -> tuple[int, int]:
    """(width, height) in px: `width` (narrower if the layout asks for less), the layout's height or 450."""
    layout = figure.get("layout") or {}
    return min(int(layout.get("width") or width), width), int(layout.get("height") or IMAGE_HEIGHT)


def optimise_png(png: bytes) -> bytes:
    """A palette PNG (≤ 256 colours, maximal deflate) when Pillow is installed; else `png` unchanged."""
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=PNG_COLORS, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(png) else png


def render_pngs(figures: list[dict], width: int = IMAGE_WIDTH) -> list[bytes]:
    """PNGs of Plotly figure dicts, in one headless Chromium session (kaleido ≥ 1). MathJax is off: it
    would come from a CDN, which an offline machine cannot reach (and no chart here uses LaTeX)."""
    if not figures:
        return []
    import kaleido

    find_browser()
    kaleido.start_sync_server(mathjax=False, silence_warnings=True)
    try:
        pngs = []
        for figure in figures:
            w, h = figure_size(figure, width)
            fig = {"data": figure.get("data", []), "layout": figure.get("layout", {})}  # frames: the first state
            pngs.append(optimise_png(kaleido.calc_fig_sync(fig, opts={"format": "png", "width": w, "height": h,
                                                                       "scale": 1})))
        return pngs
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def add_images(nb, width: int = IMAGE_WIDTH, keep_html: bool = False) -> int:
    """Store (or refresh) an ``image/png`` of every chart in executed notebook `nb`, in the chart's own
    output bundle; returns how many. Unless `keep_html`, a chart's Plotly ``text/html`` form is dropped:
    it repeats the whole figure JSON, and the pages that would pick it first (nbconvert's priority puts
    HTML before PNG: nbviewer, GitHub) draw it blank, without running its script; the PNG shows there."""
    charts = chart_figures(nb)
    for (data, _), png in zip(charts, render_pngs([figure for _, figure in charts], width)):
        data[PNG_MIME] = base64.b64encode(png).decode("ascii")
        if not keep_html and "Plotly.newPlot" in _text(data.get("text/html", "")):
            del data["text/html"]
    return len(charts)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def images_in_place(paths: list[Path], width: int = IMAGE_WIDTH, keep_html: bool = False) -> None:
    """`add_images` over stored notebooks, without executing them; each is rewritten only if it changed."""
    for path in paths:
        before = path.stat().st_size
        nb = nbformat.read(path, as_version=4)
        original = nbformat.writes(nb)
        count = add_images(nb, width, keep_html)
        text = nbformat.writes(nb)
        if not text.endswith("\n"):
            text += "\n"
        if text.rstrip("\n") != original.rstrip("\n"):
            path.write_text(text, encoding="utf-8")
        print(f"{path}: {count} chart images, {before / 1e3:,.0f} kB -> {path.stat().st_size / 1e3:,.0f} kB",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", action="store_true", required=True,
                        help="add or refresh a PNG of every stored chart, without re-executing the notebooks")
    parser.add_argument("--width", type=int, default=IMAGE_WIDTH, help=f"image width in px (default {IMAGE_WIDTH})")
    parser.add_argument("--keep-html", action="store_true", help="keep the charts' Plotly text/html forms")
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    images_in_place(args.notebooks, args.width, args.keep_html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
