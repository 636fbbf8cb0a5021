"""The loop against the hand-written PyTorch loop it replaces, and the ways models can be called."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError, load_dataset
from bigmodel_nb.engine.core.callbacks import Callback
from bigmodel_nb.engine.data import epoch_order


def mlp(seed=0, hidden=64, out=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, out))


def hand_written_losses(model, bundle, *, epochs, batch_size, lr, seed, log_every):
    """The plain loop: same order of samples, Adam, mean loss per logging window."""
    X, y = bundle.train.tensors()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(X) / batch_size)
    losses, window, n, step = [], 0.0, 0, 0
    for epoch in range(epochs):
        order = epoch_order(len(X), seed, epoch)
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            window += loss.item() * len(idx)
            n += len(idx)
            if step % log_every == 0 or step == (epoch + 1) * steps_per_epoch:
                losses.append(window / n)
                window, n = 0.0, 0
    return losses


def test_losses_equal_the_hand_written_loop():
    bundle = load_dataset("digits")
    run = fit(mlp(), bundle, epochs=3, batch_size=32, lr=1e-3, seed=7, log_every=5)
    ours = [r["loss"] for r in run.rows("train")]
    reference = hand_written_losses(mlp(), bundle, epochs=3, batch_size=32, lr=1e-3, seed=7, log_every=5)
    assert len(ours) == len(reference) > 10
    assert ours == pytest.approx(reference, abs=1e-5)
    assert run.status == "completed"


def test_mlp_learns_digits_to_95_percent():
    run = fit(mlp(hidden=128), "digits", epochs=10, seed=0)
    assert run.evaluate("test")["accuracy"] >= 0.95
    val = run.rows("val")
    assert len(val) == 10 and val[-1]["loss"] < val[0]["loss"]
    assert run.best == min(val, key=lambda r: r["loss"])


def test_history_rows_have_the_contract_fields():
    run = fit(mlp(), "digits", epochs=1, seed=0)
    train, val = run.rows("train"), run.rows("val")
    assert {"step", "epoch", "split", "loss", "accuracy", "lr"} <= set(train[0])
    assert {"step", "epoch", "split", "loss", "accuracy"} <= set(val[0])
    assert train[-1]["step"] == run.step == run.total_steps


def test_steps_option_and_val_every():
    run = fit(mlp(), "digits", steps=25, val_every=10, seed=0)
    assert run.step == 25
    assert [r["step"] for r in run.rows("val")] == [10, 20]


def test_regression_on_sine_learns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    run = fit(model, "sine", epochs=30, lr=1e-2, seed=0)
    assert "accuracy" not in run.rows("val")[-1]
    assert run.rows("val")[-1]["loss"] < 0.05 < run.rows("train")[0]["loss"]


class TargetsModel(nn.Module):
    """nanoGPT style: forward(idx, targets=None) -> (logits, loss)."""

    def __init__(self):
        super().__init__()
        self.net = mlp()
        self.calls_with_targets = 0

    def forward(self, x, targets=None):
        logits = self.net(x)
        if targets is None:
            return logits, None
        self.calls_with_targets += 1
        return logits, F.cross_entropy(logits, targets) * 2.0  # a loss the trainer could not guess


def test_model_that_returns_its_own_loss():
    model = TargetsModel()
    run = fit(model, "digits", steps=10, log_every=10, seed=0)
    assert model.calls_with_targets >= 10
    x, y = run.data.train.tensors()
    # The logged loss is the model's own (twice the cross-entropy), not one the trainer made up.
    assert run.rows("train")[0]["loss"] > 2 * 1.5


def test_callbacks_see_every_hook_in_order():
    events = []

    class Recorder(Callback):
        def __getattribute__(self, name):
            if name.startswith("on_"):
                return lambda run, logs: events.append((name, dict(logs)))
            return object.__getattribute__(self, name)

    fit(mlp(), "digits", epochs=2, callbacks=[Recorder()], seed=0)
    names = [e[0] for e in events]
    assert names[0] == "on_train_begin" and names[-1] == "on_train_end"
    assert names.count("on_epoch_begin") == names.count("on_epoch_end") == names.count("on_eval_end") == 2
    steps = [logs for name, logs in events if name == "on_step_end"]
    assert len(steps) == 40 and [s["step"] for s in steps] == list(range(1, 41))
    assert [s["step"] for s in steps if "loss" in s] == [10, 20, 30, 40]  # every 10 steps and each epoch's end


def test_grad_clip_and_optimizers_by_name():
    for name in ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw"):
        run = fit(mlp(), "digits", epochs=1, optimizer=name, grad_clip=1.0, seed=0)
        assert run.status == "completed", name
        assert run.rows("train")[-1]["loss"] < run.rows("train")[0]["loss"], name


def test_unknown_optimizer_and_loss_are_one_sentence():
    with pytest.raises(BigModelError, match="Unknown optimizer 'adamm'.*did you mean 'adam'"):
        fit(mlp(), "digits", epochs=1, optimizer="adamm")
    with pytest.raises(BigModelError, match="Unknown loss 'crossentropyy'.*did you mean 'cross_entropy'"):
        fit(mlp(), "digits", epochs=1, loss="crossentropyy")
