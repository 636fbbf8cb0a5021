"""`%compare_optimizers --function` in a real JupyterLab: the contour and paths render, and the step
slider moves one marker per optimizer along its path without dropping the contour (plotly/plotly.py#2151)."""


def plot_state(page):
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        if (!plot || !plot.data) return null;
        return {types: plot.data.map(t => t.type || 'scatter'),
                contours: plot.querySelectorAll('.contour').length,
                heads: (plot.layout.shapes || []).map(s => [s.xanchor, s.yanchor]),
                slider: document.querySelectorAll('.slider-container').length};
    }""")


def test_trajectory_slider_moves_markers_and_keeps_the_contour(lab_page):
    cells = ["%load_ext bigmodel_nb",
             "%compare_optimizers --function rosenbrock --optimizers sgd,momentum,adam --steps 200 --name paths",
             "print([tuple(round(float(v), 6) for v in p[-1]) for p in paths.paths.values()])"]
    lab_page.open(cells, dest="trajectories.ipynb")
    lab_page.run_all()
    lab_page.wait_idle(timeout=60)
    page = lab_page.page
    page.wait_for_function("() => { const p = document.querySelector('.js-plotly-plot'); return p && p.data; }")
    before = plot_state(page)
    assert before["types"][0] == "contour" and before["contours"] >= 1 and before["slider"] == 1
    assert len(before["heads"]) == 3 and len({tuple(h) for h in before["heads"]}) == 1  # all at the start

    # Drive the slider to its last step, as dragging it does (the slider's own 'animate' method).
    page.evaluate("""async () => { const p = document.querySelector('.js-plotly-plot');
        const steps = p.layout.sliders[0].steps; const last = steps[steps.length - 1];
        await Plotly.animate(p, last.args[0], last.args[1]); }""")
    page.wait_for_timeout(500)
    after = plot_state(page)
    finals = eval(lab_page.cell_outputs()[2].strip())  # the kernel's final points, printed by cell 3
    assert [tuple(round(v, 6) for v in h) for h in after["heads"]] == finals
    assert after["contours"] >= 1, "the contour disappeared while animating"
    lab_page.screenshot("trajectories-rosenbrock-last-step")
    assert not lab_page.errors
