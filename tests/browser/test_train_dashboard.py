"""`%%train` in a real JupyterLab: the dashboard renders, grows, and its buttons work while the
cell blocks (the default), after it returned (--background), and without kernel subshells."""
import time

import nbformat
import pytest

MODEL = "model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))"
LONG = "--data digits --epochs 5000 --seed 0"  # far longer than any test waits


def chart_state(page):
    """Points and last step of the loss chart's train trace, and the progress bar width."""
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const bar = document.querySelector('.bmnb-bar > div');
        const status = [...document.querySelectorAll('[data-status]')].pop();
        const x = plot && plot.data && plot.data[0] ? Array.from(plot.data[0].x || []) : [];
        return {points: x.length, last: x.length ? x[x.length - 1] : 0,
                bar: bar ? parseFloat(bar.style.width) : 0,
                status: status ? status.dataset.status : null, step: status ? +status.dataset.step : 0};
    }""")


def start_training(lab_page, flags: str, after: str, dest: str):
    """Open a notebook whose third cell is `%%train LONG flags`, run all, wait for the first points."""
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn", f"%%train {LONG} {flags}\n{MODEL}", after]
    lab_page.open(cells, dest=dest)
    lab_page.run_all()
    lab_page.wait_training()
    return lab_page.page


def wait_step_beyond(page, held: int):
    """Training goes on: the newest status shows a step past `held` (within 30 s on a loaded machine)."""
    page.wait_for_function("(h) => { const s = [...document.querySelectorAll('[data-status]')].pop(); "
                           "return s && +s.dataset.step > h; }", arg=held, timeout=30_000)


def click(page, selector):
    page.locator(f"button{selector}").first.click()


def test_blocking_stop_live_charts_and_static_snapshot(lab_page):
    page = start_training(lab_page, "", "print('after', run.status, run.step)", "blocking_stop.ipynb")
    first = chart_state(page)
    # The chart is resent every ~1.5 s and the status every tick: wait for both to move on.
    page.wait_for_function("""(f) => { const p = document.querySelector('.js-plotly-plot');
        const x = p && p.data && p.data[0] ? p.data[0].x : [];
        const s = [...document.querySelectorAll('[data-status]')].pop();
        return x.length && x[x.length - 1] > f.last && s && +s.dataset.step > f.step; }""", arg=first, timeout=30_000)
    second = chart_state(page)
    assert second["last"] > first["last"] and second["step"] > first["step"], (first, second)
    assert first["bar"] <= second["bar"] and second["bar"] > 0
    assert first["status"] == "running"
    lab_page.screenshot("train-blocking-running")

    t0 = time.monotonic()
    click(page, ".bmnb-stop")
    lab_page.wait_status("stopped", timeout=30)
    took = time.monotonic() - t0
    print(f"Stop click to status stopped: {took:.2f} s")  # a figure to read, not a timing test
    assert took < 10.0, f"Stop took {took:.2f} s"  # a Stop that waited for the 5000 epochs would take hours
    lab_page.wait_idle(timeout=30)
    outputs = lab_page.cell_outputs()
    assert outputs[0].startswith("bigmodel_nb 0.1.0")
    assert "after stopped" in outputs[3]
    stopped_at = int(outputs[3].split()[-1])
    time.sleep(1.0)
    assert chart_state(page)["step"] == stopped_at  # nothing trains on
    # The live widget was replaced by a static figure that a saved notebook keeps.
    assert page.locator(".js-plotly-plot").count() == 1 and page.locator("button.bmnb-stop").count() == 0
    lab_page.screenshot("train-blocking-stopped")
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    saved = nbformat.reads((lab_page.server.root_dir / "blocking_stop.ipynb").read_text(), 4)
    mimetypes = [k for o in saved.cells[2].outputs for k in o.get("data", {})]
    assert "application/vnd.plotly.v1+json" in mimetypes and "text/html" in mimetypes
    assert not lab_page.errors


def test_background_pause_resume_stop(lab_page):
    page = start_training(lab_page, "--background", "print('returned', run.status)", "background.ipynb")
    lab_page.wait_idle(timeout=30)  # the cell returned while training goes on
    assert "returned running" in lab_page.cell_outputs()[3]

    click(page, ".bmnb-pause")
    lab_page.wait_status("paused")
    held = chart_state(page)["step"]
    time.sleep(1.0)
    assert chart_state(page)["step"] == held
    lab_page.screenshot("train-background-paused")
    click(page, ".bmnb-resume")
    lab_page.wait_status("running")
    wait_step_beyond(page, held)
    click(page, ".bmnb-stop")
    lab_page.wait_status("stopped")
    assert not lab_page.errors


def test_blocking_pause_gives_the_notebook_back_and_resume_continues(lab_page):
    page = start_training(lab_page, "", "print('after', run.status)", "blocking_pause.ipynb")
    click(page, ".bmnb-pause")
    lab_page.wait_idle(timeout=30)
    outputs = lab_page.cell_outputs()
    assert "is paused at step" in outputs[2] and "after paused" in outputs[3]
    held = chart_state(page)["step"]
    click(page, ".bmnb-resume")
    lab_page.wait_status("running")
    wait_step_beyond(page, held)
    click(page, ".bmnb-stop")
    lab_page.wait_status("stopped")
    assert not lab_page.errors


@pytest.fixture
def no_subshells(jupyter_server):
    plugin = "@jupyterlab/apputils-extension:kernels-settings"
    jupyter_server.set_lab_setting(plugin, {"commsOverSubshells": "disabled"})
    yield
    jupyter_server.set_lab_setting(plugin, {})


def test_without_subshells_the_buttons_interrupt_the_kernel(no_subshells, lab_page):
    page = start_training(lab_page, "", "print('after', run.status)", "no_subshells.ipynb")
    t0 = time.monotonic()
    click(page, ".bmnb-stop")
    lab_page.wait_status("stopped", timeout=30)
    elapsed = time.monotonic() - t0
    lab_page.wait_idle(timeout=30)
    assert "after" in lab_page.cell_outputs()[3]
    assert "Kernel interrupted" in lab_page.server.log_tail(400)  # the REST interrupt was the path taken
    assert elapsed < 20.0  # bridge grace, REST interrupt, the next cell, then the queued click: seconds, not hours
    assert "KeyboardInterrupt" not in "".join(lab_page.cell_outputs())


def test_kernel_interrupt_button_stops_the_run_cleanly(lab_page):
    """■ in the toolbar, with subshells on (the default): the run stops, the kernel lives."""
    page = start_training(lab_page, "", "print('after', run.status)", "interrupt.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    lab_page.wait_status("stopped", timeout=10)
    lab_page.wait_idle(timeout=30)
    outputs = lab_page.cell_outputs()
    assert "after stopped" in outputs[3]
    assert "KeyboardInterrupt" not in "".join(outputs)


def test_compare_optimizers_dashboard_renders_and_stops(lab_page):
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%compare_optimizers --data digits --epochs 3000 --optimizers sgd,momentum,adam\n{MODEL}",
             "print('after', comparison.status, sorted(comparison.results))"]
    lab_page.open(cells, dest="compare.ipynb")
    lab_page.run_all()
    page = lab_page.page
    page.wait_for_function("""() => { const p = document.querySelector('.js-plotly-plot');
        return p && p.data && p.data.filter(t => t.x && t.x.length > 2).length >= 3; }""", timeout=90_000)
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.slice(0, 3).map(t => t.name)")
    assert names == ["sgd", "momentum", "adam"]
    lab_page.screenshot("compare-running")
    click(page, ".bmnb-stop")
    lab_page.wait_idle(timeout=30)
    assert "after stopped ['adam', 'momentum', 'sgd']" in lab_page.cell_outputs()[3]
    assert page.locator("table.bmnb-table").count() == 1  # the results table replaced the live view
    lab_page.screenshot("compare-stopped")
    assert not lab_page.errors


PANELS_JS = """() => {
    const p = document.querySelector('.js-plotly-plot');
    if (!p || !p.data || !p.layout.updatemenus) return null;  // not drawn yet (or the widget's placeholder)
    const axis = t => 'yaxis' + (t.yaxis || 'y').slice(1);
    const lr = p.data.find(t => t.name === 'lr'), loss = p.data.find(t => t.name === 'train');
    const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
    return {points: Array.from(loss.x || []).length, lr: Array.from(lr.y || []),
            lr_range: (p.layout[axis(lr)] || {}).range || null, lr_drawn: p._fullLayout[axis(lr)].range,
            loss_type: p._fullLayout[axis(loss)].type, active: p.layout.updatemenus[0].active,
            buttons: [...p.querySelectorAll('.updatemenu-button')].map(box),
            titles: [...p.querySelectorAll('.annotation')].map(box)};
}"""


def panels(page):
    return page.evaluate(PANELS_JS)


def test_reloaded_page_redraws_the_live_curves_and_the_loss_panel_toggles_log(lab_page):
    """A page reloaded mid-run gets the live figure's state from the kernel: it must be the curves drawn
    last, with the LR on [0, 1.15 max], not the figure as first displayed (empty; the LR at 0 on [-1, 1])."""
    page = start_training(lab_page, "--background", "print('returned', run.status)", "reload.ipynb")
    lab_page.wait_idle(timeout=30)
    click(page, ".bmnb-pause")
    lab_page.wait_status("paused")
    before = panels(page)  # the render thread may still draw (and persist) a few rows logged before the pause
    lr = before["lr"][-1]
    assert before["points"] > 2 and set(before["lr"]) == {lr} and before["lr_range"] == pytest.approx([0, 1.15 * lr])
    assert before["loss_type"] == "linear" and before["active"] == 0
    assert len(before["buttons"]) == 2 and len(before["titles"]) == 3
    for b in before["buttons"]:  # the linear/log buttons sit in their own row, clear of the subplot titles
        assert all(b[3] <= t[1] or b[1] >= t[3] or b[2] <= t[0] or b[0] >= t[2] for t in before["titles"]), before

    # JupyterLab draws a reloaded notebook's widgets from the kernel's widget state: save, reload, compare.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    saved = lab_page.server.root_dir / "reload.ipynb"
    deadline = time.monotonic() + 30
    while "widget-view+json" not in saved.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "widget-view+json" in saved.read_text(), "the notebook was not saved with its widgets within 30 s"
    t0 = time.monotonic()
    page.reload()
    page.wait_for_function(f"() => ({PANELS_JS})() !== null", timeout=60_000)
    print(f"reload to redrawn chart: {time.monotonic() - t0:.1f} s")
    after = panels(page)
    assert after["points"] >= before["points"] and set(after["lr"]) == {lr}, (before, after)
    assert len(after["lr"]) == after["points"], after
    assert after["lr_range"] == pytest.approx([0, 1.15 * lr]) and after["lr_drawn"] == pytest.approx([0, 1.15 * lr])

    page.locator(".updatemenu-button", has_text="log").first.click()
    page.wait_for_function(f"() => ({PANELS_JS})().loss_type === 'log'", timeout=5_000)
    assert panels(page)["active"] == 1
    click(page, ".bmnb-resume")  # the updates after a reload keep the LR axis and the chosen scale
    lab_page.wait_status("running")
    page.wait_for_function(f"(n) => ({PANELS_JS})().points > n + 2", arg=after["points"], timeout=10_000)
    resumed = panels(page)
    assert resumed["lr_drawn"] == pytest.approx([0, 1.15 * lr]) and resumed["loss_type"] == "log", resumed
    lab_page.screenshot("train-reloaded-log")
    click(page, ".bmnb-stop")
    lab_page.wait_status("stopped")
    assert not lab_page.errors
