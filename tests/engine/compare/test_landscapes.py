"""2-D test functions and the paths real torch.optim optimizers take on them."""
import numpy as np
import pytest
import torch

from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.compare.landscapes import FUNCTIONS, parse_start, trajectories


@pytest.fixture(scope="module")
def rosenbrock():
    """One default run shared by the tests that only read it."""
    return trajectories("rosenbrock", ("sgd", "momentum", "adam"))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_vanish_at_their_minima_and_have_finite_gradients(name):
    fn = FUNCTIONS[name]
    for point in fn.targets:  # the saddle point for `saddle`
        xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        value = fn.f(xy)
        value.backward()
        assert value.item() == pytest.approx(0.0, abs=1e-12)
        assert torch.allclose(xy.grad, torch.zeros(2, dtype=torch.float64), atol=1e-10)
    for point in [fn.start, (0.3, -0.7), (1.7, 2.2)]:
        xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        fn.f(xy).backward()
        assert torch.isfinite(xy.grad).all()
    assert (fn.minima == []) == (name == "saddle")


def test_functions_evaluate_a_whole_grid_elementwise():
    X, Y = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 4), indexing="xy")
    for fn in FUNCTIONS.values():
        grid = fn.f(torch.stack([X, Y]))
        assert grid.shape == (4, 5)
        assert grid[2, 3].item() == pytest.approx(fn.f(torch.stack([X[2, 3], Y[2, 3]])).item())


def test_paths_start_at_the_start_have_one_point_per_step_and_are_deterministic(rosenbrock):
    again = trajectories("rosenbrock", ("sgd", "momentum", "adam"))
    for name, path in rosenbrock.paths.items():
        assert path.shape == (201, 2) and rosenbrock.losses[name].shape == (201,)
        assert tuple(path[0]) == FUNCTIONS["rosenbrock"].start
        assert np.array_equal(path, again.paths[name]) and np.array_equal(rosenbrock.losses[name], again.losses[name])
        assert rosenbrock.results[name]["steps"] == 200 and not rosenbrock.results[name]["diverged"]
        assert rosenbrock.losses[name][-1] == pytest.approx(FUNCTIONS["rosenbrock"].f(torch.tensor(path[-1])).item())


def test_momentum_and_adam_get_closer_to_the_rosenbrock_minimum_than_sgd(rosenbrock):
    d = {name: r["distance"] for name, r in rosenbrock.results.items()}
    assert d["momentum"] < d["sgd"] and d["adam"] < d["sgd"]
    assert d["momentum"] < 1.0


def test_momentum_beats_sgd_on_the_ill_conditioned_quadratic():
    result = trajectories("quadratic", ("sgd", "momentum"))
    assert result.lrs["sgd"] == result.lrs["momentum"]  # same step size: the difference is momentum itself
    assert result.results["momentum"]["distance"] < 0.01 * result.results["sgd"]["distance"]


@pytest.mark.parametrize("sgd_lr", [0.01, 1.0])
def test_a_too_large_lr_diverges_one_optimizer_while_the_others_finish(sgd_lr):
    result = trajectories("rosenbrock", ["sgd", "adam"], lr={"sgd": sgd_lr}, steps=100)
    sgd, adam = result.results["sgd"], result.results["adam"]
    assert sgd["diverged"] and sgd["steps"] < 100 and len(result.paths["sgd"]) == sgd["steps"] + 1
    assert np.isfinite(result.paths["sgd"]).all() and len(result.losses["sgd"]) == len(result.paths["sgd"])
    assert not adam["diverged"] and result.paths["adam"].shape == (101, 2)
    assert result.lrs == {"sgd": sgd_lr, "adam": FUNCTIONS["rosenbrock"].lrs["adam"]}


def test_sgd_is_plain_gradient_descent():
    lr = 1e-3
    result = trajectories("rosenbrock", ["sgd"], steps=3, lr=lr, start="-1.2,1")
    theta = np.array([-1.2, 1.0])
    for point in result.paths["sgd"]:
        assert np.allclose(point, theta, rtol=0, atol=1e-12)
        x, y = theta
        grad = np.array([-2 * (1 - x) - 400 * x * (y - x ** 2), 200 * (y - x ** 2)])
        theta = theta - lr * grad  # θ ← θ − α∇f


def test_saddle_distances_are_to_the_saddle_point_and_say_so():
    result = trajectories("saddle", ("sgd", "momentum"), steps=100)
    assert result.minima == [] and result.distance_to == "saddle point"
    x, y = result.results["momentum"]["x"], result.results["momentum"]["y"]
    assert result.results["momentum"]["distance"] == pytest.approx(np.hypot(x, y))
    assert abs(y) > 10 * abs(result.results["sgd"]["y"])  # momentum escapes along y much faster
    rows = result.table()
    rows = rows.reset_index().to_dict("records") if hasattr(rows, "reset_index") else rows
    assert [r["optimizer"] for r in rows] == ["sgd", "momentum"]
    assert "distance to saddle point" in rows[0] and not rows[0]["diverged"]


def test_one_lr_for_all_and_start_as_a_pair_or_text():
    result = trajectories("quadratic", "sgd, adam", steps=2, lr=0.1, start=(1, 1))
    assert result.lrs == {"sgd": 0.1, "adam": 0.1} and tuple(result.paths["adam"][0]) == (1.0, 1.0)
    assert parse_start(" -1.5, 2 ") == (-1.5, 2.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(function="rosenbrok"), ("Unknown test function 'rosenbrok'; choose one of: beale, quadratic, rastrigin, "
                                  "rosenbrock, saddle (did you mean 'rosenbrock'?).")),
    (dict(function="beale", optimizers=["sgd", "adamm"]), "Unknown optimizer 'adamm'"),
    (dict(function="beale", start="abc"), "--start must be two numbers like -1.5,2; got 'abc'."),
    (dict(function="beale", start="1,2,3"), "--start must be two numbers like -1.5,2; got '1,2,3'."),
    (dict(function="beale", steps=0), "--steps must be a positive whole number; got 0."),
    (dict(function="beale", optimizers=""), "No optimizers given"),
    (dict(function="beale", lr=-1), "learning rate for sgd must be a positive number"),
])
def test_user_errors_are_one_clear_sentence(kwargs, message):
    with pytest.raises(BigModelError) as err:
        trajectories(**kwargs)
    assert message in str(err.value)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_closed_form_gradients_equal_autograd(name):
    from bigmodel_nb.engine.compare.landscapes import quadratic_function

    fns = [FUNCTIONS[name]] + ([quadratic_function(137.0)] if name == "quadratic" else [])
    for fn in fns:
        xy = (torch.rand(2, 50, dtype=torch.float64) * 8 - 4).requires_grad_()
        (auto,) = torch.autograd.grad(fn.f(xy).sum(), xy)
        gx, gy = fn.grad(*xy.detach().numpy())
        torch.testing.assert_close(torch.from_numpy(np.stack([gx, gy])), auto, rtol=1e-12, atol=1e-12)


def test_the_autograd_path_and_the_closed_form_path_agree():
    from bigmodel_nb.engine.compare.landscapes import custom_function

    fn = FUNCTIONS["beale"]
    mine = custom_function(lambda x, y: fn.f(torch.stack([x, y])), bounds=((-4.5, 4.5), (-4.5, 4.5)),
                           start=fn.start)
    assert mine.grad is None and FUNCTIONS["beale"].grad is not None
    a = trajectories("beale", ["sgd", "adam"], steps=150, lr={"sgd": 1e-2, "adam": 0.1})
    b = trajectories(mine, ["sgd", "adam"], steps=150, lr={"sgd": 1e-2, "adam": 0.1})
    for name in a.paths:
        np.testing.assert_allclose(a.paths[name], b.paths[name], rtol=0, atol=1e-12)
