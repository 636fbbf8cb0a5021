"""mnist / fashion-mnist: tiny but valid IDX gzip files served by a local HTTP server (no real network)."""
import gzip
import math
import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.data import DATASETS, load_dataset
from bigmodel_nb.engine.data.images import FASHION_CLASSES, IDX_FILES, read_idx

N_TRAIN, N_TEST = 50, 20


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped IDX file of uint8 `array` (magic 0x0000 08 ndim, big-endian dims, then the bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def make_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8), rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
            rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8), rng.integers(0, 10, N_TEST, dtype=np.uint8))


def write_idx(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for file, array in zip(IDX_FILES, arrays):
        (folder / file).write_bytes(idx_gz(array))


@pytest.fixture
def arrays():
    return make_arrays()


@pytest.fixture
def server(tmp_path, arrays, monkeypatch, file_server):
    """A real HTTP server on 127.0.0.1 serving the four files under /mnist/ and /fashion/, counting requests;
    the env vars point both datasets at it and the cache at tmp_path/cache."""
    write_idx(tmp_path / "www" / "mnist", arrays)
    write_idx(tmp_path / "www" / "fashion", make_arrays(seed=1))
    base, requests, httpd = file_server(tmp_path / "www")
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BIGMODEL_NB_MNIST_URL", base + "/mnist/")
    monkeypatch.setenv("BIGMODEL_NB_FASHION_MNIST_URL", base + "/fashion")  # no trailing slash: still works
    return requests, httpd


def to_bytes(X: torch.Tensor, info: dict) -> np.ndarray:
    """The uint8 pixels back from normalised inputs, as (n, 28, 28)."""
    pixels = (X.double().numpy() * info["std"] + info["mean"]) * 255
    assert np.abs(pixels - pixels.round()).max() < 1e-3  # every value is exactly one of the 256 byte levels
    return pixels.round().astype(np.uint8).reshape(-1, 28, 28)


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


# -- download once, then the cache ----------------------------------------------------------------
def test_mnist_downloads_once_then_loads_from_cache(server, tmp_path):
    requests, httpd = server
    t0 = time.perf_counter()
    first = load_dataset("mnist")
    assert sorted(requests) == sorted(f"/mnist/{f}" for f in IDX_FILES), requests
    folder = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_FILES)  # no .part files left behind
    assert first.info["path"] == str(folder)
    httpd.shutdown()  # no server any more: the second load must come from the cache
    second = load_dataset("mnist")
    assert len(requests) == 4 and time.perf_counter() - t0 < 10
    for a, b in zip((first.train, first.val, first.test), (second.train, second.val, second.test)):
        assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)


def test_bundle_shapes_dtypes_splits_and_info(server):
    data = load_dataset("mnist")
    assert (data.name, data.task, data.num_classes, data.input_shape) == ("mnist", "classification", 10, (784,))
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 20)  # 90/10 of train; the official test
    for split in (data.train, data.val, data.test):
        assert split.X.dtype == torch.float32 and split.y.dtype == torch.int64 and split.X.shape[1:] == (784,)
    info = data.info
    assert info["class_names"] == [str(i) for i in range(10)] and "MNIST" in info["source"]
    assert info["description"] == DATASETS["mnist"] and "random 10%" in info["split"]
    assert repr(data) == "DataBundle('mnist', classification, 10 classes, train=45 val=5 test=20, input (784,))"


def test_normalised_with_train_statistics_only(server, arrays):
    data = load_dataset("mnist")
    X = data.train.X.double()
    assert abs(X.mean().item()) < 1e-5 and abs(X.std(unbiased=False).item() - 1) < 1e-5
    train_pixels = to_bytes(data.train.X, data.info)
    assert math.isclose(data.info["mean"], train_pixels.mean() / 255, rel_tol=1e-9)
    assert math.isclose(data.info["std"], (train_pixels / 255).std(), rel_tol=1e-9)
    all_pixels = arrays[0] / 255  # the statistics of all 50 images (val included) differ from train's
    assert not math.isclose(data.info["mean"], all_pixels.mean(), rel_tol=1e-9)
    scaled = to_bytes(data.test.X, data.info) / 255
    assert scaled.min() >= 0 and scaled.max() <= 1


def test_images_and_labels_are_preserved_exactly(server, arrays):
    train_x, train_y, test_x, test_y = arrays
    data = load_dataset("mnist", seed=3)
    where = {img.tobytes(): i for i, img in enumerate(train_x)}  # random images: all distinct
    seen = []
    for split in (data.train, data.val):
        idx = [where[img.tobytes()] for img in to_bytes(split.X, data.info)]
        assert idx == sorted(idx)  # the file's order is kept inside each split
        assert split.y.tolist() == train_y[idx].tolist()
        seen += idx
    assert sorted(seen) == list(range(N_TRAIN))  # train and val partition the official training set
    assert np.array_equal(to_bytes(data.test.X, data.info), test_x) and data.test.y.tolist() == test_y.tolist()
    # The split is a pure function of the seed.
    again, other = load_dataset("mnist", seed=3), load_dataset("mnist", seed=4)
    assert torch.equal(again.val.y, data.val.y) and torch.equal(again.val.X, data.val.X)
    assert not torch.equal(other.val.X, data.val.X)


def test_flatten_false_gives_channel_images(server):
    flat, images = load_dataset("mnist"), load_dataset("mnist", flatten=False)
    assert images.input_shape == (1, 28, 28) and images.train.X.shape == (45, 1, 28, 28)
    assert torch.equal(images.test.X.reshape(20, 784), flat.test.X) and torch.equal(images.train.y, flat.train.y)


def test_limit_uses_the_first_training_images(server, arrays):
    data = load_dataset("mnist", limit=30)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 3, 20)
    where = {img.tobytes(): i for i, img in enumerate(arrays[0])}
    used = [where[img.tobytes()] for s in (data.train, data.val) for img in to_bytes(s.X, data.info)]
    assert sorted(used) == list(range(30))
    assert len(load_dataset("mnist", limit=10_000).train) == 45  # more than there are: all of them
    for bad in (1, 0, "5", True, 2.5):
        with pytest.raises(BigModelError, match=r"^limit must be an integer of at least 2 .*; got "):
            load_dataset("mnist", limit=bad)
    with pytest.raises(BigModelError, match=r"^Unknown option 'limt' for dataset 'mnist'; "
                                            r"its options are: limit \(did you mean 'limit'\?\)\.$"):
        load_dataset("mnist", limt=5)


def test_fashion_mnist_has_its_own_files_cache_and_class_names(server, tmp_path):
    requests, _ = server
    data = load_dataset("fashion_mnist")  # underscores are accepted as in every dataset name
    assert sorted(requests) == sorted(f"/fashion/{f}" for f in IDX_FILES)
    assert ((tmp_path / "cache" / "fashion-mnist" / IDX_FILES[0]).is_file()
            and not (tmp_path / "cache" / "mnist").exists())
    assert data.name == "fashion-mnist" and data.info["class_names"] == FASHION_CLASSES
    assert FASHION_CLASSES[0] == "T-shirt/top" and FASHION_CLASSES[9] == "Ankle boot"
    assert "Fashion-MNIST" in data.info["source"] and data.info["description"] == DATASETS["fashion-mnist"]
    assert data.test.y.tolist() == make_arrays(seed=1)[3].tolist()


# -- broken files and no network --------------------------------------------------------------------
def test_files_put_in_the_cache_by_hand_need_no_network(tmp_path, monkeypatch, arrays):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("BIGMODEL_NB_MNIST_URL", "http://127.0.0.1:9/never/")
    write_idx(tmp_path / "mnist", arrays)
    assert load_dataset("mnist").test.y.tolist() == arrays[3].tolist()


@pytest.mark.parametrize("damage, why", [
    (lambda gz: gz[: len(gz) // 2], "not a complete gzip file"),               # a download cut off half-way
    (lambda gz: b"<html>Access denied</html>", "not a complete gzip file"),   # an error page instead of data
    (lambda gz: gzip.compress(gzip.decompress(gz)[:-100]), "but 39,100 follow"),  # valid gzip, short payload
    (lambda gz: gzip.compress(b"\x00\x00\x08\x01" + gzip.decompress(gz)[4:]), "magic number 0x00000801"),
    (lambda gz: gzip.compress(b"\x00\x00"), "only 2 bytes"),
])
def test_a_truncated_or_corrupt_file_is_a_one_sentence_error(tmp_path, monkeypatch, arrays, damage, why):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    write_idx(tmp_path / "mnist", arrays)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BigModelError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert message.startswith(f"The file {path} is truncated or corrupt (") and why in message, message
    assert message.endswith("; delete it so that it is downloaded again.") and one_sentence(message)
    # no gzip traceback
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def test_mismatched_files_are_clear(tmp_path, monkeypatch, arrays):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    train_x, train_y, test_x, test_y = arrays
    write_idx(tmp_path / "mnist", (train_x, train_y[:40], test_x, test_y))
    with pytest.raises(BigModelError, match=r"train-labels-idx1-ubyte.gz is truncated or corrupt "
                                            r"\(it has 40 labels for 50 images"):
        load_dataset("mnist")
    write_idx(tmp_path / "mnist", (train_x[:, :27, :27], train_y, test_x, test_y))
    with pytest.raises(BigModelError, match=r"its images are 27×27, not 28×28"):
        load_dataset("mnist")
    assert read_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", 1).tolist() == test_y.tolist()


def test_without_network_is_a_quick_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("BIGMODEL_NB_MNIST_URL", f"http://127.0.0.1:{port}/mnist/")
    t0 = time.perf_counter()
    with pytest.raises(BigModelError) as err:
        load_dataset("mnist")
    assert time.perf_counter() - t0 < 15
    message, folder = str(err.value), tmp_path / "mnist"
    assert (message.startswith(f"Could not download mnist from http://127.0.0.1:{port}/mnist/ (")
            and one_sentence(message))
    assert message.endswith(f"; check the network, or put the four IDX files ({', '.join(IDX_FILES)}) in {folder}.")
    assert "refused" in message.lower() or "errno" in message.lower(), message
    assert not list(folder.glob("*"))  # nothing half-written that would look like a download


# -- training on it ---------------------------------------------------------------------------------
def test_an_mlp_and_a_cnn_train_on_the_bundle(server):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    run = fit(mlp, load_dataset("mnist"), epochs=3, batch_size=16, lr=1e-3, seed=0, device="cpu")
    assert run.status == "completed" and run.error is None, run
    assert run.rows("val") and math.isfinite(run.rows("val")[-1]["loss"])
    result = run.evaluate("test")
    assert math.isfinite(result["loss"]) and 0 <= result["accuracy"] <= 1
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    run = fit(cnn, load_dataset("mnist", flatten=False), steps=4, batch_size=16, seed=0, device="cpu")
    assert run.status == "completed" and run.step == 4, run
