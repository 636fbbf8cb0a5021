"""The event bus: hooks in order, a broken callback detached (the training goes on), what runs on workers."""
import logging

from bigmodel_nb.api import fit
from bigmodel_nb.engine.core.callbacks import Callback, CallbackList


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, run, logs):
        self.calls.append("begin")

    def on_step_end(self, run, logs):
        self.calls.append(("step", logs["step"]))

    def on_train_end(self, run, logs):
        self.calls.append(("end", logs["status"]))


class Broken(Callback):
    def on_step_end(self, run, logs):
        raise RuntimeError("a display bug")


class OnWorkers(Callback):
    on_workers = True


def test_a_run_emits_its_hooks_in_order_and_detaches_a_broken_callback(mlp, caplog):
    recorder, broken = Recorder(), Broken()
    with caplog.at_level(logging.ERROR, logger="bigmodel_nb"):
        run = fit(mlp(), "digits", steps=3, callbacks=[broken, recorder])
    assert run.status == "completed"
    assert recorder.calls == ["begin", ("step", 1), ("step", 2), ("step", 3), ("end", "completed")]
    assert broken not in run.callbacks and "Broken.on_step_end failed and was detached" in caplog.text


def test_overrides_and_split():
    bus = CallbackList([Recorder(), OnWorkers()])
    assert bus.overrides("on_step_end") and not bus.overrides("on_after_backward")
    workers, here = bus.split()
    assert [type(c) for c in workers] == [OnWorkers] and [type(c) for c in here] == [Recorder]


def test_objects_without_a_hook_are_skipped():
    class Plain:  # duck-typed: only what it defines is called
        def __init__(self):
            self.seen = 0

        def on_step_end(self, source, logs):
            self.seen += 1

    plain = Plain()
    bus = CallbackList([plain])
    bus.emit("on_train_begin", None, {})
    bus.emit("on_step_end", None, {})
    assert plain.seen == 1 and plain in bus


def test_overrides_follows_the_list_and_instance_hooks(mlp):
    """The per-hook answer is cached, so it must change when a callback joins or leaves; a hook set on the
    instance counts too (the loop skips on_step_end, and its logs dict, when nobody implements it)."""
    bus = CallbackList([OnWorkers()])
    assert not bus.overrides("on_step_end")
    recorder = Recorder()
    bus.append(recorder)
    assert bus.overrides("on_step_end")
    bus.remove(recorder)
    assert not bus.overrides("on_step_end")
    seen = []
    late = Callback()
    late.on_step_end = lambda run, logs: seen.append(logs["step"])
    bus.extend([late])
    assert bus.overrides("on_step_end")
    fit(mlp(), "digits", steps=4, callbacks=[late], system=False)
    assert seen == [1, 2, 3, 4]


def test_a_hook_callback_does_not_define_counts_when_a_callback_has_it():
    custom = Callback()
    custom.on_custom = lambda source, logs: None
    assert CallbackList([custom]).overrides("on_custom") and not CallbackList([Callback()]).overrides("on_custom")
