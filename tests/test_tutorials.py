"""What a student sees in the stored tutorials (notebooks/*.ipynb), checked statically: nothing runs.

GitHub and nbviewer show a notebook's stored outputs as they are, so these must be true of them:
no errors or tracebacks, no paths of the machine that ran them, no library noise (warnings, tqdm bars,
a finished run's stale ETA), a static image with every chart (those pages run no JavaScript), no
implausible speed-up, and a total size a clone and a browser take without a second thought.

The fix for a failure here is to regenerate that notebook (tools/make_*.py) after fixing its cause;
images come from ``python tools/notebook_writer.py --images notebooks/*.ipynb``.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"

TOTAL_BUDGET = 3_500_000  # bytes, all notebooks together (the 9 tutorials: 2.8 MB, 2026-12-02)
NOTEBOOK_BUDGET = 1_500_000  # bytes, any one notebook
IMAGE_BUDGET = 150_000  # bytes, one stored PNG (800 px wide palette PNGs are 5-30 kB)
MAX_SPEEDUP = 20.0  # a stored "N× faster" above this is a measuring mistake on these small CPU models

# An absolute path of the machine that ran the notebook. The look-behind skips URLs and relative paths
# (https://host/home/..., ./tmp/, site/work/) and file:// links; Windows drive paths too.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:tmp|work|home|root|Users|private/var|var/folders)/"
                           r"|(?<![\w])[A-Za-z]:\\(?:\\)?(?:Users|Windows|tmp|work)\b", re.IGNORECASE)
# Library noise: Python warnings, Ray's banner, failed imports/extensions, tqdm progress bars.
NOISE = re.compile(r"\b\w*Warning\b:|^\s*warnings\.warn\(|Token authentication|Failed to load"
                   r"|\d+%\|[^|\n]*\|\s*\d|\d+(?:\.\d+)?\s?(?:it|s)/(?:s|it)\]", re.MULTILINE)
ETA = re.compile(r"\bETA \d+:\d\d")  # every run has ended once the notebook is saved
TRACEBACK = "Traceback (most recent call last)"
NUMBER = r"(\d[\d,]*(?:\.\d+)?)"
SPEEDUP = [re.compile(NUMBER + r"\s?[×x]\s*(?:faster|quicker|speed-?ups?)\b", re.IGNORECASE),
           re.compile(r"\b(?:speed-?ups?|faster)\b[^\n\d×]{0,20}?" + NUMBER + r"\s?[×x](?!\w)", re.IGNORECASE)]
TAG = re.compile(r"<style.*?</style>|<script.*?</script>|<[^>]+>", re.DOTALL | re.IGNORECASE)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def joined(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def figure_strings(value):
    """The text a Plotly figure shows (titles, annotations, trace names, hover text), not its arrays."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("bdata", "dtype", "shape"):
                yield from figure_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from figure_strings(item)


def outputs(nb: dict):
    """(cell number, output) for every stored output."""
    for number, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", ()):
            yield number, output


def texts(nb: dict, figures: bool = False):
    """(where, kind, text) for every text a reader sees in the outputs: streams, plain text, HTML with
    its tags, styles and scripts stripped, markdown; with `figures`, a chart's own strings too."""
    for number, output in outputs(nb):
        where = f"cell {number}"
        if output.get("output_type") == "stream":
            yield where, output.get("name", "stream"), joined(output.get("text", ""))
        elif output.get("output_type") == "error":
            yield where, "error", "\n".join(output.get("traceback", []))
        data = output.get("data", {})
        for mime in ("text/plain", "text/markdown", "text/latex"):
            if mime in data:
                yield where, mime, joined(data[mime])
        if "text/html" in data:
            yield where, "text/html", html.unescape(TAG.sub(" ", joined(data["text/html"])))
        if figures and PLOTLY_MIME in data:
            yield where, "chart", "\n".join(figure_strings(data[PLOTLY_MIME]))


def lines_matching(pattern: re.Pattern, text: str) -> list[str]:
    return [line.strip()[:160] for line in text.splitlines() if pattern.search(line)]


def findings(path: Path, check) -> list[str]:
    found = check(load(path))
    return sorted(set(found), key=found.index)


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def notebook(request) -> Path:
    return request.param


def test_there_are_tutorials():
    assert len(PATHS) >= 8, f"expected the eight tutorials in {NOTEBOOKS}, found {[p.name for p in PATHS]}"


def test_no_errors_or_tracebacks(notebook):
    def check(nb):
        found = [f"{n}: stored error {o.get('ename')}: {o.get('evalue')}"[:200]
                 for n, o in outputs(nb) if o.get("output_type") == "error"]
        found += [f"{where} ({kind}): a traceback" for where, kind, text in texts(nb) if TRACEBACK in text]
        return found

    assert not findings(notebook, check), findings(notebook, check)


def test_no_absolute_paths(notebook):
    def check(nb):
        return [f"{where} ({kind}): {line}" for where, kind, text in texts(nb)
                for line in lines_matching(ABSOLUTE_PATH, text)]

    assert not findings(notebook, check), findings(notebook, check)


def test_no_library_noise(notebook):
    """Warnings, Ray's banner, tqdm bars anywhere; anything at all on stderr (a tutorial prints on stdout)."""
    def check(nb):
        found = [f"{where} ({kind}): {line}" for where, kind, text in texts(nb)
                 for line in lines_matching(NOISE, text)]
        found += [f"cell {n} (stderr): {joined(o['text']).strip().splitlines()[0][:160]}" for n, o in outputs(nb)
                  if o.get("output_type") == "stream" and o.get("name") == "stderr" and joined(o["text"]).strip()]
        return found

    assert not findings(notebook, check), findings(notebook, check)


def test_no_eta_from_a_finished_run(notebook):
    def check(nb):
        return [f"{where} ({kind}): {line}" for where, kind, text in texts(nb) for line in lines_matching(ETA, text)]

    assert not findings(notebook, check), findings(notebook, check)


def is_chart(output: dict, widget_states: dict) -> bool:
    data = output.get("data", {})
    if PLOTLY_MIME in data:
        return True
    if WIDGET_MIME in data:  # a FigureWidget, or a widget whose state was not saved (blank outside a kernel)
        model = widget_states.get(data[WIDGET_MIME].get("model_id"))
        return model is None or "_widget_data" in model.get("state", {}) or "Figure" in model.get("model_name", "")
    return False


def test_every_chart_has_a_static_image(notebook):
    """GitHub and nbviewer draw a chart only from a PNG stored next to its Plotly JSON."""
    def check(nb):
        states = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
        found = []
        for n, o in outputs(nb):
            if o.get("output_type") not in ("display_data", "execute_result") or not is_chart(o, states):
                continue
            png = o["data"].get("image/png")
            if png is None:
                found.append(f"cell {n}: a chart without image/png ({joined(o['data'].get('text/plain', ''))[:80]})")
                continue
            raw = base64.b64decode(joined(png))
            if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
                found.append(f"cell {n}: image/png is not a PNG")
            elif len(raw) > IMAGE_BUDGET:
                found.append(f"cell {n}: a {len(raw):,}-byte PNG (budget {IMAGE_BUDGET:,})")
        return found

    assert not findings(notebook, check), findings(notebook, check)


def speedups(text: str) -> list[tuple[float, str]]:
    found = []
    for line in text.splitlines():
        for pattern in SPEEDUP:
            for match in pattern.finditer(line):
                found.append((float(match.group(1).replace(",", "")), line.strip()[:160]))
    return found


def test_no_implausible_speedup(notebook):
    def check(nb):
        return [f"{where} ({kind}): {value:g}× in: {line}" for where, kind, text in texts(nb, figures=True)
                for value, line in speedups(text) if value > MAX_SPEEDUP]

    assert not findings(notebook, check), findings(notebook, check)


def test_the_gates_catch_what_they_are_for():
    """The patterns above on known bad and good lines, so a gate that matches nothing fails here."""
    assert speedups("prune 50% structured  2.00× smaller  0.179 ms  134.23× faster")[0][0] == 134.23
    assert speedups("a speed-up of 31.5x on the GPU")[0][0] == 31.5
    assert [value for value, _ in speedups("final: quantize int8 (3.93× smaller, 1.81× faster)")] == [1.81]
    assert not speedups("120.48× smaller · 452× more parameters · 3 epochs × 20 steps")
    assert ABSOLUTE_PATH.search("checkpoints in /tmp/bigmodel_nb-ray-v5hhn3ie")
    assert ABSOLUTE_PATH.search(r"saved to C:\Users\me\run.safetensors")
    assert ABSOLUTE_PATH.search("File /home/me/.venv/lib/python3.11/site-packages/x.py")
    assert not ABSOLUTE_PATH.search("see https://docs.ray.io/en/latest/home/token-auth.html or ./tmp/x and runs/work/")
    for noisy in ("/x.py:12: UserWarning: TypedStorage is deprecated", "Token authentication is enabled for this",
                  " 45%|████▌     | 9/20 [00:01<00:02,  4.51it/s]", "Failed to load image Python extension"):
        assert NOISE.search(noisy), noisy
    assert not NOISE.search("run completed at step 40/40 in 0:03 · val accuracy 0.9593")
    assert ETA.search("epoch 1/3 · step 10/60 · loss 2.076 · 7,505 samples/s · ETA 3:23")
    assert not ETA.search("on_workers completed at step 60/60 in 0:43")
    widget = {"output_type": "display_data", "data": {WIDGET_MIME: {"model_id": "m"}}}
    assert is_chart(widget, {"m": {"model_name": "FigureModel", "state": {"_widget_data": []}}})
    assert not is_chart(widget, {"m": {"model_name": "HTMLModel", "state": {"value": "x"}}})


def test_total_size_stays_within_budget():
    sizes = {p.name: p.stat().st_size for p in PATHS}
    too_big = {name: size for name, size in sizes.items() if size > NOTEBOOK_BUDGET}
    assert not too_big, f"notebooks over {NOTEBOOK_BUDGET:,} bytes: {too_big}"
    total = sum(sizes.values())
    assert total <= TOTAL_BUDGET, f"{total:,} bytes in all (budget {TOTAL_BUDGET:,}): {sizes}"
