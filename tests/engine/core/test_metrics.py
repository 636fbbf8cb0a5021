"""The metrics seam: batch sums on the device equal the whole-set numbers, for one model, for stacked
copies, and summed over workers."""
import torch
import torch.nn.functional as F

from bigmodel_nb.engine.core.metrics import Metrics


def batches(n=300, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits, y = torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)
    return logits, y, [(logits[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_sums_of_uneven_batches_equal_the_whole_set():
    logits, y, parts = batches()
    metrics = Metrics("classification", "cpu")
    for lo, yy in parts:
        metrics.update(F.cross_entropy(lo, yy), lo, yy)
    row = metrics.compute()
    assert abs(row["loss"] - F.cross_entropy(logits, y).item()) < 1e-6
    assert row["accuracy"] == (logits.argmax(1) == y).sum().item() / 300
    assert metrics.samples == 300 and set(row) == {"loss", "accuracy"}


def test_regression_has_only_the_loss_and_tokens_count_one_by_one():
    metrics = Metrics("regression", "cpu")
    metrics.update(torch.tensor(2.0), torch.zeros(4, 1), torch.zeros(4, 1))
    assert metrics.compute() == {"loss": 2.0}
    tokens = Metrics("classification", "cpu")  # a [B, T, V] output: accuracy over every token
    out, y = torch.zeros(2, 3, 5), torch.tensor([[0, 1, 0], [0, 0, 0]])
    tokens.update(torch.tensor(1.0), out, y)
    assert tokens.compute()["accuracy"] == 5 / 6


def test_stacked_copies_equal_one_metrics_per_copy():
    logits, y, parts = batches()
    stacked = torch.stack([logits, -logits, logits * 2])  # [K, N, C]
    together = Metrics("classification", "cpu", copies=3)
    singles = [Metrics("classification", "cpu") for _ in range(3)]
    for i in range(0, 300, 64):
        out, yy = stacked[:, i:i + 64], y[i:i + 64]
        losses = torch.stack([F.cross_entropy(o, yy) for o in out])
        together.update(losses, out, yy)
        for metrics, o, loss in zip(singles, out, losses):
            metrics.update(loss, o, yy)
    for row, metrics in zip(together.compute(), singles):
        single = metrics.compute()
        assert abs(row["loss"] - single["loss"]) < 1e-6 and row["accuracy"] == single["accuracy"]


def test_summed_sums_are_what_workers_all_reduce():
    logits, y, parts = batches()
    whole, a, b = (Metrics("classification", "cpu") for _ in range(3))
    for i, (lo, yy) in enumerate(parts):
        loss = F.cross_entropy(lo, yy)
        whole.update(loss, lo, yy)
        (a if i % 2 else b).update(loss, lo, yy)
    merged = whole.compute(a.sums() + b.sums())  # what dist.all_reduce(sums) gives every worker
    assert merged == whole.compute() or all(abs(merged[k] - whole.compute()[k]) < 1e-6 for k in merged)


def test_the_sample_count_is_read_from_summed_sums():
    a, b = Metrics("classification", "cpu"), Metrics("classification", "cpu")
    logits, y, parts = batches()
    a.update(F.cross_entropy(*parts[0]), *parts[0])
    b.update(F.cross_entropy(*parts[1]), *parts[1])
    assert a.samples_in(a.sums() + b.sums()) == 128 and Metrics("regression", "cpu").samples_in(
        Metrics("regression", "cpu").sums()) == 0
