"""The playground's widgets: a slider, the function dropdown or a click on the contour recompute every path
and redraw in one figure update; drags are throttled to a redraw per interval plus one with the last value."""
import asyncio
import math
import threading
import time

import numpy as np
import pytest
from plotly.callbacks import Points

from bigmodel_nb.engine.compare.landscapes import custom_function
from bigmodel_nb.engine.compare.playground import Playground
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.ui.playground import PlaygroundView, Throttle, rows


@pytest.fixture
def view(widget_mode):
    pg = Playground("rosenbrock", ["sgd", "momentum", "adam"], steps=120)
    v = PlaygroundView(pg).show()
    return v


def widget_paths(v):
    k = len(v.pg.settings.optimizers)
    return {name: np.column_stack([v.fig.data[1 + i].x, v.fig.data[1 + i].y])
            for i, name in enumerate(v.pg.settings.optimizers[:k])}


def test_a_slider_recomputes_the_paths_and_redraws_figure_and_table(view):
    sent = []
    for kind in ("update", "restyle", "relayout", "addTraces", "animate"):  # everything that would reach the browser
        setattr(view.fig, f"_send_{kind}_msg", lambda *a, kind=kind, **k: sent.append(kind))
    table = view.table.value
    view.lr["sgd"].value = 2e-3
    assert view.pg.settings.lrs["sgd"] == pytest.approx(2e-3)
    np.testing.assert_allclose(widget_paths(view)["sgd"], view.pg.paths["sgd"])
    assert view.table.value != table and f"{view.pg.results['sgd']['distance']:.4g}" in view.table.value
    assert sent == ["update"]  # one batched update for every trace the change touched, nothing else

    view.knobs[("momentum", "momentum")].value = 0.5
    assert view.pg.settings.options["momentum"]["momentum"] == 0.5
    np.testing.assert_allclose(widget_paths(view)["momentum"], view.pg.paths["momentum"])


def test_the_function_dropdown_brings_its_contour_start_and_learning_rates(view):
    view.function.value = "beale"
    assert view.pg.settings.function == "beale" and view.pg.settings.start == (1.0, 1.5)
    assert view.lr["adam"].value == pytest.approx(0.1)  # beale's own rate, set on the slider
    assert view.redraws == 1  # setting those sliders did not redraw again
    assert view.condition.layout.display == "none"
    view.function.value = "quadratic"
    assert view.condition.layout.display == ""
    view.condition.value = 100.0
    assert view.pg.function.formula == "½(x² + 100y²)"
    assert tuple(view.fig.layout.xaxis.range) == (-5.0, 5.0)


def test_clicking_the_contour_starts_every_path_there(view):
    view._on_click(view.fig.data[0], Points([0], [0.5], [2.5], "f", 0), None)
    assert view.pg.settings.start == (0.5, 2.5)
    for path in widget_paths(view).values():
        assert tuple(path[0]) == (0.5, 2.5)


def test_the_step_scrubber_moves_one_marker_per_optimizer(view):
    view.step.value = 60
    k = len(view.pg.settings.optimizers)
    heads = np.column_stack([view.fig.data[2 * k + 1].x, view.fig.data[2 * k + 1].y])
    np.testing.assert_allclose(heads, [view.pg.paths[n][60] for n in view.pg.settings.optimizers])
    view.steps.value = 50  # fewer steps: the scrubber ends there too
    assert view.step.max == 50 and view.play.max == 50


def test_settings_torch_refuses_keep_the_last_paths_and_say_why(view):
    before = {n: p.copy() for n, p in view.pg.paths.items()}
    view.knobs[("adam", "beta1")].max = 1.0  # the slider stops below 1; widen it to reach the engine's own check
    view.knobs[("adam", "beta1")].value = 1.0
    assert "beta1 must be a number from 0 up to" in view.message.value
    for name, path in view.pg.paths.items():
        np.testing.assert_array_equal(path, before[name])


def test_a_drag_is_throttled_to_one_redraw_per_interval_and_ends_on_the_last_value():
    assert Throttle(print).loop() is None  # not in a kernel: every change redraws at once
    calls = []

    async def drag():
        throttle = Throttle(lambda: calls.append(value[0]), interval=0.05, loop=asyncio.get_running_loop)
        started = time.perf_counter()
        for i in range(40):  # 40 slider events ~5 ms apart (longer on a busy machine)
            value[0] = i
            throttle()
            await asyncio.sleep(0.005)
        elapsed[0] = time.perf_counter() - started
        await asyncio.sleep(0.1)

    value, elapsed = [None], [0.0]
    # A thread of its own: a session that ran the browser tests keeps Playwright's loop on this one
    worker = threading.Thread(target=lambda: asyncio.run(drag()))
    worker.start()
    worker.join()
    assert calls[0] == 0 and calls[-1] == 39  # the first change at once, the last one always
    # at most one call per 50 ms of the drag, plus the first and the trailing one; never one per event
    assert 2 <= len(calls) <= math.ceil(elapsed[0] / 0.05) + 2 and len(calls) < 40


def test_without_widgets_the_same_call_shows_the_static_figure_of_the_settings(monkeypatch, capsys):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    pg = Playground("saddle", ["sgd", "momentum"], steps=80)
    PlaygroundView(pg).show()
    out = capsys.readouterr().out
    assert "saddle: sgd d=" in out and "distance to the saddle point" in out
    assert rows(pg)[0]["optimizer"] == "sgd"


def test_a_kernel_without_a_widget_frontend_stores_the_static_figure(monkeypatch):
    from bigmodel_nb.ui import playground

    shown = []
    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    monkeypatch.setattr(playground, "show_figure", lambda fig, text: shown.append((fig, text)))
    pg = Playground("beale", ["adam"], steps=40, lr=0.05)
    view = PlaygroundView(pg).show()
    assert not hasattr(view, "fig")  # no widget was built
    fig, text = shown[0]
    path = next(t for t in fig.data if (t.name or "").startswith("adam"))
    np.testing.assert_allclose(np.column_stack([path.x, path.y]), pg.paths["adam"], rtol=1e-6)  # float32 in the JSON
    assert "beale: adam d=" in text


def test_values_outside_the_usual_slider_ranges_are_kept_exactly(widget_mode):
    pg = Playground("quadratic", ["sgd", "adam"], steps=5, lr={"sgd": 2e-7}, condition=5000.0,
                    options={"adam": {"beta2": 0.99999}})
    view = PlaygroundView(pg).show()
    assert view.lr["sgd"].value == 2e-7 and view.steps.value == 5 and view.condition.value == 5000.0
    assert view.knobs[("adam", "beta2")].value == 0.99999
    view.lr["adam"].value = 0.05  # a redraw reads every control: the others must read back what was given
    s = view.pg.settings
    assert s.lrs["sgd"] == 2e-7 and s.steps == 5 and s.condition == 5000.0 and s.options["adam"]["beta2"] == 0.99999


def test_your_function_raising_on_a_new_start_is_said_under_the_controls(widget_mode):
    def picky(x, y):
        if bool((x > 1).any()):
            raise ValueError("x must stay at most 1")
        return x ** 2 + y ** 2

    with pytest.raises(BigModelError, match="Your function raised ValueError on the plot's grid"):
        Playground(picky, ["sgd"])  # the default bounds reach x = 2
    fn = custom_function(picky, bounds=((-1, 1), (-1, 1)), start=(-1.0, 1.0))
    view = PlaygroundView(Playground(fn, ["sgd"], steps=20)).show()
    before = view.pg.paths["sgd"].copy()
    view._on_click(view.fig.data[0], Points([0], [1.5], [0.0], "f", 0), None)
    assert "This change failed: ValueError in picky" in view.message.value  # names your function and its line
    assert view.message.value.endswith("x must stay at most 1</span>")
    np.testing.assert_array_equal(view.pg.paths["sgd"], before)
