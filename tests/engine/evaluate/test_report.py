"""The Evaluation report: top losses that point at their samples, the most-confused pairs read off the
confusion matrix, reliability bins that add up to the ECE, inputs for the gallery, and a language
model's samples."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.engine import Run, TrainConfig, as_bundle, load_dataset
from bigmodel_nb.engine.evaluate import evaluate


@pytest.fixture(scope="module")
def digits_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    run = Run(model, "digits", TrainConfig(epochs=2, seed=0)).run_here()
    return run, evaluate(run.model, run.data, "test")


def test_top_losses_point_at_samples_whose_recomputed_loss_is_reported(digits_eval):
    run, ev = digits_eval
    X, y = run.data.test.tensors()
    rows = ev.top_losses(9)
    assert len(rows) == 9 and [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    for row in rows:
        with torch.no_grad():
            logits = run.model(X[row["index"]][None])
        assert F.cross_entropy(logits, y[row["index"]][None]).item() == pytest.approx(row["loss"], rel=1e-5)
        assert row["true"] == str(int(y[row["index"]]))  # digits names its classes "0".."9"
        assert row["predicted"] == str(int(logits.argmax()))
        assert row["probability"] == pytest.approx(torch.softmax(logits, 1).max().item(), rel=1e-5)
        torch.testing.assert_close(ev.example(row["index"]), X[row["index"]])
    assert max(float(v) for v in ev.scores.losses) == rows[0]["loss"]


def test_confusion_per_class_and_most_confused_agree(digits_eval):
    _, ev = digits_eval
    c = ev.confusion
    assert c.shape == (10, 10) and int(c.sum()) == ev.size == 270
    assert int(c.trace()) / ev.size == pytest.approx(ev.metrics["accuracy"])
    assert [r["support"] for r in ev.per_class] == c.sum(1).tolist()
    assert [r["recall"] for r in ev.per_class] == pytest.approx((c.diag() / c.sum(1)).tolist(), abs=1e-6)
    shares = ev.normalised_confusion()
    torch.testing.assert_close(shares.sum(1), torch.ones(10, dtype=torch.float64))
    top = ev.most_confused(3)
    off = c.clone().fill_diagonal_(0)
    assert top[0]["count"] == int(off.max()) and top[0]["count"] >= top[-1]["count"] > 0
    assert int(c[int(top[0]["true"]), int(top[0]["predicted"])]) == top[0]["count"]


def test_reliability_bins_add_up_to_the_expected_calibration_error(digits_eval):
    _, ev = digits_eval
    bins = [b for b in ev.calibration if b["count"]]
    assert sum(b["count"] for b in ev.calibration) == ev.size
    ece = sum(b["count"] / ev.size * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert ece == pytest.approx(ev.metrics["ece"], abs=1e-6)
    assert all(b["lo"] <= b["confidence"] <= b["hi"] for b in bins)


def test_language_model_samples_decode_with_the_datas_tokenizer():
    from bigmodel_nb.models import GPT, GPTConfig

    data = load_dataset("python-stdlib", chars=20_000, block_size=32)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(data.vocab), block_size=32, n_layer=1, n_head=2, n_embd=16))
    ev = evaluate(model, data, "val", samples=2, sample_tokens=40)
    assert len(ev.samples) == 2 and all(isinstance(s, str) and len(s) > 40 for s in ev.samples)
    assert ev.samples == evaluate(model, data, "val", samples=2, sample_tokens=40).samples  # seeded
    assert {"loss", "perplexity", "bits_per_char"} <= set(ev.metrics) and ev.confusion is None
    assert isinstance(ev.example(ev.top_losses(1)[0]["index"]), str)  # decoded text for the gallery


def test_dict_batches_of_a_keyword_model(keyword_model, dict_items):
    """Hugging Face-style data (dict items, labels inside) evaluates like pairs."""
    items = dict_items()
    data = as_bundle({"train": items, "test": items})
    ev = evaluate(keyword_model(), data, "test")
    assert ev.size == len(items) and int(ev.confusion.sum()) == len(items)
    row = ev.top_losses(1)[0]
    assert set(ev.example(row["index"])) >= {"input_ids"}


def test_a_certain_prediction_has_its_own_bin_as_in_torchmetrics():
    """One wrong answer at confidence exactly 1 and one right at 0.95: torchmetrics' ECE is 0.525."""
    from bigmodel_nb.engine.core.scores import Scores
    from bigmodel_nb.engine.evaluate import reliability

    scores = Scores(metrics={}, losses=torch.zeros(2), targets=torch.tensor([0, 1]), predicted=torch.tensor([1, 1]),
                    probability=torch.tensor([1.0, 0.95]))
    bins = reliability(scores)
    assert len(bins) == 16 and bins[-1]["lo"] == bins[-1]["hi"] == 1.0 and bins[-1]["count"] == 1
    ece = sum(b["count"] / 2 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert ece == pytest.approx(0.525)
