"""mnist / fashion-mnist / cifar10: tiny but valid IDX gzip files and CIFAR archives served by a local HTTP server
(no real network)."""
import gzip
import io
import math
import os
import pickle
import socket
import tarfile
import time

import numpy as np
import pytest
import torch
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.data import DATASETS, load_dataset
from bigmodel_nb.engine.data.cifar import CIFAR10_ARCHIVE, SafeUnpickler
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


def assert_corrupt_file(load, path, why: str) -> None:
    """`load()` fails with the one sentence for a damaged download: the file, why, and to delete it."""
    with pytest.raises(BigModelError) as err:
        load()
    message = str(err.value)
    assert message.startswith(f"The file {path} is truncated or corrupt (") and why in message, message
    assert message.endswith("; delete it so that it is downloaded again.") and one_sentence(message)
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


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
    assert_corrupt_file(lambda: load_dataset("mnist"), path, why)  # no gzip traceback either


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


# -- cifar10: a tiny archive in the real "python version" format --------------------------------------
CIFAR_PER_BATCH, CIFAR_TEST = 8, 12  # 5 training batches of 8 images: 40 official training images
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PIXEL = (2, 30)  # (row, column) of the known pixel of test image 0
# A batch exactly as Python 2's cPickle wrote the real files (protocol 2, str as BINSTRING, numpy 1 names):
# {'data': array([[7, 9]], dtype=uint8), 'labels': [3]}.
PY2_BATCH = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
             b"\x85q\x04U\x01b\x87q\x05Rq\x06(K\x01K\x01K\x02\x86q\x07cnumpy\ndtype\nq\x08U\x02u1K\x00K\x01\x87Rq\t"
             b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x07\ttbU\x06labelsq\n]q\x0bK\x03au.")


def make_cifar(seed: int = 0):
    """(train images, train labels, test images, test labels): uint8 rows of 3,072 (R, G, B planes) and int
    labels; the channels have different ranges (R 0-255, G 0-127, B 128-255) so per-channel statistics differ."""
    rng = np.random.default_rng(seed)

    def images(n):
        planes = [rng.integers(lo, hi, (n, 1024), dtype=np.uint8) for lo, hi in ((0, 256), (0, 128), (128, 256))]
        return np.concatenate(planes, axis=1)

    train_x, test_x = images(5 * CIFAR_PER_BATCH), images(CIFAR_TEST)
    r, c = PIXEL
    test_x[0, 0 * 1024 + r * 32 + c], test_x[0, 1 * 1024 + r * 32 + c], test_x[0, 2 * 1024 + r * 32 + c] = 250, 3, 200
    return train_x, rng.integers(0, 10, len(train_x)), test_x, rng.integers(0, 10, CIFAR_TEST)


def cifar_members(arrays) -> dict[str, bytes]:
    """The seven pickled files of the archive, made as the format has them: dicts with bytes keys."""
    train_x, train_y, test_x, test_y = arrays
    members = {}
    for i in range(5):
        rows = slice(i * CIFAR_PER_BATCH, (i + 1) * CIFAR_PER_BATCH)
        members[f"data_batch_{i + 1}"] = pickle.dumps({
            b"batch_label": f"training batch {i + 1} of 5".encode(), b"data": train_x[rows],
            b"labels": [int(v) for v in train_y[rows]], b"filenames": [b"x.png"] * CIFAR_PER_BATCH})
    members["test_batch"] = pickle.dumps({b"batch_label": b"testing batch 1 of 1", b"data": test_x,
                                          b"labels": [int(v) for v in test_y]})
    members["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in CIFAR_NAMES],
                                            b"num_cases_per_batch": CIFAR_PER_BATCH, b"num_vis": 3072})
    return members


def cifar_tar(members: dict[str, bytes]) -> bytes:
    """A tar.gz holding cifar-10-batches-py/<name> for each member (plus the readme the real one has)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in {**members, "readme.html": b"<html></html>"}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def write_cifar(folder, data: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CIFAR10_ARCHIVE).write_bytes(data)
    return folder / CIFAR10_ARCHIVE


@pytest.fixture
def cifar():
    return make_cifar()


@pytest.fixture
def cifar_server(tmp_path, cifar, monkeypatch, file_server):
    """The archive served at /cifar/cifar-10-python.tar.gz, $BIGMODEL_NB_CIFAR10_URL pointing at it and the cache
    at tmp_path/cache; returns (requests, httpd)."""
    write_cifar(tmp_path / "www" / "cifar", cifar_tar(cifar_members(cifar)))
    base, requests, httpd = file_server(tmp_path / "www")
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BIGMODEL_NB_CIFAR10_URL", f"{base}/cifar/{CIFAR10_ARCHIVE}")
    return requests, httpd


def cifar_bytes(X: torch.Tensor, info: dict) -> np.ndarray:
    """The uint8 pixels back from normalised inputs, as (n, 3, 32, 32)."""
    X = X.double().numpy().reshape(-1, 3, 32, 32)
    pixels = (X * np.array(info["std"])[:, None, None] + np.array(info["mean"])[:, None, None]) * 255
    assert np.abs(pixels - pixels.round()).max() < 1e-3  # every value is exactly one of the 256 byte levels
    return pixels.round().astype(np.uint8)


def test_cifar10_downloads_once_then_loads_from_cache(cifar_server, tmp_path):
    requests, httpd = cifar_server
    first = load_dataset("cifar10")
    assert requests == [f"/cifar/{CIFAR10_ARCHIVE}"]
    folder = tmp_path / "cache" / "cifar10"
    assert [p.name for p in folder.iterdir()] == [CIFAR10_ARCHIVE]  # kept as it is: nothing extracted, no .part
    assert first.info["path"] == str(folder)
    httpd.shutdown()  # no server any more: the second load must come from the cache
    second = load_dataset("cifar10")
    assert len(requests) == 1
    for a, b in zip((first.train, first.val, first.test), (second.train, second.val, second.test)):
        assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)


def test_cifar10_bundle_shapes_classes_and_splits(cifar_server):
    data = load_dataset("cifar10")
    assert (data.name, data.task, data.num_classes, data.input_shape) == ("cifar10", "classification", 10, (3072,))
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 12)  # 90/10 of the 40; the official test
    for split in (data.train, data.val, data.test):
        assert split.X.dtype == torch.float32 and split.y.dtype == torch.int64 and split.X.shape[1:] == (3072,)
    info = data.info
    assert info["class_names"] == CIFAR_NAMES and "CIFAR-10" in info["source"] and "random 10%" in info["split"]
    assert info["description"] == DATASETS["cifar10"] and "(3, 32, 32)" in DATASETS["cifar10"]
    assert repr(data) == "DataBundle('cifar10', classification, 10 classes, train=36 val=4 test=12, input (3072,))"
    images = load_dataset("cifar10", flatten=False)
    assert images.input_shape == (3, 32, 32) and images.train.X.shape == (36, 3, 32, 32)
    assert torch.equal(images.test.X.reshape(12, 3072), data.test.X) and torch.equal(images.train.y, data.train.y)
    names = list(DATASETS)
    assert names.index("fashion-mnist") + 1 == names.index("cifar10") == names.index("python-stdlib") - 1


def test_cifar10_channel_order_and_exact_pixels(cifar_server, cifar):
    train_x, train_y, test_x, test_y = cifar
    data = load_dataset("cifar10", flatten=False)
    pixels = cifar_bytes(data.test.X, data.info)
    r, c = PIXEL
    assert pixels[0, :, r, c].tolist() == [250, 3, 200]  # the first 1,024 bytes are the red plane, row-major
    assert np.array_equal(pixels, test_x.reshape(-1, 3, 32, 32)) and data.test.y.tolist() == test_y.tolist()
    where = {img.tobytes(): i for i, img in enumerate(train_x.reshape(-1, 3, 32, 32))}  # random: all distinct
    seen = []
    for split in (data.train, data.val):
        idx = [where[img.tobytes()] for img in cifar_bytes(split.X, data.info)]
        assert idx == sorted(idx) and split.y.tolist() == train_y[idx].tolist()  # batches 1..5 in order
        seen += idx
    assert sorted(seen) == list(range(40))  # train and val partition the official training set
    other = load_dataset("cifar10", seed=1)
    assert not torch.equal(other.val.y, data.val.y) or not torch.equal(other.val.X.reshape(-1), data.val.X.reshape(-1))


def test_cifar10_is_normalised_per_channel_with_train_statistics(cifar_server, cifar):
    data = load_dataset("cifar10", flatten=False)
    X = data.train.X.double()
    assert X.mean(dim=(0, 2, 3)).abs().max() < 1e-5 and (X.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-5
    train = cifar_bytes(data.train.X, data.info) / 255
    assert np.allclose(data.info["mean"], train.mean(axis=(0, 2, 3)), rtol=1e-9)
    assert np.allclose(data.info["std"], train.std(axis=(0, 2, 3)), rtol=1e-9)
    assert data.info["mean"][1] < 0.3 < data.info["mean"][0] < 0.7 < data.info["mean"][2]  # really per channel
    every = cifar[0].reshape(-1, 3, 1024) / 255  # the statistics of all 40 images (val included) differ
    assert not np.allclose(data.info["mean"], every.mean(axis=(0, 2)), rtol=1e-9, atol=0)
    scaled = cifar_bytes(data.test.X, data.info) / 255
    assert scaled.min() >= 0 and scaled.max() <= 1


def test_cifar10_limit_uses_the_first_training_images(cifar_server, cifar):
    data = load_dataset("cifar10", limit=20)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 12)
    where = {img.tobytes(): i for i, img in enumerate(cifar[0].reshape(-1, 3, 32, 32))}
    used = [where[img.tobytes()] for s in (data.train, data.val) for img in cifar_bytes(s.X, data.info)]
    assert sorted(used) == list(range(20))
    assert len(load_dataset("cifar10", limit=50_000).train) == 36  # more than there are: all of them
    for bad in (1, "5", True, 2.5):
        with pytest.raises(BigModelError, match=r"^limit must be an integer of at least 2 .*; got "):
            load_dataset("cifar10", limit=bad)


def test_cifar10_file_put_in_the_cache_by_hand_needs_no_network(tmp_path, monkeypatch, cifar):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("BIGMODEL_NB_CIFAR10_URL", "http://127.0.0.1:9/never/")
    write_cifar(tmp_path / "cifar10", cifar_tar(cifar_members(cifar)))
    assert load_dataset("cifar10").test.y.tolist() == cifar[3].tolist()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_safe_unpickler_reads_numpy_arrays(protocol):
    if protocol == 2:  # the real files: Python 2 pickles, readable only with encoding="bytes"
        raw, expected = PY2_BATCH, {b"data": np.array([[7, 9]], dtype=np.uint8), b"labels": [3]}
    else:
        expected = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"x": b"y"}
        raw = pickle.dumps(expected, protocol=protocol)
    got = SafeUnpickler(io.BytesIO(raw), "a test", encoding="bytes").load()
    assert got.keys() == expected.keys() and got[b"labels"] == expected[b"labels"]
    assert got[b"data"].dtype == np.uint8 and np.array_equal(got[b"data"], expected[b"data"])


class _Payload:
    """Unpickling this would run os.mkdir(path): what a malicious archive could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch, cifar):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    members = cifar_members(cifar)
    members["data_batch_3"] = pickle.dumps({b"data": cifar[0][:8], b"labels": [0] * 8, b"x": _Payload(marker)})
    path = write_cifar(tmp_path / "cache" / "cifar10", cifar_tar(members))
    with pytest.raises(BigModelError) as err:
        load_dataset("cifar10")
    message = str(err.value)
    assert message.startswith(f"Refused to read cifar-10-batches-py/data_batch_3 in {path}: it asks to unpickle "
                              f"{os.mkdir.__module__}.mkdir, which is not part of a numpy array"), message
    assert "never unpickles arbitrary code" in message and one_sentence(message)
    assert not marker.exists()  # nothing ran
    for evil in (pickle.dumps(_Payload(marker)), pickle.dumps(print), b"cbuiltins\neval\n(S'1'\ntR."):
        with pytest.raises(BigModelError, match=r"^Refused to read a test: it asks to unpickle "):
            SafeUnpickler(io.BytesIO(evil), "a test", encoding="bytes").load()
    assert not marker.exists()


@pytest.mark.parametrize("damage, why", [
    (lambda tgz: tgz[: len(tgz) // 2], "not a complete tar.gz archive"),            # a download cut off half-way
    (lambda tgz: b"<html>Access denied</html>", "not a complete tar.gz archive"),   # an error page instead of data
    (lambda tgz: gzip.compress(gzip.decompress(tgz)[:-20_000]), "not a complete tar.gz archive"),  # valid gzip
    (lambda tgz: cifar_tar({k: v for k, v in cifar_members(make_cifar()).items() if k != "data_batch_2"}),
     "it has no cifar-10-batches-py/data_batch_2"),                                # a complete tar, a member short
])
def test_cifar10_truncated_archive_is_a_one_sentence_error(tmp_path, monkeypatch, cifar, damage, why):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    path = write_cifar(tmp_path / "cifar10", damage(cifar_tar(cifar_members(cifar))))
    assert_corrupt_file(lambda: load_dataset("cifar10"), path, why)


def test_cifar10_damaged_batches_are_clear(tmp_path, monkeypatch, cifar):
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    for name, payload, why in [
        ("test_batch", pickle.dumps({b"data": cifar[2]})[:-50], "test_batch is not a complete pickle"),
        ("data_batch_2", pickle.dumps({b"data": cifar[0][:8, :100], b"labels": [0] * 8}), "uint8 rows of 3,072"),
        ("data_batch_5", pickle.dumps({b"data": cifar[0][:8], b"labels": [0] * 7}), "has 7 labels in 0-9 for 8"),
        ("batches.meta", pickle.dumps({b"label_names": [b"cat"]}), "no list of 10 b'label_names'"),
    ]:
        path = write_cifar(tmp_path / "cifar10", cifar_tar({**cifar_members(cifar), name: payload}))
        with pytest.raises(BigModelError, match=r"is truncated or corrupt \(") as err:
            load_dataset("cifar10")
        assert why in str(err.value) and one_sentence(str(err.value)) and str(path) in str(err.value), str(err.value)


def test_cifar10_without_network_is_a_quick_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("BIGMODEL_NB_CIFAR10_URL", f"http://127.0.0.1:{port}/cifar/")  # "/": the name is appended
    t0 = time.perf_counter()
    with pytest.raises(BigModelError) as err:
        load_dataset("cifar10")
    assert time.perf_counter() - t0 < 15
    message, folder = str(err.value), tmp_path / "cifar10"
    assert message.startswith(f"Could not download cifar10 from http://127.0.0.1:{port}/cifar/{CIFAR10_ARCHIVE} (")
    assert message.endswith(f"; check the network or put {CIFAR10_ARCHIVE} in {folder}.") and one_sentence(message)
    assert not list(folder.glob("*"))  # nothing half-written that would look like a download


def test_an_mlp_and_a_cnn_train_on_cifar10(cifar_server):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3072, 16), nn.ReLU(), nn.Linear(16, 10))
    run = fit(mlp, load_dataset("cifar10"), steps=3, batch_size=8, seed=0, device="cpu")
    assert run.status == "completed" and run.error is None and run.step == 3, run
    result = run.evaluate("test")
    assert math.isfinite(result["loss"]) and 0 <= result["accuracy"] <= 1
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 15 * 15, 10))
    run = fit(cnn, load_dataset("cifar10", flatten=False), steps=3, batch_size=8, seed=0, device="cpu")
    assert run.status == "completed" and run.step == 3, run
