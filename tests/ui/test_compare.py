"""The comparison dashboard's real widgets, driven without a browser."""
import threading
import time

from bigmodel_nb.engine.compare.optimizers import OptimizerComparison
from bigmodel_nb.ui.compare import ComparisonDashboard, comparison_figure


def test_stop_button_stops_a_comparison_running_in_the_cell(widget_mode, mlp):
    dash = ComparisonDashboard(OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=500), tick=0.05).show()
    clicked = []

    def click_once_curves_show():  # on another thread, as a click arrives over a kernel subshell
        while dash._version < 2:
            time.sleep(0.01)
        clicked.append(time.perf_counter())
        dash.stop_button.click()

    threading.Thread(target=click_once_curves_show, daemon=True).start()
    result = dash.run()
    assert result.status == "stopped" and time.perf_counter() - clicked[0] < 5  # 500 epochs would take minutes
    traces = {t.name for t in dash.figure.data}
    assert traces == {"sgd", "adam"} and len(dash.figure.data[0].x) > 0


def test_static_figure_has_one_trace_per_optimizer_and_panel(mlp):
    cmp = OptimizerComparison(mlp(), "digits", ["sgd", "momentum", "adam"], epochs=2)
    result = cmp.run()
    fig = comparison_figure(result, cmp.names, classification=True)
    assert len(fig.data) == 3 * 3
    assert [len(t.x) for t in fig.data if t.legendgroup == "adam"][1] == 2  # two validation points


def test_static_mode_redraws_the_comparison_through_display_handles(monkeypatch, shell, mlp):
    """VS Code (no FigureWidget): live status and curves still arrive, then the results table."""
    from IPython.display import DisplayHandle

    from bigmodel_nb.ui.display import PLOTLY_MIME

    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    sent = []
    monkeypatch.setattr(DisplayHandle, "update", lambda self, obj, **kw: sent.append(obj))
    dash = ComparisonDashboard(OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=3), tick=0.02).show()
    assert dash.mode == "static" and dash.figure is None
    result = dash.run()
    assert result.status == "completed"
    figures = [obj[PLOTLY_MIME] for obj in sent if PLOTLY_MIME in obj]
    assert len(figures) >= 2 and {t["name"] for t in figures[-1]["data"]} == {"sgd", "adam"}
    assert "bmnb-table" in [obj for obj in sent if PLOTLY_MIME not in obj][-1]["text/html"]
