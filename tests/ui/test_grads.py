"""Gradient figures, `show_gradient_report` by context, and `--watch-grads` on the live dashboard."""
import base64
import time

import numpy as np
import pytest

from bigmodel_nb.api import launch
from bigmodel_nb.engine import Callback, Run, TrainConfig
from bigmodel_nb.engine.core.loop import Loop
from bigmodel_nb.engine.inspect.grads import GradientRecorder, GradientReport, grads
from bigmodel_nb.ui import dashboard as dash_mod
from bigmodel_nb.ui import display
from bigmodel_nb.ui.dashboard import TrainingDashboard
from bigmodel_nb.ui.grads import MAX_COLUMNS, flags_text, gradient_figure, gradient_figures, show_gradient_report


def decoded(array):
    """Plotly ≥ 6 sends numpy arrays as base64 typed arrays."""
    if isinstance(array, dict):
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        shape = array.get("shape")
        return values.reshape([int(s) for s in shape.split(",")]) if shape else values
    return np.asarray(array)


@pytest.fixture(scope="module")
def long_report():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return grads(model, "digits", steps=500)


def test_heatmap_is_float32_log_norms_with_bounded_columns(long_report):
    figures = gradient_figures(long_report)
    heatmap, bars = figures["flow"].to_plotly_json()["data"]
    z = decoded(heatmap["z"])
    assert heatmap["z"]["dtype"] == "f4" and z.shape[0] == 3 and MAX_COLUMNS - 2 <= z.shape[1] <= MAX_COLUMNS
    steps = decoded(heatmap["x"])
    assert steps[0] == 1 and steps[-1] == 500
    column = list(long_report.steps).index(int(steps[-1]))
    expected = np.log10([long_report.norms[name][column] for name in long_report.layers])
    np.testing.assert_allclose(z[:, -1], expected, rtol=1e-5)
    np.testing.assert_allclose(decoded(bars["x"]), [long_report.norms[n][-1] for n in long_report.layers], rtol=1e-6)
    assert list(bars["y"]) == long_report.layers
    assert len(figures["flow"].to_json()) < 20_000  # small, whatever the number of steps
    histogram = figures["histogram"].data[0]
    assert histogram.y.sum() == 64 * 64 + 64  # the first layer's latest gradient values, all of them


def test_static_figure_has_a_layer_dropdown_for_the_histogram(long_report):
    fig = gradient_figure(long_report)
    histograms = [t for t in fig.data if t.type == "bar" and t.orientation != "h"]
    assert [t.name for t in histograms] == long_report.layers
    assert [t.visible for t in histograms] == [True, False, False]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == long_report.layers
    assert buttons[2].args[0]["visible"] == [True, True, False, False, True]


def test_text_mode_prints_the_flags_as_sentences(capsys, monkeypatch):
    import torch
    from torch import nn

    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    report = grads(model, "digits", steps=5)
    assert show_gradient_report(report) is None
    out = capsys.readouterr().out
    assert "gradient flow: 2 layers × 5 recorded steps, completed:" in out
    assert "1 (ReLU): 100% of its units output zero" in out


def test_widget_mode_dropdown_switches_the_histogram(widget_mode, long_report):
    box = show_gradient_report(long_report)
    chooser, histogram = box.children
    assert list(chooser.options) == long_report.layers
    first = np.asarray(histogram.data[0].y).copy()
    chooser.value = long_report.layers[2]
    assert histogram.data[0].y.sum() == 64 * 10 + 10 and not np.array_equal(histogram.data[0].y, first)
    assert long_report.layers[2] in histogram.layout.title.text


def test_live_panel_receives_data_while_the_run_trains(widget_mode, mlp, slow):
    run = Run(mlp(), "digits", TrainConfig(epochs=12, seed=0))  # ≥ 1 s: 240 steps of ≥ 4 ms
    dash = TrainingDashboard(run, tick=0.05, watch_grads=True).show()
    run.start([slow, dash])
    deadline = time.monotonic() + 30  # a loaded machine may take a while to the first logged step
    while not dash.recorder.steps and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.alive
    redraw_deadline = time.monotonic() + 10
    while True:  # the dashboard's own render thread may be drawing this very batch
        dash.render()
        if np.asarray(dash.grad_panel.figure.data[0].z).ndim == 2 or time.monotonic() > redraw_deadline:
            break
        time.sleep(0.02)
    heatmap, bars = dash.grad_panel.figure.data
    z = np.asarray(heatmap.z)
    assert z.shape[0] == 2 and 0 < z.shape[1] < run.total_steps and list(heatmap.y) == ["0 (Linear)", "2 (Linear)"]
    assert np.all(np.asarray(bars.x) > 0)
    assert "gradient flow" in dash.grad_panel.flags.value
    run.wait()
    report = run.gradients
    assert isinstance(report, GradientReport) and report.steps == list(range(1, run.total_steps + 1))
    final = dash.grad_panel.figure.data[0]  # the widget ends in the final state, decimated
    assert np.asarray(final.z).shape[1] <= MAX_COLUMNS < run.total_steps and final.x[-1] == run.total_steps
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in run.model.modules())


def test_watch_every_records_every_nth_step_and_messages_stay_bounded(widget_mode, mlp):
    run = Run(mlp(), "digits", TrainConfig(epochs=20, seed=0, log_every=1))
    dash = TrainingDashboard(run, watch_grads=True, watch_every=5).show()
    t0 = time.perf_counter()
    run.start([dash]).wait()
    seconds = time.perf_counter() - t0
    assert run.gradients.steps == list(range(5, 401, 5))
    assert dash.messages <= 4 * (seconds / dash_mod.TICK_S + 2)  # status, curves, heatmap, flags per tick


def test_static_mode_ends_with_the_gradient_figure_and_flags(monkeypatch, shell, mlp, slow):
    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    sent = []
    from IPython.display import DisplayHandle

    monkeypatch.setattr(DisplayHandle, "update", lambda self, obj, **kw: sent.append((self.display_id, obj)))
    run = Run(mlp(), "digits", TrainConfig(epochs=3, seed=0))
    dash = TrainingDashboard(run, tick=0.05, watch_grads=True).show()
    run.start([slow, dash]).wait()
    grads_updates = [obj for handle, obj in sent if handle == dash._grads_handle.display_id]
    final = grads_updates[-1][display.PLOTLY_MIME]
    heatmap = [t for t in final["data"] if t["type"] == "heatmap"][0]
    assert decoded(heatmap["z"]).shape == (2, run.total_steps)
    assert any(t.get("type") == "bar" and t.get("name") == "0 (Linear)" for t in final["data"])  # histograms
    flags = [obj for handle, obj in sent if handle == dash._flags_handle.display_id][-1]
    assert "bmnb-grad-flags" in flags["text/html"] and "recorded steps" in flags["text/plain"]


def test_text_mode_launch_prints_flags_and_stores_the_report(capsys, monkeypatch, mlp):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    run = launch(mlp(), "digits", TrainConfig(epochs=1, seed=0), watch_grads=True)
    out = capsys.readouterr().out
    assert "run completed at step 20/20" in out and "gradient flow: 2 layers × 20 recorded steps" in out
    assert run.gradients.steps[-1] == 20
    quiet = launch(mlp(), "digits", TrainConfig(epochs=1, seed=0), quiet=True, watch_grads=True, watch_every=4)
    assert quiet.gradients.steps == [4, 8, 12, 16, 20]


def test_watch_grads_is_off_by_default_and_adds_nothing_per_step(monkeypatch, mlp):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    run = launch(mlp(), "digits", TrainConfig(epochs=1, seed=0))
    assert not any(isinstance(cb, GradientRecorder) for cb in run.callbacks)
    assert all(type(cb).on_after_backward is Callback.on_after_backward for cb in run.callbacks)
    assert not hasattr(run, "gradients")
    fresh = Run(mlp(), "digits", TrainConfig(epochs=1, seed=0))
    dash = TrainingDashboard(fresh)
    fresh.callbacks.append(dash)
    assert dash.recorder is None and Loop(fresh).after_backward is False  # the step does not even emit the hook
    watched = Run(mlp(), "digits", TrainConfig(epochs=1, seed=0))
    TrainingDashboard(watched, watch_grads=True)
    assert Loop(watched).after_backward is True


def test_flags_text_without_flags(long_report):
    assert long_report.flags == []
    assert flags_text(long_report).endswith("no vanishing, exploding, dead-ReLU or NaN/Inf problems flagged.")
