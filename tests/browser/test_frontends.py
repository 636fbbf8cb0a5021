"""What a person sees in the browser beyond the live training charts: the %summary and %compress
reports, a saved notebook reopened, two %%train cells at once, and Notebook 7."""
import shutil
from pathlib import Path

import nbformat
from nbformat.sign import NotebookNotary

MODEL = "nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"
NOTEBOOKS = Path(__file__).parents[2] / "notebooks"

# Points per chart as plotly.js drew them (_fullData: saved figures carry base64 typed arrays in .data).
PLOTS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
    points: (p._fullData || []).reduce((n, t) => n + (t._length || (t.z && t.z.length) || 0), 0),
    types: [...new Set((p._fullData || []).map(t => t.type))]}))"""
PLOTLY = "application/vnd.plotly.v1+json"
STATUSES = "() => [...document.querySelectorAll('.bmnb-status[data-status]')].map(e => e.dataset.status)"


def test_summary_and_compress_reports_render_with_their_charts(lab_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%train --data digits --epochs 3 --seed 0\nmodel = {MODEL}",
             "%summary model --input-shape 64 --batch-size 128",
             "%compress model --data digits --prune 0.5 --structured --finetune 1 --quantize int8",
             "print('stages', [r['stage'] for r in compression.stages])"]
    lab_page.open(cells, dest="reports.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=180)
    page, outputs = lab_page.page, lab_page.cell_outputs()
    assert "stages ['original', 'prune 50% structured (layer)', 'finetune 1 epoch', 'quantize int8']" in outputs[5]
    summary = page.locator(".bmnb-summary")
    assert summary.count() == 1 and "Linear" in summary.inner_text() and "training memory" in summary.inner_text()
    report = page.locator(".bmnb-compress")
    assert report.count() == 1 and report.locator("table.bmnb-table tr").count() == 1 + 4  # header + 4 stages
    page.wait_for_function("() => { const p = [...document.querySelectorAll('.js-plotly-plot')]; "  # drawn async
                           "return p.length >= 3 && p.every(q => q._fullData && q._fullData.length); }",
                           timeout=30_000)
    plots = page.evaluate(PLOTS)
    bars = [p for p in plots if "bar" in p["types"]]
    assert bars and bars[-1]["points"] >= 4, plots  # the before/after bars
    assert len(plots) >= 3 and all(p["points"] > 0 for p in plots)  # training, fine-tuning, bars
    assert page.evaluate(STATUSES)[-1] == "completed" and page.locator("button.bmnb-stop").count() == 0
    lab_page.screenshot("summary-compress")
    assert not lab_page.errors


def test_a_saved_notebook_reopens_with_its_final_figures(lab_page, new_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%train --data digits --epochs 3 --seed 0\nmodel = {MODEL}"]
    lab_page.open(cells, dest="saved.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=90)
    lab_page.page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    lab_page.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=10_000)
    lab_page.server.shutdown_kernels()
    # jupyterlab-plotly may have stored a PNG snapshot next to the figure (shown instead on reopening); drop
    # it, so what is checked is the figure drawn from the saved Plotly JSON, as any other frontend would.
    path = lab_page.server.root_dir / "saved.ipynb"
    saved = nbformat.read(path, as_version=4)
    for output in saved.cells[2].outputs:
        output.get("data", {}).pop("image/png", None)
    assert any(PLOTLY in o.get("data", {}) for o in saved.cells[2].outputs)
    NotebookNotary(data_dir=str(lab_page.server.base / "data")).sign(saved)  # still the user's own, trusted
    nbformat.write(saved, path)

    reopened = new_page(lab_page.server, "reopened")
    reopened.open(None, dest="saved.ipynb")  # a new browser context, a fresh kernel: nothing re-runs
    page = reopened.page
    try:
        page.wait_for_function(f"() => ({PLOTS})().some(p => p.points > 0)", timeout=60_000)
    except Exception:
        reopened.screenshot("FAILED-reopened-notebook")
        outputs = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                                ".map(e => e.className + ': ' + e.innerHTML.slice(0, 200))")
        raise AssertionError(f"the reopened notebook shows no figure; its outputs: {outputs}") from None
    assert page.evaluate(STATUSES) == ["completed"]
    assert "run completed at step" in reopened.cell_outputs()[2]
    reopened.screenshot("saved-notebook-reopened")
    assert not reopened.errors


def run_cell(lab_page, index: int):
    """Run one cell, as a person does with Shift+Enter on it, without waiting for it to finish."""
    lab_page.page.evaluate("""(i) => { const w = window.jupyterapp.shell.currentWidget;
        w.content.activeCellIndex = i; window.jupyterapp.commands.execute('notebook:run-cell'); }""", index)


def wait_live_points(page, dashboards: int):
    """Wait until `dashboards` live charts have drawn points."""
    page.wait_for_function(f"(n) => ({PLOTS})().filter(p => p.points > 0).length >= n", arg=dashboards,
                           timeout=90_000)


def test_a_second_train_cell_stops_a_run_of_the_same_name_and_runs_beside_another(lab_page):
    """As documented: same --name (default `run`) stops the earlier run first; another name trains beside it."""
    long = f"--data digits --epochs 5000 --seed 0 --background\nmodel = {MODEL}"
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%train {long}", "first = run",
             f"%%train --data digits --epochs 2 --seed 1\nmodel = {MODEL}",
             f"%%train --name other {long}",
             f"%%train --data digits --epochs 2 --seed 2 --name third\nmodel = {MODEL}",
             "print('statuses', first.status, run.status, other.status, third.status)"]
    lab_page.open(cells, dest="two_runs.ipynb")
    page = lab_page.page
    for i in range(4):
        run_cell(lab_page, i)
    wait_live_points(page, 1)  # the first run trains in the background
    run_cell(lab_page, 4)
    lab_page.wait_idle(timeout=60)
    run_cell(lab_page, 5)
    wait_live_points(page, 3)
    for i in (6, 7):
        run_cell(lab_page, i)
    lab_page.wait_idle(timeout=60)
    outputs = lab_page.cell_outputs()
    assert "Stopped the previous 'run' at step" in outputs[4]
    assert "statuses stopped completed running completed" in outputs[7]
    assert page.evaluate(STATUSES) == ["stopped", "completed", "running", "completed"]
    lab_page.screenshot("two-train-cells")
    page.locator("button.bmnb-stop").first.click()  # the only live dashboard left: `other`
    page.wait_for_function(f"() => ({STATUSES})()[2] === 'stopped'", timeout=10_000)
    # Two trainings at once fill both cores of a CI machine; Chromium then parses plotly's ~4 MB
    # widget module past anywidget's 2 s start-up timer, which it logs as this error even though
    # every chart renders (their points are checked above). Nothing else may fail.
    assert not [e for e in lab_page.errors if e != "[anywidget] Failed to initialize model."]


def test_notebook7_tree_and_the_quickstart_dashboard(notebook7_server, new_page):
    shutil.copy(NOTEBOOKS / "01_quickstart.ipynb", notebook7_server.root_dir)
    nb = new_page(notebook7_server, "notebook7")
    nb.page.goto(f"{notebook7_server.url}tree?token={notebook7_server.token}")
    nb.page.get_by_text("01_quickstart.ipynb").first.wait_for(timeout=30_000)
    nb.screenshot("notebook7-tree")
    nb.open(None, dest="01_quickstart.ipynb", timeout=120)
    assert "/notebooks/01_quickstart.ipynb" in nb.page.url
    before_outputs = set(nb.errors)  # Notebook 7's own start-up errors, if any, are not ours
    print("Notebook 7 page errors before any output:", before_outputs)
    nb.run_all()
    nb.wait_idle(timeout=240)
    plots = nb.page.evaluate(PLOTS)
    assert len(plots) >= 2 and all(p["points"] > 0 for p in plots), plots  # the MLP's and the CNN's curves
    assert nb.page.evaluate(STATUSES).count("completed") >= 2
    assert not any("Error" in out for out in nb.cell_outputs())
    nb.screenshot("notebook7-quickstart")
    assert set(nb.errors) <= before_outputs
