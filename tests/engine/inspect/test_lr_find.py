"""The LR range test: a real sweep, a usable suggestion, and the model left as it was."""
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.inspect.lr_find import lr_find


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))


def test_sweep_restores_weights_mode_and_rng():
    m = model().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_find(m, "digits", steps=60)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not m.training and torch.equal(rng, torch.get_rng_state())
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) <= 60


def test_lrs_rise_exponentially_and_the_sweep_stops_when_the_loss_explodes():
    result = lr_find(model(), "digits", start_lr=1e-6, end_lr=100.0, steps=100)
    ratios = torch.tensor(result.lrs[1:]) / torch.tensor(result.lrs[:-1])
    assert torch.allclose(ratios, ratios[0]) and ratios[0] == pytest.approx((1e8) ** (1 / 99))
    assert result.stopped_early and result.lrs[-1] < 100.0


def test_the_suggestion_trains_well():
    result = lr_find(model(), "digits", optimizer="adam")
    assert 1e-4 < result.suggestion < result.min_loss_lr < 10
    run = fit(model(), "digits", epochs=5, lr=result.suggestion, seed=0)
    assert run.evaluate("test")["accuracy"] > 0.93


def test_bad_ranges_are_one_sentence():
    with pytest.raises(BigModelError, match="0 < start_lr < end_lr"):
        lr_find(model(), "digits", start_lr=1.0, end_lr=0.1)
    with pytest.raises(BigModelError, match="at least 10 steps"):
        lr_find(model(), "digits", steps=3)
