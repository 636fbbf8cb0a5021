"""2-D test functions and the paths real `torch.optim` optimizers take on them (`%compare_optimizers --function`).

Example: ``trajectories("rosenbrock", ("sgd", "adam")).table()``
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.errors import BigModelError, unknown_choice
from ..core.optim import OPTIMIZERS, default_lr

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
    elementwise: bool = True  # f(stack([X, Y])) evaluates many points at once; False for a user's f that mixes them
    target_name: str | None = None  # what the minima are, when not the known minima ("lowest grid point")
    # ∇f in closed form on numpy arrays, (x, y) -> (∂f/∂x, ∂f/∂y): the built-ins have one (tested equal to
    # autograd's). A step's gradient then costs a few µs of numpy instead of an autograd graph of ~30 torch ops
    # (the larger part of a step); the optimizers are torch.optim either way. A user's f goes through autograd.
    grad: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def targets(self) -> list[tuple[float, float]]:
        """The points distances are measured to: the minima, else the saddle point."""
        return list(self.minima) or [self.saddle or (0.0, 0.0)]

    @property
    def target_label(self) -> str:
        return self.target_name or ("minimum" if self.minima else "saddle point")

    def values(self, xy: torch.Tensor) -> torch.Tensor:
        """f at each column of `xy` ([2, ...]), whether or not `f` itself is elementwise."""
        if self.elementwise:
            return self.f(xy)
        flat = xy.reshape(2, -1)
        return torch.stack([self.f(flat[:, i]) for i in range(flat.shape[1])]).reshape(xy.shape[1:])


def _rosenbrock(xy, a=1.0, b=100.0):
    x, y = xy[0], xy[1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


def _rosenbrock_grad(x, y, a=1.0, b=100.0):
    inner = y - x * x
    return -2 * (a - x) - 4 * b * x * inner, 2 * b * inner


def _beale(xy):
    x, y = xy[0], xy[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def _beale_grad(x, y):
    y2 = y * y
    t1, t2, t3 = 2 * (1.5 - x + x * y), 2 * (2.25 - x + x * y2), 2 * (2.625 - x + x * y2 * y)
    return t1 * (y - 1) + t2 * (y2 - 1) + t3 * (y2 * y - 1), x * (t1 + 2 * y * t2 + 3 * y2 * t3)


def _rastrigin(xy, A=10.0):
    x, y = xy[0], xy[1]
    return 2 * A + x ** 2 - A * torch.cos(2 * math.pi * x) + y ** 2 - A * torch.cos(2 * math.pi * y)


def _rastrigin_grad(x, y, A=10.0):
    return 2 * x + 2 * math.pi * A * np.sin(2 * math.pi * x), 2 * y + 2 * math.pi * A * np.sin(2 * math.pi * y)


def _saddle(xy):
    return xy[0] ** 2 - xy[1] ** 2


def _saddle_grad(x, y):
    return 2 * x, -2 * y


def quadratic(condition: float = 20.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """½(x² + κy²): steep in y, shallow in x; κ is the condition number (the ratio of the curvatures)."""
    def f(xy):
        return 0.5 * (xy[0] ** 2 + condition * xy[1] ** 2)
    return f


def quadratic_grad(condition: float = 20.0):
    """∇ of ½(x² + κy²): (x, κy), on numpy arrays."""
    def grad(x, y):
        return x, condition * y
    return grad


# Learning rates picked by trying them: each optimizer moves visibly within ~200 steps and none diverges.
# sgd and momentum share an lr where they can, so the picture shows what momentum itself adds. Rastrigin's
# are small on purpose: every method settles in the nearest local minimum, which is the lesson there.
FUNCTIONS: dict[str, TestFunction] = {
    "rosenbrock": TestFunction(
        "rosenbrock", _rosenbrock, [(1.0, 1.0)], (-1.5, 2.0), ((-2.0, 2.0), (-1.0, 3.0)),
        {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 1e-2, "adagrad": 0.5, "adam": 0.2, "adamw": 0.2},
        "(1 − x)² + 100(y − x²)²", log_scale=True, grad=_rosenbrock_grad),
    "beale": TestFunction(
        "beale", _beale, [(3.0, 0.5)], (1.0, 1.5), ((-4.5, 4.5), (-4.5, 4.5)),
        {"sgd": 1e-2, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 0.05, "adagrad": 0.5, "adam": 0.1, "adamw": 0.1},
        "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²", log_scale=True, grad=_beale_grad),
    "rastrigin": TestFunction(
        "rastrigin", _rastrigin, [(0.0, 0.0)], (2.5, 2.8), ((-3.5, 3.5), (-3.5, 3.5)),
        {"sgd": 5e-3, "momentum": 2e-3, "nesterov": 2e-3, "rmsprop": 0.02, "adagrad": 0.2, "adam": 0.05, "adamw": 0.05},
        "20 + x² − 10 cos 2πx + y² − 10 cos 2πy", grad=_rastrigin_grad),
    "saddle": TestFunction(
        "saddle", _saddle, [], (-2.0, 0.01), ((-2.5, 2.5), (-2.5, 2.5)),
        {"sgd": 1e-2, "momentum": 5e-3, "nesterov": 5e-3, "rmsprop": 1e-2, "adagrad": 0.5, "adam": 0.05, "adamw": 0.05},
        "x² − y²", saddle=(0.0, 0.0), grad=_saddle_grad),
    "quadratic": TestFunction(
        "quadratic", quadratic(20.0), [(0.0, 0.0)], (-4.0, 1.5), ((-5.0, 5.0), (-2.0, 2.0)),
        {"sgd": 0.02, "momentum": 0.02, "nesterov": 0.02, "rmsprop": 0.05, "adagrad": 0.5, "adam": 0.1, "adamw": 0.1},
        "½(x² + 20y²)", grad=quadratic_grad(20.0)),
}


# A user's function has no tuned rates: these move visibly on a unit-scale bowl without diverging.
CUSTOM_LRS = {"sgd": 0.05, "momentum": 0.01, "nesterov": 0.01, "rmsprop": 0.01, "adagrad": 0.5, "adam": 0.05,
              "adamw": 0.05}


def quadratic_function(condition: float) -> TestFunction:
    """The quadratic bowl with condition number κ = `condition` (1 is round; 100 is a narrow valley).

    Example: ``trajectories(quadratic_function(100), ["sgd", "momentum"])``
    """
    if isinstance(condition, bool) or not isinstance(condition, (int, float)) or not 1 <= condition <= 1e4:
        raise BigModelError(f"The condition number must be a number from 1 to 10000; got {condition!r}.")
    base = FUNCTIONS["quadratic"]
    return TestFunction("quadratic", quadratic(float(condition)), base.minima, base.start, base.bounds, base.lrs,
                        f"½(x² + {condition:g}y²)", grad=quadratic_grad(float(condition)))


def custom_function(f: Callable, *, bounds=((-2.0, 2.0), (-2.0, 2.0)), start=None, name: str | None = None,
                    grid: int = 121) -> TestFunction:
    """A user's own ``f(x, y)`` on tensors as a test function. Distances are measured to the lowest point of a
    `grid` × `grid` sample of `bounds`, since its true minimum is not known.

    Example: ``trajectories(custom_function(lambda x, y: x**2 + 3 * y**2), ["sgd", "adam"])``
    """
    label = name or getattr(f, "__name__", "custom")
    label = "custom" if label == "<lambda>" else label
    try:
        (x0, x1), (y0, y1) = ((float(a), float(b)) for a, b in bounds)
    except (TypeError, ValueError):
        raise BigModelError(f"bounds must be ((xmin, xmax), (ymin, ymax)); got {bounds!r}.") from None
    if not (x0 < x1 and y0 < y1) or not all(map(math.isfinite, (x0, x1, y0, y1))):
        raise BigModelError(f"bounds must be finite with min < max on both axes; got {bounds!r}.")
    start = (x0 + 0.2 * (x1 - x0), y0 + 0.8 * (y1 - y0)) if start is None else parse_start(start)

    def f_xy(xy):
        return f(xy[0], xy[1])

    probe = torch.tensor([[start[0], x0, x1], [start[1], y0, y1]], dtype=torch.float64, requires_grad=True)
    try:
        with warnings.catch_warnings():  # e.g. float(x) warns before our sentence says what is wrong
            warnings.simplefilter("ignore")
            one = f_xy(probe[:, 0])
    except Exception as e:
        raise BigModelError(f"Your function raised {type(e).__name__} at the start point: {e}. It must take two "
                            "tensors x, y and return a tensor.") from None
    if not isinstance(one, torch.Tensor) or one.numel() != 1:
        raise BigModelError(f"Your function must return one number (a 0-d tensor) for one point; it returned "
                            f"{type(one).__name__}{tuple(one.shape) if isinstance(one, torch.Tensor) else ''}. Use "
                            "torch operations on x and y, e.g. lambda x, y: x**2 + 3*y**2.")
    if not one.requires_grad:
        raise BigModelError("Your function's value does not depend on x and y through torch operations, so it has "
                            "no gradient; use torch functions (torch.sin, torch.exp, ...) rather than math or numpy.")
    try:  # elementwise functions evaluate many points in one call: the grid, and every optimizer at once
        many = f_xy(probe)
        alone = torch.stack([f_xy(probe[:, i]).reshape(()) for i in range(3)])  # each point on its own
        elementwise = (isinstance(many, torch.Tensor) and many.shape == (3,)
                       and torch.allclose(many, alone, equal_nan=True))
    except Exception:
        elementwise = False
    fn = TestFunction(label, f_xy, [], start, ((x0, x1), (y0, y1)), CUSTOM_LRS, "your own function",
                      elementwise=elementwise)
    xs, ys = torch.linspace(x0, x1, grid, dtype=torch.float64), torch.linspace(y0, y1, grid, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    try:
        with torch.no_grad():
            z = fn.values(torch.stack([X, Y])).nan_to_num(nan=math.inf)
    except Exception as e:
        raise BigModelError(f"Your function raised {type(e).__name__} on the plot's grid over {bounds}: {e}. It must "
                            "work everywhere in bounds=((xmin, xmax), (ymin, ymax)); pass smaller bounds.") from None
    k = int(torch.argmin(z))
    lowest = (float(X.flatten()[k]), float(Y.flatten()[k]))
    log_scale = bool(torch.isfinite(z).all()) and float(z.min()) >= 0 and float(z.max()) > 100 * (float(z.min()) + 1)
    return TestFunction(label, f_xy, [lowest], start, ((x0, x1), (y0, y1)), CUSTOM_LRS, "your own function",
                        log_scale=log_scale, elementwise=elementwise, target_name="lowest grid point")


def test_function(function, condition: float | None = None) -> TestFunction:
    """A name ("rosenbrock", ...), a `TestFunction`, or a callable ``f(x, y)`` -> `TestFunction`.

    Example: ``test_function("quadratic", condition=100).formula == "½(x² + 100y²)"``
    """
    if isinstance(function, TestFunction):
        return function
    if callable(function):
        return custom_function(function)
    name = str(function).lower()
    if name not in FUNCTIONS:
        raise unknown_choice("test function", name, FUNCTIONS)
    if name == "quadratic" and condition is not None:
        return quadratic_function(condition)
    return FUNCTIONS[name]


test_function.__test__ = False  # a factory, not a pytest test


# The hyperparameters besides the learning rate that each optimizer exposes, with torch's defaults.
# β₁ and β₂ are torch's `betas` pair; the others are torch's keyword names.
KNOBS: dict[str, dict[str, float]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8},
    "adagrad": {"eps": 1e-10},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
}


# Slider ranges (low, high, log scale) for the playground, and what torch accepts: [0, 1) for the decay rates,
# eps > 0, weight decay ≥ 0.
KNOB_RANGES: dict[str, tuple[float, float, bool]] = {
    "momentum": (0.0, 0.99, False), "alpha": (0.5, 0.999, False), "beta1": (0.0, 0.99, False),
    "beta2": (0.5, 0.9999, False), "eps": (1e-10, 1.0, True), "weight_decay": (0.0, 1.0, False),
}


def _valid(key: str, value: float) -> bool:
    if key == "eps":
        return value > 0
    if key == "weight_decay":
        return value >= 0
    return 0 <= value < 1


def check_options(options, names) -> dict[str, dict]:
    """`options` as {optimizer: {knob: value}} for the optimizers in `names`, or one sentence saying what is wrong.

    Example: ``check_options({"momentum": {"momentum": 0.5}}, ["sgd", "momentum"])``
    """
    example = 'e.g. {"momentum": {"momentum": 0.5}}'
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) or v is None for v in options.values()):
        raise BigModelError(f"options maps an optimizer to a dict of its settings, {example}; got {options!r}.")
    for name in options:
        if name not in names:
            raise BigModelError(f"options names '{name}', which is not among the optimizers "
                                f"({', '.join(names)}).")
    return {name: dict(value or {}) for name, value in options.items()}


def optimizer_kwargs(name: str, options: dict | None) -> dict:
    """torch keyword arguments from a knob dict (``{"beta1": 0.8}`` -> ``{"betas": (0.8, 0.999)}``).

    Example: ``optimizer_kwargs("adam", {"beta1": 0.5})["betas"] == (0.5, 0.999)``
    """
    options = dict(options or {})
    known = KNOBS.get(name, {})
    for key, value in options.items():
        if key not in known:
            has = ", ".join(known) or "only the learning rate"
            raise BigModelError(f"{name} has no setting '{key}'; it has {has}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not _valid(key, value):
            rule = {"eps": "above 0", "weight_decay": "0 or more"}.get(key, "from 0 up to (not including) 1")
            raise BigModelError(f"{name}'s {key} must be a number {rule}; got {value!r}.")
    kwargs = {k: float(v) for k, v in options.items() if k not in ("beta1", "beta2")}
    if "beta1" in options or "beta2" in options:
        kwargs["betas"] = (float(options.get("beta1", known["beta1"])), float(options.get("beta2", known["beta2"])))
    return kwargs


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
    options: dict[str, dict] = field(default_factory=dict)  # optimizer -> its other hyperparameters, as run
    spec: TestFunction | None = None  # the function run, when it is not one of FUNCTIONS as defined

    @property
    def test_function(self) -> TestFunction:
        return self.spec or FUNCTIONS[self.function]

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


def path_lrs(spec, names: list[str]):
    """--lr for 2-D paths: None, one number, a dict, or text "0.1" / "sgd=0.1,adam=0.05"; the optimizers the text
    does not name keep the function's own rate (not `torch.optim`'s default, which suits networks, not these).

    Example: ``path_lrs("sgd=0.1", ["sgd", "adam"]) == {"sgd": 0.1}``
    """
    if not isinstance(spec, str):
        return spec
    from .optimizers import parse_lrs

    text = spec.strip()
    if text == "auto":
        raise BigModelError("--lr auto applies to model comparisons; on a 2-D function give numbers, or leave it "
                            "out for the function's own rates.")
    named = {part.split("=")[0].strip() for part in text.split(",")} if "=" in text else set(names)
    return {k: v for k, v in parse_lrs(text, names).items() if k in named}


def _lr_for(name: str, fn: TestFunction, lr) -> float:
    if isinstance(lr, dict):
        lr = lr.get(name)
    if lr is None:
        return fn.lrs.get(name, default_lr(name))
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < math.inf):
        raise BigModelError(f"The learning rate for {name} must be a positive number; got {lr!r}.")
    return float(lr)


def _run_all(fn: TestFunction, names: list[str], start, lrs: dict, kwargs: dict, steps: int) -> np.ndarray:
    """Every optimizer's path at once -> [steps+1, 2, K]. The gradient of all K points comes in one call: ∇f in
    closed form where the function has it, else one backward of the sum of f over the points (each point's own
    gradient is its partial derivative). Optimizers of one torch class share an instance, one param group each:
    the same arithmetic with fewer calls."""
    params = [torch.nn.Parameter(torch.tensor(start, dtype=torch.float64)) for _ in names]  # float64: exact paths
    groups: dict[type, list[dict]] = {}
    for name, p in zip(names, params):
        cls, fixed, _ = OPTIMIZERS[name]
        groups.setdefault(cls, []).append({"params": [p], "lr": lrs[name], **fixed, **kwargs[name]})
    optimizers = [cls(g, lr=g[0]["lr"], foreach=False) for cls, g in groups.items()]  # foreach: no gain on 2 numbers
    if fn.grad is not None:
        return _closed_form_steps(fn.grad, params, optimizers, steps)
    points = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        xy = torch.stack(params, dim=1)  # [2, K]
        fn.values(xy).sum().backward()
        points.append(xy.detach())
        for opt in optimizers:
            opt.step()
    points.append(torch.stack(params, dim=1).detach())
    return torch.stack(points).numpy()


def _closed_form_steps(grad, params, optimizers, steps: int) -> np.ndarray:
    """The loop with ∇f in closed form, all in numpy views of the parameters and of one gradient buffer
    (each optimizer's `.grad` is a row of it, rewritten in place each step; no optimizer here writes to its
    grad), so a step is the optimizers' own updates plus a few µs."""
    views = [p.detach().numpy() for p in params]  # share memory with the parameters the optimizers update
    buffer = torch.zeros(len(params), 2, dtype=torch.float64)
    for p, row in zip(params, buffer):
        p.grad = row
    g = buffer.numpy()
    points = np.empty((steps + 1, 2, len(params)))
    with np.errstate(all="ignore"):  # a diverging path overflows to inf; it is cut off afterwards
        for t in range(steps):
            xy = points[t]
            for k, v in enumerate(views):
                xy[:, k] = v
            g[:, 0], g[:, 1] = grad(xy[0], xy[1])
            for opt in optimizers:
                opt.step()
        for k, v in enumerate(views):
            points[steps][:, k] = v
    return points


def trajectories(function, optimizers=("sgd", "momentum", "rmsprop", "adam"), *, steps: int = 200,
                 start=None, lr=None, options: dict | None = None, condition: float | None = None) -> Trajectories:
    """Run each optimizer from the same start on a 2-D test function with the real `torch.optim` classes.

    `function`: a name, a `TestFunction` or a callable ``f(x, y)``. `lr` is None (per-function defaults), one
    number for all, a dict optimizer -> lr, or text as `path_lrs` reads it; `options` maps an optimizer to its
    other settings (`KNOBS`), e.g. ``{"momentum": {"momentum": 0.5}}``; `condition` is the quadratic's κ.
    Example: ``trajectories("rosenbrock", ["sgd", "adam"], steps=300, start="-1,2")``
    """
    fn = test_function(function, condition)
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
    lr = path_lrs(lr, names)
    given = check_options(options, names)
    options = {o: given.get(o, {}) for o in names}
    lrs = {o: _lr_for(o, fn, lr) for o in names}
    kwargs = {o: optimizer_kwargs(o, options[o]) for o in names}
    points = _run_all(fn, names, start, lrs, kwargs, int(steps))
    with torch.no_grad():
        values = fn.values(torch.from_numpy(points).permute(1, 0, 2)).numpy()  # [steps+1, K]: f at every point

    targets = np.asarray(fn.targets)
    spec = None if fn is FUNCTIONS.get(fn.name) else fn
    result = Trajectories(fn.name, {}, {}, lrs, {}, list(fn.minima), start, fn.target_label, options, spec)
    for k, o in enumerate(names):
        path, losses = points[:, :, k], values[:, k]
        bad = ~np.isfinite(path).all(axis=1) | (np.abs(path).max(axis=1) > DIVERGED)
        end = max(1, int(np.argmax(bad))) if bad.any() else len(path)  # the path ends at the last sensible point
        path, losses = path[:end], losses[:end]
        diverged = bool(bad.any()) or not math.isfinite(losses[-1])
        result.paths[o], result.losses[o] = path, losses
        x, y = path[-1]
        result.results[o] = {"x": float(x), "y": float(y), "loss": float(losses[-1]),
                             "distance": float(np.min(np.hypot(*(targets - path[-1]).T))),
                             "steps": len(path) - 1, "diverged": diverged}
    return result
