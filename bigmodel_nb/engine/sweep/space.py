"""A search space from the values a user types: ``lo..hi`` (a range; ``lo..hi:log`` on a log scale;
integers when both ends are), ``a,b,c`` (choices) or one value (fixed), each checked in one sentence
before any trial starts, and sampled by an Optuna trial.

    space = parse_space({"lr": "1e-4..1e-1:log", "hidden": "32,64,128"}); sample(space, trial)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..core.errors import BigModelError

RANGE = re.compile(r"^\s*(?P<lo>[^.][^ ]*?)\s*\.\.\s*(?P<hi>[^: ]+)\s*(?::(?P<scale>\w+))?\s*$")


@dataclass(frozen=True)
class Param:
    """One searched parameter: a range (`low`, `high`, `log`, `integer`) or `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        return f"{self.low:g}..{self.high:g}{' (log)' if self.log else ''}{' (integers)' if self.integer else ''}"

    def distribution(self):
        """The Optuna distribution (to compare with a stored study's)."""
        import optuna

        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)


def _number(text: str, flag: str) -> float | int:
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise BigModelError(f"--{flag} {text!r}: the ends of a range are numbers, e.g. --{flag} 1e-4..1e-1:log."
                                ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BigModelError(f"--{flag}: a range needs finite ends, not {text}.")
    return value


def _choice(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_value(flag: str, text) -> Param | object:
    """A `Param` for a range or choices; the value itself (a number when it reads as one) when fixed."""
    if not isinstance(text, str):
        return text
    match = RANGE.match(text)
    if match:
        lo, hi = _number(match["lo"], flag), _number(match["hi"], flag)
        scale = (match["scale"] or "").lower()
        if scale not in ("", "log"):
            raise BigModelError(f"--{flag} {text}: the only scale is :log (e.g. {lo}..{hi}:log).")
        if not lo < hi:
            raise BigModelError(f"--{flag} {text} is {'empty' if lo == hi else 'reversed'}; give the low end first, "
                                f"e.g. --{flag} {min(lo, hi)}..{max(lo, hi) if lo != hi else hi * 10}.")
        if scale == "log" and lo <= 0:
            raise BigModelError(f"--{flag} {text}: a log range must stay above zero (it starts at {lo}); "
                                f"use e.g. --{flag} {hi / 1000:g}..{hi:g}:log.")
        integer = isinstance(lo, int) and isinstance(hi, int)
        return Param(flag, float(lo), float(hi), log=scale == "log", integer=integer)
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise BigModelError(f"--{flag} {text!r} has an empty choice; separate values with commas and no blanks, "
                                f"e.g. --{flag} {','.join(p for p in parts if p) or 'a,b'}.")
        if len(set(parts)) != len(parts):
            raise BigModelError(f"--{flag} {text!r} lists a value twice; give each choice once.")
        return Param(flag, choices=tuple(_choice(p) for p in parts))
    return _choice(text.strip())


def parse_space(values: dict) -> tuple[dict[str, Param], dict]:
    """(searched params, fixed values) from ``{name: text}``. Example: ``parse_space({"lr": "1e-3..1e-1:log"})``"""
    searched, fixed = {}, {}
    for name, text in values.items():
        value = parse_value(name, text)
        (searched if isinstance(value, Param) else fixed)[name] = value
    return searched, fixed


def sample(space: dict[str, Param], trial) -> dict:
    """The trial's values, one per searched parameter."""
    params = {}
    for name, p in space.items():
        if p.choices is not None:
            params[name] = trial.suggest_categorical(name, p.choices)
        elif p.integer:
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
    return params
