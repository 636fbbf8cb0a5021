"""--early-stop: stops after N validations without improvement, ends with the best validation's weights
(whichever way the run ends), survives --checkpoint/--resume, and refuses bad input in one sentence."""
import pytest
import torch
from torch import nn

from bigmodel_nb.engine import BigModelError, Run, TrainConfig, load_dataset
from bigmodel_nb.engine.core.early_stop import BestValidation


def wide():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_stops_after_patience_and_the_model_evaluates_to_exactly_the_best_row(digits):
    run = Run(wide(), digits, TrainConfig(epochs=60, lr=3e-3, seed=0, early_stop=3)).run_here()
    vals = run.rows("val")
    best = min(vals, key=lambda r: r["loss"])
    assert run.status == "completed" and run.step < run.total_steps  # it stopped early
    assert run.best == best and vals[-1]["step"] > best["step"]
    assert len([r for r in vals if r["step"] > best["step"]]) == 3  # exactly patience validations after the best
    assert run.evaluate("val")["loss"] == best["loss"]  # the restored weights, not the last ones
    assert run.evaluate("val")["loss"] != vals[-1]["loss"]
    assert any(n.startswith(f"early stop: stopped at step {vals[-1]['step']} after 3 validations") and
               f"(step {best['step']}, val_loss" in n for n in run.notes), run.notes


def test_monitor_accuracy_keeps_the_highest_and_min_delta_sets_what_counts(digits):
    run = Run(wide(), digits, TrainConfig(epochs=30, lr=3e-3, seed=0, early_stop=2, monitor="val_accuracy",
                                          val_every=5)).run_here()
    vals = run.rows("val")
    first_max = max(vals, key=lambda r: (r["accuracy"], -r["step"]))  # ties: the earlier one stays the best
    assert run.best["step"] == first_max["step"] and run.evaluate("val")["accuracy"] == first_max["accuracy"]
    # A delta no change can reach: only the first validation counts, so it stops at the second one.
    strict = Run(wide(), digits, TrainConfig(epochs=30, seed=0, early_stop=1, min_delta=5.0)).run_here()
    assert [r["step"] for r in strict.rows("val")] == [20, 40] and strict.best["step"] == 20


def test_a_run_that_ends_without_stopping_or_is_stopped_still_holds_the_best_weights(digits, slow):
    """Keras restores the best weights only when it stopped early (keras #12511): here every ending does."""
    run = Run(wide(), digits, TrainConfig(epochs=6, lr=0.05, seed=0, early_stop=50)).run_here()
    assert run.step == run.total_steps
    assert run.evaluate("val")["loss"] == min(r["loss"] for r in run.rows("val"))
    stopped = Run(wide(), digits, TrainConfig(epochs=60, seed=0, early_stop=50, val_every=5)).start([slow])
    while len(stopped.rows("val")) < 3:
        stopped.wait(timeout=0.05)
    stopped.stop().wait()
    assert stopped.status == "stopped"
    assert stopped.evaluate("val")["loss"] == stopped.best["loss"] == min(r["loss"] for r in stopped.rows("val"))


def test_checkpoint_and_resume_keep_the_best_weights_and_the_count(digits, tmp_path):
    config = dict(lr=3e-3, seed=0, early_stop=3)
    whole = Run(wide(), digits, TrainConfig(epochs=60, **config)).run_here()
    first = Run(wide(), digits, TrainConfig(epochs=4, checkpoint=str(tmp_path), **config)).run_here()
    resumed = Run(wide(), digits, TrainConfig(epochs=60, resume=True, checkpoint=str(tmp_path), **config))
    assert resumed.step == 80 and resumed.validation.weights is not None  # the best weights came back too
    resumed.run_here()
    assert resumed.step == whole.step > 80 and resumed.best["step"] == whole.best["step"] > 0
    assert resumed.evaluate("val")["loss"] == pytest.approx(whole.best["loss"], rel=1e-6)
    assert first.step == 80


def test_best_validation_tracks_and_compares():
    best = BestValidation("val_loss", patience=2, min_delta=0.1, task="classification")
    model = nn.Linear(2, 2)
    assert not best.update({"step": 1, "loss": 1.0}, model)
    assert not best.update({"step": 2, "loss": 0.95}, model)  # within min_delta: no improvement
    assert best.best["step"] == 1 and best.waited == 1
    assert not best.update({"step": 3, "loss": 0.5}, model) and best.waited == 0
    assert not best.update({"step": 4, "loss": 0.6}, model)
    assert best.update({"step": 5, "loss": 0.7}, model) and best.stopped_at == 5
    assert BestValidation("val_accuracy", task="classification").lower is False


def test_bad_input_is_one_sentence(digits, mlp):
    with pytest.raises(BigModelError, match=r"Unknown --monitor 'val_f1'; choose one of: val_accuracy, val_loss"):
        Run(mlp(), digits, TrainConfig(monitor="val_f1"))
    with pytest.raises(BigModelError, match=r"did you mean 'val_accuracy'"):
        Run(mlp(), digits, TrainConfig(monitor="accuracy"))
    with pytest.raises(BigModelError, match=r"Unknown --monitor 'val_accuracy'; choose one of: val_loss"):
        Run(nn.Linear(2, 1), (torch.randn(40, 2), torch.randn(40)), TrainConfig(monitor="val_accuracy"))
    with pytest.raises(BigModelError, match="--early-stop must be a whole number ≥ 1"):
        Run(mlp(), digits, TrainConfig(early_stop=0))
    with pytest.raises(BigModelError, match="--min-delta must be ≥ 0"):
        Run(mlp(), digits, TrainConfig(early_stop=2, min_delta=-0.1))
    with pytest.raises(BigModelError, match="--early-stop watches the validation split, and 'data' has none"):
        Run(nn.Linear(2, 1), {"train": (torch.randn(40, 2), torch.randn(40))}, TrainConfig(early_stop=2))
