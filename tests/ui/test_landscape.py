"""The trajectory figure: contours, one path per optimizer, a step slider with Play/Pause, and a light payload."""
import numpy as np
import pytest

from bigmodel_nb.engine.compare.landscapes import FUNCTIONS, trajectories
from bigmodel_nb.ui.landscape import MAX_FRAMES, optimizer_color, trajectory_figure

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")


@pytest.fixture(scope="module")
def result():
    return trajectories("rosenbrock", OPTIMIZERS)


@pytest.fixture(scope="module")
def fig(result):
    return trajectory_figure(result)


def paths(fig):
    return [t for t in fig.data if t.type == "scatter" and t.mode == "lines+markers"]


def test_contour_of_log_f_under_one_full_path_per_optimizer(fig, result):
    contour = fig.data[0]
    assert contour.type == "contour" and contour.colorbar.title.text == "log(1+f)"
    assert contour.z.shape == (120, 120) and np.isfinite(contour.z).all()
    lines = paths(fig)
    assert [t.legendgroup for t in lines] == list(OPTIMIZERS)
    for t in lines:  # the static figure already shows every step
        assert len(t.x) == len(result.paths[t.legendgroup]) == 201
        assert t.line.color == optimizer_color(t.legendgroup)
        d = result.results[t.legendgroup]["distance"]
        assert t.name == f"{t.legendgroup} (d={d:.2g})"
    star = next(t for t in fig.data if t.name == "minimum")
    assert (star.x, star.y) == ((1.0,), (1.0,)) and star.marker.symbol == "star"
    assert "rosenbrock" in fig.layout.title.text and FUNCTIONS["rosenbrock"].formula in fig.layout.title.text


def test_slider_and_play_pause_step_through_frames(fig, result):
    frames, slider = fig.frames, fig.layout.sliders[0]
    assert 2 <= len(frames) <= MAX_FRAMES
    assert [s.args[0][0] for s in slider.steps] == [f.name for f in frames]
    assert frames[0].name == "0" and frames[-1].name == "200"
    play, pause = fig.layout.updatemenus[0].buttons
    assert play.method == pause.method == "animate" and play.args[0] is None and list(pause.args[0]) == [None]
    last = frames[-1].layout.shapes
    assert len(last) == len(OPTIMIZERS) and len(fig.layout.shapes) == len(OPTIMIZERS)
    for shape, name in zip(last, OPTIMIZERS):  # the last frame puts each marker on its final point
        assert (shape.xanchor, shape.yanchor) == pytest.approx((result.results[name]["x"], result.results[name]["y"]))
    assert (fig.layout.shapes[0].xanchor, fig.layout.shapes[0].yanchor) == FUNCTIONS["rosenbrock"].start


def test_json_stays_small(fig):
    assert len(fig.to_json()) < 300_000


def test_diverged_and_saddle_labels_and_short_runs():
    fig = trajectory_figure(trajectories("rosenbrock", ["sgd", "adam"], lr={"sgd": 0.01}, steps=30), grid=40)
    assert paths(fig)[0].name == "sgd (diverged)" and paths(fig)[1].name.startswith("adam (d=")
    assert len(fig.frames) == 31  # fewer steps than MAX_FRAMES: one frame per step
    saddle = trajectory_figure(trajectories("saddle", ["momentum"], steps=5), grid=30)
    assert "saddle point" in saddle.layout.legend.title.text
    assert [t.name for t in saddle.data if t.type == "scatter" and t.mode == "markers"
            and t.showlegend is not False] == ["saddle point"]
