"""The live sweep view in a kernel (static mode: HTML and figures through display handles): a finished trial
updates the status line, and a sweep that raises part-way leaves a status saying it stopped."""
import pytest
import torch
from IPython.utils.capture import capture_output
from torch import nn

from bigmodel_nb.api import fit, sweep_with
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.sweep import parse_space


def statuses(captured) -> list[str]:
    """The status line's text in every update, in order (the first display is HTML only)."""
    return [o.data["text/plain"] for o in captured.outputs
            if "bmnb-sweep-status" in o.data.get("text/html", "") and "text/plain" in o.data]


def test_a_sweep_that_raises_in_its_second_trial_says_it_stopped_after_one(shell, monkeypatch):
    monkeypatch.setenv("BIGMODEL_NB_UI", "static")
    space, _ = parse_space({"lr": "1e-3,1e-2"})

    def train_trial(params, callbacks, name, quiet):
        if name != "trial_0":
            raise BigModelError("the data went away")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
        return fit(model, "digits", steps=3, lr=params["lr"], callbacks=callbacks, name=name)

    with capture_output() as captured, pytest.raises(BigModelError, match="the data went away"):
        sweep_with(train_trial, space, trials=3, seed=0)
    lines = statuses(captured)
    assert len(lines) == 2, lines
    assert lines[0].startswith("trial 0 complete: val_loss ") and lines[0].endswith(" · 1 of 3 trials")
    assert lines[1] == "sweep stopped after 1 of 3 trials"
