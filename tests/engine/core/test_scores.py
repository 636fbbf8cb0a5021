"""Scores on a split (torchmetrics on the device) against scikit-learn, on data each test owns and splits
itself: classification (multi-class and one-logit binary), regression and a language model."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from torch import nn

from bigmodel_nb.engine import BigModelError, Run, TrainConfig, as_bundle
from bigmodel_nb.engine.core.scores import score


def own_splits(X, y, seed=0):
    """train / val / test (60/20/20) drawn by the test, standardised on train."""
    order = np.random.default_rng(seed).permutation(len(X))
    X = ((X - X[order[: int(0.6 * len(X))]].mean(0)) / (X[order[: int(0.6 * len(X))]].std(0) + 1e-8))
    cut = [int(0.6 * len(X)), int(0.8 * len(X))]
    parts = np.split(order, cut)
    return {name: (X[p].astype(np.float32), y[p]) for name, p in zip(("train", "val", "test"), parts)}


@pytest.fixture(scope="module")
def wine_run():
    X, y = load_wine(return_X_y=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))
    return Run(model, own_splits(X, y), TrainConfig(epochs=2, lr=3e-3, seed=0, batch_size=16)).run_here()


def test_classification_metrics_equal_scikit_learn(wine_run):
    """Two epochs only, so the model still makes mistakes in every class and the averages differ."""
    X, y = wine_run.data.test.tensors()
    with torch.no_grad():
        logits = wine_run.model(X)
    pred, y = logits.argmax(1).numpy(), y.numpy()
    s = score(wine_run.model, wine_run.data, "test", batch_size=7)  # several batches: states accumulate
    m = s.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["accuracy"] < 1.0  # not a trivial agreement
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        assert (m[f"precision_{average}"], m[f"recall_{average}"], m[f"f1_{average}"]) == \
            pytest.approx((p, r, f), abs=1e-6)
    p, r, f, support = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    for name, ref in (("precision", p), ("recall", r), ("f1", f)):
        np.testing.assert_allclose(s.per_class[name].numpy(), ref, atol=1e-6)
    np.testing.assert_array_equal(s.confusion.numpy(), skm.confusion_matrix(y, pred))
    assert s.confusion.sum() == len(y) and s.confusion.sum(1).tolist() == support.tolist()
    assert s.confusion.trace() / s.confusion.sum() == pytest.approx(m["accuracy"])
    assert m["loss"] == pytest.approx(F.cross_entropy(logits, torch.as_tensor(y)).item(), rel=1e-6)
    # ECE: Σ_bins |bin| / N · |accuracy(bin) − confidence(bin)|, 15 equal-width bins of the top probability
    conf = torch.softmax(logits, 1).max(1).values.double()
    bins = torch.clamp((conf * 15).floor().long(), max=14)
    hit = torch.as_tensor(pred == y).double()
    ece = sum((bins == b).sum() / len(y) * abs(hit[bins == b].mean() - conf[bins == b].mean())
              for b in range(15) if (bins == b).any())
    assert m["ece"] == pytest.approx(float(ece), abs=1e-6)


def test_per_sample_records_point_at_their_samples(wine_run):
    X, y = wine_run.data.test.tensors()
    s = score(wine_run.model, wine_run.data, "test")
    with torch.no_grad():
        per = F.cross_entropy(wine_run.model(X), y, reduction="none")
        probs = torch.softmax(wine_run.model(X), 1)
    torch.testing.assert_close(s.losses, per)
    torch.testing.assert_close(s.predicted, probs.argmax(1))
    torch.testing.assert_close(s.probability, probs.max(1).values)
    torch.testing.assert_close(s.true_probability, probs[torch.arange(len(y)), y])


def test_run_evaluate_is_the_scores_dict_and_validation_loss_exactly(wine_run):
    val = wine_run.rows("val")[-1]
    metrics = wine_run.evaluate("val")
    assert metrics["loss"] == val["loss"] and metrics["accuracy"] == val["accuracy"]  # exactly: the same sums
    assert metrics == score(wine_run.model, wine_run.data, "val", batch_size=256).metrics
    assert list(wine_run.evaluate("test", metrics=["f1_macro", "accuracy"])) == ["accuracy", "f1_macro"]


def test_a_subset_of_metrics_is_the_same_numbers_computed_alone(wine_run):
    """metrics= builds only those torchmetrics (and per_class=False no per-class ones): the values do not move."""
    every = score(wine_run.model, wine_run.data, "test", batch_size=7)
    for names in (["f1_macro", "accuracy"], ["recall_weighted"], ["ece", "precision_macro"], ["loss"]):
        alone = score(wine_run.model, wine_run.data, "test", batch_size=7, metrics=names, per_class=False)
        assert alone.metrics == {k: v for k, v in every.metrics.items() if k in names}
        assert alone.confusion is None and alone.per_class == {}
    kept = score(wine_run.model, wine_run.data, "test", batch_size=7, metrics=["f1_macro"])
    assert torch.equal(kept.confusion, every.confusion) and set(kept.per_class) == {"precision", "recall", "f1"}


def test_one_logit_binary_classification_equals_scikit_learn():
    X, y = load_breast_cancer(return_X_y=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 8), nn.ReLU(), nn.Linear(8, 1))
    run = Run(model, own_splits(X, y.astype(np.float32)), TrainConfig(epochs=1, lr=1e-3, seed=0, loss="bce"))
    run.run_here()
    Xt, yt = run.data.test.tensors()
    with torch.no_grad():
        logit = run.model(Xt).squeeze(1)
    pred = (logit > 0).long().numpy()
    m = run.evaluate("test")
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(yt.numpy(), pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(yt.numpy(), pred, average="macro"), abs=1e-6)
    assert m["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logit, yt.float()).item(), rel=1e-5)


def test_regression_metrics_equal_scikit_learn():
    X, y = load_diabetes(return_X_y=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    data = own_splits(X, ((y - y.mean()) / y.std()).astype(np.float32))
    run = Run(model, data, TrainConfig(epochs=20, lr=3e-3, seed=0, batch_size=32)).run_here()
    Xt, yt = run.data.test.tensors()
    with torch.no_grad():
        out = run.model(Xt).squeeze(1).numpy()
    s = score(run.model, run.data, "test", batch_size=13)
    assert s.metrics["mae"] == pytest.approx(skm.mean_absolute_error(yt, out), rel=1e-5)
    assert s.metrics["rmse"] == pytest.approx(skm.root_mean_squared_error(yt, out), rel=1e-5)
    assert s.metrics["r2"] == pytest.approx(skm.r2_score(yt, out), abs=1e-5)
    assert 0.2 < s.metrics["r2"] < 1  # it learnt something
    torch.testing.assert_close(s.losses, torch.as_tensor((out - yt.numpy()) ** 2))


def test_language_model_perplexity_and_bits_per_character():
    from bigmodel_nb.models import GPT, GPTConfig

    torch.manual_seed(0)
    text = "abcd" * 400
    ids = torch.tensor([ord(c) - ord("a") for c in text])
    windows = ids.unfold(0, 17, 8)
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    data = as_bundle({"train": (x[:150], y[:150]), "test": (x[150:], y[150:])}, task="language-model")
    data.vocab = list("abcd")
    model = GPT(GPTConfig(vocab_size=4, block_size=16, n_layer=1, n_head=2, n_embd=16))
    s = score(model, data, "test")
    with torch.no_grad():
        logits, _ = model(data.test.tensors()[0])
    loss = F.cross_entropy(logits.flatten(0, 1), data.test.tensors()[1].flatten()).item()
    assert s.metrics["loss"] == pytest.approx(loss, rel=1e-5)
    assert s.metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert s.metrics["bits_per_char"] == pytest.approx(loss / math.log(2), rel=1e-4)
    assert "bits_per_token" not in s.metrics and len(s.losses) == len(x) - 150


def test_bad_input_is_one_sentence(wine_run, tmp_path):
    with pytest.raises(BigModelError, match=r"no 'tset' split; use --split train or val or test"):
        score(wine_run.model, wine_run.data, "tset")
    with pytest.raises(BigModelError, match=r"Unknown metric for classification 'f1'.*f1_macro"):
        wine_run.evaluate("test", metrics=["f1"])
    with pytest.raises(BigModelError, match="meta device"):
        score(nn.Linear(13, 3, device="meta"), wine_run.data)
    mixed = nn.Sequential(nn.Linear(13, 3), nn.Linear(3, 3, device="meta"))
    with pytest.raises(BigModelError, match=r"on 2 devices \(cpu, meta\); move it to one"):
        score(mixed, wine_run.data)
    with pytest.raises(BigModelError, match=r"failed on a batch of 'data' \(inputs \[\d+, 13\].*input size"):
        score(nn.Linear(4, 3), wine_run.data)

