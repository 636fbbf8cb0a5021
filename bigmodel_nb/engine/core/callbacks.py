"""The event bus: `Callback` hooks with a plain `logs` dict, and `CallbackList`, which every engine
emits on (a run, a distributed run, an optimizer comparison, a compression, a gradient recorder)
and every dashboard subscribes to.

    class Printer(Callback):
        def on_step_end(self, source, logs): print(logs)

The first argument of a hook is the engine object that emits (usually the `Run`). A callback marked
``on_workers = True`` runs inside each Ray worker's loop (it is shipped there by value); every other
callback stays in the notebook and receives the rows the workers stream back.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger("bigmodel_nb")

HOOKS = ("on_train_begin", "on_epoch_begin", "on_after_backward", "on_step_end", "on_eval_end", "on_epoch_end",
         "on_train_end", "on_exception", "on_stage_end", "on_gradients", "on_system")


class Callback:
    """Hooks in the Keras style; each gets the emitting engine object and a plain `logs` dict.

    Example: ``class Printer(Callback): def on_epoch_end(self, run, logs): print(logs)``
    `on_step_end` runs every step with ``step, epoch, lr``; at logging ticks `logs` also carries
    ``split``, ``loss`` (and ``accuracy``, ``samples_per_s``) and is the history row. Hooks run in
    the training thread: keep them cheap, render elsewhere.
    """

    on_workers = False  # True: run inside every Ray worker's loop instead of in the notebook

    def on_train_begin(self, run, logs: dict) -> None: ...
    def on_epoch_begin(self, run, logs: dict) -> None: ...
    def on_after_backward(self, run, logs: dict) -> None: ...  # grads complete, before clipping and step
    def on_step_end(self, run, logs: dict) -> None: ...
    def on_eval_end(self, run, logs: dict) -> None: ...
    def on_epoch_end(self, run, logs: dict) -> None: ...
    def on_train_end(self, run, logs: dict) -> None: ...
    def on_exception(self, run, logs: dict) -> None: ...
    def on_stage_end(self, source, logs: dict) -> None: ...  # a compression stage's report row
    def on_gradients(self, source, logs: dict) -> None: ...  # a gradient recorder has new norms
    def on_system(self, run, logs: dict) -> None: ...  # a system sample (CPU, memory, GPU), about once a second


class CallbackList:
    """An ordered list of callbacks and the one way to call them. A callback that raises is logged and
    detached, so a broken display never kills a training.

    Example: ``bus = CallbackList([Printer()]); bus.emit("on_step_end", run, {"step": 1})``
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks: list[Callback] = list(callbacks)
        self._wants: dict[str, bool] = {}  # per hook: does some callback implement it (cleared on change)

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)
        self._wants.clear()

    def extend(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks.extend(callbacks)
        self._wants.clear()

    def remove(self, callback: Callback) -> None:
        self.callbacks.remove(callback)
        self._wants.clear()

    def __iter__(self):
        return iter(list(self.callbacks))

    def __len__(self) -> int:
        return len(self.callbacks)

    def __contains__(self, callback) -> bool:
        return callback in self.callbacks

    def overrides(self, hook: str) -> bool:
        """True if some callback implements `hook` (so a per-step hook costs nothing when none does). The answer
        is kept until the list changes through `append`/`extend`/`remove`; a hook set on a callback after that is
        seen once the list changes. Example: ``if bus.overrides("on_step_end"): bus.emit("on_step_end", run, logs)``"""
        wants = self._wants.get(hook)
        if wants is None:
            base = getattr(Callback, hook, None)
            wants = self._wants[hook] = any(_implements(cb, hook, base) for cb in self.callbacks)
        return wants

    def split(self) -> tuple[CallbackList, CallbackList]:
        """(those that run on the workers, those that stay in the notebook)."""
        return (CallbackList(cb for cb in self.callbacks if cb.on_workers),
                CallbackList(cb for cb in self.callbacks if not cb.on_workers))

    def emit(self, hook: str, source, logs: dict) -> None:
        for cb in list(self.callbacks):
            fn = getattr(cb, hook, None)
            if fn is None:
                continue
            try:
                fn(source, logs)
            except Exception:  # a broken display must not kill the training
                log.exception("callback %s.%s failed and was detached", type(cb).__name__, hook)
                if cb in self.callbacks:
                    self.remove(cb)


def _implements(callback, hook: str, base) -> bool:
    """The callback has `hook` and it is not `Callback`'s empty one (instance attributes count too)."""
    fn = getattr(callback, hook, None)
    if fn is None:
        return False
    return base is None or getattr(fn, "__func__", None) is not base  # base None: a hook Callback does not have
