"""Stop / Pause / Resume buttons on a real run, without a browser, and the interrupt policy."""
import time

from bigmodel_nb.engine import Run, TrainConfig
from bigmodel_nb.ui import controls as controls_mod
from bigmodel_nb.ui.controls import RunControls
from bigmodel_nb.ui.dashboard import TrainingDashboard


def test_stop_button_click_stops_a_real_run(widget_mode, mlp, slow):
    run = Run(mlp(), "digits", TrainConfig(epochs=200, seed=0))
    dash = TrainingDashboard(run, tick=0.05).show()
    run.start([slow, dash])
    time.sleep(0.5)
    dash.controls.stop_button.click()
    run.wait(timeout=5)
    assert run.status == "stopped" and 0 < run.step < run.total_steps
    assert dash.controls.stop_button.disabled  # nothing left to stop


def test_pause_and_resume_buttons(widget_mode, mlp, slow):
    run = Run(mlp(), "digits", TrainConfig(epochs=20, seed=0))  # ~2 s: a late click still lands mid-run
    dash = TrainingDashboard(run, tick=0.05).show()
    run.start([slow, dash])
    time.sleep(0.2)
    dash.controls.pause_button.click()
    time.sleep(0.3)
    held = run.step
    assert run.status == "paused"
    time.sleep(0.2)
    dash.render()
    assert run.step == held and not dash.controls.resume_button.disabled and dash.controls.pause_button.disabled
    dash.controls.resume_button.click()
    run.wait(timeout=20)
    assert run.status == "completed"


def test_without_live_clicks_an_interrupt_pauses_then_stops_unless_pause_was_clicked(monkeypatch, mlp, slow):
    monkeypatch.setattr(controls_mod, "CLICK_GRACE_S", 0.3)
    run = Run(mlp(), "digits", TrainConfig(epochs=200, seed=0))
    controls = RunControls(run)
    run.start([slow])
    controls.hold_after_interrupt(run)  # an interrupt no click follows: the ■ button
    time.sleep(0.1)
    assert run.paused and run.alive
    run.wait(timeout=5)
    assert run.status == "stopped"

    run = Run(mlp(), "digits", TrainConfig(epochs=200, seed=0))
    controls = RunControls(run)
    run.start([slow])
    controls.hold_after_interrupt(run)
    controls.pause_button.click()  # the queued Pause click arrives after the cell returned
    time.sleep(0.6)
    assert run.alive and run.status == "paused"
    controls.stop_button.click()
    run.wait(timeout=5)
    assert run.status == "stopped"


def test_clicks_are_acknowledged_to_the_browser(widget_mode, mlp, slow):
    run = Run(mlp(), "digits", TrainConfig(epochs=200, seed=0))
    controls = RunControls(run)
    run.start([slow])
    before = controls.bridge.acks
    controls.stop_button.click()
    assert controls.bridge.acks == before + 1  # the bridge will not interrupt the kernel
    run.wait(timeout=5)
