"""`%optimizer_playground` in a real JupyterLab: moving a learning-rate slider with the keyboard and clicking
on the contour recompute the paths in the kernel, and the figure and the distance table follow."""
import json
import math
import time

KERNEL = """async (code) => {
    const k = window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel;
    const f = k.requestExecute({code, store_history: false}); let out = '';
    f.onIOPub = m => { if (m.header.msg_type === 'stream') out += m.content.text; };
    await f.done; return out; }"""


def kernel(page, code: str):
    """Run `code` in the notebook's kernel (not as a cell) and return what it printed, parsed as JSON."""
    return json.loads(page.evaluate(KERNEL, code))


STATE = ("import json; print(json.dumps({'lrs': playground.settings.lrs, 'start': playground.settings.start, "
         "'sgd_end': playground.paths['sgd'][-1].tolist(), 'sgd_start': playground.paths['sgd'][0].tolist()}))")


def table_text(page) -> str:
    return page.evaluate("() => [...document.querySelectorAll('.widget-html')].map(e => e.innerText)"
                         ".find(t => t.includes('distance to')) || ''")


def plot_sgd_path(page):
    return page.evaluate("""() => { const p = document.querySelector('.js-plotly-plot');
        const t = p.data.find(d => d.name === 'sgd' && d.xaxis !== 'x2');
        return [Array.from(t.x), Array.from(t.y)]; }""")


def settled(read, timeout=20.0):
    """The value once it has stopped changing (throttled redraws may still be arriving)."""
    deadline, last = time.monotonic() + timeout, read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing after {timeout} s")


def wait_for(read, ok, timeout=20.0):
    """`read()` once `ok` of it holds (the page applies the kernel's last redraw a moment later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if ok(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s: {value!r}")


def close(page_value: float, kernel_value: float) -> bool:
    """The page holds float32: a diverged path's 5e5 keeps only ~7 significant digits."""
    return math.isclose(page_value, kernel_value, rel_tol=1e-6, abs_tol=1e-5)


def wait_changed(read, before, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read()
        if now != before:
            return now
        time.sleep(0.2)
    raise AssertionError(f"nothing changed within {timeout} s: {before!r}")


def test_a_slider_and_a_click_on_the_contour_change_the_paths_and_the_table(lab_page):
    cells = ["%load_ext bigmodel_nb",
             "%optimizer_playground --function quadratic --optimizers sgd,momentum --steps 100"]
    lab_page.open(cells, dest="playground.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=60)
    page = lab_page.page
    page.wait_for_function("() => { const p = document.querySelector('.js-plotly-plot'); "
                           "return p && p.data && p.data.length > 4 && document.querySelector('.noUi-handle'); }",
                           timeout=30_000)
    start = kernel(page, STATE)
    table = table_text(page)
    assert "sgd" in table and "momentum" in table

    # Move sgd's learning-rate slider three steps right with the keyboard, as a user can.
    lr_slider = page.locator(".widget-hslider", has=page.locator("label", has_text="lr")).first
    handle = lr_slider.locator(".noUi-handle")
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    wait_changed(lambda: table_text(page), table)
    table_after_lr = settled(lambda: table_text(page))
    moved = kernel(page, STATE)
    assert moved["lrs"]["sgd"] > start["lrs"]["sgd"] and moved["lrs"]["momentum"] == start["lrs"]["momentum"]
    assert moved["sgd_end"] != start["sgd_end"]
    # The page follows the kernel's latest paths (a throttled redraw may land after the table settled).
    wait_for(lambda: (plot_sgd_path(page), kernel(page, STATE)["sgd_end"]),
             lambda got: close(got[0][0][-1], got[1][0]) and close(got[0][1][-1], got[1][1]))
    lab_page.screenshot("playground-lr-moved")

    # Click the contour at (2, -1): every path starts there.
    target = (2.0, -1.0)
    px, py = page.evaluate("""([x, y]) => { const p = document.querySelector('.js-plotly-plot');
        const fl = p._fullLayout, r = p.getBoundingClientRect();
        return [r.left + fl.xaxis._offset + fl.xaxis.l2p(x), r.top + fl.yaxis._offset + fl.yaxis.l2p(y)]; }""",
                           list(target))
    page.mouse.move(px, py)
    page.wait_for_timeout(200)
    page.mouse.click(px, py)
    wait_changed(lambda: table_text(page), table_after_lr)
    # The kernel's state once the click is handled (the table may have changed for a late lr redraw first).
    clicked = wait_for(lambda: kernel(page, STATE), lambda s: abs(s["start"][0] - target[0]) < 0.1)
    assert abs(clicked["start"][0] - target[0]) < 0.1 and abs(clicked["start"][1] - target[1]) < 0.05
    assert clicked["sgd_start"] == list(clicked["start"])
    wait_for(lambda: plot_sgd_path(page),
             lambda xy: close(xy[0][0], clicked["start"][0]) and close(xy[1][0], clicked["start"][1]))
    lab_page.screenshot("playground-clicked")
    assert not lab_page.errors
