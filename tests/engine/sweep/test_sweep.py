"""Sweeps on Optuna: the space typed as ranges and choices (sampled within bounds, bad ones refused in one
sentence), the best trial is the best finished one, a stored SQLite study is continued, median pruning
stops a diverging trial early, and stopping a trial's run ends the sweep with the finished trials kept."""
import math

import optuna
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit, sweep
from bigmodel_nb.engine import BigModelError, Callback
from bigmodel_nb.engine.sweep import Param, parse_space, parse_value, run_sweep, sample
from bigmodel_nb.engine.tracking import collect


def build(hidden=32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_ranges_and_choices_are_sampled_within_their_bounds():
    space, fixed = parse_space({"lr": "1e-4..1e-1:log", "width": "16..256", "drop": "0..0.5", "act": "relu,gelu",
                                "n": "1,2,3", "epochs": "3"})
    assert fixed == {"epochs": 3} and space["width"].integer and space["lr"].log and not space["drop"].integer
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    study.optimize(lambda t: seen.append(sample(space, t)) or 0.0, n_trials=60)
    assert all(1e-4 <= s["lr"] <= 1e-1 and 16 <= s["width"] <= 256 and isinstance(s["width"], int) and
               0 <= s["drop"] <= 0.5 and s["act"] in ("relu", "gelu") and s["n"] in (1, 2, 3) for s in seen)
    assert len({s["act"] for s in seen}) == 2 and max(s["width"] for s in seen) > 128  # the whole range is used
    logs = sorted(math.log10(s["lr"]) for s in seen)
    assert logs[len(logs) // 2] == pytest.approx(-2.5, abs=0.6)  # uniform in log space


@pytest.mark.parametrize("text, message", [
    ("1..0.1", r"--lr 1..0.1 is reversed; give the low end first, e.g. --lr 0.1..1"),
    ("3..3", r"--lr 3..3 is empty"),
    ("0..1:log", r"a log range must stay above zero \(it starts at 0\)"),
    ("-1..1:log", r"a log range must stay above zero"),
    ("1..2:ln", r"the only scale is :log"),
    ("a..b", r"the ends of a range are numbers"),
    ("16,,32", r"has an empty choice"),
    ("16,16", r"lists a value twice"),
])
def test_bad_spaces_are_one_sentence(text, message):
    with pytest.raises(BigModelError, match=message):
        parse_value("lr", text)


@pytest.fixture(scope="module")
def small_sweep():
    return sweep(build, "digits", {"lr": "1e-3..3e-2:log", "hidden": [16, 64]}, trials=5, epochs=2, seed=0,
                 show=False)


def test_the_best_trial_is_the_best_finished_one_and_every_trial_is_a_listed_run(small_sweep):
    s = small_sweep
    finished = [t for t in s.trials if t["state"] == "complete"]
    assert len(s.trials) == 5 and finished
    assert s.best["value"] == min(t["value"] for t in finished)
    assert s.best["run"].best["loss"] == s.best["value"] and s.best["run"].kind == "sweep"
    assert s.best["params"] == {k: next(t for t in finished if t["number"] == s.best["number"])[k]
                                for k in ("lr", "hidden")}
    listed = {r.name for r in collect() if r.kind == "sweep"}
    assert {f"trial_{t['number']}" for t in s.trials} <= listed
    assert list(s.table().columns[:5]) == ["number", "lr", "hidden", "value", "state"]


def test_a_second_sweep_continues_the_stored_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    space = {"lr": "1e-3..1e-2:log"}
    sweep(build, "digits", space, trials=2, steps=10, storage=storage, study="lr", show=False)
    again = sweep(build, "digits", space, trials=2, steps=10, storage=storage, study="lr", show=False)
    assert len(optuna.load_study(study_name="lr", storage=storage).trials) == 4
    assert [t["number"] for t in again.trials] == [0, 1, 2, 3]  # the table shows the whole study
    with pytest.raises(BigModelError, match=r"The stored study 'lr' searched other parameters \(hidden, lr differ"):
        sweep(build, "digits", {"lr": "1e-3..1e-1", "hidden": [8, 16]}, trials=1, steps=10, storage=storage,
              study="lr", show=False)
    with pytest.raises(BigModelError, match=r"'lr' minimizes its value but this sweep would maximize it"):
        sweep(build, "digits", space, trials=1, steps=10, storage=storage, study="lr", metric="val_accuracy",
              show=False)
    with pytest.raises(BigModelError, match=r"Cannot open the study storage 'sqlite:////proc/nope/x.db'"):
        sweep(build, "digits", space, trials=1, storage="sqlite:////proc/nope/x.db", show=False)


def test_median_pruning_stops_a_diverging_learning_rate_early(tmp_path):
    """Three sane learning rates first (the pruner's start-up trials), then one that diverges (SGD, lr 5)."""
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=storage)
    for lr in (0.05, 0.1, 0.2, 5.0):
        study.enqueue_trial({"lr": lr})
    result = sweep(build, "digits", {"lr": "1e-3..10:log"}, trials=4, epochs=5, optimizer="sgd", grad_clip=None,
                   storage=storage, study="p", show=False)
    states = [t["state"] for t in result.trials]
    assert states[:3] == ["complete"] * 3 and states[3] in ("pruned", "fail"), result.trials
    diverged = result.trials[3]
    assert diverged["steps"] < result.trials[0]["steps"] == 100  # stopped at its first validations


class StopAt(Callback):
    """Presses Stop on the run of trial `trial` at step `step` (as the dashboard's button does)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, run, logs):
        if logs["step"] == self.step:
            run.stop()


def test_stopping_a_trial_ends_the_sweep_and_keeps_the_finished_trials():
    def train_trial(params, callbacks, name):
        extra = [StopAt(5)] if name == "trial_2" else []
        return fit(build(), "digits", lr=params["lr"], epochs=1, callbacks=[*callbacks, *extra], name=name,
                   kind="sweep", monitor="val_loss")

    result = run_sweep(train_trial, {"lr": Param("lr", 1e-3, 1e-2, log=True)}, trials=10, prune="none")
    assert result.status == "stopped" and len(result.trials) == 3
    assert [t["state"] for t in result.trials] == ["complete", "complete", "stopped"]  # Optuna: pruned
    assert result.best["number"] in (0, 1)


def test_bad_sweeps_are_one_sentence():
    with pytest.raises(BigModelError, match=r"--trials must be a whole number ≥ 1, not 0"):
        sweep(build, "digits", {"lr": "1e-3..1e-2"}, trials=0, show=False)
    with pytest.raises(BigModelError, match=r"'width' is neither a training option nor an argument of build\(\)"):
        sweep(build, "digits", {"width": "1,2"}, trials=1, show=False)
    with pytest.raises(BigModelError, match=r"Nothing to search"):
        sweep(build, "digits", {"lr": "1e-3"}, trials=1, show=False)
    with pytest.raises(BigModelError, match=r"Unknown --prune 'mean'"):
        sweep(build, "digits", {"lr": "1e-3..1e-2"}, trials=1, prune="mean", show=False)
    with pytest.raises(BigModelError, match=r"--study names a study in a database; add --storage"):
        sweep(build, "digits", {"lr": "1e-3..1e-2"}, trials=1, study="x", show=False)
