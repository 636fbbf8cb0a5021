"""Looking inside a model in a real JupyterLab: the live gradient panel of `%%train --watch-grads`
grows while training and leaves a static figure + `run.gradients` behind; `%attention`'s heatmap,
its layer/head dropdown (clicked in the page) and the all-heads grid; `%grads`' figure and flags;
`%evaluate`'s tables, confusion matrix (counts ↔ row shares), top-loss gallery and reliability curve."""

MODEL = "model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))"
GPT = ("import torch\nfrom bigmodel_nb.models import GPT, GPTConfig\ntorch.manual_seed(0)\n"
       "gpt = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))")

# Every Plotly plot on the page: its trace types, visibility, heatmap columns and updatemenu labels.
# Heatmap sizes read `data` (an array, or plotly.py's {dtype, bdata, shape} spec) and fall back on
# `_fullData` (decoded, but empty for hidden traces).
PLOTS_JS = """() => {
  const size = (v, full) => Array.isArray(v) || ArrayBuffer.isView(v) ? v.length :
      v && v.shape ? +String(v.shape).split(',')[0] : (full || []).length;
  return [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
    types: (p.data || []).map(t => t.type || 'scatter'),
    visible: (p.data || []).map(t => t.visible === undefined ? true : t.visible),
    columns: (p.data || []).map((t, i) => [t, i]).filter(([t]) => t.type === 'heatmap')
        .map(([t, i]) => ((p._fullData || [])[i] || {}).x ? p._fullData[i].x.length : size(t.x)),
    rows: (p.data || []).map((t, i) => [t, i]).filter(([t]) => t.type === 'heatmap')
        .map(([t, i]) => size(t.z, ((p._fullData || [])[i] || {}).z)),
    menus: ((p.layout || {}).updatemenus || []).map(m => (m.buttons || []).map(b => b.label)),
    title: (((p.layout || {}).title) || {}).text || '',
    height: p.getBoundingClientRect().height}));
}"""


HEATMAP_WATCH_JS = """() => { window.__heat = []; setInterval(() => {
  for (const p of document.querySelectorAll('.js-plotly-plot')) {
    const t = (p._fullData || []).find(t => t.type === 'heatmap' && t.x && t.x.length);
    if (!t) continue;
    const h = window.__heat, prev = h[h.length - 1], now = [t.x.length, +t.x[t.x.length - 1]];
    if (!prev || prev[0] !== now[0] || prev[1] !== now[1]) h.push(now);
  } }, 50); }"""


def plots(page):
    return page.evaluate(PLOTS_JS)


def heatmap_plots(page):
    return [p for p in plots(page) if "heatmap" in p["types"]]


def wait_status(page, status, timeout=10.0):
    page.wait_for_function(
        "(s) => { const els = [...document.querySelectorAll('[data-status]')]; "
        "return els.length && els[els.length - 1].dataset.status === s; }", arg=status, timeout=timeout * 1000)


def test_watch_grads_live_panel_grows_then_stop_leaves_static_figure_and_report(lab_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%train --data digits --epochs 400 --seed 0 --watch-grads --watch-every 25\n{MODEL}",
             "g = run.gradients\nprint('report', type(g).__name__, len(g.layers), len(g.steps), g.status)\n"
             "print('layers', g.layers)\nprint('step', run.status, run.step)"]
    lab_page.open(cells, dest="watch_grads.ipynb")
    page = lab_page.page
    # Record every state of the live heatmap the page shows (columns, newest step), from the start:
    # it keeps at most ~200 columns: 5000 steps at --watch-every 25, so it is still growing while watched.
    page.evaluate(HEATMAP_WATCH_JS)
    lab_page.run_all()
    # The live panel: a heatmap in a FigureWidget under the training chart, with some columns.
    page.wait_for_function("() => window.__heat.length >= 1", timeout=90_000)
    first = heatmap_plots(page)
    assert len(first) == 1, first
    panel = first[0]
    assert panel["types"] == ["heatmap", "scatter"] and panel["rows"] == [2]  # the two Linear layers
    all_plots = plots(page)
    assert len(all_plots) == 2 and "heatmap" not in all_plots[0]["types"], all_plots  # training chart on top
    # Laid out below the training chart, not over it.
    boxes = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(p => {
        const r = p.getBoundingClientRect(); return [r.top, r.bottom, r.height]; })""")
    assert boxes[1][0] >= boxes[0][1] - 1 and boxes[1][2] > 150, boxes
    flags = page.locator(".bmnb-grad-flags")
    assert flags.count() >= 1
    page.wait_for_function("() => window.__heat.length >= 3", timeout=30_000)
    seen = page.evaluate("() => window.__heat")
    print("heatmap states seen (columns, newest step):", seen)
    assert len(seen) >= 3, seen  # redrawn again and again while training
    (cols0, step0), (cols1, step1) = seen[0], seen[-1]
    assert cols1 > cols0, seen  # the panel grows: more columns later than earlier ...
    assert step1 > step0 and all(b[1] > a[1] for a, b in zip(seen, seen[1:])), seen  # ... and newer steps
    later = heatmap_plots(page)[0]
    assert "step" in flags.first.inner_text()
    lab_page.screenshot("inspection-watch-grads-running")

    page.locator("button.bmnb-stop").first.click()
    wait_status(page, "stopped", timeout=30)
    lab_page.wait_idle(timeout=30)
    # The static snapshot: the live widgets were replaced by plain Plotly figures, the gradient
    # figure (heatmap + bars + histogram) among them, and the final flags.
    page.wait_for_function("() => document.querySelectorAll('button.bmnb-stop').length === 0", timeout=30_000)
    page.wait_for_function("() => { const p = [...document.querySelectorAll('.js-plotly-plot')]; "  # drawn async
                           "return p.length === 2 && p.every(q => q._fullData && q._fullData.length); }",
                           timeout=30_000)
    static = heatmap_plots(page)
    assert len(static) == 1, static
    assert static[0]["types"][:2] == ["heatmap", "scatter"] and static[0]["columns"][0] >= later["columns"][0]
    assert len(plots(page)) == 2
    outputs = lab_page.cell_outputs()
    assert "gradient flow" in outputs[2]
    report_line = next(line for line in outputs[3].splitlines() if line.startswith("report"))
    _, kind, n_layers, n_steps, status = report_line.split()
    assert kind == "GradientReport" and int(n_layers) == 2 and int(n_steps) >= static[0]["columns"][0]
    assert status == "stopped"
    assert "step stopped" in outputs[3]
    lab_page.screenshot("inspection-watch-grads-stopped")
    page.locator(".js-plotly-plot").nth(1).evaluate("p => p.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    lab_page.screenshot("inspection-watch-grads-stopped-gradient-figure")
    assert "Traceback" not in "".join(outputs)
    assert not lab_page.errors


def click_menu_option(page, label):
    """Open the plot's Plotly dropdown and click `label`, as a user does."""
    page.locator(".js-plotly-plot .updatemenu-header-group").first.click()
    option = page.locator(".js-plotly-plot .updatemenu-dropdown-button", has_text=label).first
    option.wait_for(state="visible", timeout=5_000)
    option.click()


def test_attention_heatmap_dropdown_switches_heads_and_grid_renders(lab_page):
    cells = ["%load_ext bigmodel_nb", GPT, "%attention gpt [1,2,3,4,5,6,7,8]",
             "print('maps', attention_maps.layers, attention_maps.heads, attention_maps.tokens)"]
    lab_page.open(cells, dest="attention.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=60)
    page = lab_page.page
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=20_000)
    one, grid = plots(page)[:2]
    labels = ["layer 0 · head 0", "layer 0 · head 1", "layer 1 · head 0", "layer 1 · head 1"]
    assert one["types"] == ["heatmap"] * 4 and one["menus"] == [labels]
    assert one["visible"] == [False, False, True, False]  # the last layer's first head by default
    assert one["rows"] == [8] * 4  # an 8 × 8 map per head (8 tokens)
    assert page.locator(".js-plotly-plot").first.locator(".updatemenu-header-group").count() == 1
    assert "layer 1 · head 0" in page.locator(".js-plotly-plot .updatemenu-header-group").first.text_content()
    # The grid: both heads of layer 1 side by side.
    assert grid["types"] == ["heatmap"] * 2 and grid["title"] == "All heads of layer 1"
    assert grid["visible"] == [True, True]
    # Drawn, not just declared: Plotly paints each visible heatmap as an <image> in a `.hm` group.
    assert page.locator(".js-plotly-plot").first.locator(".hm image").count() == 1
    assert page.locator(".js-plotly-plot").nth(1).locator(".hm image").count() == 2

    click_menu_option(page, "layer 0 · head 1")
    page.wait_for_function("() => document.querySelector('.js-plotly-plot').data[1].visible === true",
                           timeout=5_000)
    after = plots(page)[0]
    assert after["visible"] == [False, True, False, False], after
    assert "layer 0 · head 1" in after["title"]
    assert "layer 0 · head 1" in page.locator(".js-plotly-plot .updatemenu-header-group").first.text_content()
    page.wait_for_timeout(600)  # let the closing dropdown fade out before the screenshot
    lab_page.screenshot("inspection-attention-layer0-head1")

    outputs = lab_page.cell_outputs()
    assert "AttentionMaps(" in outputs[2] and "layer 1 head 0" in outputs[2]
    assert "all 2 captured heads of layer 1" in outputs[2]
    for bad in ("Error", "Traceback", "failed", "could not"):
        assert bad not in outputs[2], outputs[2]
    assert "maps [0, 1] [0, 1] ['1', '2', '3', '4', '5', '6', '7', '8']" in outputs[3]
    assert not lab_page.errors


def test_grads_magic_renders_figure_and_flags(lab_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n" + MODEL,
             "%grads model --data digits --steps 30",
             "print('report', len(gradients.layers), len(gradients.steps), gradients.status, len(gradients.flags))"]
    lab_page.open(cells, dest="grads.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=60)
    page = lab_page.page
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=20_000)
    flow, histogram = plots(page)[:2]
    assert flow["types"] == ["heatmap", "scatter"] and flow["rows"] == [2] and flow["columns"] == [30]
    assert histogram["types"] == ["bar"] and "Gradient values of 0 (Linear)" in histogram["title"]
    flags = page.locator(".bmnb-grad-flags").first
    text = flags.inner_text()
    assert "gradient flow" in text and "2 layers × 30 steps" in text
    assert "completed" in text
    # The layer chooser (an ipywidgets Dropdown) redraws the histogram for another layer.
    select = page.locator(".jp-OutputArea select").first
    options = [o.replace("\xa0", " ") for o in select.locator("option").all_inner_texts()]
    assert options == ["0 (Linear)", "2 (Linear)"], options
    select.select_option(label=options[1])
    page.wait_for_function("(l) => [...document.querySelectorAll('.js-plotly-plot')][1].layout.title.text"
                           ".includes(l)", arg=options[1], timeout=5_000)
    assert page.locator(".jp-OutputArea .js-plotly-plot").first.locator(".hm image").count() == 1
    lab_page.screenshot("inspection-grads")
    outputs = lab_page.cell_outputs()
    assert "report 2 30 completed" in outputs[3]
    assert "Traceback" not in "".join(outputs)
    assert not lab_page.errors


# The z of heatmap `i` of a plot as nested numbers: a plain array, a typed array or plotly.py's
# {dtype, bdata, shape} spec in `data`, else `_fullData` (decoded, but empty for hidden traces).
HEATMAP_Z_JS = """(p, i) => {
  const decode = (v) => {
    if (!v || Array.isArray(v) || ArrayBuffer.isView(v)) return v;
    if (!v.bdata) return null;
    const bytes = Uint8Array.from(atob(v.bdata), c => c.charCodeAt(0)).buffer;
    const T = {i1: Int8Array, u1: Uint8Array, i2: Int16Array, u2: Uint16Array, i4: Int32Array,
               u4: Uint32Array, f4: Float32Array, f8: Float64Array}[v.dtype];
    const flat = Array.from(new T(bytes)), [r, c] = String(v.shape).split(',').map(Number);
    return c ? Array.from({length: r}, (_, k) => flat.slice(k * c, (k + 1) * c)) : flat;
  };
  const z = decode(p.data[i].z) || ((p._fullData || [])[i] || {}).z || [];
  return Array.from(z, row => Array.from(row, Number));
}"""


def test_evaluate_report_renders(lab_page):
    from bigmodel_nb.engine import load_dataset

    test = load_dataset("digits").test
    test_size = len(test)
    cells = ["%load_ext bigmodel_nb",
             "import torch; from torch import nn\ntorch.manual_seed(0)\n"
             "model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))",
             "%train --data digits --epochs 2 --seed 0 --quiet",
             "%evaluate run"]
    lab_page.open(cells, dest="evaluate.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=90)
    page = lab_page.page
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=20_000)
    outputs = lab_page.cell_outputs()
    assert "Traceback" not in "".join(outputs), outputs
    ev_cell = page.locator(".jp-Notebook .jp-Cell").nth(3)
    figures = ev_cell.locator(".js-plotly-plot")
    assert figures.count() == 3, plots(page)
    confusion, gallery, reliability = plots(page)[-3:]  # the three figures of the %evaluate cell

    # The HTML block: header, metrics table with f1_macro, the per-class table.
    block = ev_cell.locator(".bmnb-eval")
    assert block.count() == 1
    text = block.inner_text()
    assert f"{test_size} samples" in text and "Per class" in text, text
    tables = block.locator("table")
    assert tables.count() >= 2, text
    assert "f1_macro" in tables.nth(0).inner_text() and "accuracy" in tables.nth(0).inner_text(), text
    assert "precision" in tables.nth(1).inner_text() and "support" in tables.nth(1).inner_text(), text

    # The confusion matrix: counts shown, a 10 × 10 z over the whole test split, drawn as an image.
    assert confusion["types"] == ["heatmap", "heatmap"] and confusion["visible"] == [True, False], confusion
    assert confusion["menus"] == [["counts", "row-normalised"]], confusion
    assert f"{test_size} samples" in confusion["title"]
    plot = figures.nth(0)
    counts = plot.evaluate(HEATMAP_Z_JS, 0)
    assert len(counts) == 10 and all(len(row) == 10 for row in counts), counts
    assert sum(map(sum, counts)) == test_size, counts
    assert sum(counts[i][i] for i in range(10)) > test_size // 2, counts  # a trained model: mostly diagonal
    assert plot.locator(".hm image").count() == 1

    # "row-normalised" shows the other trace: each true class's row sums to 1.
    plot.locator(".updatemenu-button", has_text="row-normalised").click()
    page.wait_for_function("p => p.data[1].visible === true && p.data[0].visible === false",
                           arg=plot.element_handle(), timeout=5_000)
    shares = plot.evaluate(HEATMAP_Z_JS, 1)
    assert len(shares) == 10 and all(abs(sum(row) - 1) < 1e-6 for row in shares), shares
    assert plot.locator(".hm image").count() == 1

    # The top-loss gallery: 12 image heatmaps, each titled with its index, true label and prediction.
    assert gallery["types"] == ["heatmap"] * 12, gallery
    images = [figures.nth(1).evaluate(HEATMAP_Z_JS, i) for i in range(12)]
    assert all(len(z) == 8 and all(len(row) == 8 for row in z) for z in images), images  # 8 × 8 digits
    titles = figures.nth(1).evaluate("p => (p.layout.annotations || []).map(a => a.text)")
    assert len(titles) == 12 and all("true" in t and "pred" in t and t.startswith("#") for t in titles), titles
    assert figures.nth(1).locator(".hm image").count() == 12
    # Drawn upright and not transposed: each image is its test sample's 8 × 8 pixels, row 0 at the top.
    for title, z in zip(titles, images):
        index, true = int(title[1:].split()[0]), int(title.split("true ")[1].split("<br>")[0])
        assert int(test.y[index]) == true, title
        expected = test.X[index].reshape(8, 8).tolist()
        assert all(abs(a - b) < 1e-4 for zr, er in zip(z, expected) for a, b in zip(zr, er)), (title, z)
    ranges = figures.nth(1).evaluate("p => Object.keys(p._fullLayout).filter(k => /^yaxis\\d*$/.test(k))"
                                     ".map(k => p._fullLayout[k].range)")
    assert len(ranges) == 12 and all(r[0] > r[1] for r in ranges), ranges  # y reversed: row 0 on top

    # The reliability curve: bars per bin and the mean-confidence markers.
    assert reliability["types"][:2] == ["bar", "scatter"], reliability
    assert "Reliability" in reliability["title"]

    page.mouse.move(5, 500)  # no hover toolbar over the figures in the screenshots
    page.wait_for_timeout(300)
    lab_page.screenshot("evaluate")
    for i, name in ((0, "confusion"), (1, "gallery"), (2, "reliability")):  # the notebook panel scrolls
        figures.nth(i).evaluate("p => p.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(200)
        lab_page.screenshot(f"evaluate-{name}")
    assert not lab_page.errors, lab_page.errors
