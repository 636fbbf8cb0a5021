"""2-D test functions and the real torch.optim optimizers walking on them."""
import pytest
import torch

from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.landscapes import FUNCTIONS, parse_start, trajectories


def test_functions_are_zero_at_their_minima():
    for name, fn in FUNCTIONS.items():
        for m in fn.minima or []:
            assert float(fn.f(torch.tensor(m, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-9), name


def test_sgd_path_is_plain_gradient_descent():
    result = trajectories("quadratic", ["sgd"], steps=3, lr=0.01)
    path = result.paths["sgd"]
    p = torch.tensor(path[0], dtype=torch.float64, requires_grad=True)
    for i in range(1, 4):
        FUNCTIONS["quadratic"].f(p).backward()
        with torch.no_grad():
            p -= 0.01 * p.grad
        p.grad = None
        assert torch.allclose(p.detach(), torch.tensor(path[i], dtype=torch.float64), atol=1e-12)


def test_momentum_beats_sgd_on_an_ill_conditioned_bowl_and_divergence_is_contained():
    result = trajectories("quadratic", ["sgd", "momentum"])
    assert result.final["momentum"]["distance"] < result.final["sgd"]["distance"]
    wild = trajectories("rosenbrock", ["sgd", "adam"], lr={"sgd": 1.0, "adam": 0.05}, steps=100)
    assert wild.final["sgd"]["diverged"] and not wild.final["adam"]["diverged"]


def test_bad_input_is_one_sentence():
    with pytest.raises(BigModelError, match="did you mean 'rosenbrock'"):
        trajectories("rosenbrok")
    with pytest.raises(BigModelError, match="--start must be two numbers"):
        parse_start("abc")
