"""Run control (stop, pause, interrupt), safety (NaN, a model that raises) and checkpoints/resume."""
import _thread
import threading
import time

import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError, Run, TrainConfig, load_weights
from bigmodel_nb.engine.core.callbacks import Callback


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))


class Slow(Callback):
    """Makes each step take a little while so control can be observed."""

    def on_step_end(self, run, logs):
        time.sleep(0.005)


def test_stop_ends_at_a_step_boundary_and_keeps_everything():
    run = Run(mlp(), "digits", TrainConfig(epochs=50, seed=0), [Slow()]).start()
    time.sleep(0.3)
    run.stop().wait()
    assert run.status == "stopped"
    assert 0 < run.step < run.total_steps
    assert run.history and run.history[-1]["step"] == run.step  # the partial window was logged
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_pause_holds_and_resume_continues():
    run = Run(mlp(), "digits", TrainConfig(epochs=3, seed=0), [Slow()]).start()
    time.sleep(0.1)
    run.pause()
    time.sleep(0.2)
    assert run.status == "paused"
    held = run.step
    time.sleep(0.3)
    assert run.step == held
    run.resume().wait()
    assert run.status == "completed" and run.step == run.total_steps


def test_keyboard_interrupt_while_waiting_stops_cleanly():
    run = Run(mlp(), "digits", TrainConfig(epochs=100, seed=0), [Slow()]).start()
    threading.Timer(0.3, _thread.interrupt_main).start()  # what the ■ button does to the kernel
    run.wait()  # must not raise
    assert run.status == "stopped" and run.step < run.total_steps


def test_non_finite_loss_fails_with_one_sentence_and_restores_finite_weights():
    run = fit(mlp(), "digits", epochs=5, optimizer="sgd", lr=1e6, log_every=1, seed=0)
    assert run.status == "failed"
    assert "loss became" in run.error and "--lr" in run.error and "\n" not in run.error
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert run.history  # kept


class Flaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 30:
            raise ValueError("something in my layer broke")
        return self.net(x)


def test_model_that_raises_mid_run_fails_naming_the_users_frame():
    run = fit(Flaky(), "digits", epochs=5, seed=0)
    assert run.status == "failed"
    assert "ValueError in forward" in run.error and "something in my layer broke" in run.error
    assert "raise ValueError" in run.error  # the user's own line
    assert run.history and run.step > 0


def test_wrong_model_type_and_frozen_model_are_one_sentence():
    with pytest.raises(BigModelError, match="Expected a torch.nn.Module"):
        Run("not a model", "digits")
    frozen = mlp().requires_grad_(False)
    with pytest.raises(BigModelError, match="no trainable parameters"):
        Run(frozen, "digits")


def test_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tmp_path):
    full = fit(mlp(), "digits", epochs=4, seed=3)
    first = fit(mlp(), "digits", epochs=2, seed=3, checkpoint=str(tmp_path))
    assert first.status == "completed"
    resumed = fit(mlp(seed=99), "digits", epochs=4, seed=3, checkpoint=str(tmp_path), resume=True)
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history], abs=1e-6)
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_after_a_stop_mid_epoch_continues_the_same_trajectory(tmp_path):
    full = fit(mlp(), "digits", epochs=3, seed=5)
    stop_mid_epoch = Callback()
    stop_mid_epoch.on_step_end = lambda run, logs: run.stop() if logs["step"] == 30 else None  # epoch 2 of 3
    run = Run(mlp(), "digits", TrainConfig(epochs=3, seed=5, checkpoint=str(tmp_path)), [stop_mid_epoch]).start()
    run.wait(timeout=30)
    assert run.status == "stopped" and run.step == 30 < run.total_steps
    resumed = fit(mlp(seed=1), "digits", epochs=3, seed=5, checkpoint=str(tmp_path), resume=True)
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_resumed_fp16_run_keeps_its_loss_scale(tmp_path, monkeypatch):
    """fp16 needs CUDA; on the CPU a policy with loss scaling but no autocast exercises the same GradScaler."""
    from bigmodel_nb.engine.core import run as run_module
    from bigmodel_nb.engine.core.device import AmpPolicy

    monkeypatch.setattr(run_module, "resolve_amp", lambda amp, device: AmpPolicy(None, True))
    first = fit(mlp(), "digits", epochs=1, seed=3, checkpoint=str(tmp_path))
    saved = first.scaler.state_dict()
    assert saved["_growth_tracker"] == first.step  # it counted the steps without an inf towards growing the scale
    resumed = Run(mlp(), "digits", TrainConfig(epochs=2, seed=3, checkpoint=str(tmp_path), resume=True))
    assert resumed.scaler.state_dict() == saved  # not a fresh scaler at 2^16 with its count reset


def test_resume_without_checkpoint_is_one_sentence(tmp_path):
    with pytest.raises(BigModelError, match="--resume needs --checkpoint"):
        Run(mlp(), "digits", TrainConfig(resume=True))
    with pytest.raises(BigModelError, match="No checkpoint in"):
        Run(mlp(), "digits", TrainConfig(resume=True, checkpoint=str(tmp_path / "empty")))


def test_save_and_reload_gives_the_same_predictions(tmp_path):
    run = fit(mlp(), "digits", epochs=2, seed=0)
    path = run.save(tmp_path / "digits.safetensors")
    fresh = mlp(seed=123)
    meta = load_weights(fresh, path)
    assert meta["data"] == "digits" and meta["status"] == "completed"
    run.model.eval(), fresh.eval()
    X, _ = run.data.test.tensors()
    assert torch.equal(run.model(X), fresh(X))


def test_evaluate_refuses_while_training_and_names_missing_splits():
    run = Run(mlp(), "digits", TrainConfig(epochs=50, seed=0), [Slow()]).start()
    with pytest.raises(BigModelError, match="still training"):
        run.evaluate()
    run.stop().wait()
    assert list(run.evaluate("test")) == ["loss", "accuracy", "precision_macro", "recall_macro", "f1_macro",
                                          "precision_weighted", "recall_weighted", "f1_weighted", "ece"]
    with pytest.raises(BigModelError, match="no 'holdout' split"):
        run.evaluate("holdout")


def test_run_here_turns_an_interrupt_into_a_stop_at_a_step_boundary():
    run = Run(mlp(), "digits", TrainConfig(epochs=100, seed=0), [Slow()])
    threading.Timer(0.3, _thread.interrupt_main).start()  # SIGINT, as the kernel's ■ sends it
    run.run_here()  # must not raise
    assert run.status == "stopped" and 0 < run.step < run.total_steps
    assert run.history[-1]["step"] == run.step


def test_run_here_hands_a_paused_run_to_a_worker_thread():
    run = Run(mlp(), "digits", TrainConfig(epochs=20, seed=0), [Slow()])  # ~2 s: a late timer still lands mid-run
    threading.Timer(0.2, run.pause).start()
    run.run_here(until=lambda: run.paused)
    assert run.alive and run.paused and run.step < run.total_steps  # returned while paused
    held = run.step
    time.sleep(0.2)
    assert run.step == held
    run.resume().wait(timeout=30)
    assert run.status == "completed" and run.step == run.total_steps
    assert run._thread is not None and run._thread is not threading.current_thread()
