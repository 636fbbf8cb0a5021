"""The comparison dashboard's real widgets, driven without a browser."""
import threading
import time

from bigmodel_nb.engine.compare import OptimizerComparison
from bigmodel_nb.ui.compare import ComparisonDashboard, comparison_figure


def test_stop_button_stops_a_comparison_running_in_the_cell(widget_mode, mlp):
    dash = ComparisonDashboard(OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=500), tick=0.05).show()
    def click_once_curves_show():  # on another thread, as a click arrives over a kernel subshell
        while dash._version < 2:
            time.sleep(0.01)
        dash.stop_button.click()

    threading.Thread(target=click_once_curves_show, daemon=True).start()
    t0 = time.perf_counter()
    result = dash.run()
    assert result.status == "stopped" and time.perf_counter() - t0 < 5
    traces = {t.name for t in dash.figure.data}
    assert traces == {"sgd", "adam"} and len(dash.figure.data[0].x) > 0


def test_static_figure_has_one_trace_per_optimizer_and_panel(mlp):
    cmp = OptimizerComparison(mlp(), "digits", ["sgd", "momentum", "adam"], epochs=2)
    result = cmp.run()
    fig = comparison_figure(result, cmp.names, classification=True)
    assert len(fig.data) == 3 * 3
    assert [len(t.x) for t in fig.data if t.legendgroup == "adam"][1] == 2  # two validation points
