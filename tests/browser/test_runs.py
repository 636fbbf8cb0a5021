"""`%runs` in a real JupyterLab: the table lists every run of the session, the overlaid chart has a
val and a train curve per run, the run picker redraws it with the chosen runs only and the x-axis
switch puts it on a time axis."""

RUNS = [("lr_0_1", 0.1), ("lr_0_01", 0.01), ("lr_0_001", 0.001)]
MODEL = "model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"
TINY = "--data digits --epochs 2 --batch-size 128 --log-every 5 --seed 0 --quiet"  # 10 steps an epoch

# Trace names, x values and the x-axis title of the (last) Plotly chart on the page.
CHART_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const p = plots[plots.length - 1];
  if (!p || !p.data) return null;
  const title = ((p.layout || {}).xaxis || {}).title;
  return {count: plots.length, names: p.data.map(t => t.name),
          x: p.data.map(t => Array.from(t.x || [], Number)),
          xtitle: typeof title === 'string' ? title : (title || {}).text || ''};
}"""


def chart(page):
    return page.evaluate(CHART_JS)


def wait_chart(page, condition: str, arg=None, timeout=10_000):
    """Wait until `condition` (JS over `c`, the chart state above, and `arg`) holds."""
    page.wait_for_function(f"([arg]) => {{ const c = ({CHART_JS})(); return !!c && ({condition}); }}",
                           arg=[arg], timeout=timeout)


def test_runs_table_overlaid_curves_picker_and_time_axis(lab_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn"]
    cells += [f"%%train {TINY} --lr {lr} --name {name}\n{MODEL}"
              for name, lr in RUNS]
    cells += ["%runs", "print('runs', len(runs), [r.label for r in runs])"]
    lab_page.open(cells, dest="runs.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=90)
    page = lab_page.page
    outputs = lab_page.cell_outputs()
    assert "Traceback" not in "".join(outputs), outputs
    labels = [f"{name} #{i}" for i, (name, _) in enumerate(RUNS, start=1)]
    assert f"runs 3 {labels}" in outputs[-1], outputs[-1]
    assert all(not out.strip() for out in outputs[2:5]), outputs[2:5]  # --quiet: no dashboards

    # The HTML table: one row per run, with the column of the config field that differs (lr).
    table = page.locator(".bmnb-runs table")
    assert table.count() == 1
    header = [h.strip() for h in table.locator("th").all_inner_texts()]
    assert "lr" in header and "best val loss" in header and "last val loss" in header, header
    assert "epochs" not in header, header  # the same for every run: no column
    rows = table.locator("tbody tr").all_inner_texts()
    assert len(rows) == 3, rows
    for label, (_, lr), row in zip(labels, RUNS, rows):
        assert row.startswith(label) and str(lr) in row and "completed" in row, row

    # The chart: every run selected, a val (solid) and a train (dotted) curve each, steps on x.
    wait_chart(page, "c.names.length === 6")
    state = chart(page)
    assert state["count"] == 1, state  # --quiet runs draw no chart of their own
    assert state["names"] == [f"{label} {split}" for label in labels for split in ("val", "train")], state
    assert state["xtitle"] == "step", state
    assert state["x"][0] == [10, 20] and state["x"][1] == [5, 10, 15, 20], state  # val per epoch
    dashes = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].pop().data"
                           ".map(t => t.line.dash)")
    assert dashes == ["solid", "dot"] * 3, dashes

    # The run picker (a SelectMultiple): choosing one run redraws the chart with its two curves only.
    select = page.locator(".jp-OutputArea .widget-select-multiple select")
    assert select.count() == 1
    options = [o.replace("\xa0", " ") for o in select.locator("option").all_inner_texts()]
    assert options == labels, options
    select.select_option(label=labels[1])
    wait_chart(page, "c.names.length === 2")
    assert chart(page)["names"] == [f"{labels[1]} val", f"{labels[1]} train"]

    # The x-axis switch: "time" puts the same curves on a time axis in seconds.
    page.locator(".jp-OutputArea .widget-toggle-buttons button", has_text="time").click()
    wait_chart(page, "c.xtitle === 'time (s)'")
    timed = chart(page)
    assert timed["names"] == [f"{labels[1]} val", f"{labels[1]} train"], timed
    assert all(len(x) == n and all(0 < v < 60 for v in x) for x, n in zip(timed["x"], (2, 4))), timed
    assert timed["x"][0] == sorted(timed["x"][0]) and timed["x"][0] != [10, 20], timed

    page.mouse.move(5, 500)  # no hover toolbar over the chart in the screenshot
    table.evaluate("t => t.closest('.jp-Cell').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    lab_page.screenshot("runs")
    assert not lab_page.errors, lab_page.errors
