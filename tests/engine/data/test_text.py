import math
import socket
import time

import pytest
import torch

from bigmodel_nb.api import fit
from bigmodel_nb.engine.core.errors import BigModelError
from bigmodel_nb.engine.data import DATASETS, load_dataset
from bigmodel_nb.engine.data.text import PRINTABLE_ASCII, CharTokenizer, stdlib_source, windows
from bigmodel_nb.models import GPT, GPTConfig


@pytest.fixture(scope="module")
def stdlib():
    return load_dataset("python-stdlib", chars=200_000, block_size=32)


# -- tokenizer ----------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer(PRINTABLE_ASCII, unknown="?")
    text = "def f(x):\n    return x ** 2  # ok\n"
    ids = tok.encode(text)
    assert ids.dtype == torch.long and len(ids) == len(text) and tok.decode(ids) == text
    assert tok.decode(tok.encode("é\tb")) == "??b"  # unknown characters become the fallback
    strict = CharTokenizer(list("abc"))
    assert strict.decode([2, 0, 1]) == "cab"
    with pytest.raises(BigModelError, match="The character 'z' is not in"):
        strict.encode("abzcy")
    with pytest.raises(BigModelError, match="Token id 7 is outside"):
        strict.decode([0, 7])
    with pytest.raises(BigModelError, match=r"decode\(ids\[0\]\)"):
        strict.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(BigModelError, match="distinct single characters"):
        CharTokenizer(list("aab"))


def test_windows_shift_by_one_without_overlap():
    X, y = windows(torch.arange(11), 3)
    assert X.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


# -- python-stdlib ------------------------------------------------------------------------------
def test_stdlib_bundle_shape_vocab_and_info(stdlib):
    tok = stdlib.info["tokenizer"]
    assert (stdlib.task, stdlib.num_classes, stdlib.input_shape) == ("language-model", None, (32,))
    assert stdlib.vocab == PRINTABLE_ASCII == tok.vocab and len(stdlib.vocab) == 96
    assert stdlib.info["block_size"] == 32 and "standard library" in stdlib.info["source"]
    assert stdlib.info["description"] == DATASETS["python-stdlib"] and "tiny-shakespeare" in DATASETS
    X, y = stdlib.train.tensors()
    assert X.dtype == y.dtype == torch.long and X.shape[1] == 32
    assert torch.equal(X[:, 1:], y[:, :-1]) and torch.equal(y[:-1, -1], X[1:, 0])  # targets: the next character
    text = tok.decode(X[:200].flatten())
    assert "def " in text and "\n    " in text and "import" in text


def test_stdlib_splits_are_contiguous_and_cover_the_corpus(stdlib):
    text, _ = stdlib_source(200_000)
    tok = stdlib.info["tokenizer"]
    sizes = [len(s) for s in (stdlib.train, stdlib.val, stdlib.test)]
    assert sizes[0] > 15 * sizes[1] and abs(sizes[1] - sizes[2]) <= 1  # 90 / 5 / 5
    starts = [0, 180_000, 190_000]  # each split begins at its own cut of the corpus, in corpus order
    for split, start in zip((stdlib.train, stdlib.val, stdlib.test), starts):
        X, _ = split.tensors()
        assert tok.decode(X.flatten()) == text[start:start + X.numel()]


def test_stdlib_is_deterministic_printable_and_fast():
    t0 = time.perf_counter()
    a = load_dataset("python-stdlib")  # the default size
    elapsed = time.perf_counter() - t0
    b = load_dataset("python-stdlib", seed=123)
    assert torch.equal(a.train.X, b.train.X) and torch.equal(a.test.y, b.test.y)
    assert 900_000 <= a.info["characters"] <= 1_000_000 and elapsed < 10.0  # ~0.5 s; generous on a loaded CI
    text, _ = stdlib_source(50_000)
    assert set(text) <= set(PRINTABLE_ASCII)


def test_stdlib_bad_options_are_clear():
    with pytest.raises(BigModelError, match="too few for windows of 64"):
        load_dataset("python-stdlib", chars=500)
    with pytest.raises(BigModelError, match="block_size must be a positive integer"):
        load_dataset("python-stdlib", block_size=0)
    with pytest.raises(BigModelError, match="chars must be a positive integer"):
        load_dataset("python-stdlib", chars=-5)
    with pytest.raises(BigModelError, match="Unknown option 'block' .*did you mean 'block_size'"):
        load_dataset("python-stdlib", block=8)


def test_gpt_learns_the_stdlib_corpus():
    """~150 Adam steps of a small GPT take the val loss well below ln(vocab) (the uniform guess)."""
    data = load_dataset("python-stdlib", chars=300_000, block_size=64)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=len(data.vocab), n_layer=2, n_head=4, n_embd=64))
    t0 = time.perf_counter()
    run = fit(model, data, steps=150, batch_size=32, lr=3e-3, seed=0, device="cpu", val_every=150)
    elapsed = time.perf_counter() - t0
    val = run.rows("val")[-1]["loss"]
    assert run.status == "completed" and run.step == 150
    assert run.rows("train")[0]["loss"] > 3.0 and val < math.log(96) - 1.5, (val, elapsed)  # 4.56 -> ~2.4
    tok = data.info["tokenizer"]
    sample = tok.decode(model.generate(tok.encode("def "), 50, temperature=0.8))
    assert sample.startswith("def ") and len(sample) == 54


# -- tiny-shakespeare: download once, then the cache --------------------------------------------
SHAKESPEARE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.fixture
def server(tmp_path, file_server):
    """A real HTTP server on 127.0.0.1 serving input.txt, counting the requests."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "input.txt").write_text(SHAKESPEARE)
    base, requests, httpd = file_server(tmp_path / "www")
    return f"{base}/input.txt", requests, httpd


def test_tiny_shakespeare_downloads_once_then_loads_from_cache(server, tmp_path, monkeypatch):
    url, requests, httpd = server
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BIGMODEL_NB_TINY_SHAKESPEARE_URL", url)
    first = load_dataset("tiny-shakespeare", block_size=16)
    assert requests == ["/input.txt"]
    cached = tmp_path / "cache" / "tiny-shakespeare" / "input.txt"
    assert cached.read_text() == SHAKESPEARE and not list(cached.parent.glob("*.part"))
    assert first.vocab == sorted(set(SHAKESPEARE)) and first.task == "language-model"
    assert first.info["tokenizer"].decode(first.train.X[0]) == SHAKESPEARE[:16]
    httpd.shutdown()  # no server any more: the second load must come from the cache
    second = load_dataset("tiny-shakespeare", block_size=16)
    assert requests == ["/input.txt"] and torch.equal(first.val.X, second.val.X)


def test_tiny_shakespeare_without_network_is_a_quick_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BIGMODEL_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("BIGMODEL_NB_TINY_SHAKESPEARE_URL", f"http://127.0.0.1:{port}/input.txt")
    t0 = time.perf_counter()
    with pytest.raises(BigModelError, match=r"Could not download tiny-shakespeare .*check the network "
                                            r"or put input.txt in "
                                            + str(tmp_path / "tiny-shakespeare")):
        load_dataset("tiny-shakespeare")
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "tiny-shakespeare" / "input.txt").exists()
