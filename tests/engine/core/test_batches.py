"""The batch protocol's in-memory batching: the shuffled batches are the rows of the epoch's order, for pairs and
dict columns alike, and a resumed epoch skips exactly the batches already trained on."""
import torch

from bigmodel_nb.engine.core.batches import Split, epoch_order, take


def test_shuffled_batches_are_the_rows_of_the_epoch_order():
    X, y = torch.randn(103, 5), torch.randint(0, 4, (103,))
    order = epoch_order(103, seed=3, epoch=2)
    batches = list(Split(X, y).batches(16, "cpu", shuffle=True, seed=3, epoch=2))
    assert [len(b[0]) for b in batches] == [16] * 6 + [7]
    for j, (xb, yb) in enumerate(batches):
        idx = order[16 * j:16 * (j + 1)]
        assert torch.equal(xb, X[idx]) and torch.equal(yb, y[idx])
    resumed = list(Split(X, y).batches(16, "cpu", shuffle=True, seed=3, epoch=2, skip=4))
    assert len(resumed) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(resumed, batches[4:]))


def test_dict_columns_and_take_pick_the_same_rows():
    cols = {"input_ids": torch.arange(40).view(20, 2), "labels": torch.arange(20), "note": "kept as it is"}
    idx = torch.tensor([5, 0, 19])
    picked = take(cols, idx)
    assert torch.equal(picked["input_ids"], cols["input_ids"][idx]) and picked["note"] == "kept as it is"
    assert torch.equal(take((cols["labels"], cols["labels"] * 2), slice(2, 4))[1], torch.tensor([4, 6]))
    first = next(Split({k: v for k, v in cols.items() if k != "note"}).batches(8, "cpu", shuffle=True, seed=0))
    assert torch.equal(first["labels"], epoch_order(20, 0, 0)[:8])


def test_take_keeps_what_indexing_takes():
    """Index tensors gather with index_select; a bool mask or a list of rows picks as t[index] does."""
    cols = {"x": torch.arange(10.0), "labels": torch.arange(10)}
    mask = cols["labels"] % 3 == 0
    assert torch.equal(take(cols, mask)["x"], torch.tensor([0.0, 3.0, 6.0, 9.0]))
    assert torch.equal(take((cols["x"], cols["labels"]), [1, 2])[1], torch.tensor([1, 2]))
    assert torch.equal(take(cols, torch.tensor([4, 1], dtype=torch.int32))["labels"], torch.tensor([4, 1]))
