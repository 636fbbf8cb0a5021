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


def test_the_engine_loss_on_a_digits_batch_equals_the_formula_by_hand():
    """On one real batch: what `Distiller` trains on is α T² KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) CE."""
    from bigmodel_nb.engine import load_dataset

    x, y = next(iter(load_dataset("digits").train.batches(32, torch.device("cpu"))))
    student, teacher = mlp(16), mlp(64, seed=1).eval()
    T, a = 4.0, 0.5
    _, loss = Distiller(student, teacher, T, a)(x, y)
    with torch.no_grad():
        zs, zt = student(x), teacher(x)
    pt, log_ps = torch.softmax(zt / T, -1), torch.log_softmax(zs / T, -1)
    kl = (pt * (pt.log() - log_ps)).sum(-1).mean()  # KL(p_t ‖ p_s), averaged over the batch
    ce = -torch.log_softmax(zs, -1)[torch.arange(len(y)), y].mean()
    assert loss.item() == pytest.approx((a * T ** 2 * kl + (1 - a) * ce).item(), rel=1e-5)


def test_after_distillation_the_teacher_is_unchanged_with_no_gradients():
    from bigmodel_nb.engine.compress import Distill, compress

    teacher = mlp(64, seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    flags = [p.requires_grad for p in teacher.parameters()]
    report = compress(teacher, "digits", steps=[Distill(mlp(16), epochs=1)], seed=0, baseline=False,
                      latency_repeats=1, latency_batch=8)
    used = report.runs["distill → Sequential"].model.teacher  # the (copied) teacher the student learned from
    assert all(p.grad is None for p in used.parameters()) and not used.training
    assert all(torch.equal(v, before[k]) for k, v in used.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert [p.requires_grad for p in teacher.parameters()] == flags  # the user's teacher is not frozen in place


@pytest.fixture(scope="module")
def tutorial_teacher():
    """The teacher of notebooks/05_compression.ipynb: 64-512-512-10 on digits, 8 epochs at lr 1e-3, seed 0."""
    from bigmodel_nb.api import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    fit(model, "digits", epochs=8, lr=1e-3, seed=0)
    yield model.eval()
    torch.set_num_threads(threads)


def test_with_the_defaults_distillation_matches_or_beats_the_student_alone(tutorial_teacher):
    """The defaults (T=4, α=0.5, lr 3e-2, 10 epochs) on the tutorial's task, over three seeded students."""
    from bigmodel_nb.engine.compress import Distill, compress

    distilled, alone = [], []
    for seed in (1, 2, 3):
        report = compress(tutorial_teacher, "digits", steps=[Distill(mlp(16, seed=seed))], seed=seed,
                          latency_repeats=1, latency_batch=8)
        distilled.append(report.stages[1]["accuracy"])
        alone.append(report.baseline["accuracy"])
        assert report.runs["distill → Sequential"].config.epochs == 10
        assert report.runs["distill → Sequential"].config.lr == 3e-2
    assert sum(distilled) >= sum(alone), (distilled, alone)
