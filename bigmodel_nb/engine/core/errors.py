"""The one exception type users see: a single sentence saying what is wrong and what to do; and
`quiet_logger`, for library notices that would otherwise print under a cell."""
import contextlib
import difflib
import logging
from collections.abc import Iterable


class BigModelError(ValueError):
    """A problem with the user's input or environment, explained in one sentence.

    Magics turn it into an IPython ``UsageError`` so no traceback is shown.
    Example: ``raise BigModelError("Unknown optimizer 'adamx'; choose one of: adam, sgd.")``
    """


def describe_exception(exc: BaseException) -> str:
    """One line naming the error and the user's own frame, e.g.
    ``RuntimeError in Net.forward (line 7: return self.fc(x)): mat1 and mat2 shapes cannot be multiplied``.
    """
    import os
    import traceback

    import torch

    # Frames inside torch, this package or the standard library are not where the user can act.
    package = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))  # bigmodel_nb/
    skip = (os.path.dirname(torch.__file__), package, os.path.dirname(os.__file__))
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not f.filename.startswith(skip)]
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = ""
    if mine:
        f = mine[-1]
        code = f" : {f.line.strip()}" if f.line else ""
        where = f" in {f.name} (line {f.lineno}{code})"
    return f"{type(exc).__name__}{where}: {message}".rstrip(": ")


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> BigModelError:
    """The error for a name not among `choices`, with the closest one suggested.

    Example: ``raise unknown_choice("optimizer", "adma", OPTIMIZERS)``
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1) or [c for c in choices if name and c.startswith(name)][:1]
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return BigModelError(f"Unknown {kind} '{name}'; choose one of: {', '.join(choices)}{hint}.")


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """Raise logger `name` to `level` for the block: a library's notice is not something the user did wrong.

    Example: ``with quiet_logger("torch._subclasses.fake_tensor", logging.CRITICAL): ...``
    """
    log = logging.getLogger(name)
    saved = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(saved)
