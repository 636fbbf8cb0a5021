"""The dashboard's real widgets and figures, driven without a browser."""
import base64
import time

import numpy as np
import pytest

from bigmodel_nb.api import launch
from bigmodel_nb.engine import Run, TrainConfig
from bigmodel_nb.ui import dashboard as dash_mod
from bigmodel_nb.ui import display
from bigmodel_nb.ui.dashboard import TrainingDashboard
from bigmodel_nb.ui.display import ui_mode
from bigmodel_nb.ui.figures import MAX_POINTS, decimate, training_figure


def test_ui_mode_is_text_outside_a_kernel_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("BIGMODEL_NB_UI", raising=False)
    assert ui_mode() == "text"
    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    assert ui_mode() == "static"


def test_live_figure_gets_the_curves_as_numpy_and_status_advances(widget_mode, mlp, slow):
    run = Run(mlp(), "digits", TrainConfig(epochs=20, seed=0))  # 400 slowed steps: ≥ 1.6 s of running
    dash = TrainingDashboard(run, tick=0.05).show()
    run.start([slow, dash])
    deadline = time.monotonic() + 10
    while len(run.rows("train")) < 2 and time.monotonic() < deadline:  # wait for curves, not a fixed time
        time.sleep(0.02)
    dash.render(force=True)
    live = {t.name: len(t.x) for t in dash.figure.data}
    assert live["train"] > 0
    assert 'data-status="running"' in dash.status.value
    run.wait()
    # After the run the live outputs were replaced by static ones; the widget holds the final curves.
    train_x = dash.figure.data[0].x
    assert isinstance(train_x, (np.ndarray, tuple)) and len(train_x) == len(run.rows("train"))
    val = [t for t in dash.figure.data if t.name == "val"][0]
    assert list(val.y) == pytest.approx([r["loss"] for r in run.rows("val")])


def test_renders_are_throttled_and_bounded(widget_mode, mlp):
    run = Run(mlp(), "digits", TrainConfig(epochs=30, seed=0, log_every=1))
    dash = TrainingDashboard(run).show()
    t0 = time.perf_counter()
    run.start([dash]).wait()
    seconds = time.perf_counter() - t0
    assert len(run.rows("train")) == 600
    # at most two messages (status, figure) per tick, plus the final ones
    assert dash.messages <= 2 * (seconds / dash_mod.TICK_S + 2)
    fig = training_figure(run.history, classification=True)
    assert max(len(t.x) for t in fig.data) <= MAX_POINTS


def test_decimate_keeps_first_and_last_and_bounds_points():
    x = np.arange(10_000.0)
    dx, dy = decimate(x, x * 2)
    assert len(dx) <= MAX_POINTS and dx[0] == 0 and dx[-1] == 9_999 and np.all(dy == dx * 2)


def test_text_mode_prints_progress_and_summary(capsys, monkeypatch, mlp):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    run = launch(mlp(), "digits", TrainConfig(epochs=2, seed=0))
    out = capsys.readouterr().out
    assert "training run: 40 steps (2 epochs × 20)" in out
    assert "run completed at step 40/40" in out and "val accuracy" in out
    assert run.status == "completed"


def test_a_language_model_shows_tokens_per_second_and_ray_runs_show_the_workers_not_the_notebook(monkeypatch):
    import torch

    from bigmodel_nb.engine.data import as_bundle
    from bigmodel_nb.models import GPT, GPTConfig

    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    data = torch.randint(0, 32, (64, 17))
    run = Run(GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16)),
              as_bundle({"train": (data[:, :-1], data[:, 1:])}, task="language-model"), TrainConfig(steps=4))
    dash = TrainingDashboard(run)
    run.run_here([dash])
    assert dash.throughput_text() == f"{dash.samples_per_s * 16:,.0f} tokens/s"  # no MFU on a CPU
    assert "cpu · amp off · " in dash._render_status() and "MB peak RSS" in dash._render_status()
    run.workers, run.config.amp = 2, "bf16"  # as a DistributedRun: its device and memory are the workers'
    assert "2 Ray workers · amp bf16" in dash._render_status() and "MB peak" not in dash._render_status()


def test_failed_run_shows_the_reason(widget_mode, mlp):
    run = Run(mlp(), "digits", TrainConfig(epochs=3, optimizer="sgd", lr=1e6, log_every=1, seed=0))
    dash = TrainingDashboard(run).show()
    run.start([dash]).wait()
    assert run.status == "failed"
    assert "loss became" in dash.summary()


def test_static_mode_updates_display_handles_and_ends_with_the_figure(monkeypatch, shell, capsys, mlp, slow):
    """Where a FigureWidget cannot render (VS Code): static figures through display handles."""
    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    sent = []
    from IPython.display import DisplayHandle

    monkeypatch.setattr(DisplayHandle, "update", lambda self, obj, **kw: sent.append((self.display_id, obj)))
    run = Run(mlp(), "digits", TrainConfig(epochs=6, seed=0))
    dash = TrainingDashboard(run, tick=0.05).show()
    assert dash.figure is None and dash.controls is None
    run.start([slow, dash]).wait()
    figures = [obj for _, obj in sent if display.PLOTLY_MIME in obj]
    statuses = [obj for _, obj in sent if display.PLOTLY_MIME not in obj]
    assert len(figures) >= 2 and len(statuses) >= 2
    final = figures[-1][display.PLOTLY_MIME]
    train = [t for t in final["data"] if t["name"] == "train"][0]
    x = train["x"]  # plotly ≥ 6 sends numpy arrays as base64 typed arrays: compact in the saved notebook
    steps = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]) if isinstance(x, dict) else x
    assert list(steps) == [r["step"] for r in run.rows("train")]
    assert 'data-status="completed"' in statuses[-1]["text/html"]


def test_widget_mode_falls_back_to_static_figures_when_a_figurewidget_cannot_be_built(widget_mode, monkeypatch, capsys,
                                                                                    mlp):
    """E.g. anywidget missing: one line says so and the same run is drawn through display handles."""
    import plotly.graph_objects as go
    from IPython.display import DisplayHandle

    def no_anywidget(*args, **kwargs):
        raise ImportError("No module named 'anywidget'")

    monkeypatch.setattr(go, "FigureWidget", no_anywidget)
    sent = []
    monkeypatch.setattr(DisplayHandle, "update", lambda self, obj, **kw: sent.append(obj))
    run = Run(mlp(), "digits", TrainConfig(epochs=2, seed=0))
    dash = TrainingDashboard(run, tick=0.05).show()
    assert dash.mode == "static" and dash.figure is None
    assert "Live charts are not available here (ImportError: No module named 'anywidget')" in capsys.readouterr().out
    run.start([dash]).wait()
    assert run.status == "completed"
    assert any(display.PLOTLY_MIME in obj for obj in sent)
    assert 'data-status="completed"' in [obj for obj in sent if display.PLOTLY_MIME not in obj][-1]["text/html"]


def test_final_figures_carry_an_html_form_for_pages_without_a_plotly_renderer(shell, mlp):
    """nbconvert --to html and nbviewer pick text/html; JupyterLab keeps drawing the Plotly JSON."""
    import plotly.graph_objects as go

    bundle = display.figure_bundle(go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="train")), "<curves>")
    assert set(bundle) == {display.PLOTLY_MIME, "text/plain", "text/html"}
    html = bundle["text/html"]
    assert "cdn.plot.ly" in html and "Plotly.newPlot" in html and len(html) < 20_000  # plotly.js is not embedded
    assert "text/html" not in display.figure_bundle(go.Figure(), "<live>", final=False)


def test_the_snapshot_json_is_the_training_figure(mlp):
    import plotly.graph_objects as go

    from bigmodel_nb.ui.figures import training_figure, training_figure_json

    run = Run(mlp(), "digits", TrainConfig(steps=45, seed=0, lr=3e-3, log_every=5)).run_here()
    fast, slow = go.Figure(training_figure_json(run.history, True)), training_figure(run.history, True)
    assert len(fast.data) == len(slow.data) == 5
    for a, b in zip(fast.data, slow.data):
        assert a.name == b.name and np.allclose(np.asarray(a.x, float), np.asarray(b.x, float))
        assert np.allclose(np.asarray(a.y, float), np.asarray(b.y, float))
    assert fast.layout.yaxis3.range == slow.layout.yaxis3.range == (0, 1.15 * 3e-3)  # a constant LR, not [-1, 1]
    assert fast.layout.template == slow.layout.template and fast.layout.annotations == slow.layout.annotations


def _values(v):
    """An array of a widget's synced state: numpy arrays travel as {"buffer", "dtype", "shape"}."""
    return np.frombuffer(v["buffer"], dtype=v["dtype"]) if isinstance(v, dict) else np.asarray(v)


def test_the_live_widget_state_is_what_a_reloaded_page_draws(widget_mode, mlp):
    """A reloaded JupyterLab page draws its widgets from their state in the kernel (`get_state`, what its
    request_state gets): the curves drawn last and the LR range, not the figure as first displayed (empty
    traces and no range, so the next update drew a constant LR at 0 on a [-1, 1] axis)."""
    run = Run(mlp(), "digits", TrainConfig(steps=30, seed=0, lr=3e-3))
    dash = TrainingDashboard(run).show()
    rows = [{"step": s, "loss": 2.0 / s, "accuracy": 0.5, "lr": 3e-3} for s in range(5, 35, 5)]
    for row in rows:  # what the training thread hands over, then one tick of the render thread
        dash.on_step_end(run, row)
    dash.on_eval_end(run, {"step": 30, "loss": 0.1, "accuracy": 0.9})
    dash.render(force=True)
    state = dash.figure.get_state()
    trace = {key: state["_widget_data"][i] for key, i in dash._index.items()}
    assert list(_values(trace["train", "loss"]["x"])) == [r["step"] for r in rows]
    assert list(_values(trace["val", "loss"]["y"])) == [0.1]
    assert list(_values(trace["train", "lr"]["y"])) == pytest.approx([3e-3] * len(rows))
    assert state["_widget_layout"]["yaxis3"]["range"] == pytest.approx([0, 1.15 * 3e-3])
    # "log" clicked in the page: the relayout reaches the kernel and is in the state from the next tick on
    dash.figure._js2py_relayout = {"relayout_data": {"yaxis.type": "log", "updatemenus[0].active": 1},
                                   "source_view_id": "view"}
    dash.render()
    layout = dash.figure.get_state()["_widget_layout"]
    assert layout["yaxis"]["type"] == "log" and layout["updatemenus"][0]["active"] == 1


@pytest.mark.parametrize("classification", [True, False])
def test_the_loss_panel_toggles_log_in_the_live_and_the_static_figure_clear_of_the_titles(classification):
    import plotly.graph_objects as go

    from bigmodel_nb.ui.figures import training_figure_json, training_layout

    fig, index = training_layout(classification)
    assert fig.data[index[("train", "loss")]].yaxis == "y"  # the loss panel is the first: its axis is `yaxis`
    history = [{"step": 10, "loss": 2.0, "lr": 1e-3, "accuracy": 0.5},
               {"step": 10, "split": "val", "loss": 1.5, "accuracy": 0.6}]
    static = training_figure_json(history, classification)
    titled = training_figure(history, classification, title="run 1").to_plotly_json()
    for layout in (fig.layout.to_plotly_json(), static["layout"], titled["layout"]):
        (menu,) = layout["updatemenus"]
        assert [b["label"] for b in menu["buttons"]] == ["linear", "log"] and menu["active"] == 0
        assert [b["args"] for b in menu["buttons"]] == [[{"yaxis.type": s, "updatemenus[0].active": i}]
                                                       for i, s in enumerate(("linear", "log"))]
        # In pixels above the panels: the subplot titles take 27, plotly's buttons 33; both fit the top margin.
        panels = layout["height"] - layout["margin"]["t"] - layout["margin"]["b"]
        bottom = (menu["y"] - 1) * panels
        assert menu["yanchor"] == "bottom" and 30 <= bottom and bottom + 33 <= layout["margin"]["t"]
        assert panels == 220 and all(a["y"] == 1 and a["yanchor"] == "bottom" for a in layout["annotations"])
    relaid = go.Figure(static)
    relaid.plotly_relayout(static["layout"]["updatemenus"][0]["buttons"][1]["args"][0])
    assert relaid.layout.yaxis.type == "log" and relaid.layout.updatemenus[0].active == 1


def test_eta_leaves_out_the_start_up_and_an_ended_run_shows_its_elapsed_time(monkeypatch, mlp):
    """A slow start (Ray workers, compilation) must not turn into minutes of ETA for a run that ends in
    seconds, and once the run has ended no line shows an ETA: its status says how long it took."""
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    run = Run(mlp(), "digits", TrainConfig(epochs=1, seed=0))  # 20 steps
    dash = TrainingDashboard(run)
    clock = [100.0]
    monkeypatch.setattr(dash_mod.time, "perf_counter", lambda: clock[0])
    run.status, run.step, run.total_steps = "running", 0, 20
    dash.on_train_begin(run, {"epochs": 1, "start_step": 0, "total_steps": 20, "steps_per_epoch": 20,
                              "device": "cpu", "amp": "off", "params": 1})
    assert dash.eta() is None and "ETA" not in dash.progress_text()  # no rate yet: no guess
    clock[0] += 40.0  # the start-up, then the first step ends
    run.step = 1
    dash.on_step_end(run, {})
    assert dash.eta() is None
    clock[0] += 1.0  # 9 more steps in 1 s: 10 steps left take ~1.1 s, not 40 s
    run.step = 10
    assert dash.eta() == pytest.approx(10 / 9)
    assert "ETA 0:01" in dash.progress_text()
    for status in ("completed", "stopped", "failed"):
        run.status = status
        assert "ETA" not in dash.progress_text() and "ETA" not in dash._render_status()
        assert f"run {status} at step 10/20 in " in dash._render_status()


def test_text_mode_in_a_kernel_ends_with_the_summary_in_place_of_the_progress_line(monkeypatch, shell, capsys, mlp,
                                                                                  slow):
    """nbclient/nbval run in text mode: the progress line is one output updated in place, and the saved
    notebook keeps the finished run's summary there (its elapsed time), never an 'ETA m:ss'."""
    import IPython.display

    class Handle:
        def __init__(self, obj):
            self.shown = [obj["text/plain"]]

        def update(self, obj, **kwargs):
            self.shown.append(obj["text/plain"])

    handles, figures = [], []

    def fake_display(obj, raw=False, display_id=False, **kwargs):
        if display_id:
            handles.append(Handle(obj))
            return handles[-1]
        figures.append(obj)

    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    monkeypatch.setattr(dash_mod, "in_kernel", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(dash_mod, "TEXT_EVERY_S", 0.0)  # a progress line at every logged step
    run = Run(mlp(), "digits", TrainConfig(epochs=2, seed=0))
    run.run_here([slow, TrainingDashboard(run)])
    out = capsys.readouterr().out
    assert run.status == "completed"
    assert len(handles) == 1 and len(handles[0].shown) > 2  # one output, updated
    assert any("ETA" in line for line in handles[0].shown[1:-1])  # while it ran
    final = handles[0].shown[-1]
    assert final.startswith("run completed at step 40/40 in ") and "ETA" not in final
    assert "ETA" not in out and "training run: 40 steps" in out  # the header is still printed above it
    assert figures and display.PLOTLY_MIME in figures[-1]  # the final chart follows
