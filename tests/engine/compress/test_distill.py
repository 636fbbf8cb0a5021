"""Distillation: the loss is Hinton's formula, and the teacher never learns."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.engine.compress.distill import Distiller, distillation_loss


def mlp(hidden, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_distillation_loss_is_the_hinton_formula():
    torch.manual_seed(0)
    zs, zt, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    T, a = 3.0, 0.6
    pt, ps = F.softmax(zt / T, -1), F.softmax(zs / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean()
    ce = -F.log_softmax(zs, -1)[torch.arange(6), y].mean()
    assert distillation_loss(zs, zt, y, T, a).item() == pytest.approx((a * T * T * kl + (1 - a) * ce).item(), rel=1e-5)
    # sequence logits [B, T, V] average over tokens
    zs3, zt3, y3 = zs.view(2, 3, 5), zt.view(2, 3, 5), y.view(2, 3)
    assert distillation_loss(zs3, zt3, y3, T, a).item() == pytest.approx(distillation_loss(zs, zt, y, T, a).item())


def test_the_teacher_stays_frozen_and_out_of_the_optimizer():
    student, teacher = mlp(16), mlp(32, seed=1)
    d = Distiller(student, teacher)
    assert {id(p) for p in d.parameters()} == {id(p) for p in student.parameters()}
    d.train()
    assert not teacher.training
    logits, loss = d(torch.randn(4, 64), torch.tensor([1, 2, 3, 4]))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
