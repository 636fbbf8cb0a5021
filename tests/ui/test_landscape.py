from bigmodel_nb.engine.landscapes import trajectories
from bigmodel_nb.ui.landscape import trajectory_figure


def test_trajectory_figure_has_contour_paths_and_a_slider_and_stays_small():
    fig = trajectory_figure(trajectories("rosenbrock", ["sgd", "momentum", "adam"], steps=200))
    assert fig.data[0].type == "contour"
    names = " ".join(t.name or "" for t in fig.data)
    assert all(n in names for n in ("sgd", "momentum", "adam"))
    assert fig.layout.sliders and len(fig.frames) <= 60
    assert len(fig.to_json()) < 300_000
