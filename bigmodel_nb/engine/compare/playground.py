"""The optimizer playground's state: the settings a student picks and the paths they give (`%optimizer_playground`).

Example: ``pg = Playground("saddle", ["sgd", "momentum"]); pg.update(lrs={"sgd": 0.05}).results["sgd"]``
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..core.errors import BigModelError, unknown_choice
from .landscapes import (
    FUNCTIONS,
    KNOBS,
    TestFunction,
    Trajectories,
    check_options,
    custom_function,
    parse_start,
    quadratic_function,
    test_function,
    trajectories,
)

STEPS = 300  # default path length: long enough for momentum's overshoot to show, short enough to feel live
MAX_STEPS = 2000


@dataclass(frozen=True)
class PlaygroundSettings:
    """Everything that decides the paths; a new one replaces the old on every change.

    Example: ``pg.settings.lrs["adam"]``, ``pg.settings.options["momentum"]["momentum"]``
    """
    function: str  # a name in FUNCTIONS, or the label of the user's own function
    optimizers: tuple[str, ...]
    lrs: dict[str, float]
    options: dict[str, dict[str, float]]  # optimizer -> its other hyperparameters (every knob, filled in)
    start: tuple[float, float]
    steps: int = STEPS
    condition: float = 20.0  # the quadratic's condition number κ


class Playground:
    """Paths of real `torch.optim` optimizers on a 2-D function, recomputed on each change of settings.

    `function`: a FUNCTIONS name or a callable ``f(x, y)`` on tensors (then also offered beside the built-ins).
    ``.settings`` (a `PlaygroundSettings`), ``.results`` / ``.paths`` / ``.losses`` (as on `Trajectories`),
    ``.table()``; ``update(lrs=..., options=..., start=..., steps=..., function=..., condition=...)``.
    Example: ``Playground("quadratic", ["sgd", "momentum"], condition=100).update(start=(-4, 1)).table()``
    """

    def __init__(self, function="rosenbrock", optimizers=("sgd", "momentum", "rmsprop", "adam"), *,
                 steps: int = STEPS, start=None, lr=None, options: dict | None = None, condition: float = 20.0):
        self.custom: TestFunction | None = None
        if isinstance(function, TestFunction) and FUNCTIONS.get(function.name) is not function:
            self.custom = function  # e.g. a custom_function(...) built with its own bounds
        elif callable(function) and not isinstance(function, (str, TestFunction)):
            self.custom = custom_function(function)
        if self.custom is not None:
            if self.custom.name.lower() in FUNCTIONS:  # `def beale(x, y)` must not hide the built-in beale
                self.custom = dataclasses.replace(self.custom, name=f"{self.custom.name} (yours)")
            function = self.custom.name
        elif isinstance(function, TestFunction):
            function = function.name
        else:
            function = str(function).strip().lower()
        condition = _condition(condition)
        names = optimizers.split(",") if isinstance(optimizers, str) else list(optimizers)
        names = tuple(dict.fromkeys(str(o).strip().lower() for o in names if str(o).strip()))
        # One run validates names, steps, start, lr and options and gives the function's defaults.
        first = trajectories(self._spec(str(function), condition), names, steps=_steps(steps), start=start,
                             lr=lr, options=options)
        self.settings = PlaygroundSettings(first.function, tuple(first.results), dict(first.lrs),
                                           _filled(first.results, first.options), tuple(first.start),
                                           _steps(steps), float(condition))
        self.trajectories: Trajectories = first

    @property
    def functions(self) -> list[str]:
        """The function names the dropdown offers: the built-ins, then the user's own."""
        return list(FUNCTIONS) + ([self.custom.name] if self.custom else [])

    @property
    def function(self) -> TestFunction:
        return self.trajectories.test_function

    @property
    def results(self) -> dict[str, dict]:
        return self.trajectories.results

    @property
    def paths(self):
        return self.trajectories.paths

    @property
    def losses(self):
        return self.trajectories.losses

    def table(self):
        """One row per optimizer at the current settings. Example: ``pg.table()``"""
        return self.trajectories.table()

    def update(self, *, function: str | None = None, lrs: dict | None = None, options: dict | None = None,
               start=None, steps: int | None = None, condition: float | None = None) -> Trajectories:
        """Change some settings and recompute every path. A new function brings its own start and learning
        rates unless given; `lrs` and `options` may name only the optimizers (and knobs) that change.

        Example: ``pg.update(options={"momentum": {"momentum": 0.5}})``
        """
        s = self.settings
        if function is not None and function not in self.functions:
            function = str(function).strip().lower()  # the built-ins by any case; yours by its exact name
            if function not in self.functions:
                raise unknown_choice("test function", function, self.functions)
        new_function = function is not None and function != s.function
        condition = s.condition if condition is None else _condition(condition)
        spec = self._spec(function or s.function, condition)
        if new_function:
            base_lrs = {o: spec.lrs.get(o, s.lrs[o]) for o in s.optimizers}
            base_start = spec.start
        else:
            base_lrs, base_start = s.lrs, s.start
        merged_lrs = {**base_lrs, **(lrs or {})}
        options = check_options(options, s.optimizers)
        merged_options = {o: {**s.options[o], **options.get(o, {})} for o in s.optimizers}
        steps = _steps(s.steps if steps is None else steps)
        result = trajectories(spec, s.optimizers, steps=steps,
                              start=base_start if start is None else parse_start(start), lr=merged_lrs,
                              options=merged_options)
        self.trajectories = result
        self.settings = dataclasses.replace(s, function=spec.name, lrs=dict(result.lrs), options=merged_options,
                                            start=tuple(result.start), steps=steps, condition=condition)
        return result

    def _spec(self, name: str, condition: float) -> TestFunction:
        if self.custom is not None and name == self.custom.name:
            return self.custom
        return test_function(name, condition if name == "quadratic" else None)

    def __repr__(self) -> str:
        s = self.settings
        return (f"<Playground {s.function}: {', '.join(s.optimizers)}; {s.steps} steps from "
                f"({s.start[0]:g}, {s.start[1]:g})>")


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise BigModelError(f"--steps must be a whole number from 1 to {MAX_STEPS}; got {steps!r}.")
    return int(steps)


def _condition(condition) -> float:
    """κ, checked whatever the function (the dropdown may switch to the quadratic later)."""
    quadratic_function(condition)  # the one sentence for a bad κ
    return float(condition)


def _filled(results: dict, options: dict) -> dict[str, dict[str, float]]:
    """Every knob of every optimizer, given or torch's default, so the settings say what ran."""
    return {o: {**KNOBS[o], **{k: float(v) for k, v in (options.get(o) or {}).items()}} for o in results}


