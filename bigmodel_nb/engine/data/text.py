"""Character-level language-modelling data: a tokenizer, two corpora, and the (X, y) windows.

`python-stdlib` is built offline from the interpreter's own standard-library source, so every
machine with Python has it. `tiny-shakespeare` is downloaded once into a cache directory.
Each sample is a window of `block_size` token ids; its target is the same window shifted by
one character, which is what a next-character model (GPT) learns from.
"""
from __future__ import annotations

import os
import sysconfig

import numpy as np
import torch

from ..core.batches import DATASETS, DataBundle, Split, register_dataset
from ..core.errors import BigModelError
from .download import cache_dir, download_once

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)  # train / val / test, as contiguous stretches of the corpus

# Printable ASCII plus newline: every character of normalised Python source, so the vocab is
# fixed (96 symbols) and does not depend on which files were read.
PRINTABLE_ASCII = ["\n"] + [chr(c) for c in range(32, 127)]
# Standard-library folders that are tests, tools, generated tables or third-party code.
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "lib2to3",
                "encodings", "ensurepip", "pydoc_data", "__pycache__"}


class CharTokenizer:
    """Characters <-> integer ids, one id per character of `vocab`.

    Characters outside the vocab: if `unknown` is given (a character in the vocab) they are
    encoded as it, otherwise `encode` raises a BigModelError naming the first one.
    Example: ``tok = CharTokenizer(list("abc")); tok.decode(tok.encode("cab"))  # 'cab'``
    """

    def __init__(self, vocab, unknown: str | None = None):
        self.vocab = list(vocab)
        if len(set(self.vocab)) != len(self.vocab) or not all(isinstance(c, str) and len(c) == 1 for c in self.vocab):
            raise BigModelError("A CharTokenizer vocab must be a list of distinct single characters.")
        self.stoi = {c: i for i, c in enumerate(self.vocab)}
        if unknown is not None and unknown not in self.stoi:
            raise BigModelError(f"The fallback character {unknown!r} is not in the vocab; add it or pass unknown=None.")
        self.unknown = unknown

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer({len(self)} characters)"

    def encode(self, text: str) -> torch.Tensor:
        """A 1-D LongTensor of ids. Example: ``tok.encode("def f():")  # tensor([...]) of length 8``"""
        stoi, fallback = self.stoi, self.stoi.get(self.unknown)
        try:
            ids = [stoi[c] for c in text]
        except KeyError:
            if fallback is None:
                bad = next(c for c in text if c not in stoi)
                raise BigModelError(f"The character {bad!r} is not in this tokenizer's {len(self)}-character vocab; "
                                    "remove it from the text or build the tokenizer with unknown='?'.") from None
            ids = [stoi.get(c, fallback) for c in text]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids) -> str:
        """The text of a 1-D sequence of ids (tensor or list). Example: ``tok.decode(model.generate(idx, 100)[0])``"""
        ids = torch.as_tensor(ids)
        if ids.dim() > 1:
            raise BigModelError(f"decode takes one sequence of ids but got shape {tuple(ids.shape)}; "
                                "decode one row at a time, e.g. decode(ids[0]).")
        ids = ids.reshape(-1).tolist()
        bad = next((i for i in ids if not 0 <= i < len(self.vocab)), None)
        if bad is not None:
            raise BigModelError(f"Token id {bad} is outside this tokenizer's vocab of {len(self)}; "
                                "decode ids made by the same tokenizer (or a model with the same vocab_size).")
        return "".join(self.vocab[i] for i in ids)


# -- corpora ------------------------------------------------------------------------------------
def stdlib_source(chars: int) -> tuple[str, int]:
    """The first `chars` characters of the standard library's own .py files (sorted paths), with
    anything outside printable ASCII + newline turned into '?' (tabs into a space); and how many
    files that took. Example: ``text, files = stdlib_source(10_000)``
    """
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders
                         if d not in _STDLIB_SKIP and not d.startswith(("config-", "lib-dynload"))]
        paths += [os.path.join(folder, f) for f in files if f.endswith(".py") and not f.startswith("_sysconfigdata")]
    pieces, total = [], 0
    for path in sorted(paths):  # sorted: the same corpus on every run of the same Python
        if total >= chars:
            break
        with open(path, encoding="utf-8", errors="replace") as f:
            pieces.append(f.read().rstrip("\n") + "\n\n\n")  # blank lines between files, as between top-level defs
        total += len(pieces[-1])
    if not pieces:
        raise BigModelError(f"No Python source files were found under {root}; "
                            "this Python has no readable standard library.")
    return _printable("".join(pieces)[:chars]), len(pieces)


def _printable(text: str) -> str:
    table = {c: "?" for c in range(32)}
    table.update({ord("\n"): "\n", ord("\t"): " ", 127: "?"})
    return text.translate(table).encode("ascii", "replace").decode("ascii")  # non-ASCII -> '?'


def tiny_shakespeare_text() -> str:
    """The ~1.1 MB tiny-shakespeare corpus, from the cache or downloaded once (URL overridable with
    $BIGMODEL_NB_TINY_SHAKESPEARE_URL). Example: ``tiny_shakespeare_text()[:30]  # 'First Citizen:...'``"""
    url = os.environ.get("BIGMODEL_NB_TINY_SHAKESPEARE_URL") or TINY_SHAKESPEARE_URL
    path = download_once(url, cache_dir() / "tiny-shakespeare" / "input.txt", "tiny-shakespeare")
    return path.read_text(encoding="utf-8", errors="replace")


# -- windows and splits -------------------------------------------------------------------------
def windows(tokens: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows X[i] = tokens[s:s+B] and their next-character targets
    y[i] = tokens[s+1:s+B+1], with s = i*B. Example: ``X, y = windows(torch.arange(10), 3)  # X[1] = [3, 4, 5]``"""
    n = (len(tokens) - 1) // block_size
    return tokens[:n * block_size].view(n, block_size), tokens[1:n * block_size + 1].view(n, block_size)


def char_bundle(name: str, text: str, tokenizer: CharTokenizer, block_size: int, info: dict):
    """A language-model DataBundle: train/val/test are contiguous 90/5/5 stretches of `text` (so no
    window straddles two splits), each cut into windows. Example: ``char_bundle("t", s, tok, 64, {})``"""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise BigModelError(f"block_size must be a positive integer; got {block_size!r}.")
    tokens = tokenizer.encode(text)
    cuts = np.cumsum([round(len(tokens) * f) for f in SPLIT_FRACTIONS[:-1]]).tolist()
    chunks = [tokens[a:b] for a, b in zip([0, *cuts], [*cuts, len(tokens)])]
    if min(len(c) for c in chunks) <= block_size:
        raise BigModelError(f"{len(text):,} characters are too few for windows of {block_size} in each of "
                            "train/val/test; use more characters (chars=) or a smaller block_size "
                            f"(at most {min(map(len, chunks)) - 1}).")
    splits = [Split(*windows(c, block_size)) for c in chunks]
    return DataBundle(name, *splits, task="language-model", num_classes=None, input_shape=(block_size,),
                      vocab=list(tokenizer.vocab),
                      info={"tokenizer": tokenizer, "block_size": block_size, "characters": len(text), **info})


def _check_chars(chars) -> int | None:
    if chars is None:
        return None
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 1:
        raise BigModelError(f"chars must be a positive integer (how many characters to use); got {chars!r}.")
    return chars


# -- the built-in corpora (`seed` and `flatten` are unused: splits are contiguous stretches) --------------
@register_dataset("python-stdlib", "Python standard-library source, characters (options chars=1_000_000, "
                                   "block_size=64), language model")
def python_stdlib(seed: int = 0, flatten: bool = True, chars: int = 1_000_000, block_size: int = 64):
    """Python source from this interpreter's standard library, character-level, vocab of 96.

    Example: ``load_dataset("python-stdlib", chars=200_000, block_size=128).info["tokenizer"]``
    """
    text, files = stdlib_source(_check_chars(chars))
    return char_bundle("python-stdlib", text, CharTokenizer(PRINTABLE_ASCII, unknown="?"), block_size, {
        "description": DATASETS["python-stdlib"], "files": files,
        "source": f"the .py files of the Python standard library at {sysconfig.get_paths()['stdlib']}"})


@register_dataset("tiny-shakespeare", "Shakespeare, 1.1M characters, downloaded once (options chars, block_size=64), "
                                      "language model")
def tiny_shakespeare(seed: int = 0, flatten: bool = True, chars: int | None = None, block_size: int = 64):
    """Karpathy's tiny-shakespeare (~1.1M characters, vocab 65), downloaded once and cached.

    Example: ``load_dataset("tiny-shakespeare", block_size=128).vocab[:5]``
    """
    text = tiny_shakespeare_text()[:_check_chars(chars)]
    return char_bundle("tiny-shakespeare", text, CharTokenizer(sorted(set(text))), block_size, {
        "description": DATASETS["tiny-shakespeare"],
        "source": "Karpathy's char-rnn tinyshakespeare input.txt (works of Shakespeare, public domain)"})
