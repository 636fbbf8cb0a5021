import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.data import DATASETS, TASKS, DataBundle, Split, as_bundle, epoch_order, load_dataset
from bigmodel_nb.engine.data.builtin import digits_array


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def rows(X):
    return {tuple(r) for r in X.reshape(len(X), -1).tolist()}


def seen_order(split, bs, **kw):
    """Sample ids in the order the batches deliver them (y holds the id)."""
    return torch.cat([y for _, y in split.batches(bs, "cpu", **kw)]).tolist()


def ids(n, features=3):
    """A split whose y is the sample id and whose X row encodes it, to track every sample."""
    return Split(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, features), torch.arange(n))


class Pairs(Dataset):
    """A plain map-style Dataset (not a TensorDataset), optionally with random 'augmentation'."""

    def __init__(self, n, augment=False):
        self.n, self.augment = n, augment

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = torch.full((4,), float(i), dtype=torch.float64)
        return (x + torch.rand(4) if self.augment else x), i % 3


# -- built-in datasets ----------------------------------------------------------------------------
def test_digits_shapes_sizes_labels(digits):
    assert (digits.name, digits.task, digits.num_classes, digits.input_shape) == ("digits", "classification", 10, (64,))
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 270, 270)
    X, y = digits.train.tensors()
    assert X.shape == (1257, 64) and X.dtype == torch.float32 and y.dtype == torch.int64
    all_y = torch.cat([s.tensors()[1] for s in (digits.train, digits.val, digits.test)])
    assert set(all_y.tolist()) == set(range(10))
    assert repr(digits) == "DataBundle('digits', classification, 10 classes, train=1257 val=270 test=270, input (64,))"
    assert "UCI" in digits.info["source"] and "digits" in DATASETS


def test_digits_normalised_with_train_statistics(digits):
    X = digits.train.tensors()[0]
    assert abs(X.mean().item()) < 1e-4 and abs(X.std().item() - 1) < 1e-3
    mean, std = digits.info["mean"], digits.info["std"]
    assert 0 < mean < 1 and 0 < std < 1  # statistics of pixels scaled to [0, 1]
    for split in (digits.val, digits.test):  # the same train statistics applied everywhere
        pixels = (split.tensors()[0] * std + mean) * 16
        assert torch.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() > -1e-3 and pixels.max() < 16.001
    assert abs(digits.test.tensors()[0].mean().item()) > 1e-4  # test data were not standardised on their own


def test_digits_unflattened_for_cnns(digits):
    images = load_dataset("digits", flatten=False)
    assert images.input_shape == (1, 8, 8) and images.train.tensors()[0].shape == (1257, 1, 8, 8)
    assert torch.equal(images.test.tensors()[0].reshape(-1, 64), digits.test.tensors()[0])


def test_splits_deterministic_and_disjoint(digits):
    again = load_dataset("digits")
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.tensors()[0], b.tensors()[0]) and torch.equal(a.tensors()[1], b.tensors()[1])
    # Together the splits are exactly the 1,797 file rows, each once: a partition, so disjoint.
    mean, std = digits.info["mean"], digits.info["std"]
    parts = [torch.cat([(X * std + mean) * 16, y[:, None].float()], 1).round().long()
             for X, y in (s.tensors() for s in (digits.train, digits.val, digits.test))]
    raw = torch.from_numpy(digits_array()).long()
    assert sorted(map(tuple, torch.cat(parts).tolist())) == sorted(map(tuple, raw.tolist()))
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.tensors()[1], digits.test.tensors()[1])


def test_spirals_and_sine():
    s = load_dataset("spirals")
    assert ((s.task, s.num_classes, s.input_shape, len(s.train) + len(s.val) + len(s.test))
            == ("classification", 3, (2,), 1500))
    X, y = s.train.tensors()
    assert X.dtype == torch.float32 and y.dtype == torch.int64 and set(y.tolist()) == {0, 1, 2}
    assert X.norm(dim=1).max() < 2  # radius <= 1 plus nothing else
    s5 = load_dataset("spirals", n=500, classes=5, noise=0.0, seed=3)
    assert s5.num_classes == 5 and len(s5.train) == 350
    assert torch.equal(load_dataset("spirals").train.tensors()[0], X)

    w = load_dataset("sine", n=200, noise=0.0)
    x, y = w.train.tensors()
    assert w.task == "regression" and w.num_classes is None and x.shape == y.shape == (140, 1)
    assert y.dtype == torch.float32 and torch.allclose(y, torch.sin(x), atol=1e-6)
    assert x.min() >= -np.pi and x.max() <= np.pi
    assert repr(w) == "DataBundle('sine', regression, train=140 val=30 test=30, input (1,))"


def test_load_dataset_errors():
    with pytest.raises(BigModelError, match=r"^Unknown dataset 'digit'; choose one of: cifar10, digits, "
                                            r"fashion-mnist, mnist, python-stdlib, sine, spirals, tiny-shakespeare "
                                            r"\(did you mean 'digits'\?\)\.$"):
        load_dataset("digit")
    with pytest.raises(BigModelError, match=r"^Unknown option 'noize' for dataset 'sine'; "
                                            r"its options are: n, noise \(did you mean 'noise'\?\)\.$"):
        load_dataset("sine", noize=0.3)
    with pytest.raises(BigModelError, match="spirals needs classes >= 2"):
        load_dataset("spirals", classes=1)
    assert set(DATASETS) == {"digits", "spirals", "sine", "mnist", "fashion-mnist", "cifar10", "python-stdlib",
                             "tiny-shakespeare"} and "language-model" in TASKS


# -- batches ----------------------------------------------------------------------------------------
def test_batches_cover_every_sample_once_with_partial_last_batch():
    split = ids(10)
    assert split.num_batches(4) == 3
    sizes = [len(y) for _, y in split.batches(4, "cpu")]
    assert sizes == [4, 4, 2]
    assert seen_order(split, 4) == list(range(10))  # no shuffle: the stored order
    shuffled = seen_order(split, 4, shuffle=True, seed=7, epoch=0)
    assert sorted(shuffled) == list(range(10)) and shuffled != list(range(10))
    for x, y in split.batches(3, "cpu", shuffle=True):
        assert torch.equal(x[:, 0].long(), y)  # inputs and targets stay paired


def test_shuffle_is_a_function_of_seed_and_epoch():
    split = ids(100)
    a = seen_order(split, 16, shuffle=True, seed=3, epoch=2)
    assert a == seen_order(split, 16, shuffle=True, seed=3, epoch=2) == epoch_order(100, 3, 2).tolist()
    assert a != seen_order(split, 16, shuffle=True, seed=3, epoch=3)
    assert a != seen_order(split, 16, shuffle=True, seed=4, epoch=2)
    torch.manual_seed(123)  # the global RNG plays no part
    assert a == seen_order(split, 16, shuffle=True, seed=3, epoch=2)


@pytest.mark.parametrize("k", [0, 1, 4, 6, 7])
def test_skip_yields_the_tail_of_the_epoch(k):
    split = ids(100)
    full = [y.tolist() for _, y in split.batches(16, "cpu", shuffle=True, seed=1, epoch=5)]
    tail = [y.tolist() for _, y in split.batches(16, "cpu", shuffle=True, seed=1, epoch=5, skip=k)]
    assert len(full) == 7 and tail == full[k:]


def test_device_copy_is_made_once_and_reused():
    split = ids(50)
    X, y = split.tensors("cpu")
    assert X is split.X and y is split.y  # already there: no copy
    first = split.tensors("meta")  # "meta" stands in for an accelerator on this CPU-only machine
    assert first[0].device.type == "meta" and first[0] is not split.X
    assert split.tensors("meta")[0] is first[0] and split.tensors(torch.device("meta"))[1] is first[1]
    x, yb = next(iter(split.batches(8, "meta", shuffle=True)))
    assert x.device.type == yb.device.type == "meta" and x.shape == (8, 3)
    assert len(split._cache) == 1


def test_batch_size_must_be_positive():
    with pytest.raises(BigModelError, match="batch_size must be a positive integer; got 0"):
        ids(5).num_batches(0)


# -- adapters -----------------------------------------------------------------------------------------
def test_tuple_of_tensors_is_split_and_inferred():
    X, y = torch.randn(200, 5), torch.randint(0, 4, (200,))
    b = as_bundle((X, y), seed=1)
    assert (b.task, b.num_classes, b.input_shape, b.name) == ("classification", 4, (5,), "data")
    assert (len(b.train), len(b.val), len(b.test)) == (140, 30, 30)
    joined = torch.cat([s.tensors()[0] for s in (b.train, b.val, b.test)])
    assert rows(joined) == rows(X)  # a permutation: nothing lost, nothing repeated
    assert torch.equal(as_bundle((X, y), seed=1).test.tensors()[0], b.test.tensors()[0])
    assert not torch.equal(as_bundle((X, y), seed=2).test.tensors()[0], b.test.tensors()[0])
    none = as_bundle((X, y), val_fraction=0, test_fraction=0)
    assert none.val is None and none.test is None and len(none.train) == 200


def test_numpy_tuple_regression_and_dtypes():
    X = np.random.default_rng(0).normal(size=(100, 2))  # float64
    y = X.sum(axis=1)
    b = as_bundle((X, y), task=None)
    Xt, yt = b.train.tensors()
    assert b.task == "regression" and b.num_classes is None and Xt.dtype == yt.dtype == torch.float32
    assert yt.shape == (70,)  # kept as given
    labels = as_bundle((X, (y > 0).astype(np.int32)))
    assert labels.task == "classification" and labels.train.tensors()[1].dtype == torch.int64


def test_token_pairs_are_language_modelling():
    tokens = torch.randint(0, 50, (40, 9))
    b = as_bundle((tokens[:, :-1], tokens[:, 1:]))
    assert b.task == "language-model" and b.num_classes == int(tokens.max()) + 1 and b.input_shape == (8,)


def test_tensor_dataset_goes_in_memory_and_custom_dataset_too():
    X, y = torch.randn(100, 3), torch.randint(0, 2, (100,))
    b = as_bundle(TensorDataset(X, y))
    assert b.train.X is not None and len(b.train) + len(b.val) + len(b.test) == 100
    assert rows(torch.cat([b.train.X, b.val.X, b.test.X])) == rows(X)
    p = as_bundle(Pairs(60))  # deterministic items: materialised, float64 -> float32
    assert p.train.X is not None and p.train.X.dtype == torch.float32 and p.num_classes == 3 and p.input_shape == (4,)
    ids_seen = sorted(int(v) for s in (p.train, p.val, p.test) for v in s.tensors()[0][:, 0])
    assert ids_seen == list(range(60))


def test_augmenting_dataset_is_streamed_with_the_same_order_rules():
    b = as_bundle(Pairs(60, augment=True), val_fraction=0, test_fraction=0)
    split = b.train
    assert split.X is None and split.dataset is not None and len(split) == 60 and split.num_batches(16) == 4
    first = [x[:, 0].floor().long().tolist() for x, _ in split.batches(16, "cpu", shuffle=True, seed=2, epoch=1)]
    again = [x[:, 0].floor().long().tolist() for x, _ in split.batches(16, "cpu", shuffle=True, seed=2, epoch=1)]
    tail = [x[:, 0].floor().long().tolist() for x, _ in split.batches(16, "cpu", shuffle=True, seed=2, epoch=1, skip=2)]
    assert first == again and tail == first[2:] and sorted(sum(first, [])) == list(range(60))
    x, y = next(iter(split.batches(8, "cpu")))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and b.task == "classification"
    X, Y = split.tensors()
    assert X.shape == (60, 4) and split.tensors()[0] is X  # materialised once


def test_dataloader_is_used_as_is():
    loader = DataLoader(TensorDataset(torch.randn(50, 3), torch.randn(50, 1)), batch_size=20)
    b = as_bundle(loader)
    assert b.task == "regression" and b.val is None and b.test is None and b.input_shape == (3,)
    assert len(b.train) == 50 and b.train.num_batches(999) == 3
    assert [len(x) for x, _ in b.train.batches(999, "cpu")] == [20, 20, 10]
    assert [len(x) for x, _ in b.train.batches(999, "cpu", skip=1)] == [20, 10]


def test_dict_of_mixed_splits():
    X, y = torch.randn(30, 2), torch.randint(0, 5, (30,))
    b = as_bundle({"train": (X, y), "val": TensorDataset(X[:10], y[:10]),
                   "test": DataLoader(TensorDataset(X, y), batch_size=8)}, name="mine")
    assert b.name == "mine" and len(b.train) == 30 and len(b.val) == 10 and len(b.test) == 30
    assert b.task == "classification" and b.num_classes == int(y.max()) + 1
    assert as_bundle({"train": Split(X, y)}).val is None
    assert as_bundle(b) is b and isinstance(as_bundle("sine"), DataBundle)


def test_adapter_errors():
    with pytest.raises(BigModelError, match=r"^X has 100 samples but y has 90; they must match\.$"):
        as_bundle((torch.randn(100, 2), torch.zeros(90)))
    with pytest.raises(BigModelError, match=r"^Cannot use a int as data; pass a dataset name \(one of: cifar10, "
                                            r"digits, fashion-mnist, mnist, python-stdlib, sine, spirals, "
                                            r"tiny-shakespeare\), an \(X, y\) tuple of tensors, arrays or pandas "
                                            r"objects, a Dataset, a DataLoader, a Hugging Face dataset or a dict "
                                            r"with train/val/test\.$"):
        as_bundle(42)
    with pytest.raises(BigModelError, match=r"^Unknown dataset 'spiral'.*did you mean 'spirals'"):
        as_bundle("spiral")
    with pytest.raises(BigModelError, match=r"^An \(X, y\) tuple needs 2 items but this one has 3"):
        as_bundle((torch.zeros(3), torch.zeros(3), torch.zeros(3)))
    with pytest.raises(BigModelError, match=r"^Unknown key 'valid' in the data dict; use train, val \(or validation\) "
                                            r"and test \(did you mean 'val(idation)?'\?\), or give columns"):
        as_bundle({"train": (torch.zeros(3, 1), torch.zeros(3)), "valid": None})
    with pytest.raises(BigModelError, match="has no 'train' entry"):
        as_bundle({"val": (torch.zeros(3, 1), torch.zeros(3))})
    with pytest.raises(BigModelError, match=r"^Cannot use a str as data\['test'\]"):
        as_bundle({"train": (torch.zeros(3, 1), torch.zeros(3)), "test": "digits"})
    with pytest.raises(BigModelError, match="too few to split"):
        as_bundle((torch.zeros(2, 1), torch.zeros(2)), val_fraction=0.4, test_fraction=0.4)
    with pytest.raises(BigModelError, match=r"^Unknown task 'regresion'.*did you mean 'regression'"):
        as_bundle((torch.zeros(9, 1), torch.zeros(9)), task="regresion")
    with pytest.raises(BigModelError, match="Each batch must be an \\(inputs, targets\\) pair"):
        as_bundle(DataLoader(torch.zeros(6, 2), batch_size=2))
