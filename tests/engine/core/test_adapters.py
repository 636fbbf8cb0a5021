"""Bring your own data: numpy of any dtype, pandas frames and series (and a frame with a target column),
dict columns, dict splits with `validation`, Datasets with dict items, Hugging Face `datasets`, and binary
classification with one logit — on scikit-learn's bundled data sets."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score
from torch import nn
from torch.utils.data import DataLoader

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError
from bigmodel_nb.engine.core.adapters import as_bundle


@pytest.fixture(scope="module")
def cancer():
    frame = load_breast_cancer(as_frame=True).frame  # 569 × 30 features + "target" (0/1)
    features = frame.columns.drop("target")
    frame[features] = (frame[features] - frame[features].mean()) / frame[features].std()
    return frame, list(features)


def test_a_pandas_frame_and_series_train_as_a_classifier(cancer):
    frame, features = cancer
    run = fit(nn.Linear(30, 2), (frame[features], frame["target"]), epochs=15, lr=1e-2, seed=0)
    assert run.status == "completed" and run.data.task == "classification" and run.data.num_classes == 2
    assert run.data.train.X.dtype == torch.float32 and run.data.train.y.dtype == torch.int64
    assert run.evaluate("test")["accuracy"] > 0.93


def test_a_frame_with_a_target_column_is_the_same_data(cancer):
    frame, features = cancer
    assert fit(nn.Linear(30, 2), frame, target="target", epochs=1, seed=0).data.input_shape == (30,)
    by_column = as_bundle(frame, target="target", seed=3)
    by_pair = as_bundle((frame[features], frame["target"]), seed=3)
    assert torch.equal(by_column.test.X, by_pair.test.X) and torch.equal(by_column.test.y, by_pair.test.y)
    with pytest.raises(BigModelError, match="A DataFrame as data needs its target column: pass --target COLUMN"):
        as_bundle(frame)
    with pytest.raises(BigModelError, match=r"No column 'targt' in the data \(did you mean 'target'\?\)"):
        as_bundle(frame, target="targt")
    text = frame.assign(name="a")
    with pytest.raises(BigModelError, match="The column 'name' of X are not numbers; encode them first"):
        as_bundle(text, target="target")


def test_one_logit_with_bce_is_binary_classification_with_accuracy(cancer):
    frame, features = cancer
    torch.manual_seed(0)
    run = fit(nn.Linear(30, 1), (frame[features].to_numpy(), frame["target"].to_numpy()), epochs=15, lr=1e-2,
              seed=0, loss="bce")
    assert run.status == "completed", run.error
    X, y = run.data.test.tensors()
    with torch.no_grad():
        predicted = (run.model(X).squeeze(1) > 0).long().numpy()
    accuracy = run.evaluate("test")["accuracy"]
    assert accuracy == pytest.approx(accuracy_score(y.numpy(), predicted)) and accuracy > 0.93
    # the same with float 0/1 labels, and with no --loss at all (one output: bce is chosen and said)
    floats = fit(nn.Linear(30, 1), (frame[features].to_numpy(), frame["target"].to_numpy(np.float32)),
                 epochs=2, seed=0, loss="bce")
    assert floats.data.task == "classification" and "accuracy" in floats.history[-1]
    plain = fit(nn.Linear(30, 1), (frame[features], frame["target"]), epochs=2, seed=0)
    assert plain.config.loss == "bce" and any("binary classification" in n for n in plain.notes)


def test_regression_from_float64_numpy_and_a_shape_mismatch_said_once():
    X, y = load_diabetes(return_X_y=True)  # float64
    y = (y - y.mean()) / y.std()
    run = fit(nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1)), (X, y), epochs=30, lr=3e-3, seed=0)
    assert run.data.task == "regression" and run.data.train.X.dtype == torch.float32
    assert run.history[0]["loss"] > 1.5 * run.evaluate("test")["loss"]
    with pytest.raises(BigModelError) as err:  # 3 outputs for 1 target: refused before training, one sentence
        fit(nn.Linear(10, 3), (X, y), epochs=1)
    assert "outputs [2, 3] for targets of shape [2]" in str(err.value) and "\n" not in str(err.value)


def test_dict_splits_accept_validation_and_dict_columns():
    g = torch.Generator().manual_seed(0)
    columns = {"x": torch.randn(60, 4, generator=g), "labels": torch.randint(0, 3, (60,), generator=g)}
    bundle = as_bundle(columns)
    assert bundle.task == "classification" and bundle.num_classes == 3 and bundle.input_shape == (4,)
    pairs = as_bundle({"train": (torch.randn(20, 4), torch.zeros(20)), "validation": (torch.randn(5, 4),
                                                                                     torch.zeros(5))})
    assert len(pairs.val) == 5 and pairs.test is None


def test_datasets_and_loaders_of_dict_items_train_a_model_that_returns_a_dict(dict_items, keyword_model):
    # label -> labels; the model's own loss is used
    run = fit(keyword_model(), dict_items(), epochs=2, seed=0, batch_size=16)
    assert run.status == "completed", run.error
    assert {"loss", "accuracy"} <= set(run.history[-1])
    loader = DataLoader(dict_items(), batch_size=16, collate_fn=lambda items: {
        "input_ids": torch.stack([i["input_ids"] for i in items]), "label": torch.stack([i["label"] for i in items])})
    streamed = fit(keyword_model(), {"train": loader}, epochs=1, seed=0)
    assert streamed.status == "completed" and streamed.step == 4


def test_unlabelled_dict_batches_for_a_model_without_a_loss_are_one_sentence():
    class NoLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return {"logits": self.head(x)}

    with pytest.raises(BigModelError, match="dicts without 'labels' and the model computed no loss"):
        fit(NoLoss(), {"x": torch.randn(30, 4)}, epochs=1)


def test_hugging_face_datasets_with_and_without_torch_format(keyword_model):
    datasets = pytest.importorskip("datasets")
    rows = {"input_ids": [[i % 20, (i * 7) % 20, 3, 4, 5, 6] for i in range(50)], "label": [i % 2 for i in range(50)],
            "text": ["a sentence"] * 50}
    plain = datasets.Dataset.from_dict(rows)
    splits = plain.train_test_split(test_size=0.2, seed=0)  # a DatasetDict: train / test
    splits["validation"] = splits["test"]
    for data in (splits, plain.with_format("torch")):
        bundle = as_bundle(data)
        assert set(bundle.train.X) == {"input_ids", "labels"}  # the text column is left out, label -> labels
        assert bundle.task == "classification" and bundle.num_classes == 2
    assert len(as_bundle(splits).val) == 10
    ragged = datasets.Dataset.from_dict({"input_ids": [[1, 2], [1, 2, 3]], "label": [0, 1]})
    with pytest.raises(BigModelError, match="has rows of different lengths; pad them"):
        as_bundle(ragged)
    run = fit(keyword_model(), splits, epochs=2, seed=0, batch_size=8)
    assert run.status == "completed" and "accuracy" in run.rows("val")[-1]


def test_inputs_of_the_wrong_kind_are_one_sentence_with_the_fix():
    with pytest.raises(BigModelError) as err:
        fit(nn.Linear(4, 2), (np.random.randint(0, 5, (30, 4)), np.random.randint(0, 2, 30)), epochs=1)
    message = str(err.value)
    assert "(inputs [2, 4] int64, targets [2])" in message and "convert them, e.g. X.astype('float32')" in message
    with pytest.raises(BigModelError, match="starts with an Embedding, which takes integer token ids"):
        fit(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(16, 2)),
            (np.random.rand(30, 4), np.random.randint(0, 2, 30)), epochs=1)


def test_declared_class_names_reach_the_bundle():
    """%evaluate labels its confusion matrix and gallery with them: a Hugging Face ClassLabel, torchvision `classes`."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features({"input_ids": Sequence(Value("int64")), "label": ClassLabel(names=["neg", "pos"])})
    hf = Dataset.from_dict({"input_ids": [[1, 2, 3]] * 20, "label": [0, 1] * 10}, features=features)
    assert as_bundle(hf).info["class_names"] == ["neg", "pos"]

    class Pets(torch.utils.data.Dataset):
        classes = ["cat", "dog"]

        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.full((3,), float(i)), i % 2

    assert as_bundle(Pets()).info["class_names"] == ["cat", "dog"]
    assert "class_names" not in as_bundle((torch.randn(20, 3), torch.randint(0, 2, (20,)))).info
