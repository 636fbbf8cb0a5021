"""Fair optimizer comparisons: same start, same batches, two paths that agree, divergence contained."""
import math

import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.compare.optimizers import OptimizerComparison, parse_lrs
from bigmodel_nb.engine.core.callbacks import Callback

NAMES = ["sgd", "momentum", "rmsprop", "adam", "adamw"]


def mlp(dropout=0.0):
    torch.manual_seed(0)
    layers = [nn.Linear(64, 32), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(32, 10)]
    return nn.Sequential(*layers)


def test_together_and_sequential_paths_agree_and_match_plain_training():
    together = OptimizerComparison(mlp(), "digits", NAMES, epochs=2, mode="together").run()
    sequential = OptimizerComparison(mlp(), "digits", NAMES, epochs=2, mode="sequential").run()
    assert together.mode == "together" and sequential.mode == "sequential"
    for name in NAMES:
        a = [r["loss"] for r in together.rows(name)]
        b = [r["loss"] for r in sequential.rows(name)]
        assert len(a) == len(b) > 0 and a == pytest.approx(b, abs=1e-5)
        va = [r["loss"] for r in together.rows(name, "val")]
        assert va == pytest.approx([r["loss"] for r in sequential.rows(name, "val")], abs=1e-5)
    # ... and both equal an ordinary run of that optimizer from the same start on the same batches
    plain = fit(mlp(), "digits", epochs=2, optimizer="momentum", seed=0)
    assert [r["loss"] for r in plain.rows("train")] == pytest.approx(
        [r["loss"] for r in together.rows("momentum")], abs=1e-5)


def test_the_users_model_is_untouched_and_the_start_is_recorded():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = OptimizerComparison(model, "digits", ["sgd", "adam"], epochs=1).run()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.fair["same_initial_weights"] and result.fair["same_batches"]
    assert result.fair["initial_weights_checksum"] == pytest.approx(
        float(sum(v.double().sum() for v in before.values())))


def test_a_diverging_optimizer_stops_alone():
    for mode in ("together", "sequential"):
        result = OptimizerComparison(mlp(), "digits", ["sgd", "adam"], lr="sgd=1e4,adam=1e-3", epochs=3,
                                     mode=mode).run()
        assert result.results["sgd"]["diverged"] and not result.results["adam"]["diverged"], mode
        assert result.results["adam"]["val_accuracy"] > 0.7
        assert len(result.rows("adam", "val")) == 3


def test_dropout_falls_back_to_sequential_with_a_note():
    result = OptimizerComparison(mlp(dropout=0.2), "digits", ["sgd", "adam"], epochs=1).run()
    assert result.mode == "sequential" and "dropout" in result.notes[0]
    with pytest.raises(BigModelError, match="cannot train together"):
        OptimizerComparison(mlp(dropout=0.2), "digits", ["sgd"], epochs=1, mode="together").run()


def test_stop_ends_the_comparison_and_keeps_the_curves():
    class StopAfterFirst(Callback):  # a subscriber to the comparison's bus
        def on_step_end(self, comparison, row):
            comparison.stop()

    cmp = OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=50, callbacks=[StopAfterFirst()])
    result = cmp.run()
    assert result.status == "stopped" and 0 < cmp.step < cmp.total_steps and result.history


def test_target_and_table():
    result = OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=3, target=1.5).run()
    assert result.results["adam"]["steps_to_target"] is not None
    table = result.table()
    assert list(table.index) == ["sgd", "adam"]
    assert {"final_loss", "val_loss", "val_accuracy", "time_s", "diverged", "best_epoch"} <= set(table.columns)
    # Trained together, the copies share one batched step: no per-optimizer time, the total said once
    assert result.mode == "together" and all(r["time_s"] is None for r in result.results.values())
    assert any("trained together in" in n and "no time per optimizer" in n for n in result.notes)
    alone = OptimizerComparison(mlp(), "digits", ["sgd", "adam"], epochs=1, mode="sequential").run()
    times = [r["time_s"] for r in alone.results.values()]
    assert all(t > 0 for t in times) and times[0] != times[1]


def test_lr_options_and_bad_input():
    assert parse_lrs("0.1", ["sgd", "adam"]) == {"sgd": 0.1, "adam": 0.1}
    assert parse_lrs("sgd=0.5", ["sgd", "adam"]) == {"sgd": 0.5, "adam": 1e-3}
    with pytest.raises(BigModelError, match="pairs like sgd=0.1,adam=1e-3; got 'sgd=fast'"):
        parse_lrs("sgd=fast", ["sgd"])
    with pytest.raises(BigModelError, match="'rmsprop', which is not among the compared optimizers"):
        parse_lrs("rmsprop=0.1", ["sgd"])
    with pytest.raises(BigModelError, match="Unknown optimizer 'adamm'.*did you mean 'adam'"):
        OptimizerComparison(mlp(), "digits", "sgd,adamm")


def test_lr_auto_runs_a_range_test_per_optimizer():
    result = OptimizerComparison(mlp(), "digits", ["sgd", "adam"], lr="auto", epochs=1).run()
    assert "LR range test" in result.notes[0]
    assert all(math.isfinite(r["lr"]) and r["lr"] > 0 for r in result.results.values())


class Residual(nn.Module):
    """Not an nn.Sequential: trains together through the vmap path when asked to."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.hidden, self.out = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.tanh(self.hidden(h)))


def test_any_architecture_trains_together_through_vmap_and_agrees():
    together = OptimizerComparison(Residual(), "digits", ["sgd", "adam"], epochs=1, mode="together").run()
    sequential = OptimizerComparison(Residual(), "digits", ["sgd", "adam"], epochs=1, mode="sequential").run()
    assert together.mode == "together"
    for name in ("sgd", "adam"):
        assert [r["loss"] for r in together.rows(name)] == pytest.approx(
            [r["loss"] for r in sequential.rows(name)], abs=1e-5)
    # left to choose on a CPU, it trains them one after another (faster there) and says why
    auto = OptimizerComparison(Residual(), "digits", ["sgd", "adam"], epochs=1).run()
    assert auto.mode == "sequential" and "faster" in auto.notes[0]
