"""Optimizers and schedules by name, as the trainer applies them."""
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.core.optim import SCHEDULES, make_optimizer, make_schedule


def lrs(run):
    return [r["lr"] for r in run.rows("train")]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_momentum_and_nesterov_are_sgd_with_the_right_flags():
    params = [nn.Parameter(torch.zeros(2))]
    assert make_optimizer("momentum", params).param_groups[0]["momentum"] == 0.9
    nesterov = make_optimizer("nesterov", params, lr=0.5).param_groups[0]
    assert nesterov["nesterov"] and nesterov["lr"] == 0.5


def test_cosine_decays_to_zero_and_warmup_rises_first():
    run = fit(model(), "digits", epochs=5, lr=0.01, schedule="warmup-cosine", warmup=20, log_every=1, seed=0)
    lr = lrs(run)
    assert lr[0] == pytest.approx(0.01 / 20) and max(lr) == pytest.approx(0.01, rel=1e-3)
    assert lr.index(max(lr)) in (19, 20) and lr[-1] < 0.001


def test_onecycle_peaks_at_the_given_lr_then_anneals():
    run = fit(model(), "digits", epochs=5, lr=0.01, schedule="onecycle", log_every=1, seed=0)
    lr = lrs(run)
    peak = lr.index(max(lr))
    assert max(lr) == pytest.approx(0.01, rel=0.02) and 0.25 < peak / len(lr) < 0.35
    assert lr[0] < 0.001 and lr[-1] < 1e-4


def test_step_schedule_divides_by_ten_twice():
    run = fit(model(), "digits", epochs=10, lr=0.01, optimizer="sgd", schedule="step", log_every=1, seed=0)
    assert sorted(set(round(x, 8) for x in lrs(run)), reverse=True) == [0.01, 0.001, 0.0001]


def test_plateau_lowers_the_lr_when_validation_stops_improving():
    torch.manual_seed(0)
    X, y = torch.randn(600, 64), torch.randint(0, 10, (600,))  # random labels: validation cannot improve
    run = fit(model(), (X, y), epochs=12, lr=0.01, schedule="plateau", seed=0)
    assert lrs(run)[0] == pytest.approx(0.01) and min(lrs(run)) <= 0.001


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(BigModelError, match="Unknown schedule 'cosin'.*onecycle.*did you mean 'cosine'"):
        fit(model(), "digits", epochs=1, schedule="cosin")
    assert {"onecycle", "plateau"} <= set(SCHEDULES)


def test_a_callable_schedule_is_used_as_given():
    opt = torch.optim.SGD(model().parameters(), lr=1.0)
    sched = make_schedule(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5), opt, 10)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5


def test_adam_and_adamw_use_the_fused_kernel_on_cuda_only(monkeypatch):
    from bigmodel_nb.engine.core import optim

    params = [torch.nn.Parameter(torch.randn(3))]
    assert not make_optimizer("adamw", params).defaults.get("fused")  # CPU: the default (foreach) path
    monkeypatch.setattr(optim, "on_cuda", lambda params: True)  # as if on a GPU; fused runs on CPU too
    assert make_optimizer("adamw", params).defaults["fused"] is True
    assert make_optimizer("adam", params).defaults["fused"] is True
    assert not make_optimizer("sgd", params).defaults.get("fused")


def test_constant_is_no_scheduler_and_constant_with_warmup_rises_linearly():
    opt = torch.optim.SGD(model().parameters(), lr=0.1)
    assert make_schedule("constant", opt, 100) is None and make_schedule(None, opt, 100) is None
    run = fit(model(), "digits", steps=30, lr=0.01, warmup=10, log_every=1, seed=0)
    lr = lrs(run)
    assert lr[:10] == pytest.approx([0.01 * (k + 1) / 10 for k in range(10)]) and lr[10:] == pytest.approx([0.01] * 20)
    plain = fit(model(), "digits", steps=5, lr=0.01, log_every=1, seed=0)
    assert plain.schedule is None and lrs(plain) == [0.01] * 5
