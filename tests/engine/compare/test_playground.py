"""The playground's paths are real torch.optim paths: equal to a hand-written loop (one optimizer instance per
path, torch's defaults) and to `%compare_optimizers --function`; every setting a student moves changes them."""
import math

import numpy as np
import pytest
import torch

from bigmodel_nb.engine.compare.landscapes import FUNCTIONS, KNOBS, custom_function, trajectories
from bigmodel_nb.engine.compare.playground import Playground
from bigmodel_nb.engine.core.errors import BigModelError

TORCH = {"sgd": (torch.optim.SGD, {}), "momentum": (torch.optim.SGD, {"momentum": 0.9}),
         "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}), "rmsprop": (torch.optim.RMSprop, {}),
         "adagrad": (torch.optim.Adagrad, {}), "adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {})}


def hand_path(f, name, start, lr, steps, **kwargs):
    """The plainest loop there is: one torch.optim optimizer, one parameter, zero_grad/backward/step."""
    cls, fixed = TORCH[name]
    p = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = cls([p], lr=lr, **{**fixed, **kwargs})
    points = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        f(p).backward()
        opt.step()
        points.append(p.detach().clone())
    return torch.stack(points).numpy()


def test_every_optimizer_follows_the_hand_written_torch_optim_path_with_its_knobs_moved():
    options = {"momentum": {"momentum": 0.5}, "nesterov": {"momentum": 0.7}, "rmsprop": {"alpha": 0.9, "eps": 1e-6},
               "adagrad": {"eps": 1e-6}, "adam": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
               "adamw": {"beta1": 0.7, "beta2": 0.95, "eps": 1e-7, "weight_decay": 0.1}}
    pg = Playground("rosenbrock", list(TORCH), steps=150, start=(-1.0, 2.0), options=options)
    torch_kwargs = {"rmsprop": {"alpha": 0.9, "eps": 1e-6}, "adagrad": {"eps": 1e-6},
                    "momentum": {"momentum": 0.5}, "nesterov": {"momentum": 0.7},
                    "adam": {"betas": (0.8, 0.99), "eps": 1e-6},
                    "adamw": {"betas": (0.7, 0.95), "eps": 1e-7, "weight_decay": 0.1}}
    for name in TORCH:
        expected = hand_path(FUNCTIONS["rosenbrock"].f, name, (-1.0, 2.0), pg.settings.lrs[name], 150,
                             **torch_kwargs.get(name, {}))
        np.testing.assert_allclose(pg.paths[name], expected, rtol=0, atol=1e-12, err_msg=name)
    assert pg.settings.options["adamw"] == {"beta1": 0.7, "beta2": 0.95, "eps": 1e-7, "weight_decay": 0.1}


def test_paths_equal_compare_optimizers_function_for_the_same_settings():
    pg = Playground("beale", ["sgd", "momentum", "adam"], steps=200, start=(1.0, 1.5), lr={"adam": 0.05})
    same = trajectories("beale", ["sgd", "momentum", "adam"], steps=200, start="1,1.5", lr=pg.settings.lrs)
    for name in same.paths:
        np.testing.assert_array_equal(pg.paths[name], same.paths[name])
        assert pg.results[name] == same.results[name]


def test_moving_one_lr_changes_only_that_path_and_settings_say_so():
    pg = Playground("quadratic", ["sgd", "momentum"], steps=100)
    before = {n: p.copy() for n, p in pg.paths.items()}
    pg.update(lrs={"sgd": 0.08})
    assert pg.settings.lrs == {"sgd": 0.08, "momentum": FUNCTIONS["quadratic"].lrs["momentum"]}
    assert not np.array_equal(pg.paths["sgd"], before["sgd"])
    np.testing.assert_array_equal(pg.paths["momentum"], before["momentum"])


def test_momentum_mu_zero_is_plain_sgd_and_a_larger_mu_overshoots_on_the_quadratic():
    pg = Playground("quadratic", ["sgd", "momentum"], steps=120, lr=0.02, options={"momentum": {"momentum": 0.0}})
    np.testing.assert_allclose(pg.paths["momentum"], pg.paths["sgd"], atol=1e-15)
    pg.update(options={"momentum": {"momentum": 0.95}})
    xs = pg.paths["momentum"][:, 0]
    assert xs.max() > 0.5  # started at x = -4: heavy momentum carries it past the minimum at x = 0
    assert pg.paths["sgd"][:, 0].max() < 0  # plain gradient descent approaches from one side


def test_sgd_is_stable_below_lr_2_over_kappa_and_start_moves_every_path():
    pg = Playground("quadratic", ["sgd"], steps=200, lr=0.015)  # 2/κ: 0.02 at κ = 100, 0.01 at κ = 200
    assert not pg.update(condition=100.0).results["sgd"]["diverged"]
    assert pg.update(condition=200.0).results["sgd"]["diverged"]  # y is multiplied by 1 − 0.015·200 = −2 per step
    assert pg.function.formula == "½(x² + 200y²)" and pg.settings.condition == 200.0
    pg.update(start=(3.0, -1.0))
    assert tuple(pg.paths["sgd"][0]) == (3.0, -1.0) and pg.settings.start == (3.0, -1.0)


def test_a_new_function_brings_its_own_start_and_learning_rates():
    pg = Playground("rosenbrock", ["sgd", "adam"], lr={"sgd": 5e-4})
    pg.update(function="saddle")
    fn = FUNCTIONS["saddle"]
    assert pg.settings.start == fn.start and pg.settings.lrs == {n: fn.lrs[n] for n in ("sgd", "adam")}
    assert pg.trajectories.distance_to == "saddle point"
    with pytest.raises(BigModelError, match="Unknown test function 'saddel'.*saddle"):
        pg.update(function="saddel")


def test_your_own_function_runs_elementwise_or_point_by_point_with_the_same_paths():
    def bowl(x, y):
        return (x - 1) ** 2 + 3 * (y + 0.5) ** 2

    def mixing(x, y):  # a norm over a stack: not elementwise, so each point is evaluated alone
        return torch.stack([x - 1, torch.sqrt(torch.tensor(3.0, dtype=x.dtype)) * (y + 0.5)]).pow(2).sum(0)

    a, b = custom_function(bowl), custom_function(lambda x, y: torch.linalg.vector_norm(torch.stack([x - 1, y])))
    assert a.elementwise and not b.elementwise
    assert a.minima == [(1.0, -0.5)] and a.target_label == "lowest grid point"
    pg_a, pg_m = Playground(bowl, ["sgd", "adam"], steps=80), Playground(mixing, ["sgd", "adam"], steps=80)
    for name in ("sgd", "adam"):
        np.testing.assert_allclose(pg_a.paths[name], pg_m.paths[name], atol=1e-12)
        expected = hand_path(lambda p: bowl(p[0], p[1]), name, pg_a.settings.start, pg_a.settings.lrs[name], 80)
        np.testing.assert_allclose(pg_a.paths[name], expected, atol=1e-12)
    assert pg_a.results["sgd"]["distance"] < 1e-3
    assert pg_a.functions[-1] == "bowl" and "rosenbrock" in pg_a.functions


@pytest.mark.parametrize("f, message", [
    (lambda x, y: float(x) + 1, "must return one number"),
    (lambda x, y: torch.tensor(math.sin(float(x))), "no gradient"),
    (lambda x, y: x.undefined(), "raised AttributeError at the start point"),
    (lambda x, y: torch.stack([x, y]), "must return one number"),
])
def test_a_function_that_cannot_run_is_one_sentence(f, message):
    with pytest.raises(BigModelError, match=message):
        Playground(f, ["sgd"])


@pytest.mark.parametrize("kwargs, message", [
    ({"options": {"adam": {"beta1": 1.0}}}, "adam's beta1 must be a number from 0 up to"),
    ({"options": {"adam": {"eps": 0}}}, "adam's eps must be a number above 0"),
    ({"options": {"sgd": {"momentum": 0.5}}}, "sgd has no setting 'momentum'; it has only the learning rate"),
    ({"options": {"rmsprop": {"beta1": 0.5}}}, "rmsprop has no setting 'beta1'; it has alpha, eps"),
    ({"steps": 0}, "--steps must be a whole number from 1 to 2000"),
    ({"lr": -1.0}, "learning rate for sgd must be a positive number"),
    ({"start": "1,"}, "--start must be two numbers"),
])
def test_bad_settings_are_one_sentence_and_keep_the_last_paths(kwargs, message):
    with pytest.raises(BigModelError, match=message):
        Playground("rosenbrock", ["sgd", "adam", "rmsprop"], **kwargs)
    pg = Playground("rosenbrock", ["sgd", "adam", "rmsprop"])
    before = pg.settings
    with pytest.raises(BigModelError, match=message):
        pg.update(**{("lrs" if k == "lr" else k): ({"sgd": v} if k == "lr" else v) for k, v in kwargs.items()})
    assert pg.settings == before and pg.trajectories.results["sgd"]["steps"] == before.steps


def test_knobs_are_torch_defaults():
    for name, knobs in KNOBS.items():
        cls, fixed = TORCH[name]
        group = cls([torch.nn.Parameter(torch.zeros(2))], lr=0.1, **fixed).param_groups[0]
        for key, value in knobs.items():
            torch_value = group["betas"][0 if key == "beta1" else 1] if key.startswith("beta") else group[key]
            assert torch_value == value, (name, key)


def test_names_in_any_case_your_function_beside_a_built_in_of_its_name_and_bad_options():
    pg = Playground("Quadratic", ["sgd"], condition=100.0)
    assert pg.function.formula == "½(x² + 100y²)" and pg.settings.condition == 100.0
    pg.update(function="SADDLE")
    assert pg.settings.function == "saddle"

    def beale(x, y):
        return x ** 2 + y ** 2

    mine = Playground(beale, ["sgd"])
    assert mine.settings.function == "beale (yours)" and mine.functions.count("beale") == 1
    mine.update(function="beale")
    assert mine.function is FUNCTIONS["beale"]  # the built-in is still there

    with pytest.raises(BigModelError, match="options maps an optimizer to a dict of its settings"):
        trajectories("beale", ["momentum"], options={"momentum": 0.5})
    with pytest.raises(BigModelError, match="options names 'momentun', which is not among the optimizers"):
        Playground("beale", ["momentum"], options={"momentun": {"momentum": 0.5}})
    with pytest.raises(BigModelError, match="condition number must be a number from 1 to 10000"):
        Playground("rosenbrock", ["sgd"], condition="abc")
    assert Playground("rosenbrock", ["sgd"], steps=np.int64(50)).settings.steps == 50


def test_a_function_that_mixes_points_is_not_taken_for_elementwise():
    mixed = custom_function(lambda x, y: torch.cumsum(x ** 2 + y ** 2, 0))
    assert not mixed.elementwise
