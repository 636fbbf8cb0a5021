"""2-D test functions and the paths real `torch.optim` optimizers take on them (`%compare_optimizers --function`).

Example: ``trajectories("rosenbrock", ("sgd", "adam")).table()``
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import BigModelError, unknown_choice
from ..core.optim import OPTIMIZERS, default_lr, make_optimizer

DIVERGED = 1e6  # |x| or |y| beyond this (or a non-finite value) stops an optimizer as diverged


@dataclass(frozen=True)
class TestFunction:
    """A differentiable f(xy) of a 2-element tensor, with what is needed to run and draw it.
    `f` is elementwise in xy[0], xy[1], so ``f(torch.stack([X, Y]))`` evaluates a whole grid for contours.

    Example: ``FUNCTIONS["rosenbrock"].f(torch.tensor([1.0, 1.0]))  # tensor(0.)``
    """
    __test__ = False  # not a pytest test class despite the name

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    minima: list[tuple[float, float]]  # global minima; empty when f is unbounded below (saddle)
    start: tuple[float, float]
    bounds: tuple[tuple[float, float], tuple[float, float]]  # ((xmin, xmax), (ymin, ymax)) for the plot
    lrs: dict[str, float]  # default learning rate per optimizer on this function
    formula: str  # plain Unicode, so titles read right with or without MathJax
    log_scale: bool = False  # plot log(1 + f) so a deep, narrow valley shows
    saddle: tuple[float, float] | None = None  # distances are measured to it when there is no minimum

    @property
    def targets(self) -> list[tuple[float, float]]:
        """The points distances are measured to: the minima, else the saddle point."""
        return list(self.minima) or [self.saddle or (0.0, 0.0)]

    @property
    def target_label(self) -> str:
        return "minimum" if self.minima else "saddle point"


def _rosenbrock(xy, a=1.0, b=100.0):
    x, y = xy[0], xy[1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


def _beale(xy):
    x, y = xy[0], xy[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def _rastrigin(xy, A=10.0):
    x, y = xy[0], xy[1]
    return 2 * A + x ** 2 - A * torch.cos(2 * math.pi * x) + y ** 2 - A * torch.cos(2 * math.pi * y)


def _saddle(xy):
    return xy[0] ** 2 - xy[1] ** 2


def _quadratic(xy):  # condition number 20: steep in y, shallow in x
    return 0.5 * (xy[0] ** 2 + 20 * xy[1] ** 2)


# Learning rates picked by trying them: each optimizer moves visibly within ~200 steps and none diverges.
# sgd and momentum share an lr where they can, so the picture shows what momentum itself adds. Rastrigin's
# are small on purpose: every method settles in the nearest local minimum, which is the lesson there.
FUNCTIONS: dict[str, TestFunction] = {
    "rosenbrock": TestFunction(
        "rosenbrock", _rosenbrock, [(1.0, 1.0)], (-1.5, 2.0), ((-2.0, 2.0), (-1.0, 3.0)),
        {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 1e-2, "adagrad": 0.5, "adam": 0.2, "adamw": 0.2},
        "(1 − x)² + 100(y − x²)²", log_scale=True),
    "beale": TestFunction(
        "beale", _beale, [(3.0, 0.5)], (1.0, 1.5), ((-4.5, 4.5), (-4.5, 4.5)),
        {"sgd": 1e-2, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 0.05, "adagrad": 0.5, "adam": 0.1, "adamw": 0.1},
        "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", log_scale=True),
    "rastrigin": TestFunction(
        "rastrigin", _rastrigin, [(0.0, 0.0)], (2.5, 2.8), ((-3.5, 3.5), (-3.5, 3.5)),
        {"sgd": 5e-3, "momentum": 2e-3, "nesterov": 2e-3, "rmsprop": 0.02, "adagrad": 0.2, "adam": 0.05, "adamw": 0.05},
        "20 + x² − 10 cos 2πx + y² − 10 cos 2πy"),
    "saddle": TestFunction(
        "saddle", _saddle, [], (-2.0, 0.01), ((-2.5, 2.5), (-2.5, 2.5)),
        {"sgd": 1e-2, "momentum": 5e-3, "nesterov": 5e-3, "rmsprop": 1e-2, "adagrad": 0.5, "adam": 0.05, "adamw": 0.05},
        "x² − y²", saddle=(0.0, 0.0)),
    "quadratic": TestFunction(
        "quadratic", _quadratic, [(0.0, 0.0)], (-4.0, 1.5), ((-5.0, 5.0), (-2.0, 2.0)),
        {"sgd": 0.02, "momentum": 0.02, "nesterov": 0.02, "rmsprop": 0.05, "adagrad": 0.5, "adam": 0.1, "adamw": 0.1},
        "½(x² + 20y²)"),
}


@dataclass
class Trajectories:
    """Where each optimizer went on a test function. Example: ``trajectories("beale").results["adam"]["distance"]``"""
    function: str
    paths: dict[str, np.ndarray]  # optimizer -> [n_points, 2], starting at the start point
    losses: dict[str, np.ndarray]  # optimizer -> f at each point of its path
    lrs: dict[str, float]
    results: dict[str, dict]  # optimizer -> x, y, loss, distance (to the nearest target), steps, diverged
    minima: list[tuple[float, float]]
    start: tuple[float, float] = (0.0, 0.0)
    distance_to: str = "minimum"  # or "saddle point" when the function has no minimum

    @property
    def test_function(self) -> TestFunction:
        return FUNCTIONS[self.function]

    def table(self):
        """One row per optimizer; a pandas DataFrame when pandas is installed. Example: ``result.table()``"""
        rows = [{"optimizer": name, "lr": self.lrs[name], "x": r["x"], "y": r["y"], "loss": r["loss"],
                 f"distance to {self.distance_to}": r["distance"], "steps": r["steps"], "diverged": r["diverged"]}
                for name, r in self.results.items()]
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("optimizer")


def parse_start(text) -> tuple[float, float]:
    """Two finite numbers from ``"x,y"`` (or a pair). Example: ``parse_start("-1.5,2") == (-1.5, 2.0)``"""
    parts = text.replace(" ", "").split(",") if isinstance(text, str) else list(text)
    try:
        x, y = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise BigModelError(f"--start must be two numbers like -1.5,2; got '{text}'.") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise BigModelError(f"--start must be two finite numbers like -1.5,2; got '{text}'.")
    return x, y


def _lr_for(name: str, fn: TestFunction, lr) -> float:
    if isinstance(lr, dict):
        lr = lr.get(name)
    if lr is None:
        return fn.lrs.get(name, default_lr(name))
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < math.inf):
        raise BigModelError(f"The learning rate for {name} must be a positive number; got {lr!r}.")
    return float(lr)


def _run(fn: TestFunction, name: str, start: tuple[float, float], lr: float, steps: int):
    p = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))  # float64: paths exact to ~1e-15
    opt = make_optimizer(name, [p], lr=lr)
    points, losses = [p.detach().clone()], []
    diverged = False
    for _ in range(steps):
        opt.zero_grad()
        loss = fn.f(p)
        loss.backward()
        losses.append(loss.item())
        opt.step()
        point = p.detach().clone()
        if not bool(torch.isfinite(point).all()) or float(point.abs().max()) > DIVERGED:
            diverged = True  # the path ends at the last sensible point
            break
        points.append(point)
    with torch.no_grad():
        last = fn.f(points[-1]).item()
    if len(losses) < len(points):  # after a diverged step, f at the last kept point is already in
        losses.append(last)
    diverged = diverged or not math.isfinite(last)
    return torch.stack(points).numpy(), np.asarray(losses), diverged


def trajectories(function: str, optimizers=("sgd", "momentum", "rmsprop", "adam"), *, steps: int = 200,
                 start=None, lr=None) -> Trajectories:
    """Run each optimizer from the same start on a 2-D test function with the real `torch.optim` classes.

    `lr` is None (per-function defaults), one number for all, or a dict optimizer -> lr.
    Example: ``trajectories("rosenbrock", ["sgd", "adam"], steps=300, start="-1,2")``
    """
    name = str(function).lower()
    if name not in FUNCTIONS:
        raise unknown_choice("test function", name, FUNCTIONS)
    fn = FUNCTIONS[name]
    if isinstance(optimizers, str):
        optimizers = optimizers.split(",")
    names = list(dict.fromkeys(str(o).strip().lower() for o in optimizers if str(o).strip()))
    if not names:
        raise BigModelError("No optimizers given; pass names like --optimizers sgd,adam.")
    for o in names:  # check every name before running any, so a typo costs nothing
        if o not in OPTIMIZERS:
            raise unknown_choice("optimizer", o, OPTIMIZERS)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise BigModelError(f"--steps must be a positive whole number; got {steps!r}.")
    start = fn.start if start is None else parse_start(start)
    targets = np.asarray(fn.targets)

    result = Trajectories(name, {}, {}, {}, {}, list(fn.minima), start, fn.target_label)
    for o in names:
        result.lrs[o] = _lr_for(o, fn, lr)
        path, losses, diverged = _run(fn, o, start, result.lrs[o], int(steps))
        result.paths[o], result.losses[o] = path, losses
        x, y = path[-1]
        result.results[o] = {"x": float(x), "y": float(y), "loss": float(losses[-1]),
                           "distance": float(np.min(np.hypot(*(targets - path[-1]).T))),
                           "steps": len(path) - 1, "diverged": diverged}
    return result
